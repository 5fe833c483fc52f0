"""Transformations applied on some steps only: Optax's ``conditionally_transform`` and
``conditionally_mask``.

Both are branch-free: the inner update is computed on every call and kept only where the
condition holds (``jnp.where``), for the reasons :class:`gradxform.MultiSteps` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _tree, _validate
from gradxform._base import (
    GradientTransformation,
    as_transformation,
    expect_state,
    extra_args_filter,
)


class ConditionallyTransformState(NamedTuple):
    """``inner_state``: the inner transformation's state; ``step``: calls so far (int32)."""

    inner_state: Any
    step: jax.Array


class ConditionallyMaskState(NamedTuple):
    """``step``: calls so far (int32); ``inner_state``: the inner transformation's state."""

    step: jax.Array
    inner_state: Any


def _conditional(who, inner, should_transform_fn, forward_extra_args, on_reject):
    inner = as_transformation(inner, f"{who}: `inner`")
    keep_extra = extra_args_filter(inner.update)
    _validate.function(who, "should_transform_fn", should_transform_fn)
    _validate.boolean(who, "forward_extra_args", forward_extra_args)

    def update(updates, inner_state, step, params, extra_args):
        condition = should_transform_fn(step, **(extra_args if forward_extra_args else {}))
        condition = jnp.asarray(condition)
        if condition.shape != () or condition.dtype != jnp.bool_:
            raise ValueError(
                f"{who}: `should_transform_fn` must return a scalar bool, got dtype "
                f"{condition.dtype} and shape {condition.shape}"
            )
        new_updates, new_state = inner.update(
            updates, inner_state, params, **keep_extra(extra_args)
        )
        out = jax.tree.map(
            lambda new, old: jnp.where(condition, new, on_reject(old)), new_updates, updates
        )
        kept = jax.tree.map(lambda new, old: jnp.where(condition, new, old), new_state, inner_state)
        return out, kept, _tree.safe_increment(step)

    return inner, update


def conditionally_transform(
    inner: GradientTransformation,
    should_transform_fn: Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformation:
    """Applies ``inner`` on the steps ``should_transform_fn`` selects; passes updates through
    unchanged on the others (Optax's).

    With ``t`` the number of earlier calls::

        u, s <- inner(u, s)   if should_transform_fn(t)   else   u, s

    Args:
      inner: the transformation.
      should_transform_fn: ``f(step, **extra_args) -> bool`` (a scalar bool array).
      forward_extra_args: pass the update's extra keyword arguments to ``should_transform_fn``.

    Returns:
      A transformation whose state is :class:`ConditionallyTransformState`.
    """
    who = "conditionally_transform"
    inner, update = _conditional(
        who, inner, should_transform_fn, forward_extra_args, on_reject=lambda u: u
    )

    def init_fn(params):
        return ConditionallyTransformState(inner.init(params), jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, ConditionallyTransformState)
        out, inner_state, step = update(updates, state.inner_state, state.step, params, extra_args)
        return out, ConditionallyTransformState(inner_state, step)

    return GradientTransformation(init_fn, update_fn)


def conditionally_mask(
    inner: GradientTransformation,
    should_transform_fn: Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformation:
    """Applies ``inner`` on the steps ``should_transform_fn`` selects; returns zero updates on
    the others (Optax's).

    With ``t`` the number of earlier calls::

        u, s <- inner(u, s)   if should_transform_fn(t)   else   0, s

    Args:
      inner: the transformation.
      should_transform_fn: ``f(step, **extra_args) -> bool`` (a scalar bool array).
      forward_extra_args: pass the update's extra keyword arguments to ``should_transform_fn``.

    Returns:
      A transformation whose state is :class:`ConditionallyMaskState`.
    """
    who = "conditionally_mask"
    inner, update = _conditional(
        who, inner, should_transform_fn, forward_extra_args, on_reject=jnp.zeros_like
    )

    def init_fn(params):
        return ConditionallyMaskState(jnp.zeros([], jnp.int32), inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, ConditionallyMaskState)
        out, inner_state, step = update(updates, state.inner_state, state.step, params, extra_args)
        return out, ConditionallyMaskState(step, inner_state)

    return GradientTransformation(init_fn, update_fn)


def incremental_update(new_tensors: Any, old_tensors: Any, step_size: Any) -> Any:
    """Polyak averaging of a target tree (Optax's): ``step_size * new + (1 - step_size) * old``.

    Args:
      new_tensors: the latest tree (e.g. the online network's params).
      old_tensors: the tree being averaged (e.g. a target network's params).
      step_size: the weight of the new tree, in [0, 1].

    Returns:
      The new average, leaf by leaf.
    """
    return jax.tree.map(
        lambda new, old: step_size * new + (1.0 - step_size) * old, new_tensors, old_tensors
    )


def periodic_update(new_tensors: Any, old_tensors: Any, steps: Any, update_period: Any) -> Any:
    """A target tree refreshed every ``update_period`` steps (Optax's).

    ``new_tensors`` where ``steps mod update_period == 0``, else ``old_tensors``.

    Args:
      new_tensors: the latest tree.
      old_tensors: the current target tree.
      steps: the step count.
      update_period: the refresh period.

    Returns:
      The target tree for this step.
    """
    refresh = jnp.mod(steps, update_period) == 0
    return jax.tree.map(lambda new, old: jnp.where(refresh, new, old), new_tensors, old_tensors)
