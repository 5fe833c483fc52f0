"""Wrappers: transformations that choose which leaves another transformation sees.

:func:`masked` applies a transformation to some leaves, :func:`multi_transform` gives each
group of leaves its own transformation (PyTorch's parameter groups), :func:`freeze` keeps
some leaves fixed and :func:`set_to_zero` zeroes every update. A transformation applied to a
subset of the leaves sees the others as empty :class:`MaskedNode` s, so it allocates no state
for them.

This module depends only on the protocol and tree arithmetic, never on concrete
transformations, so every transformation may use it.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform._base import (
    EmptyState,
    GradientTransformation,
    _as_transformation,
    _extra_args_filter,
)

Mask = Any  # a tree of Python bools matching (a prefix of) the params
Labels = Any  # a tree of hashable labels matching (a prefix of) the params


class MaskedNode(NamedTuple):
    """Stands in the inner transformation's trees for a leaf it does not see.

    It is an empty pytree node, so tree maps pass over it and no state is allocated there.
    """


class MaskedState(NamedTuple):
    """``inner_state``: the state of the masked transformation, over the selected leaves."""

    inner_state: Any


class MultiTransformState(NamedTuple):
    """``inner_states``: ``{label: state}``, each over the leaves carrying that label."""

    inner_states: dict


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


def _prefix_leaves(prefix: Any, tree: Any, who: str, name: str) -> tuple[list, Any]:
    """``prefix``'s leaves broadcast to ``tree``'s leaves, with ``tree``'s treedef."""
    treedef = jax.tree.structure(tree)
    try:
        full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), prefix, tree)
        values = treedef.flatten_up_to(full)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{who}: the {name} does not match the params tree (it must have the same "
            f"structure, or be a prefix of it).\n  {name}: {jax.tree.structure(prefix)}\n"
            f"  params: {treedef}"
        ) from error
    return values, treedef


def _mask_leaves(mask: Mask, tree: Any, who: str) -> tuple[list[bool], Any]:
    """The mask broadcast to ``tree``'s leaves, with ``tree``'s treedef."""
    flags, treedef = _prefix_leaves(mask, tree, who, "mask")
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


def _update_selected(
    inner: GradientTransformation,
    keep_extra: Callable[[dict], dict],
    flags: list[bool],
    treedef,
    updates: Any,
    inner_state: Any,
    params: Any,
    extra_args: dict,
) -> tuple[list, Any]:
    """Runs ``inner.update`` on the selected leaves; returns its output as a flat list.

    The list has one entry per leaf of ``treedef``: the new update where selected, a
    :class:`MaskedNode` elsewhere.
    """
    selected_params = None if params is None else _select(params, flags, treedef)
    new_selected, inner_state = inner.update(
        _select(updates, flags, treedef), inner_state, selected_params, **keep_extra(extra_args)
    )
    return treedef.flatten_up_to(new_selected), inner_state


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

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.masked(gx.scale(10.0), {"w": True, "b": False})
      >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> updates, _ = opt.update(params, opt.init(params))
      >>> updates["w"].tolist(), updates["b"].tolist()
      ([10.0, 10.0], [1.0, 1.0])
    """
    who = "masked"
    inner = _as_transformation(inner, who)
    keep_extra = _extra_args_filter(inner.update)

    def resolve(tree):
        return mask(tree) if is_mask_function(mask) else mask

    def init_fn(params):
        flags, treedef = _mask_leaves(resolve(params), params, who)
        return MaskedState(inner.init(_select(params, flags, treedef)))

    def update_fn(updates, state, params=None, **extra_args):
        flags, treedef = _mask_leaves(resolve(updates if params is None else params), updates, who)
        new_leaves, inner_state = _update_selected(
            inner, keep_extra, flags, treedef, updates, state.inner_state, params, extra_args
        )
        old_leaves = treedef.flatten_up_to(updates)
        merged = [
            new if keep else old
            for new, old, keep in zip(new_leaves, old_leaves, flags, strict=True)
        ]
        return treedef.unflatten(merged), MaskedState(inner_state)

    return GradientTransformation(init_fn, update_fn)


def set_to_zero() -> GradientTransformation:
    """Replaces every update by zeros: ``u <- 0``.

    The zeros are exact (a NaN or infinite gradient also becomes 0) and nothing is stored.

    Returns:
      A stateless transformation.
    """

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(jnp.zeros_like, updates), state

    return GradientTransformation(init_fn, update_fn)


def freeze(inner: GradientTransformation, mask: Mask | Callable[[Any], Mask]):
    """Keeps the leaves selected by ``mask`` fixed and optimizes the others with ``inner``.

    ::

        u_i <- 0   where mask_i   else   inner(u)_i

    ``inner`` sees only the trainable leaves, so no optimizer state exists for the frozen
    ones: freezing half of a model with Adam halves Adam's moments. This is why ``freeze``
    wraps the optimizer rather than being a link of a chain: in
    ``chain(masked(set_to_zero(), mask), adam(...))`` the frozen leaves also get exactly zero
    updates, but Adam, a later link, still allocates its moments for them.

    Args:
      inner: the optimizer of the trainable leaves.
      mask: ``True`` for a frozen leaf: a tree of Python bools with the params' structure (or
        a prefix of it), or a function ``params -> mask``, as in :func:`masked`.

    Returns:
      A transformation whose state is :class:`MaskedState` (``inner``'s state over the
      trainable leaves).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> params = {"backbone": jnp.ones(3), "head": jnp.ones(3)}
      >>> opt = gx.freeze(gx.adam(0.1), {"backbone": True, "head": False})
      >>> state = opt.init(params)
      >>> state.inner_state[0].mu["backbone"]
      MaskedNode()
      >>> updates, state = opt.update(params, state, params)
      >>> updates["backbone"].tolist()
      [0.0, 0.0, 0.0]
    """
    who = "freeze"
    inner = _as_transformation(inner, who)
    keep_extra = _extra_args_filter(inner.update)

    def trainable(tree):
        frozen, treedef = _mask_leaves(mask(tree) if is_mask_function(mask) else mask, tree, who)
        return [not f for f in frozen], treedef

    def init_fn(params):
        flags, treedef = trainable(params)
        return MaskedState(inner.init(_select(params, flags, treedef)))

    def update_fn(updates, state, params=None, **extra_args):
        flags, _ = trainable(updates if params is None else params)
        treedef = jax.tree.structure(updates)
        new_leaves, inner_state = _update_selected(
            inner, keep_extra, flags, treedef, updates, state.inner_state, params, extra_args
        )
        old_leaves = treedef.flatten_up_to(updates)
        merged = [
            new if keep else jnp.zeros_like(old)
            for new, old, keep in zip(new_leaves, old_leaves, flags, strict=True)
        ]
        return treedef.unflatten(merged), MaskedState(inner_state)

    return GradientTransformation(init_fn, update_fn)


def multi_transform(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Labels | Callable[[Any], Labels],
) -> GradientTransformation:
    """Gives each group of leaves its own transformation: PyTorch's parameter groups.

    ::

        u_i <- transforms[label_i](u restricted to the leaves labelled label_i)_i

    Each transformation sees only the leaves with its label (the others are empty
    :class:`MaskedNode` s), so it keeps state for those leaves only, and a transformation
    that looks at the whole tree (a global-norm clip, say) sees its group alone.

    Args:
      transforms: ``{label: transformation}``; every one must label at least one leaf.
      param_labels: a tree of labels with the params' structure or a prefix of it, or a
        function ``params -> labels``. Every label must be a key of ``transforms``. Labels
        are usually strings; they key the state's dict, so they must be pytree leaves that
        sort against each other (not a mix of strings and ints).

    Returns:
      A transformation whose state is :class:`MultiTransformState`.

    Raises:
      ValueError: a label without a transformation, or a transformation without a label.

    Example:
      As ``torch.optim.SGD([{"params": [w], "weight_decay": 1e-2}, {"params": [b]}], lr=0.1)``:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.multi_transform(
      ...     {"decay": gx.sgd(0.1, weight_decay=1e-2), "plain": gx.sgd(0.1)},
      ...     {"w": "decay", "b": "plain"},
      ... )
      >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> updates, state = opt.update(params, opt.init(params), params)
      >>> [round(float(updates[k][0]), 6) for k in ("w", "b")]
      [-0.101, -0.1]
    """
    who = "multi_transform"
    if not isinstance(transforms, Mapping) or not transforms:
        raise TypeError(
            f"{who}: `transforms` must be a non-empty dict {{label: transformation}}, "
            f"got {transforms!r}"
        )
    transforms = {
        label: _as_transformation(t, f"{who}: transforms[{label!r}]")
        for label, t in transforms.items()
    }
    filters = {label: _extra_args_filter(t.update) for label, t in transforms.items()}
    labels_are_function = is_mask_function(param_labels)

    def check_labels(labels: list) -> None:
        try:
            present = dict.fromkeys(labels)
        except TypeError as error:
            raise TypeError(f"{who}: labels must be hashable, got {labels!r}") from error
        missing = [label for label in present if label not in transforms]
        if missing:
            raise ValueError(
                f"{who}: no transformation for the label(s) {missing}; `transforms` has the "
                f"labels {list(transforms)}"
            )
        unused = [label for label in transforms if label not in present]
        if unused:
            raise ValueError(
                f"{who}: the transformation(s) {unused} label no parameter; the labels in "
                f"`param_labels` are {list(present)}"
            )

    if not labels_are_function:
        check_labels(jax.tree.leaves(param_labels))

    def leaf_labels(tree):
        labels = param_labels(tree) if labels_are_function else param_labels
        values, treedef = _prefix_leaves(labels, tree, who, "param_labels")
        if labels_are_function:
            check_labels(values)
        return values, treedef

    def init_fn(params):
        labels, treedef = leaf_labels(params)
        return MultiTransformState(
            {
                name: t.init(_select(params, [label == name for label in labels], treedef))
                for name, t in transforms.items()
            }
        )

    def update_fn(updates, state, params=None, **extra_args):
        labels, _ = leaf_labels(updates if params is None else params)
        treedef = jax.tree.structure(updates)
        merged = treedef.flatten_up_to(updates)
        new_states = {}
        for name, t in transforms.items():
            flags = [label == name for label in labels]
            new_leaves, new_states[name] = _update_selected(
                t,
                filters[name],
                flags,
                treedef,
                updates,
                state.inner_states[name],
                params,
                extra_args,
            )
            merged = [
                new if keep else old
                for new, old, keep in zip(new_leaves, merged, flags, strict=True)
            ]
        return treedef.unflatten(merged), MultiTransformState(new_states)

    return GradientTransformation(init_fn, update_fn)


def _find_state(state: Any, state_type: type, who: str) -> Any:
    """The one node of type ``state_type`` inside a (chained, wrapped) optimizer state.

    Raises ``ValueError`` when there is none or more than one.
    """
    found = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, state_type))
        if isinstance(node, state_type)
    ]
    if len(found) != 1:
        raise ValueError(
            f"{who}: expected exactly one {state_type.__name__} in the optimizer state, found "
            f"{len(found)}. Pass the state of (or containing) one such transformation."
        )
    return found[0]


def decay_matrices_only(params: Any) -> Any:
    """A mask selecting leaves with ``ndim >= 2`` (weight matrices, convolution kernels).

    The usual choice for weight decay: biases and normalisation scales (``ndim <= 1``) are not
    decayed. Pass it as ``mask=gradxform.decay_matrices_only``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
      >>> gx.decay_matrices_only(params)
      {'bias': False, 'kernel': True}
      >>> opt = gx.adamw(learning_rate=0.1, weight_decay=0.5, mask=gx.decay_matrices_only)
      >>> updates, _ = opt.update(params, opt.init(params), params)
      >>> round(float(updates["kernel"][0, 0]), 4), round(float(updates["bias"][0]), 4)
      (-0.15, -0.1)
    """
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)
