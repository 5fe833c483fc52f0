"""Parameter groups: each group of leaves gets its own transformation.

:func:`multi_transform` is PyTorch's parameter groups; :func:`partition` and
:func:`selective_transform` are Optax's names and forms. Each transformation sees only the
leaves of its group (the others are empty :class:`gradxform.MaskedNode` s), through
:func:`gradxform.wrappers.masking.update_selected`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax

from gradxform import _masks, _validate
from gradxform._base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    as_transformation,
    expect_state,
    extra_args_filter,
)
from gradxform._types import Labels, Mask
from gradxform.transforms.scaling import set_to_zero
from gradxform.wrappers.masking import update_selected


class MultiTransformState(NamedTuple):
    """``inner_states``: ``{label: state}``, each over the leaves carrying that label.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.multi_transform({"a": gx.adam(0.1), "s": gx.sgd(0.1)}, {"w": "a", "b": "s"})
      >>> state = opt.init({"w": jnp.ones(2), "b": jnp.ones(2)})
      >>> type(state).__name__, sorted(state.inner_states), gx.PartitionState is type(state)
      ('MultiTransformState', ['a', 's'], True)
    """

    inner_states: dict


# Optax's name for the same state (its ``MultiTransformState`` is an alias of it).
PartitionState = MultiTransformState


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
            new_leaves, new_states[name] = update_selected(
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

    return GradientTransformationExtraArgs(init_fn, update_fn)


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

    Example:
      As Optax's, ``"unused"`` may label no leaf:

      >>> import jax.numpy as jnp, gradxform as gx
      >>> groups = {"train": gx.sgd(0.5), "frozen": gx.set_to_zero(), "unused": gx.adam(0.1)}
      >>> opt = gx.partition(groups, {"w": "train", "b": "frozen"})
      >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> updates, _ = opt.update(params, opt.init(params), params)
      >>> updates["w"].tolist(), updates["b"].tolist()  # -lr * g, and zero
      ([-0.5, -0.5], [0.0, 0.0])
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

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.selective_transform(gx.sgd(0.5), freeze_mask={"w": False, "b": True})
      >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> updates, _ = opt.update(params, opt.init(params), params)
      >>> updates["w"].tolist(), updates["b"].tolist()  # -lr * g, and "b" frozen
      ([-0.5, -0.5], [0.0, 0.0])
    """
    who = "selective_transform"
    optimizer = as_transformation(optimizer, f"{who}: `optimizer`")
    _validate.mask(who, "freeze_mask", freeze_mask)
    labels = jax.tree.map(lambda frozen: "freeze" if frozen else "train", freeze_mask)
    return _multi_transform(
        who, {"train": optimizer, "freeze": set_to_zero()}, labels, allow_unused=True
    )
