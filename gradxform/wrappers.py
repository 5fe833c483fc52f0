"""Wrappers: transformations that change where or when another transformation applies.

This module depends only on the protocol and tree arithmetic, never on concrete
transformations, so every transformation may use it.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from gradxform._base import GradientTransformation, _extra_args_filter

Mask = Any  # a tree of Python bools matching (a prefix of) the params


class MaskedNode(NamedTuple):
    """Stands in the inner transformation's trees for a leaf it does not see.

    It is an empty pytree node, so tree maps pass over it and no state is allocated there.
    """


class MaskedState(NamedTuple):
    """``inner_state``: the state of the masked transformation, over the selected leaves."""

    inner_state: Any


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


def _mask_leaves(mask: Mask, tree: Any, who: str) -> tuple[list[bool], Any]:
    """The mask broadcast to ``tree``'s leaves, with ``tree``'s treedef."""
    treedef = jax.tree.structure(tree)
    try:
        full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), mask, tree)
        flags = treedef.flatten_up_to(full)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{who}: the mask does not match the params tree (it must have the same structure, "
            f"or be a prefix of it).\n  mask: {jax.tree.structure(mask)}\n  params: {treedef}"
        ) from error
    for flag in flags:
        if not isinstance(flag, bool):
            raise TypeError(
                f"{who}: mask leaves must be Python bools (the mask decides the state's "
                f"structure, so it must be known when tracing), got {flag!r}"
            )
    return flags, treedef


def _select(tree: Any, flags: list[bool], treedef) -> Any:
    leaves = treedef.flatten_up_to(tree)
    return treedef.unflatten(
        [leaf if keep else MaskedNode() for leaf, keep in zip(leaves, flags, strict=True)]
    )


def masked(inner: GradientTransformation, mask: Mask | Callable[[Any], Mask]):
    """Applies ``inner`` only to the leaves selected by ``mask``; the rest pass unchanged.

    ::

        u_i <- inner(u)_i   where mask_i   else   u_i

    The inner transformation sees only the selected leaves (the others are replaced by an
    empty :class:`MaskedNode`), so it allocates no state for them.

    Args:
      inner: the transformation to apply.
      mask: a tree of Python bools with the params' structure (or a prefix of it), or a
        function ``params -> mask``. Only plain functions count as functions: a callable
        pytree is read as a tree (see :func:`is_mask_function`).

    Returns:
      A transformation whose state is :class:`MaskedState`.
    """
    who = "masked"
    keep_extra = _extra_args_filter(inner.update)

    def resolve(tree):
        return mask(tree) if is_mask_function(mask) else mask

    def init_fn(params):
        flags, treedef = _mask_leaves(resolve(params), params, who)
        return MaskedState(inner.init(_select(params, flags, treedef)))

    def update_fn(updates, state, params=None, **extra_args):
        flags, treedef = _mask_leaves(resolve(updates if params is None else params), updates, who)
        selected_params = None if params is None else _select(params, flags, treedef)
        new_selected, inner_state = inner.update(
            _select(updates, flags, treedef),
            state.inner_state,
            selected_params,
            **keep_extra(extra_args),
        )
        new_leaves = treedef.flatten_up_to(new_selected)
        old_leaves = treedef.flatten_up_to(updates)
        merged = [
            new if keep else old
            for new, old, keep in zip(new_leaves, old_leaves, flags, strict=True)
        ]
        return treedef.unflatten(merged), MaskedState(inner_state)

    return GradientTransformation(init_fn, update_fn)


def decay_matrices_only(params: Any) -> Any:
    """A mask selecting leaves with ``ndim >= 2`` (weight matrices, convolution kernels).

    The usual choice for weight decay: biases and normalisation scales (``ndim <= 1``) are not
    decayed. Pass it as ``mask=gradxform.decay_matrices_only``.
    """
    return jax.tree.map(lambda p: jax.numpy.ndim(p) >= 2, params)
