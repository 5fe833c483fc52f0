"""One-cycle and cyclic schedules, as torch's ``OneCycleLR`` and ``CyclicLR``:
``cosine_onecycle_schedule``, ``linear_onecycle_schedule``, ``cyclic_schedule``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradxform import _validate
from gradxform._types import Schedule
from gradxform.schedules._common import (
    broadcast,
    floating,
    interpolate,
    rate_power,
    static_fraction,
    static_log,
    steps,
)
from gradxform.schedules._counts import (
    Count,
    as_count,
    at_most,
    floor_div,
    modulo,
    past,
    to_float,
    until,
)

__all__ = ["cosine_onecycle_schedule", "cyclic_schedule", "linear_onecycle_schedule"]


def _onecycle(
    who: str,
    cosine: bool,
    transition_steps: int,
    peak_value: ArrayLike,
    pct_start: float,
    div_factor: ArrayLike,
    final_div_factor: ArrayLike,
    three_phase: bool,
) -> Schedule:
    total = steps(who, "transition_steps", transition_steps)
    _validate.finite(who, "peak_value", peak_value)
    pct_start = static_fraction(who, "pct_start", pct_start)
    _validate.positive(who, "div_factor", div_factor)
    _validate.positive(who, "final_div_factor", final_div_factor)
    _validate.boolean(who, "three_phase", three_phase)
    # Phase ends exactly as torch computes them, in float64; a phase covers the steps k with
    # previous end < k <= its end, and the last phase holds its final value from k = total - 1.
    # Each end e is kept as floor(e) and e - floor(e), so that e - k is exact in integers but
    # for that fraction.
    warmup_end = float(pct_start * total) - 1
    if three_phase:
        ends = [warmup_end, float(2 * pct_start * total) - 2, float(total - 1)]
        levels = ["initial", "peak", "initial", "minimum"]
    else:
        ends = [warmup_end, float(total - 1)]
        levels = ["initial", "peak", "minimum"]
    starts = [0.0, *ends[:-1]]

    def offset(k: Count, point: float) -> jax.Array:
        """``k - point`` for a static float ``point``."""
        whole = math.floor(point)
        return past(k, whole) - (point - whole)

    def schedule(count: ArrayLike) -> jax.Array:
        k = as_count(count)
        peak = floating(peak_value)
        initial = peak / floating(div_factor)
        minimum = initial / floating(final_div_factor)
        value_of = {"initial": initial, "peak": peak, "minimum": minimum}
        result: jax.Array | None = None
        for i in reversed(range(len(ends))):
            start, end = starts[i], ends[i]
            first, last = value_of[levels[i]], value_of[levels[i + 1]]
            length = end - start
            if length > 0:
                done = jnp.clip(offset(k, start) / length, 0, 1)
                remaining = jnp.clip(-offset(k, end) / length, 0, 1)
            else:  # an empty phase (pct_start * transition_steps <= 1): jump to its end value
                done, remaining = broadcast(1.0, k), broadcast(0.0, k)
            value = interpolate(first, last, done, remaining, cosine)
            if result is not None:
                value = jnp.where(at_most(k, math.floor(end)), value, result)
            result = value
        assert result is not None  # there are two phases at least
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
      transition_steps: the total number of updates (torch's ``total_steps``, in [1, 2**53]).
      peak_value: the largest value (torch's ``max_lr``).
      pct_start: the fraction of the steps spent going up, a static number in (0, 1).
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
        True,
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
    pct_final: float | None = None,
    *,
    div_factor: ArrayLike = 25.0,
    final_div_factor: ArrayLike = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """The one-cycle schedule with linear anneals, as ``OneCycleLR(anneal_strategy="linear")``.

    The phases are those of :func:`cosine_onecycle_schedule`, with
    ``anneal(a, b, f) = a + (b - a) * f``.

    With ``pct_final`` given (Optax's fourth positional argument) the schedule is Optax's
    instead, three linear phases: up from ``initial`` to ``peak_value`` until
    ``int(pct_start * T)``, back to ``initial`` until ``int(pct_final * T)``, down to
    ``initial / final_div_factor`` until ``T``; that is
    ``piecewise_interpolate_schedule("linear", peak / div_factor, {int(pct_start * T):
    div_factor, int(pct_final * T): 1 / div_factor, T: 1 / final_div_factor})``
    (``three_phase`` must then be False).

    Args:
      transition_steps: the total number of updates (torch's ``total_steps``, in [1, 2**53]).
      peak_value: the largest value (torch's ``max_lr``).
      pct_start: the fraction of the steps spent going up, a static number in (0, 1).
      pct_final: ``None`` for torch's schedule, or Optax's end of the second phase, a static
        number in [``pct_start``, 1].
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
    if pct_final is not None:
        return _optax_linear_onecycle(
            transition_steps,
            peak_value,
            pct_start,
            pct_final,
            div_factor,
            final_div_factor,
            three_phase,
        )
    return _onecycle(
        "linear_onecycle_schedule",
        False,
        transition_steps,
        peak_value,
        pct_start,
        div_factor,
        final_div_factor,
        three_phase,
    )


def _optax_linear_onecycle(
    transition_steps, peak_value, pct_start, pct_final, div_factor, final_div_factor, three_phase
) -> Schedule:
    """Optax's ``linear_onecycle_schedule`` (see :func:`linear_onecycle_schedule`)."""
    from gradxform.schedules.polynomial import piecewise_interpolate_schedule

    who = "linear_onecycle_schedule"
    _validate.count(who, "transition_steps", transition_steps)
    _validate.number(who, "pct_start", pct_start, low=0, high=1)
    _validate.number(who, "pct_final", pct_final, low=0, high=1)
    if float(pct_final) < float(pct_start):
        raise ValueError(f"{who}: `pct_final` must be >= `pct_start`, got {pct_final!r}")
    _validate.positive(who, "div_factor", div_factor)
    _validate.positive(who, "final_div_factor", final_div_factor)
    _validate.boolean(who, "three_phase", three_phase)
    if three_phase:
        raise TypeError(f"{who}: `three_phase` is torch's variant; it excludes `pct_final`")
    return piecewise_interpolate_schedule(
        "linear",
        peak_value / div_factor,
        {
            int(pct_start * transition_steps): div_factor,
            int(pct_final * transition_steps): 1.0 / div_factor,
            transition_steps: 1.0 / final_div_factor,
        },
    )


def cyclic_schedule(
    base_value: ArrayLike,
    *,
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
    cycle_momentum=False)`` is ``cyclic_schedule(base_lr, max_value=max_lr,
    step_size_up=step_size_up, step_size_down=step_size_down, mode=mode, gamma=gamma)``
    (momentum cycling is not a learning-rate schedule). Optax has no schedule of this name, so
    every argument after ``base_value`` is keyword-only.

    Args:
      base_value: the value at the start of each cycle.
      max_value: the value at the top of the first cycle.
      step_size_up: the steps from base to top (a whole number in [1, 2**53]).
      step_size_down: the steps from top back to base (in [0, 2**53]; ``step_size_up`` if
        ``None``).
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
      gamma: the factor per step in ``"exp_range"`` mode (> 0).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.cyclic_schedule(0.0, max_value=1.0, step_size_up=2, mode="triangular2")
      >>> [float(sched(k)) for k in range(9)]
      [0.0, 0.5, 1.0, 0.5, 0.0, 0.25, 0.5, 0.25, 0.0]
    """
    who = "cyclic_schedule"
    _validate.finite(who, "base_value", base_value)
    _validate.finite(who, "max_value", max_value)
    up = steps(who, "step_size_up", step_size_up)
    down = up if step_size_down is None else steps(who, "step_size_down", step_size_down, minimum=0)
    _validate.choice(who, "mode", mode, ("triangular", "triangular2", "exp_range"))
    _validate.positive(who, "gamma", gamma)
    log_gamma = static_log(gamma)
    period = up + down

    def schedule(count: ArrayLike) -> jax.Array:
        k = as_count(count)
        position = modulo(k, period)
        rising = to_float(position) / float(up)
        falling = until(period, position) / float(max(down, 1))
        height = jnp.where(at_most(position, up), rising, falling)
        if mode == "triangular2":
            height = height * jnp.exp2(-to_float(floor_div(k, period)))
        elif mode == "exp_range":
            height = height * rate_power(gamma, log_gamma, to_float(k))
        base = floating(base_value)
        return base + (floating(max_value) - base) * height

    return schedule
