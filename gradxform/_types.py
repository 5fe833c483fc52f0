"""The types every module shares: trees, schedules, masks, the protocol's functions.

They are aliases for readers and type checkers, with Optax's names; nothing here is checked at
run time except :class:`StatefulSchedule`, a protocol that ``isinstance`` recognises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeAlias, runtime_checkable

import jax
from jax.typing import ArrayLike

ArrayTree: TypeAlias = Any
"""A pytree whose leaves are arrays (or ``None``)."""

Params: TypeAlias = ArrayTree
Updates: TypeAlias = ArrayTree
OptState: TypeAlias = ArrayTree

StepCount: TypeAlias = Any
"""A state's update counter: an int32 scalar array, 0 before the first update.

Annotated ``Any`` because the field keeps Optax's name ``count``, which on a ``NamedTuple``
shadows ``tuple.count``: a type checker reads any narrower type there as an incompatible
override of that method (mypy issue 3950), though the field works at run time."""

Schedule: TypeAlias = Callable[[ArrayLike], Any]
"""A function of the update count ``k`` (an int32 scalar, 0 for the first update) returning a
scalar: the value a hyperparameter takes at update ``k + 1``. Schedules called by other
schedules may get ``k`` as a Python int (a static count), as Optax's may."""

ScheduleState: TypeAlias = Any
"""The state of a :class:`StatefulSchedule`."""


@runtime_checkable
class StatefulSchedule(Protocol):
    """A schedule that keeps a state, which ``update`` may advance with the extra arguments.

    ``init() -> state``; ``update(state, **extra_args) -> state``;
    ``schedule(state, **extra_args) -> value``, the value for the update made with ``state``.
    A plain :data:`Schedule` is one with the update count as its state
    (:class:`gradxform.WrappedSchedule`).

    Example:
      >>> import gradxform as gx
      >>> sched = gx.WrappedSchedule(lambda k: 0.5**k)
      >>> isinstance(sched, gx.StatefulSchedule)
      True
      >>> state = sched.update(sched.init())
      >>> float(sched(state))
      0.5
    """

    def init(self) -> ScheduleState:
        """The state before the first update."""

    def update(self, state: ScheduleState, **extra_args: Any) -> ScheduleState:
        """The state after one more update."""

    def __call__(self, state: ScheduleState, **extra_args: Any) -> Any:
        """The value for the update made with ``state``."""


class TransformInitFn(Protocol):
    """``init(params) -> state``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> init: gx.TransformInitFn = gx.trace(0.9).init
      >>> init({"w": jnp.ones(2)})
      TraceState(count=Array(0, dtype=int32), trace={'w': Array([0., 0.], dtype=float32)})
    """

    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    """``update(updates, state, params=None) -> (updates, state)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> update: gx.TransformUpdateFn = gx.scale(0.5).update
      >>> update(jnp.array([2.0, 4.0]), gx.EmptyState())
      (Array([1., 2.], dtype=float32), EmptyState())
    """

    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None
    ) -> tuple[Updates, OptState]: ...


class TransformUpdateExtraArgsFn(Protocol):
    """``update(updates, state, params=None, **extra_args) -> (updates, state)``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> update: gx.TransformUpdateExtraArgsFn = gx.chain(gx.scale(0.5)).update
      >>> update(jnp.array([2.0, 4.0]), (gx.EmptyState(),), None, value=1.0)[0]
      Array([1., 2.], dtype=float32)
    """

    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]: ...


ScalarOrSchedule: TypeAlias = float | jax.Array | Schedule
"""A hyperparameter given as a number, a scalar array, or a :data:`Schedule`."""

Mask: TypeAlias = Any
"""A tree of Python bools with the params' structure, or a prefix of it."""

MaskOrFn: TypeAlias = Mask | Callable[[Params], Mask] | None
"""A :data:`Mask`, a function ``params -> mask``, or ``None`` (everything selected)."""

Labels: TypeAlias = Any
"""A tree of hashable labels with the params' structure, or a prefix of it."""
