"""Constant, polynomial and piecewise schedules: ``constant_schedule``, ``polynomial_schedule``,
``linear_schedule``, ``piecewise_constant_schedule``, ``piecewise_interpolate_schedule``,
``warmup_constant_schedule``."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradxform import _validate
from gradxform._types import Schedule
from gradxform.schedules._common import (
    broadcast,
    floating,
    interpolate,
    is_static_one,
    scales_by_boundary,
    steps,
    to_power,
)
from gradxform.schedules._counts import as_count, below, past, until

__all__ = [
    "constant_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "warmup_constant_schedule",
]


def constant_schedule(value: ArrayLike) -> Schedule:
    """The same value at every step: ``s(k) = value``.

    Args:
      value: the value (a finite scalar).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> float(gx.constant_schedule(0.5)(1000))
      0.5
    """
    _validate.finite("constant_schedule", "value", value)

    def schedule(count: ArrayLike) -> jax.Array:
        return broadcast(value, as_count(count))

    return schedule


def build_polynomial(
    init_value: ArrayLike,
    end_value: ArrayLike,
    exponent: ArrayLike,
    transition_steps: int,
    transition_begin: int,
) -> Schedule:
    """The polynomial transition of :func:`polynomial_schedule`, arguments already checked."""

    def schedule(count: ArrayLike) -> jax.Array:
        k, length = as_count(count), float(transition_steps)
        end_step = transition_begin + transition_steps
        remaining = jnp.clip(until(end_step, k), 0, length) / length
        init, end = floating(init_value), floating(end_value)
        if is_static_one(exponent):
            done = jnp.clip(past(k, transition_begin), 0, length) / length
            return interpolate(init, end, done, remaining, cosine=False)
        return (init - end) * to_power(remaining, exponent) + end

    return schedule


def polynomial_schedule(
    init_value: ArrayLike,
    end_value: ArrayLike,
    power: ArrayLike,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """A polynomial transition from ``init_value`` to ``end_value``.

    ::

        t = clip(k - transition_begin, 0, transition_steps)
        s(k) = (init_value - end_value) * (1 - t / transition_steps) ** power + end_value

    With ``end_value=0`` this is ``torch.optim.lr_scheduler.PolynomialLR(total_iters=
    transition_steps, power=power)``; it is also Keras' ``PolynomialDecay`` (``cycle=False``).

    Args:
      init_value: the value until ``transition_begin``.
      end_value: the value from ``transition_begin + transition_steps`` on.
      power: the power of the polynomial (> 0).
      transition_steps: the length of the transition (a whole number in [1, 2**53]).
      transition_begin: the steps before the transition starts (in [0, 2**53]).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.polynomial_schedule(1.0, 0.0, power=2, transition_steps=4)
      >>> [float(sched(k)) for k in range(6)]
      [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    who = "polynomial_schedule"
    _validate.finite(who, "init_value", init_value)
    _validate.finite(who, "end_value", end_value)
    _validate.positive(who, "power", power)
    return build_polynomial(
        init_value,
        end_value,
        power,
        steps(who, "transition_steps", transition_steps),
        steps(who, "transition_begin", transition_begin, minimum=0),
    )


def linear_schedule(
    init_value: ArrayLike,
    end_value: ArrayLike,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """A linear transition from ``init_value`` to ``end_value``.

    ::

        t = clip(k - transition_begin, 0, transition_steps)
        s(k) = init_value + (end_value - init_value) * t / transition_steps

    ``torch.optim.lr_scheduler.LinearLR(start_factor, end_factor, total_iters)`` with base
    learning rate ``lr`` is ``linear_schedule(lr * start_factor, lr * end_factor, total_iters)``.

    Args:
      init_value: the value until ``transition_begin``.
      end_value: the value from ``transition_begin + transition_steps`` on.
      transition_steps: the length of the transition (a whole number in [1, 2**53]).
      transition_begin: the steps before the transition starts (in [0, 2**53]).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.linear_schedule(0.0, 1.0, transition_steps=4, transition_begin=1)
      >>> [float(sched(k)) for k in range(7)]
      [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    who = "linear_schedule"
    _validate.finite(who, "init_value", init_value)
    _validate.finite(who, "end_value", end_value)
    return build_polynomial(
        init_value,
        end_value,
        1,
        steps(who, "transition_steps", transition_steps),
        steps(who, "transition_begin", transition_begin, minimum=0),
    )


def warmup_constant_schedule(
    init_value: ArrayLike, peak_value: ArrayLike, warmup_steps: int
) -> Schedule:
    """A linear warmup from ``init_value`` to ``peak_value``, then ``peak_value`` for good.

    ::

        s(k) = init_value + (peak_value - init_value) * min(k, warmup_steps) / warmup_steps
        s(k) = init_value                                  for warmup_steps = 0

    Optax's ``warmup_constant_schedule``: :func:`linear_schedule` over ``warmup_steps``; as
    in Optax, ``warmup_steps=0`` disables the warmup and holds ``init_value`` at every step
    (not ``peak_value``). A negative ``warmup_steps`` raises (Optax treats it as 0).

    Args:
      init_value: the value at step 0.
      peak_value: the value from ``warmup_steps`` on.
      warmup_steps: the length of the warmup (a whole number in [0, 2**53]).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> [float(gx.warmup_constant_schedule(0.0, 1.0, 2)(k)) for k in range(4)]
      [0.0, 0.5, 1.0, 1.0]
      >>> [float(gx.warmup_constant_schedule(0.5, 1.0, 0)(k)) for k in range(2)]
      [0.5, 0.5]
    """
    who = "warmup_constant_schedule"
    _validate.finite(who, "init_value", init_value)
    _validate.finite(who, "peak_value", peak_value)
    length = steps(who, "warmup_steps", warmup_steps, minimum=0)
    if length == 0:
        return constant_schedule(init_value)
    return build_polynomial(init_value, peak_value, 1, length, 0)


def piecewise_constant_schedule(
    init_value: ArrayLike, boundaries_and_scales: Mapping[int, ArrayLike] | None = None
) -> Schedule:
    """A value multiplied by a factor at each boundary.

    ::

        s(k) = init_value * prod(scale for boundary, scale in boundaries_and_scales
                                 if k >= boundary)

    ``torch.optim.lr_scheduler.MultiStepLR(milestones, gamma)`` is
    ``piecewise_constant_schedule(lr, {m: gamma for m in milestones})``.

    Args:
      init_value: the value before the first boundary.
      boundaries_and_scales: ``{step: scale}``; from ``step`` on the value is multiplied by
        ``scale`` (steps in [0, 2**53], scales finite and >= 0).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.piecewise_constant_schedule(1.0, {2: 0.5, 4: 0.5})
      >>> [float(sched(k)) for k in range(6)]
      [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """
    who = "piecewise_constant_schedule"
    _validate.finite(who, "init_value", init_value)
    items = scales_by_boundary(who, boundaries_and_scales)

    def schedule(count: ArrayLike) -> jax.Array:
        k = as_count(count)
        value = broadcast(init_value, k)
        for boundary, scale in items:
            value = jnp.where(below(k, boundary), value, value * floating(scale))
        return value

    return schedule


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: ArrayLike,
    boundaries_and_scales: Mapping[int, ArrayLike] | None = None,
) -> Schedule:
    """Linear or cosine interpolation between values that change by a factor at each boundary.

    With boundaries ``b_1 < ... < b_n``, ``b_0 = 0``, values ``v_0 = init_value`` and
    ``v_i = v_{i-1} * scale_i``, for ``b_i <= k < b_{i+1}`` and ``f = (k - b_i) / (b_{i+1} -
    b_i)``::

        linear:  s(k) = v_i + (v_{i+1} - v_i) * f
        cosine:  s(k) = v_{i+1} + (v_i - v_{i+1}) * (1 + cos(pi * f)) / 2

    and ``s(k) = v_n`` from ``b_n`` on. The same semantics as Optax's function of that name.

    Args:
      interpolate_type: ``"linear"`` or ``"cosine"``.
      init_value: the value at ``k = 0``.
      boundaries_and_scales: ``{step: scale}``: the value reached at ``step`` is the previous
        one times ``scale`` (steps in [0, 2**53], scales finite and >= 0).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.piecewise_interpolate_schedule("linear", 1.0, {4: 0.5, 8: 0.0})
      >>> [float(sched(k)) for k in (0, 2, 4, 6, 8, 9)]
      [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    who = "piecewise_interpolate_schedule"
    _validate.choice(who, "interpolate_type", interpolate_type, ("linear", "cosine"))
    _validate.finite(who, "init_value", init_value)
    items = scales_by_boundary(who, boundaries_and_scales)
    bounds = [0] + [step for step, _ in items]
    cosine = interpolate_type == "cosine"

    def schedule(count: ArrayLike) -> jax.Array:
        k = as_count(count)
        values = [floating(init_value)]
        for _, scale in items:
            values.append(values[-1] * floating(scale))
        result = broadcast(values[-1], k)
        for i in reversed(range(len(items))):
            start, end = bounds[i], bounds[i + 1]
            length = float(max(end - start, 1))
            done, remaining = past(k, start) / length, until(end, k) / length
            segment = interpolate(values[i], values[i + 1], done, remaining, cosine)
            result = jnp.where(below(k, end), segment, result)
        return result

    return schedule
