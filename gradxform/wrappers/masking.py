"""Masks: transformations applied to some of the leaves.

:func:`masked` applies a transformation to some leaves and :func:`freeze` keeps some leaves
fixed (``groups`` gives each group of leaves its own transformation, on
:func:`update_selected`). A transformation applied to a subset of the leaves sees the others as
empty :class:`gradxform.MaskedNode` s, so it allocates no state for them.

A params tree without leaves (Optax's ``tree_map_params`` calls ``init`` on one, to find where
the params sit in a state) cannot be matched against a mask: it is handed to the inner
transformations as it is, so that the state they build marks those places.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _masks, _validate
from gradxform._base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    as_transformation,
    expect_state,
    extra_args_filter,
)
from gradxform._types import Mask
from gradxform.transforms.scaling import set_to_zero


class MaskedState(NamedTuple):
    """``inner_state``: the state of the masked transformation, over the selected leaves.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.masked(gx.sgd(0.5, momentum=0.9), {"w": True, "b": False})
      >>> state = opt.init({"w": jnp.ones(2), "b": jnp.ones(3)})
      >>> state.inner_state[0].trace  # momentum for "w" only
      {'b': MaskedNode(), 'w': Array([0., 0.], dtype=float32)}
    """

    inner_state: Any


def update_selected(
    inner: GradientTransformation,
    keep_extra: Callable[[dict], dict],
    flags: list[bool],
    treedef: Any,
    updates: Any,
    inner_state: Any,
    params: Any,
    extra_args: dict,
) -> tuple[list, Any]:
    """Runs ``inner.update`` on the selected leaves; returns its output as a flat list.

    The list has one entry per leaf of ``treedef``: the new update where selected, a
    :class:`gradxform.MaskedNode` elsewhere.
    """
    selected_params = None if params is None else _masks.select(params, flags, treedef)
    new_selected, inner_state = inner.update(
        _masks.select(updates, flags, treedef),
        inner_state,
        selected_params,
        **keep_extra(extra_args),
    )
    return treedef.flatten_up_to(new_selected), inner_state


def masked(inner: GradientTransformation, mask: Mask | Callable[[Any], Mask]):
    """Applies ``inner`` only to the leaves selected by ``mask``; the rest pass unchanged.

    ::

        u_i <- inner(u)_i   where mask_i   else   u_i

    The inner transformation sees only the selected leaves (the others are replaced by an
    empty :class:`gradxform.MaskedNode`), so it allocates no state for them.

    Args:
      inner: the transformation to apply.
      mask: a tree of Python bools with the params' structure (or a prefix of it), or a
        function ``params -> mask``. Only plain functions count as functions: a callable
        pytree is read as a tree.

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
    inner = as_transformation(inner, who)
    _validate.mask(who, "mask", mask)
    keep_extra = extra_args_filter(inner.update)

    def init_fn(params):
        if _masks.has_no_leaves(params):
            return MaskedState(inner.init(params))
        flags, treedef = _masks.mask_flags(mask, params, who)
        return MaskedState(inner.init(_masks.select(params, flags, treedef)))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, MaskedState)
        flags, treedef = _masks.mask_flags(mask, updates if params is None else params, who)
        new_leaves, inner_state = update_selected(
            inner, keep_extra, flags, treedef, updates, state.inner_state, params, extra_args
        )
        merged = _masks.merge(treedef, flags, new_leaves, treedef.flatten_up_to(updates))
        return merged, MaskedState(inner_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def freeze(
    mask: Mask | Callable[[Any], Mask], *, inner: GradientTransformation | None = None
) -> GradientTransformation:
    """Keeps the leaves selected by ``mask`` fixed (zero updates); ``inner`` updates the rest.

    ::

        u_i <- 0   where mask_i   else   inner(u)_i       (inner = identity by default)

    Without ``inner`` this is Optax's ``freeze(mask)``: ``masked(set_to_zero(), mask)``, a link
    of a chain. A later link of the chain (say Adam) still allocates its state for the frozen
    leaves. With ``inner``, ``freeze`` wraps the optimizer instead, and ``inner`` sees only the
    trainable leaves, so no optimizer state exists for the frozen ones: freezing half of a model
    with Adam halves Adam's moments.

    Args:
      mask: ``True`` for a frozen leaf: a tree of Python bools with the params' structure (or
        a prefix of it), or a function ``params -> mask``, as in :func:`masked`.
      inner: the optimizer of the trainable leaves, or ``None`` for Optax's link form.

    Returns:
      A transformation whose state is :class:`MaskedState` (``inner``'s state over the
      trainable leaves).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> params = {"backbone": jnp.ones(3), "head": jnp.ones(3)}
      >>> opt = gx.freeze({"backbone": True, "head": False}, inner=gx.adam(0.1))
      >>> state = opt.init(params)
      >>> state.inner_state[0].mu["backbone"]
      MaskedNode()
      >>> updates, state = opt.update(params, state, params)
      >>> updates["backbone"].tolist()
      [0.0, 0.0, 0.0]
    """
    who = "freeze"
    _validate.mask(who, "mask", mask)
    if inner is None:
        return masked(set_to_zero(), mask)
    inner = as_transformation(inner, f"{who}: `inner`")
    keep_extra = extra_args_filter(inner.update)

    def trainable(tree):
        frozen, treedef = _masks.mask_flags(mask, tree, who)
        return [not f for f in frozen], treedef

    def init_fn(params):
        if _masks.has_no_leaves(params):
            return MaskedState(inner.init(params))
        flags, treedef = trainable(params)
        return MaskedState(inner.init(_masks.select(params, flags, treedef)))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, MaskedState)
        flags, _ = trainable(updates if params is None else params)
        treedef = jax.tree.structure(updates)
        new_leaves, inner_state = update_selected(
            inner, keep_extra, flags, treedef, updates, state.inner_state, params, extra_args
        )
        merged = _masks.merge(
            treedef, flags, new_leaves, treedef.flatten_up_to(updates), jnp.zeros_like
        )
        return merged, MaskedState(inner_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)


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
