"""Schedules combined: one after the other, ``join_schedules`` (torch's ``SequentialLR``), or
multiplied together, ``chained_schedule`` (torch's ``ChainedScheduler``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradxform import _validate
from gradxform._types import Schedule
from gradxform.schedules._common import broadcast, floating, sequence, steps
from gradxform.schedules._counts import as_argument, as_count

__all__ = ["chained_schedule", "join_schedules"]


def _schedule_list(who: str, schedules: Sequence[Schedule]) -> list[Schedule]:
    """``schedules`` as a list of at least one function; ``TypeError``/``ValueError`` naming
    the entry otherwise."""
    if isinstance(schedules, str | bytes) or not isinstance(schedules, Iterable):
        raise TypeError(f"{who}: `schedules` must be a list, got {schedules!r}")
    schedules = list(schedules)
    if not schedules:
        raise ValueError(f"{who}: `schedules` must hold at least one schedule, got []")
    for i, schedule in enumerate(schedules):
        _validate.function(who, f"schedules[{i}]", schedule)
    return schedules


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Schedules one after the other, each restarted at its boundary (torch's ``SequentialLR``).

    ::

        s(k) = schedules[0](k)                      for k < boundaries[0]
        s(k) = schedules[i](k - boundaries[i - 1])  for boundaries[i - 1] <= k < boundaries[i]

    ``SequentialLR(schedulers, milestones)`` is ``join_schedules(schedules, milestones)`` with
    each scheduler replaced by its schedule. A schedule is called with counts from 0 only
    (before its boundary it is called with 0, and its value is not used).

    Args:
      schedules: the schedules (functions of the count), ``len(boundaries) + 1`` of them.
      boundaries: the steps at which the next schedule starts (whole numbers in [0, 2**53],
        strictly increasing).

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
    schedules = _schedule_list(who, schedules)
    if isinstance(boundaries, str | bytes) or not isinstance(boundaries, Iterable):
        raise TypeError(f"{who}: `boundaries` must be a list, got {boundaries!r}")
    boundaries = [steps(who, f"boundaries[{i}]", b, minimum=0) for i, b in enumerate(boundaries)]
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"{who}: `boundaries` must have len(schedules) - 1 = {len(schedules) - 1} entries, "
            f"got {len(boundaries)}: {boundaries}"
        )
    if any(b >= c for b, c in itertools.pairwise(boundaries)):
        raise ValueError(f"{who}: `boundaries` must be strictly increasing, got {boundaries}")
    return sequence(schedules, boundaries)


def chained_schedule(init_value: ArrayLike, *, schedules: Sequence[Schedule]) -> Schedule:
    """Schedules multiplied together, relative to ``init_value`` (torch's ``ChainedScheduler``).

    ::

        s(k) = init_value * prod_i (schedules[i](k) / init_value)

    where each ``schedules[i]`` starts from ``init_value`` (``s(k) = 0`` when ``init_value``
    is 0). ``ChainedScheduler([S_1, ..., S_n])`` on an optimizer whose learning rate is ``lr``
    is ``chained_schedule(lr, schedules=[s_1, ..., s_n])``, ``s_i`` the schedule that ``S_i``
    alone gives that optimizer (e.g. ``LinearLR(start_factor=0.1, total_iters=20)`` times
    ``ExponentialLR(gamma=0.99)``: a warm-up of a decay).

    torch's chain calls each scheduler's ``step()`` on the learning rate the others left, so
    this product is its value for the schedulers whose step multiplies the current learning
    rate by a factor of the step count alone: ``ConstantLR``, ``LinearLR``, ``ExponentialLR``,
    ``StepLR``, ``MultiStepLR``, ``PolynomialLR``, ``MultiplicativeLR``, and
    ``CosineAnnealingLR`` with ``eta_min=0`` up to ``T_max``. The others set the learning rate
    from their own base value (``LambdaLR``, ``CyclicLR``, ``OneCycleLR``,
    ``CosineAnnealingWarmRestarts``, ``SWALR``) or add to it (``CosineAnnealingLR`` with
    ``eta_min`` or past ``T_max``), which overrides or shifts the rest of the chain in an order-
    dependent way that no product gives.

    Args:
      init_value: the value the schedules start from (torch's base ``lr``); a finite scalar.
      schedules: the schedules (functions of the count), at least one.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> warmup = gx.linear_schedule(0.25, 1.0, transition_steps=3)
      >>> decay = gx.exponential_decay(1.0, transition_steps=1, decay_rate=0.5)
      >>> sched = gx.chained_schedule(1.0, schedules=[warmup, decay])
      >>> [float(sched(k)) for k in range(5)]
      [0.25, 0.25, 0.1875, 0.125, 0.0625]
    """
    who = "chained_schedule"
    _validate.finite(who, "init_value", init_value)
    schedules = _schedule_list(who, schedules)

    def schedule(count: ArrayLike) -> jax.Array:
        k = as_count(count)
        init = floating(init_value)
        # A zero init_value gives 0 * prod(s_i(k)), torch's value, rather than 0 / 0.
        reference = jnp.where(init == 0, 1, init)
        value = broadcast(init, k)
        for each in schedules:
            value = value * (broadcast(each(as_argument(k)), k) / reference)
        return value

    return schedule
