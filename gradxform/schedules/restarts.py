"""Cosine anneals with restarts: ``cosine_annealing_warm_restarts`` (torch's cycles),
``sgdr_schedule`` (Optax's cycles, each with its own warmup and values)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
from jax.typing import ArrayLike

from gradxform import _validate
from gradxform._types import Schedule
from gradxform.schedules._common import MAX_STEPS, cosine_weight, floating, sequence, steps
from gradxform.schedules._counts import INT64_MAX, as_count, locate, modulo, until
from gradxform.schedules.cosine import warmup_cosine_decay_schedule

__all__ = ["cosine_annealing_warm_restarts", "sgdr_schedule"]


def cosine_annealing_warm_restarts(
    init_value: ArrayLike, *, t_0: int, t_mult: int = 1, eta_min: ArrayLike = 0.0
) -> Schedule:
    """Cosine annealing with warm restarts (SGDR), as torch's ``CosineAnnealingWarmRestarts``.

    Cycle ``i`` (from 0) lasts ``T_i = t_0 * t_mult ** i`` steps. With ``t`` the steps since
    the last restart::

        s(k) = eta_min + (init_value - eta_min) * (1 + cos(pi * t / T_i)) / 2

    The cycle is found exactly, by searching the (at most 64) cycle starts below 2**63: the
    closed form ``i = floor(log(1 + k * (t_mult - 1) / t_0) / log(t_mult))`` lands one cycle
    early at some restart steps in floating point (e.g. ``k = 8191`` for ``t_0=1, t_mult=2``
    in float32).

    ``CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)`` with base learning rate ``lr`` is
    ``cosine_annealing_warm_restarts(lr, t_0=T_0, t_mult=T_mult, eta_min=eta_min)``; Keras'
    ``CosineDecayRestarts(init, first_decay_steps, t_mul, m_mul=1.0, alpha)`` with an integer
    ``t_mul`` is ``cosine_annealing_warm_restarts(init, t_0=first_decay_steps, t_mult=t_mul,
    eta_min=alpha * init)``. Optax has no schedule of this name, so every argument after
    ``init_value`` is keyword-only; see :func:`sgdr_schedule` for cycles with their own peaks.

    Args:
      init_value: the value at the start of every cycle (torch's base ``lr``).
      t_0: the length of the first cycle (a whole number in [1, 2**53]).
      t_mult: the growth factor of the cycle length (a whole number in [1, 2**53]).
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
    _validate.finite(who, "init_value", init_value)
    t_0 = steps(who, "t_0", t_0)
    t_mult = steps(who, "t_mult", t_mult)
    _validate.finite(who, "eta_min", eta_min)
    starts, lengths = [0], [t_0]
    while t_mult > 1 and starts[-1] + lengths[-1] <= INT64_MAX:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * t_mult)
    ends = [start + length for start, length in zip(starts, lengths, strict=True)]
    lengths_table = np.asarray(lengths, np.float64)

    def schedule(count: ArrayLike) -> jax.Array:
        k = as_count(count)
        length: float | jax.Array
        if t_mult == 1:
            remaining, length = until(t_0, modulo(k, t_0)), float(t_0)
        else:
            cycle, remaining = locate(k, starts, ends)
            length = floating(lengths_table)[cycle]
        low = floating(eta_min)
        return low + (floating(init_value) - low) * cosine_weight(remaining, length)

    return schedule


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
    """Warmup-cosine cycles one after the other (SGDR, Optax's ``sgdr_schedule``).

    Cycle ``i`` is ``warmup_cosine_decay_schedule(**cosine_kwargs[i])`` started at the sum of
    the earlier cycles' ``decay_steps`` (which, as there, include each cycle's warmup)::

        s(k) = cycle_i(k - B_i),  B_i = sum(decay_steps_j for j < i),  B_i <= k < B_{i + 1}

    Unlike :func:`cosine_annealing_warm_restarts`, every cycle has its own values and lengths.

    Args:
      cosine_kwargs: the keyword arguments of :func:`warmup_cosine_decay_schedule`, one dict
        per cycle; each must give ``decay_steps``, and together they add up to at most 2**53.

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
    if isinstance(cosine_kwargs, Mapping | str | bytes) or not isinstance(cosine_kwargs, Iterable):
        raise TypeError(
            f"{who}: `cosine_kwargs` must be a list of dicts of warmup_cosine_decay_schedule "
            f"arguments, one per cycle, got {cosine_kwargs!r}"
        )
    cycles = list(cosine_kwargs)
    if not cycles:
        raise ValueError(f"{who}: `cosine_kwargs` must give at least one cycle, got {cycles!r}")
    schedules, boundaries, step = [], [], 0
    for i, kwargs in enumerate(cycles):
        if not isinstance(kwargs, Mapping) or "decay_steps" not in kwargs:
            raise TypeError(
                f"{who}: `cosine_kwargs[{i}]` must be a dict of warmup_cosine_decay_schedule "
                f"arguments including `decay_steps`, got {kwargs!r}"
            )
        try:
            schedules.append(warmup_cosine_decay_schedule(**kwargs))
        except (TypeError, ValueError) as error:
            raise type(error)(f"{who}: `cosine_kwargs[{i}]`: {error}") from error
        step += int(kwargs["decay_steps"])
        boundaries.append(step)
    if step > MAX_STEPS:
        raise ValueError(
            f"{who}: `cosine_kwargs`: the cycles' `decay_steps` must add up to at most 2**53, "
            f"got {step}"
        )
    return sequence(schedules, boundaries[:-1])
