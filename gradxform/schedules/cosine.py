"""Cosine decays: ``cosine_decay_schedule``, ``warmup_cosine_decay_schedule`` (Optax's, which
hold their end value) and ``cosine_annealing_schedule`` (torch's ``CosineAnnealingLR``, which
climbs back)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradxform import _validate
from gradxform._types import Schedule
from gradxform.schedules._common import cosine_weight, floating, sequence, steps, to_power
from gradxform.schedules._counts import as_count, modulo, until
from gradxform.schedules.polynomial import build_polynomial

__all__ = ["cosine_annealing_schedule", "cosine_decay_schedule", "warmup_cosine_decay_schedule"]


def _decay_weight(count: ArrayLike, decay_steps: int, exponent: ArrayLike) -> jax.Array:
    """``w(k) ** exponent``, ``w`` the cosine weight of ``init`` after ``min(k, decay_steps)``."""
    remaining = jnp.clip(until(decay_steps, as_count(count)), 0, float(decay_steps))
    return to_power(cosine_weight(remaining, float(decay_steps)), exponent)


def build_cosine_decay(
    init_value: ArrayLike, end_value: ArrayLike, decay_steps: int, exponent: ArrayLike
) -> Schedule:
    """``end + (init - end) * w(k) ** exponent`` over ``decay_steps``, arguments checked."""

    def schedule(count: ArrayLike) -> jax.Array:
        init, end = floating(init_value), floating(end_value)
        return end + (init - end) * _decay_weight(count, decay_steps, exponent)

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
      decay_steps: the length of the decay (a whole number in [1, 2**53]).
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
    _validate.finite(who, "init_value", init_value)
    decay_steps = steps(who, "decay_steps", decay_steps)
    _validate.finite(who, "alpha", alpha)
    _validate.positive(who, "exponent", exponent)

    def schedule(count: ArrayLike) -> jax.Array:
        floor, weight = floating(alpha), _decay_weight(count, decay_steps, exponent)
        return floating(init_value) * (floor + (1 - floor) * weight)

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
      warmup_steps: the length of the warmup (in [0, 2**53]).
      decay_steps: the length of warmup and decay together (> ``warmup_steps``, <= 2**53).
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
    _validate.finite(who, "init_value", init_value)
    _validate.finite(who, "peak_value", peak_value)
    warmup_steps = steps(who, "warmup_steps", warmup_steps, minimum=0)
    decay_steps = steps(who, "decay_steps", decay_steps)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"{who}: `decay_steps` must be greater than `warmup_steps` ({warmup_steps}), since "
            f"it counts the warmup too; got {decay_steps!r}"
        )
    _validate.finite(who, "end_value", end_value)
    _validate.positive(who, "exponent", exponent)
    decay = build_cosine_decay(peak_value, end_value, decay_steps - warmup_steps, exponent)
    if warmup_steps == 0:
        return decay
    warmup = build_polynomial(init_value, peak_value, 1, warmup_steps, 0)
    return sequence([warmup, decay], [warmup_steps])


def cosine_annealing_schedule(
    init_value: ArrayLike, *, t_max: int, eta_min: ArrayLike = 0.0
) -> Schedule:
    """Cosine annealing as torch's ``CosineAnnealingLR``, past ``t_max`` included.

    ::

        s(k) = eta_min + (init_value - eta_min) * (1 + cos(pi * k / t_max)) / 2

    for every ``k``: down to ``eta_min`` at ``k = t_max``, back up to ``init_value`` at
    ``2 * t_max``, and so on with period ``2 * t_max``. torch's ``scheduler.step()`` computes
    the learning rate by recursion, ``lr <- eta_min + (lr - eta_min) * (1 + cos(pi k / T)) /
    (1 + cos(pi (k - 1) / T))``, with the step after each minimum (where that ratio would
    divide by 0) written as the same formula's increment; its values are this closed form (its
    ``_get_closed_form_lr``) up to the recursion's rounding. :func:`cosine_decay_schedule`
    instead stays at its floor after ``decay_steps``, as Optax's does.

    The position in the period, ``k mod 2 t_max``, is exact for integer counts, and the cosine
    is written as ``sin^2`` of the distance to the nearest minimum, which keeps its relative
    precision near ``eta_min = 0``.

    ``CosineAnnealingLR(T_max, eta_min)`` with base learning rate ``lr`` is
    ``cosine_annealing_schedule(lr, t_max=T_max, eta_min=eta_min)``. Optax has no schedule of
    this name, so every argument after ``init_value`` is keyword-only.

    Args:
      init_value: the value at ``k = 0`` (torch's base ``lr``).
      t_max: half the period: the steps from ``init_value`` down to ``eta_min`` (a whole
        number in [1, 2**53]).
      eta_min: the value at ``k = t_max`` (and every other ``t_max`` steps after).

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.cosine_annealing_schedule(1.0, t_max=2)
      >>> [round(float(sched(k)), 4) for k in range(6)]
      [1.0, 0.5, 0.0, 0.5, 1.0, 0.5]
    """
    who = "cosine_annealing_schedule"
    _validate.finite(who, "init_value", init_value)
    t_max = steps(who, "t_max", t_max)
    _validate.finite(who, "eta_min", eta_min)

    def schedule(count: ArrayLike) -> jax.Array:
        # (1 + cos(pi p / T)) / 2 = sin^2(pi/2 * |T - p| / T) for p = k mod 2T in [0, 2T).
        remaining = jnp.abs(until(t_max, modulo(as_count(count), 2 * t_max)))
        low = floating(eta_min)
        return low + (floating(init_value) - low) * cosine_weight(remaining, float(t_max))

    return schedule
