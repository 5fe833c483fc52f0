"""Multiplying updates by a constant, a learning rate, or a schedule of the step count, or
replacing them by zeros."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import EmptyState, GradientTransformation, expect_state
from gradxform._types import ScalarOrSchedule, Schedule


def _scaled(factor: Any, updates: Any) -> Any:
    """``factor * u`` leaf by leaf, in the compute dtype (at least float32)."""

    def leaf(u):
        dtype = _tree.compute_dtype(u.dtype)
        return _tree.cast_scalar(factor, dtype) * u.astype(dtype)

    return jax.tree.map(leaf, updates)


class ScaleByScheduleState(NamedTuple):
    """``count``: how many updates have been made (int32)."""

    count: jax.Array


def scale(step_size: float | jax.Array) -> GradientTransformation:
    """Multiplies updates by a constant: ``u <- step_size * u``.

    Like every transformation, it computes in at least float32: bf16 or float16 updates come
    out as float32, and ``apply_updates`` rounds each parameter once.

    Args:
      step_size: the factor (any sign).

    Returns:
      A stateless transformation.
    """
    _validate.finite("scale", "step_size", step_size)

    def init_fn(params):
        _tree.check_inexact_leaves(params, "scale")
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params("scale", updates, params)
        return _scaled(step_size, updates), state

    return GradientTransformation(init_fn, update_fn)


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiplies updates by a schedule of the step count: ``u <- s(k) * u``.

    ``k`` counts the updates made before this one (0 for the first update).

    Args:
      step_size_fn: a function of the int32 count returning a scalar.

    Returns:
      A transformation whose state is :class:`ScaleByScheduleState`.
    """
    who = "scale_by_schedule"
    _validate.function(who, "step_size_fn", step_size_fn)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, ScaleByScheduleState)
        _checks.check_against_params(who, updates, params)
        step_size = step_size_fn(state.count)
        if jnp.shape(step_size) != ():
            raise ValueError(
                f"{who}: the schedule must return a scalar, got shape {jnp.shape(step_size)} "
                f"at count {state.count!r}; a schedule is never broadcast against the updates"
            )
        updates = _scaled(step_size, updates)
        return updates, ScaleByScheduleState(count=_tree.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """Scales updates by the learning rate, for descent: ``u <- -lr * u``.

    Args:
      learning_rate: a non-negative number, or a schedule ``k -> lr`` of the step count.
      flip_sign: negate, so that adding the update descends (the default).

    Returns:
      :func:`scale` for a number, :func:`scale_by_schedule` for a schedule.
    """
    who = "scale_by_learning_rate"
    _validate.learning_rate(who, learning_rate)
    _validate.boolean(who, "flip_sign", flip_sign)
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)


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
        del extra_args
        _checks.check_against_params("set_to_zero", updates, params)
        return jax.tree.map(jnp.zeros_like, updates), state

    return GradientTransformation(init_fn, update_fn)
