"""Schedules: a hyperparameter's value as a pure function of the update count.

A schedule maps ``k``, the number of updates made so far (0 for the first update; an int32
array or a Python int), to the value used for update ``k + 1``. For a learning rate this is
the number ``torch.optim`` holds in ``param_groups[0]["lr"]`` after ``k`` calls to
``scheduler.step()``, and the number Keras computes from ``optimizer.iterations == k``.

Every schedule here:

* is elementwise in ``k`` (an array of counts gives an array of values) and has no Python
  branching on ``k``, so it traces once under ``jit`` and maps under ``vmap``;
* computes in the default float dtype (float32, or float64 under ``jax_enable_x64``);
* takes its step arguments (``transition_steps``, boundaries, ...) as static integers, checked
  when the schedule is built, while value arguments (``init_value``, ``decay_rate``, ...) may
  also be arrays, for instance to ``vmap`` over a batch of initial values.

Names and signatures follow Optax where Optax has the schedule; the numbers follow
``torch.optim.lr_scheduler`` where a PyTorch scheduler exists (OneCycleLR's phase boundaries,
CosineAnnealingWarmRestarts, CyclicLR, SequentialLR).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gradxform import _tree, _validate
from gradxform._types import Schedule

__all__ = [
    "constant_schedule",
    "cosine_annealing_warm_restarts",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cyclic_schedule",
    "exponential_decay",
    "inverse_time_decay",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]

_INT32_MAX = int(np.iinfo(np.int32).max)


# ----------------------------------------------------------------------------------------------
# Validation and numerics shared by the schedules.


def _steps(who: str, name: str, value: Any, *, minimum: int = 1) -> int:
    """Checks a step argument: an integer (an integral float such as ``1e4`` is accepted)."""
    if not (_validate.is_static_number(value) and float(value).is_integer()):
        raise TypeError(f"{who}: `{name}` must be a whole number of steps, got {value!r}")
    steps = int(value)
    if steps < minimum:
        requirement = "> 0" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{who}: `{name}` must be {requirement}, got {value!r}")
    return steps


def _boundaries_and_scales(who: str, boundaries_and_scales: Any) -> list[tuple[int, Any]]:
    """Checks a ``{step: scale}`` mapping; returns its items sorted by step."""
    if boundaries_and_scales is None:
        return []
    if not isinstance(boundaries_and_scales, Mapping):
        raise TypeError(
            f"{who}: `boundaries_and_scales` must be a dict {{step: scale}}, "
            f"got {boundaries_and_scales!r}"
        )
    items = []
    for boundary, scale in boundaries_and_scales.items():
        step = _steps(who, "boundaries_and_scales", boundary, minimum=0)
        _validate.non_negative(who, f"boundaries_and_scales[{boundary!r}]", scale)
        items.append((step, scale))
    return sorted(items, key=lambda item: item[0])


def _open_fraction(who: str, name: str, value: Any) -> float:
    """Checks a static number in the open interval (0, 1)."""
    if not _validate.is_static_number(value):
        raise TypeError(f"{who}: `{name}` must be a number in (0, 1), got {value!r}")
    if not 0 < float(value) < 1:
        raise ValueError(f"{who}: `{name}` must be in (0, 1), got {value!r}")
    return float(value)


def _float(x: ArrayLike) -> jax.Array:
    """``x`` in the default float dtype, read when the schedule is called (so under x64 too)."""
    return jnp.asarray(x, _tree.default_float_dtype())


def _broadcast(value: ArrayLike, count: jax.Array) -> jax.Array:
    """``value`` broadcast against the shape of ``count``, in the default float dtype."""
    return _float(value) + jnp.zeros(jnp.shape(count), _tree.default_float_dtype())


def _is_static_one(value: Any) -> bool:
    return _validate.is_static_number(value) and float(value) == 1.0


def _power(base: jax.Array, exponent: Any) -> jax.Array:
    """``base ** exponent``, exact (no pow call) when the exponent is statically 1."""
    return base if _is_static_one(exponent) else base ** _float(exponent)


def _static_log(value: Any) -> float | None:
    """``log(value)`` in float64, now, when ``value`` is a static positive number.

    A schedule raises its rate to the power ``k`` through ``exp(k * log(rate))``. Rounding a
    rate such as 0.9999 to float32 first would make ``rate ** k`` drift by ``k`` times that
    rounding error (up to 3e-3 relative after 1e5 steps); rounding its logarithm instead keeps
    the error at a few float32 ulps of ``k * log(rate)``.
    """
    if _validate.is_static_number(value) and float(value) > 0:
        return math.log(float(value))
    return None


def _rate_power(rate: Any, log_rate: float | None, exponent: jax.Array) -> jax.Array:
    """``rate ** exponent`` as ``exp(exponent * log(rate))``, with ``log_rate`` from above."""
    log = jnp.log(_float(rate)) if log_rate is None else _float(log_rate)
    return jnp.exp(exponent * log)


def _interpolate(
    first: jax.Array, last: jax.Array, done: jax.Array, remaining: jax.Array, cosine: bool
) -> jax.Array:
    """From ``first`` to ``last``, ``done`` of the way there (``done + remaining == 1``).

    Written as a weighted sum, ``first * w(remaining) + last * w(done)``, rather than as
    ``first + (last - first) * done``: between values of the same sign each term keeps its
    relative precision, so a one-cycle warmup from ``peak / 25`` or a decay to ``peak / 1e5``
    is exact to a few ulps at both ends, where the difference form loses up to
    ``peak / value`` ulps. ``done`` and ``remaining`` are computed separately from integers.
    """
    if cosine:
        return first * _cosine_weight(remaining, 1.0) + last * _cosine_weight(done, 1.0)
    return first * remaining + last * done


def _cosine_weight(remaining: jax.Array, length: ArrayLike) -> jax.Array:
    """The weight of the start value in a cosine anneal that has ``remaining`` of ``length``
    steps to go: ``(1 + cos(pi * (1 - remaining / length))) / 2``.

    It is computed as ``sin(pi/2 * remaining / length) ** 2``, the same number, which keeps
    its relative precision as it goes to 0 at the end of the anneal, where ``1 + cos(.)``
    cancels (over a 300-step anneal in float32: at most 3e-7 relative error this way, 1.4e-4
    the other).
    """
    return jnp.sin((jnp.pi / 2) * (remaining / length)) ** 2


def _join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    def schedule(count: ArrayLike) -> jax.Array:
        k = jnp.asarray(count)
        value = _broadcast(schedules[0](k), k)
        for boundary, later in zip(boundaries, schedules[1:], strict=True):
            value = jnp.where(k < boundary, value, _float(later(k - boundary)))
        return value

    return schedule


# ----------------------------------------------------------------------------------------------
# Constant, polynomial and exponential schedules.


def constant_schedule(value: ArrayLike) -> Schedule:
    """The same value at every step: ``s(k) = value``.

    Args:
      value: the value.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> float(gx.constant_schedule(0.5)(1000))
      0.5
    """

    def schedule(count: ArrayLike) -> jax.Array:
        return _broadcast(value, jnp.asarray(count))

    return schedule


def _polynomial(who, init_value, end_value, power, transition_steps, transition_begin):
    transition_steps = _steps(who, "transition_steps", transition_steps)
    transition_begin = _steps(who, "transition_begin", transition_begin, minimum=0)

    def schedule(count: ArrayLike) -> jax.Array:
        k = jnp.asarray(count)
        remaining = transition_steps - jnp.clip(k - transition_begin, 0, transition_steps)
        fraction = _float(remaining) / transition_steps
        init, end = _float(init_value), _float(end_value)
        if _is_static_one(power):
            done = _float(transition_steps - remaining) / transition_steps
            return _interpolate(init, end, done, fraction, cosine=False)
        return (init - end) * _power(fraction, power) + end

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
      transition_steps: the length of the transition (> 0).
      transition_begin: the steps before the transition starts (>= 0).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.polynomial_schedule(1.0, 0.0, power=2, transition_steps=4)
      >>> [float(sched(k)) for k in range(6)]
      [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    who = "polynomial_schedule"
    _validate.positive(who, "power", power)
    return _polynomial(who, init_value, end_value, power, transition_steps, transition_begin)


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
      transition_steps: the length of the transition (> 0).
      transition_begin: the steps before the transition starts (>= 0).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.linear_schedule(0.0, 1.0, transition_steps=4, transition_begin=1)
      >>> [float(sched(k)) for k in range(7)]
      [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    return _polynomial(
        "linear_schedule", init_value, end_value, 1, transition_steps, transition_begin
    )


def _exponential(
    who, init_value, transition_steps, decay_rate, transition_begin, staircase, end_value
):
    transition_steps = _steps(who, "transition_steps", transition_steps)
    transition_begin = _steps(who, "transition_begin", transition_begin, minimum=0)
    _validate.positive(who, "decay_rate", decay_rate)
    log_rate = _static_log(decay_rate)

    def schedule(count: ArrayLike) -> jax.Array:
        elapsed = jnp.maximum(jnp.asarray(count) - transition_begin, 0)
        if staircase:
            exponent = _float(elapsed // transition_steps)
        else:
            exponent = _float(elapsed) / transition_steps
        value = _float(init_value) * _rate_power(decay_rate, log_rate, exponent)
        if end_value is not None:
            end = _float(end_value)
            decaying = _float(decay_rate) < 1
            value = jnp.where(decaying, jnp.maximum(value, end), jnp.minimum(value, end))
        return value

    return schedule


def exponential_decay(
    init_value: ArrayLike,
    transition_steps: int,
    decay_rate: ArrayLike,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: ArrayLike | None = None,
) -> Schedule:
    """Exponential decay (or growth) of ``init_value``.

    ::

        t = max(k - transition_begin, 0)
        p = floor(t / transition_steps) if staircase else t / transition_steps
        s(k) = init_value * decay_rate ** p,  then clipped at end_value

    ``end_value`` is a floor when ``decay_rate < 1`` and a ceiling when it is > 1.
    ``torch.optim.lr_scheduler.StepLR(step_size, gamma)`` is
    ``exponential_decay(lr, step_size, gamma, staircase=True)``, ``ExponentialLR(gamma)`` is
    ``exponential_decay(lr, 1, gamma)``, and Keras' ``ExponentialDecay`` has the same formula.

    Args:
      init_value: the value until ``transition_begin``.
      transition_steps: the steps over which the value is multiplied by ``decay_rate`` (> 0).
      decay_rate: the factor per ``transition_steps`` (> 0).
      transition_begin: the steps before the decay starts (>= 0).
      staircase: decay in whole steps of ``transition_steps`` (an integer ``p``).
      end_value: optional bound where the decay (or growth) stops.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.exponential_decay(1.0, transition_steps=2, decay_rate=0.5, staircase=True)
      >>> [float(sched(k)) for k in range(6)]
      [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """
    return _exponential(
        "exponential_decay",
        init_value,
        transition_steps,
        decay_rate,
        transition_begin,
        staircase,
        end_value,
    )


def inverse_time_decay(
    init_value: ArrayLike,
    decay_rate: ArrayLike,
    decay_steps: int = 1,
    staircase: bool = False,
) -> Schedule:
    """Inverse time decay, as Keras' ``InverseTimeDecay``.

    ::

        p = floor(k / decay_steps) if staircase else k / decay_steps
        s(k) = init_value / (1 + decay_rate * p)

    Note the argument order: Keras takes ``(initial_learning_rate, decay_steps, decay_rate)``.

    Args:
      init_value: the value at ``k = 0``.
      decay_rate: how fast the value falls (>= 0).
      decay_steps: the unit of ``k`` in the formula (> 0).
      staircase: use whole multiples of ``decay_steps``.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.inverse_time_decay(1.0, decay_rate=1.0, decay_steps=2)
      >>> [float(sched(k)) for k in (0, 2, 6)]
      [1.0, 0.5, 0.25]
    """
    who = "inverse_time_decay"
    _validate.non_negative(who, "decay_rate", decay_rate)
    decay_steps = _steps(who, "decay_steps", decay_steps)

    def schedule(count: ArrayLike) -> jax.Array:
        k = jnp.asarray(count)
        p = _float(k // decay_steps) if staircase else _float(k) / decay_steps
        return _float(init_value) / (1 + _float(decay_rate) * p)

    return schedule


# ----------------------------------------------------------------------------------------------
# Piecewise schedules.


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
        ``scale`` (steps >= 0, scales >= 0).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.piecewise_constant_schedule(1.0, {2: 0.5, 4: 0.5})
      >>> [float(sched(k)) for k in range(6)]
      [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """
    items = _boundaries_and_scales("piecewise_constant_schedule", boundaries_and_scales)

    def schedule(count: ArrayLike) -> jax.Array:
        k = jnp.asarray(count)
        value = _broadcast(init_value, k)
        for boundary, scale in items:
            value = jnp.where(k >= boundary, value * _float(scale), value)
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
        one times ``scale`` (steps >= 0, scales >= 0).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.piecewise_interpolate_schedule("linear", 1.0, {4: 0.5, 8: 0.0})
      >>> [float(sched(k)) for k in (0, 2, 4, 6, 8, 9)]
      [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    who = "piecewise_interpolate_schedule"
    if interpolate_type not in ("linear", "cosine"):
        raise ValueError(
            f"{who}: `interpolate_type` must be 'linear' or 'cosine', got {interpolate_type!r}"
        )
    items = _boundaries_and_scales(who, boundaries_and_scales)
    bounds = [0] + [step for step, _ in items]

    def schedule(count: ArrayLike) -> jax.Array:
        k = jnp.asarray(count)
        values = [_float(init_value)]
        for _, scale in items:
            values.append(values[-1] * _float(scale))
        result = _broadcast(values[-1], k)
        for i in reversed(range(len(items))):
            start, end = bounds[i], bounds[i + 1]
            length = max(end - start, 1)
            done, remaining = _float(k - start) / length, _float(end - k) / length
            cosine = interpolate_type == "cosine"
            segment = _interpolate(values[i], values[i + 1], done, remaining, cosine)
            result = jnp.where(k < end, segment, result)
        return result

    return schedule


# ----------------------------------------------------------------------------------------------
# Cosine schedules.


def _cosine_decay(who, init_value, end_value, decay_steps, exponent):
    """``end + (init - end) * w(k) ** exponent``, ``w`` the cosine weight over decay_steps."""
    decay_steps = _steps(who, "decay_steps", decay_steps)
    _validate.positive(who, "exponent", exponent)

    def schedule(count: ArrayLike) -> jax.Array:
        remaining = decay_steps - jnp.clip(jnp.asarray(count), 0, decay_steps)
        weight = _power(_cosine_weight(_float(remaining), decay_steps), exponent)
        init, end = _float(init_value), _float(end_value)
        return end + (init - end) * weight

    return schedule


def cosine_decay_schedule(
    init_value: ArrayLike, decay_steps: int, alpha: ArrayLike = 0.0, exponent: ArrayLike = 1.0
) -> Schedule:
    """Cosine decay from ``init_value`` to ``alpha * init_value`` over ``decay_steps``.

    ::

        t = min(k, decay_steps)
        w = (1 + cos(pi * t / decay_steps)) / 2
        s(k) = init_value * (alpha + (1 - alpha) * w ** exponent)

    ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max, eta_min)`` is
    ``cosine_decay_schedule(lr, T_max, alpha=eta_min / lr)`` for ``k <= T_max``; past
    ``T_max`` this schedule stays at ``alpha * init_value``, where torch's cosine climbs back
    up. Keras' ``CosineDecay`` without warmup is the same formula.

    Args:
      init_value: the value at ``k = 0``.
      decay_steps: the length of the decay (> 0).
      alpha: the final value as a fraction of ``init_value``.
      exponent: the power of the cosine factor (> 0).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.cosine_decay_schedule(1.0, decay_steps=4, alpha=0.2)
      >>> [round(float(sched(k)), 4) for k in (0, 2, 4, 100)]
      [1.0, 0.6, 0.2, 0.2]
    """
    who = "cosine_decay_schedule"
    decay_steps = _steps(who, "decay_steps", decay_steps)
    _validate.positive(who, "exponent", exponent)

    def schedule(count: ArrayLike) -> jax.Array:
        remaining = decay_steps - jnp.clip(jnp.asarray(count), 0, decay_steps)
        weight = _power(_cosine_weight(_float(remaining), decay_steps), exponent)
        floor = _float(alpha)
        return _float(init_value) * (floor + (1 - floor) * weight)

    return schedule


def warmup_cosine_decay_schedule(
    init_value: ArrayLike,
    peak_value: ArrayLike,
    warmup_steps: int,
    decay_steps: int,
    end_value: ArrayLike = 0.0,
    exponent: ArrayLike = 1.0,
) -> Schedule:
    """A linear warmup from ``init_value`` to ``peak_value``, then a cosine decay to ``end_value``.

    ``decay_steps`` counts the warmup too (Optax's convention): the peak is reached at
    ``k = warmup_steps`` and ``end_value`` at ``k = decay_steps``::

        s(k) = init_value + (peak_value - init_value) * k / warmup_steps     for k < warmup_steps
        t = min(k - warmup_steps, L),  L = decay_steps - warmup_steps
        s(k) = end_value + (peak_value - end_value) * ((1 + cos(pi * t / L)) / 2) ** exponent

    Keras' ``CosineDecay(init, D, alpha, warmup_target=peak, warmup_steps=W)`` is
    ``warmup_cosine_decay_schedule(init, peak, W, W + D, end_value=alpha * peak)``.

    Args:
      init_value: the value at ``k = 0``.
      peak_value: the value at ``k = warmup_steps``.
      warmup_steps: the length of the warmup (>= 0).
      decay_steps: the length of warmup and decay together (> ``warmup_steps``).
      end_value: the value from ``k = decay_steps`` on.
      exponent: the power of the cosine factor (> 0).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=2, decay_steps=6)
      >>> [round(float(sched(k)), 4) for k in range(8)]
      [0.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 0.0, 0.0]
    """
    who = "warmup_cosine_decay_schedule"
    warmup_steps = _steps(who, "warmup_steps", warmup_steps, minimum=0)
    decay_steps = _steps(who, "decay_steps", decay_steps)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"{who}: `decay_steps` must be greater than `warmup_steps` ({warmup_steps}), since "
            f"it counts the warmup too; got {decay_steps!r}"
        )
    decay = _cosine_decay(who, peak_value, end_value, decay_steps - warmup_steps, exponent)
    if warmup_steps == 0:
        return decay
    warmup = _polynomial(who, init_value, peak_value, 1, warmup_steps, 0)
    return _join([warmup, decay], [warmup_steps])


def warmup_exponential_decay_schedule(
    init_value: ArrayLike,
    peak_value: ArrayLike,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: ArrayLike,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: ArrayLike | None = None,
) -> Schedule:
    """A linear warmup from ``init_value`` to ``peak_value``, then :func:`exponential_decay`.

    ::

        s(k) = init_value + (peak_value - init_value) * k / warmup_steps    for k < warmup_steps
        s(k) = exponential_decay(peak_value, transition_steps, decay_rate, transition_begin,
                                 staircase, end_value)(k - warmup_steps)     otherwise

    Args:
      init_value: the value at ``k = 0``.
      peak_value: the value at ``k = warmup_steps``.
      warmup_steps: the length of the warmup (>= 0).
      transition_steps: see :func:`exponential_decay` (> 0).
      decay_rate: see :func:`exponential_decay` (> 0).
      transition_begin: steps after the warmup before the decay starts (>= 0).
      staircase: see :func:`exponential_decay`.
      end_value: see :func:`exponential_decay`.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.warmup_exponential_decay_schedule(0.0, 1.0, 2, 1, decay_rate=0.5)
      >>> [float(sched(k)) for k in range(5)]
      [0.0, 0.5, 1.0, 0.5, 0.25]
    """
    who = "warmup_exponential_decay_schedule"
    warmup_steps = _steps(who, "warmup_steps", warmup_steps, minimum=0)
    decay = _exponential(
        who, peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value
    )
    if warmup_steps == 0:
        return decay
    warmup = _polynomial(who, init_value, peak_value, 1, warmup_steps, 0)
    return _join([warmup, decay], [warmup_steps])


def cosine_annealing_warm_restarts(
    init_value: ArrayLike, t_0: int, t_mult: int = 1, eta_min: ArrayLike = 0.0
) -> Schedule:
    """Cosine annealing with warm restarts (SGDR), as torch's ``CosineAnnealingWarmRestarts``.

    Cycle ``i`` (from 0) lasts ``T_i = t_0 * t_mult ** i`` steps. With ``t`` the steps since
    the last restart::

        s(k) = eta_min + (init_value - eta_min) * (1 + cos(pi * t / T_i)) / 2

    The cycle is found exactly, by searching the (at most 32) cycle starts below 2**31: the
    closed form ``i = floor(log(1 + k * (t_mult - 1) / t_0) / log(t_mult))`` lands one cycle
    early at some restart steps in floating point (e.g. ``k = 8191`` for ``t_0=1, t_mult=2``
    in float32).

    Keras' ``CosineDecayRestarts(init, first_decay_steps, t_mul, m_mul=1.0, alpha)`` with an
    integer ``t_mul`` is ``cosine_annealing_warm_restarts(init, first_decay_steps, t_mul,
    eta_min=alpha * init)``; see :func:`sgdr_schedule` for cycles with their own peaks.

    Args:
      init_value: the value at the start of every cycle (torch's base ``lr``).
      t_0: the length of the first cycle (> 0).
      t_mult: the growth factor of the cycle length, an integer >= 1.
      eta_min: the value the cosine anneals to.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.cosine_annealing_warm_restarts(1.0, t_0=2, t_mult=2)
      >>> [round(float(sched(k)), 4) for k in range(7)]
      [1.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 1.0]
    """
    who = "cosine_annealing_warm_restarts"
    t_0 = _steps(who, "t_0", t_0)
    t_mult = _steps(who, "t_mult", t_mult)
    starts, lengths = [0], [t_0]
    while t_mult > 1 and starts[-1] + lengths[-1] <= _INT32_MAX:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * t_mult)
    lengths_table = np.asarray(lengths, np.float64)

    def schedule(count: ArrayLike) -> jax.Array:
        k = jnp.asarray(count)
        if t_mult == 1:
            since_restart, length = k % t_0, t_0
        else:
            starts_table = jnp.asarray(starts, jnp.int32)
            cycle = jnp.maximum(jnp.searchsorted(starts_table, k, side="right") - 1, 0)
            since_restart = k - starts_table[cycle]
            length = _float(lengths_table)[cycle]
        weight = _cosine_weight(length - _float(since_restart), length)
        low = _float(eta_min)
        return low + (_float(init_value) - low) * weight

    return schedule


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
    """Warmup-cosine cycles one after the other (SGDR, Optax's ``sgdr_schedule``).

    Cycle ``i`` is ``warmup_cosine_decay_schedule(**cosine_kwargs[i])`` started at the sum of
    the earlier cycles' ``decay_steps`` (which, as there, include each cycle's warmup). Unlike
    :func:`cosine_annealing_warm_restarts`, every cycle has its own values and lengths.

    Args:
      cosine_kwargs: the keyword arguments of :func:`warmup_cosine_decay_schedule`, one dict
        per cycle; each must give ``decay_steps``.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=1, decay_steps=3)
      >>> sched = gx.sgdr_schedule([cycle, {**cycle, "peak_value": 0.5}])
      >>> [round(float(sched(k)), 4) for k in range(6)]
      [0.0, 1.0, 0.5, 0.0, 0.5, 0.25]
    """
    who = "sgdr_schedule"
    cycles = list(cosine_kwargs)
    if not cycles:
        raise ValueError(f"{who}: `cosine_kwargs` must give at least one cycle, got {cycles!r}")
    schedules, boundaries, step = [], [], 0
    for i, kwargs in enumerate(cycles):
        if not isinstance(kwargs, Mapping) or "decay_steps" not in kwargs:
            raise TypeError(
                f"{who}: cosine_kwargs[{i}] must be a dict of warmup_cosine_decay_schedule "
                f"arguments including `decay_steps`, got {kwargs!r}"
            )
        try:
            schedules.append(warmup_cosine_decay_schedule(**kwargs))
        except (TypeError, ValueError) as error:
            raise type(error)(f"{who}: cosine_kwargs[{i}]: {error}") from error
        step += int(kwargs["decay_steps"])
        boundaries.append(step)
    return _join(schedules, boundaries[:-1])


# ----------------------------------------------------------------------------------------------
# One-cycle and cyclic schedules.


def _onecycle(
    who, anneal, transition_steps, peak_value, pct_start, div_factor, final_div_factor, three_phase
):
    total = _steps(who, "transition_steps", transition_steps)
    pct_start = _open_fraction(who, "pct_start", pct_start)
    _validate.positive(who, "div_factor", div_factor)
    _validate.positive(who, "final_div_factor", final_div_factor)
    # Phase ends exactly as torch computes them, in float64; a phase covers the steps k with
    # previous end < k <= its end, and the last phase holds its final value from k = total - 1.
    warmup_end = float(pct_start * total) - 1
    if three_phase:
        ends = [warmup_end, float(2 * pct_start * total) - 2, total - 1]
        levels = ["initial", "peak", "initial", "minimum"]
    else:
        ends = [warmup_end, total - 1]
        levels = ["initial", "peak", "minimum"]
    starts = [0.0, *ends[:-1]]

    def schedule(count: ArrayLike) -> jax.Array:
        k = jnp.asarray(count)
        peak = _float(peak_value)
        initial = peak / _float(div_factor)
        value_of = {"initial": initial, "peak": peak, "minimum": initial / _float(final_div_factor)}
        result = None
        for i in reversed(range(len(ends))):
            start, end = starts[i], ends[i]
            first, last = value_of[levels[i]], value_of[levels[i + 1]]
            length = end - start
            if length > 0:
                done = jnp.clip((_float(k) - start) / length, 0, 1)
                remaining = jnp.clip((end - _float(k)) / length, 0, 1)
            else:  # an empty phase (pct_start * transition_steps <= 1): jump to its end value
                done, remaining = _broadcast(1.0, k), _broadcast(0.0, k)
            value = _interpolate(first, last, done, remaining, cosine=anneal == "cos")
            result = value if result is None else jnp.where(k <= math.floor(end), value, result)
        return result

    return schedule


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: ArrayLike,
    pct_start: float = 0.3,
    div_factor: ArrayLike = 25.0,
    final_div_factor: ArrayLike = 1e4,
    *,
    three_phase: bool = False,
) -> Schedule:
    """The one-cycle schedule with cosine anneals, as ``torch.optim.lr_scheduler.OneCycleLR``.

    With ``T = transition_steps``, ``initial = peak_value / div_factor`` and ``minimum =
    initial / final_div_factor``, and phase ends as torch places them::

        e_1 = pct_start * T - 1,  e_2 = T - 1
        k <= e_1:  anneal from initial to peak_value, fraction k / e_1
        k >  e_1:  anneal from peak_value to minimum, fraction (k - e_1) / (e_2 - e_1)
        anneal(a, b, f) = b + (a - b) * (1 + cos(pi * f)) / 2

    so the peak is the value for update ``pct_start * T`` and the minimum the value for update
    ``T``; from ``k = T - 1`` on the value stays at the minimum (torch raises past ``k = T``).
    ``three_phase=True`` is torch's ``three_phase``: up to the peak until ``e_1``, back down to
    ``initial`` until ``2 * pct_start * T - 2``, then down to the minimum until ``T - 1``.

    ``OneCycleLR(max_lr, total_steps, pct_start, anneal_strategy="cos", div_factor,
    final_div_factor, three_phase)`` is ``cosine_onecycle_schedule(total_steps, max_lr,
    pct_start, div_factor, final_div_factor, three_phase=three_phase)``. Optax's function of
    this name places its boundaries one step later (peak at ``k = int(pct_start * T)``, minimum
    at ``k = T``).

    Args:
      transition_steps: the total number of updates (torch's ``total_steps``, > 0).
      peak_value: the largest value (torch's ``max_lr``).
      pct_start: the fraction of the steps spent going up, in (0, 1).
      div_factor: ``initial = peak_value / div_factor`` (> 0).
      final_div_factor: ``minimum = initial / final_div_factor`` (> 0).
      three_phase: use torch's three-phase variant.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.cosine_onecycle_schedule(10, 1.0, pct_start=0.5, div_factor=10.0,
      ...                                     final_div_factor=1.0)
      >>> [round(float(sched(k)), 4) for k in (0, 2, 4, 9)]
      [0.1, 0.55, 1.0, 0.1]
    """
    return _onecycle(
        "cosine_onecycle_schedule",
        "cos",
        transition_steps,
        peak_value,
        pct_start,
        div_factor,
        final_div_factor,
        three_phase,
    )


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: ArrayLike,
    pct_start: float = 0.3,
    *,
    div_factor: ArrayLike = 25.0,
    final_div_factor: ArrayLike = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """The one-cycle schedule with linear anneals, as ``OneCycleLR(anneal_strategy="linear")``.

    The phases are those of :func:`cosine_onecycle_schedule`, with
    ``anneal(a, b, f) = a + (b - a) * f``.

    This differs from Optax's ``linear_onecycle_schedule``, which always has three phases
    (up until ``int(pct_start * T)``, back to ``initial`` until ``int(pct_final * T)``, down to
    the minimum until ``T``) and takes ``pct_final`` as its fourth positional argument: here
    every argument after ``pct_start`` is keyword-only, so an Optax-style call fails loudly.
    Optax's schedule is ``piecewise_interpolate_schedule("linear", peak / div_factor,
    {int(pct_start * T): div_factor, int(pct_final * T): 1 / div_factor, T: 1 /
    final_div_factor})``.

    Args:
      transition_steps: the total number of updates (torch's ``total_steps``, > 0).
      peak_value: the largest value (torch's ``max_lr``).
      pct_start: the fraction of the steps spent going up, in (0, 1).
      div_factor: ``initial = peak_value / div_factor`` (> 0).
      final_div_factor: ``minimum = initial / final_div_factor`` (> 0).
      three_phase: use torch's three-phase variant.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.linear_onecycle_schedule(10, 1.0, pct_start=0.5, div_factor=10.0,
      ...                                     final_div_factor=1.0)
      >>> [round(float(sched(k)), 4) for k in (0, 2, 4, 9)]
      [0.1, 0.55, 1.0, 0.1]
    """
    return _onecycle(
        "linear_onecycle_schedule",
        "linear",
        transition_steps,
        peak_value,
        pct_start,
        div_factor,
        final_div_factor,
        three_phase,
    )


_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def cyclic_schedule(
    base_value: ArrayLike,
    max_value: ArrayLike,
    step_size_up: int,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: ArrayLike = 1.0,
) -> Schedule:
    """Triangular cycles between ``base_value`` and ``max_value``, as torch's ``CyclicLR``.

    With ``up = step_size_up``, ``down = step_size_down`` (``up`` by default), ``c = k mod
    (up + down)`` and ``cycle = floor(k / (up + down)) + 1``::

        x = c / up  if c <= up  else  (up + down - c) / down
        s(k) = base_value + (max_value - base_value) * x * scale
        scale = 1 ("triangular"), 1 / 2 ** (cycle - 1) ("triangular2"), gamma ** k ("exp_range")

    ``CyclicLR(base_lr, max_lr, step_size_up, step_size_down, mode, gamma,
    cycle_momentum=False)`` is ``cyclic_schedule(base_lr, max_lr, step_size_up,
    step_size_down, mode, gamma)`` (momentum cycling is not a learning-rate schedule).

    Args:
      base_value: the value at the start of each cycle.
      max_value: the value at the top of the first cycle.
      step_size_up: the steps from base to top (> 0).
      step_size_down: the steps from top back to base (>= 0; ``step_size_up`` if ``None``).
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
      gamma: the factor per step in ``"exp_range"`` mode (> 0).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.cyclic_schedule(0.0, 1.0, step_size_up=2, mode="triangular2")
      >>> [float(sched(k)) for k in range(9)]
      [0.0, 0.5, 1.0, 0.5, 0.0, 0.25, 0.5, 0.25, 0.0]
    """
    who = "cyclic_schedule"
    up = _steps(who, "step_size_up", step_size_up)
    down = (
        up if step_size_down is None else _steps(who, "step_size_down", step_size_down, minimum=0)
    )
    if mode not in _CYCLIC_MODES:
        raise ValueError(f"{who}: `mode` must be one of {_CYCLIC_MODES}, got {mode!r}")
    _validate.positive(who, "gamma", gamma)
    log_gamma = _static_log(gamma)
    period = up + down

    def schedule(count: ArrayLike) -> jax.Array:
        k = jnp.asarray(count)
        position = k % period
        rising = _float(position) / up
        falling = _float(period - position) / max(down, 1)
        height = jnp.where(position <= up, rising, falling)
        if mode == "triangular2":
            height = height * jnp.exp2(-_float(k // period))
        elif mode == "exp_range":
            height = height * _rate_power(gamma, log_gamma, _float(k))
        base = _float(base_value)
        return base + (_float(max_value) - base) * height

    return schedule


# ----------------------------------------------------------------------------------------------
# Joining schedules.


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Schedules one after the other, each restarted at its boundary (torch's ``SequentialLR``).

    ::

        s(k) = schedules[0](k)                      for k < boundaries[0]
        s(k) = schedules[i](k - boundaries[i - 1])  for boundaries[i - 1] <= k < boundaries[i]

    ``SequentialLR(schedulers, milestones)`` is ``join_schedules(schedules, milestones)`` with
    each scheduler replaced by its schedule.

    Args:
      schedules: the schedules, ``len(boundaries) + 1`` of them.
      boundaries: the steps at which the next schedule starts (>= 0, strictly increasing).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.join_schedules(
      ...     [gx.linear_schedule(0.0, 1.0, 2), gx.exponential_decay(1.0, 1, 0.5)], [2])
      >>> [float(sched(k)) for k in range(5)]
      [0.0, 0.5, 1.0, 0.5, 0.25]
    """
    who = "join_schedules"
    schedules = list(schedules)
    boundaries = [_steps(who, "boundaries", b, minimum=0) for b in boundaries]
    if not schedules:
        raise ValueError(f"{who}: `schedules` must hold at least one schedule, got []")
    for i, schedule in enumerate(schedules):
        if not callable(schedule):
            raise TypeError(
                f"{who}: schedules[{i}] must be a schedule (callable), got {schedule!r}"
            )
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"{who}: `boundaries` must have len(schedules) - 1 = {len(schedules) - 1} entries, "
            f"got {len(boundaries)}: {boundaries}"
        )
    if any(b >= c for b, c in itertools.pairwise(boundaries)):
        raise ValueError(f"{who}: `boundaries` must be strictly increasing, got {boundaries}")
    return _join(schedules, boundaries)
