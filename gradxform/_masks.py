"""Masks and labels: trees that say, per parameter leaf, which leaves a transformation sees.

A mask is a tree of Python bools (a label tree, of hashable labels) with the params' structure
or a prefix of it, or a function of the params returning one. Leaves a transformation does not
see are replaced by :class:`MaskedNode`, an empty pytree node, so tree maps pass over them and
no state is allocated there. Every wrapper that selects leaves (``masked``, ``freeze``,
``multi_transform``, ``add_decayed_weights(mask=...)``, ``flatten_params(groups=...)``) goes
through the functions here.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import jax


class MaskedNode(NamedTuple):
    """Stands in the inner transformation's trees for a leaf it does not see.

    It is an empty pytree node, so tree maps pass over it and no state is allocated there.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> opt = gx.masked(gx.trace(0.9), {"a": True, "b": False})
      >>> opt.init({"a": jnp.zeros(2), "b": jnp.zeros(2)}).inner_state.trace  # no buffer for b
      {'a': Array([0., 0.], dtype=float32), 'b': MaskedNode()}
      >>> jax.tree.leaves(gx.MaskedNode())
      []
    """


_FUNCTION_TYPES = (
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    functools.partial,
)


def is_mask_function(mask: Any) -> bool:
    """Whether ``mask`` is a function of params rather than a tree.

    Only plain functions, methods, builtins and ``functools.partial`` objects count: a callable
    pytree (say an Equinox module that defines ``__call__``) is a tree of bools, not a function.
    """
    return isinstance(mask, _FUNCTION_TYPES)


def resolve(mask: Any, params: Any) -> Any:
    """The mask tree: ``mask(params)`` for a mask function, else ``mask`` itself."""
    return mask(params) if is_mask_function(mask) else mask


def has_no_leaves(params: Any) -> bool:
    """Whether ``params`` is a tree without leaves.

    Code that only wants the structure of an optimizer state calls ``init`` on such a tree:
    Optax's ``tree_map_params`` passes an empty placeholder node for the whole params. A mask
    cannot be matched against it, so wrappers hand it to their inner transformations as it is.
    """
    return not jax.tree.leaves(params)


def broadcast_prefix(prefix: Any, tree: Any, who: str, name: str) -> tuple[list, Any]:
    """``prefix``'s leaves broadcast to ``tree``'s leaves, with ``tree``'s treedef.

    Raises ``ValueError`` naming ``who`` and showing both structures when ``prefix`` is not a
    prefix of ``tree``.
    """
    treedef = jax.tree.structure(tree)
    try:
        full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), prefix, tree)
        values = treedef.flatten_up_to(full)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{who}: `{name}` does not match the params tree (it must have the same "
            f"structure, or be a prefix of it).\n  {name}: {jax.tree.structure(prefix)}\n"
            f"  params: {treedef}"
        ) from error
    return values, treedef


def mask_flags(mask: Any, tree: Any, who: str) -> tuple[list[bool], Any]:
    """The mask (a tree or a function) broadcast to ``tree``'s leaves, with ``tree``'s treedef."""
    flags, treedef = broadcast_prefix(resolve(mask, tree), tree, who, "mask")
    for flag in flags:
        if not isinstance(flag, bool):
            raise TypeError(
                f"{who}: mask leaves must be Python bools (the mask decides the state's "
                f"structure, so it must be known when tracing), got {flag!r}"
            )
    return flags, treedef


def select(tree: Any, flags: list[bool], treedef: Any) -> Any:
    """``tree`` with the leaves whose flag is false replaced by :class:`MaskedNode`."""
    leaves = treedef.flatten_up_to(tree)
    return treedef.unflatten(
        [leaf if keep else MaskedNode() for leaf, keep in zip(leaves, flags, strict=True)]
    )


def merge(
    treedef: Any, flags: list[bool], selected: list, others: list, other_fn: Callable | None = None
) -> Any:
    """One tree from two flat lists: ``selected[i]`` where ``flags[i]``, else ``others[i]``
    (passed through ``other_fn`` if given)."""
    merged = [
        new if keep else (old if other_fn is None else other_fn(old))
        for new, old, keep in zip(selected, others, flags, strict=True)
    ]
    return treedef.unflatten(merged)
