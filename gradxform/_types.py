"""The types every module shares: trees, schedules, masks.

They are aliases for readers and type checkers; nothing here is checked at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import jax

ArrayTree: TypeAlias = Any
"""A pytree whose leaves are arrays (or ``None``)."""

Params: TypeAlias = ArrayTree
Updates: TypeAlias = ArrayTree
OptState: TypeAlias = ArrayTree

Schedule: TypeAlias = Callable[[jax.Array], Any]
"""A function of the update count ``k`` (an int32 scalar, 0 for the first update) returning a
scalar: the value a hyperparameter takes at update ``k + 1``."""

ScalarOrSchedule: TypeAlias = float | jax.Array | Schedule
"""A hyperparameter given as a number, a scalar array, or a :data:`Schedule`."""

Mask: TypeAlias = Any
"""A tree of Python bools with the params' structure, or a prefix of it."""

MaskOrFn: TypeAlias = Mask | Callable[[Params], Mask] | None
"""A :data:`Mask`, a function ``params -> mask``, or ``None`` (everything selected)."""

Labels: TypeAlias = Any
"""A tree of hashable labels with the params' structure, or a prefix of it."""
