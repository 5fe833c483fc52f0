"""Schedules one after the other: ``join_schedules`` (torch's ``SequentialLR``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from gradxform import _validate
from gradxform._types import Schedule
from gradxform.schedules._common import sequence, steps

__all__ = ["join_schedules"]


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
    for name, value in (("schedules", schedules), ("boundaries", boundaries)):
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise TypeError(f"{who}: `{name}` must be a list, got {value!r}")
    schedules = list(schedules)
    if not schedules:
        raise ValueError(f"{who}: `schedules` must hold at least one schedule, got []")
    for i, schedule in enumerate(schedules):
        _validate.function(who, f"schedules[{i}]", schedule)
    boundaries = [steps(who, f"boundaries[{i}]", b, minimum=0) for i, b in enumerate(boundaries)]
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"{who}: `boundaries` must have len(schedules) - 1 = {len(schedules) - 1} entries, "
            f"got {len(boundaries)}: {boundaries}"
        )
    if any(b >= c for b, c in itertools.pairwise(boundaries)):
        raise ValueError(f"{who}: `boundaries` must be strictly increasing, got {boundaries}")
    return sequence(schedules, boundaries)
