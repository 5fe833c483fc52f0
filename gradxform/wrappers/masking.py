"""Masks and groups: transformations applied to some of the leaves.

:func:`masked` applies a transformation to some leaves, :func:`multi_transform` gives each
group of leaves its own transformation (PyTorch's parameter groups) and :func:`freeze` keeps
some leaves fixed. A transformation applied to a subset of the leaves sees the others as empty
:class:`gradxform.MaskedNode` s, so it allocates no state for them.

A params tree without leaves (Optax's ``tree_map_params`` calls ``init`` on one, to find where
the params sit in a state) cannot be matched against a mask: it is handed to the inner
transformations as it is, so that the state they build marks those places.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _masks, _validate
from gradxform._base import (
    GradientTransformation,
    as_transformation,
    expect_state,
    extra_args_filter,
)
from gradxform._types import Labels, Mask
from gradxform.transforms.scaling import set_to_zero


class MaskedState(NamedTuple):
    """``inner_state``: the state of the masked transformation, over the selected leaves."""

    inner_state: Any


class MultiTransformState(NamedTuple):
    """``inner_states``: ``{label: state}``, each over the leaves carrying that label."""

    inner_states: dict


# Optax's name for the same state (its ``MultiTransformState`` is an alias of it).
PartitionState = MultiTransformState


def _update_selected(
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
        new_leaves, inner_state = _update_selected(
            inner, keep_extra, flags, treedef, updates, state.inner_state, params, extra_args
        )
        merged = _masks.merge(treedef, flags, new_leaves, treedef.flatten_up_to(updates))
        return merged, MaskedState(inner_state)

    return GradientTransformation(init_fn, update_fn)


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
        new_leaves, inner_state = _update_selected(
            inner, keep_extra, flags, treedef, updates, state.inner_state, params, extra_args
        )
        merged = _masks.merge(
            treedef, flags, new_leaves, treedef.flatten_up_to(updates), jnp.zeros_like
        )
        return merged, MaskedState(inner_state)

    return GradientTransformation(init_fn, update_fn)


def _multi_transform(who, transforms, param_labels, *, allow_unused):
    """:func:`multi_transform` (``allow_unused=False``) and :func:`partition` (True: a
    transformation may label no leaf, as in Optax)."""
    if not isinstance(transforms, Mapping) or not transforms:
        raise TypeError(
            f"{who}: `transforms` must be a non-empty dict {{label: transformation}}, "
            f"got {transforms!r}"
        )
    transforms = {
        label: as_transformation(t, f"{who}: transforms[{label!r}]")
        for label, t in transforms.items()
    }
    filters = {label: extra_args_filter(t.update) for label, t in transforms.items()}
    labels_are_function = _masks.is_mask_function(param_labels)

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
        if unused and not allow_unused:
            raise ValueError(
                f"{who}: the transformation(s) {unused} label no parameter; the labels in "
                f"`param_labels` are {list(present)}"
            )

    if not labels_are_function:
        check_labels(jax.tree.leaves(param_labels))

    def leaf_labels(tree):
        labels = _masks.resolve(param_labels, tree)
        values, treedef = _masks.broadcast_prefix(labels, tree, who, "param_labels")
        if labels_are_function:
            check_labels(values)
        return values, treedef

    def init_fn(params):
        if _masks.has_no_leaves(params):
            return MultiTransformState({name: t.init(params) for name, t in transforms.items()})
        labels, treedef = leaf_labels(params)
        return MultiTransformState(
            {
                name: t.init(_masks.select(params, [label == name for label in labels], treedef))
                for name, t in transforms.items()
            }
        )

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, MultiTransformState)
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
            merged = treedef.flatten_up_to(_masks.merge(treedef, flags, new_leaves, merged))
        return treedef.unflatten(merged), MultiTransformState(new_states)

    return GradientTransformation(init_fn, update_fn)


def multi_transform(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Labels | Callable[[Any], Labels],
) -> GradientTransformation:
    """Gives each group of leaves its own transformation: PyTorch's parameter groups.

    ::

        u_i <- transforms[label_i](u restricted to the leaves labelled label_i)_i

    Each transformation sees only the leaves with its label (the others are empty
    :class:`gradxform.MaskedNode` s), so it keeps state for those leaves only, and a
    transformation that looks at the whole tree (a global-norm clip, say) sees its group alone.

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
    return _multi_transform("multi_transform", transforms, param_labels, allow_unused=False)


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Labels | Callable[[Any], Labels],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformation:
    """Optax's name for :func:`multi_transform`: each group of leaves gets its own
    transformation, ``u_i <- transforms[label_i](u restricted to label_i's leaves)_i``.

    As Optax's, a transformation may label no leaf (it then keeps an empty state).

    Args:
      transforms: ``{label: transformation}``.
      param_labels: a tree of labels with the params' structure (or a prefix), or a function
        ``params -> labels``.
      mask_compatible_extra_args: must be False: masking extra arguments shaped like the
        params is not supported (each group gets them whole).

    Returns:
      A transformation whose state is :class:`PartitionState` (= :class:`MultiTransformState`).
    """
    who = "partition"
    _validate.boolean(who, "mask_compatible_extra_args", mask_compatible_extra_args)
    if mask_compatible_extra_args:
        raise ValueError(f"{who}: `mask_compatible_extra_args=True` is not supported")
    return _multi_transform(who, transforms, param_labels, allow_unused=True)


def selective_transform(
    optimizer: GradientTransformation, *, freeze_mask: Mask
) -> GradientTransformation:
    """Applies ``optimizer`` to the leaves ``freeze_mask`` leaves out; zeroes the updates of
    the others (Optax's): ``partition({"train": optimizer, "freeze": set_to_zero()}, labels)``
    with ``labels = "freeze" where freeze_mask else "train"``.

    Args:
      optimizer: the optimizer of the trained leaves.
      freeze_mask: a tree of bools with the params' structure (or a prefix), True for frozen.

    Returns:
      A transformation whose state is :class:`PartitionState`.
    """
    who = "selective_transform"
    optimizer = as_transformation(optimizer, f"{who}: `optimizer`")
    _validate.mask(who, "freeze_mask", freeze_mask)
    labels = jax.tree.map(lambda frozen: "freeze" if frozen else "train", freeze_mask)
    return _multi_transform(
        who, {"train": optimizer, "freeze": set_to_zero()}, labels, allow_unused=True
    )


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
