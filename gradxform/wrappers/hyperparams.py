"""Hyperparameters kept in the optimizer state, where a training loop can read and change them.

:func:`inject_hyperparams` wraps an optimizer factory (``gradxform.adam``, ``gradxform.sgd``,
...) so that its numeric arguments live in the state as arrays instead of being baked into
the compiled step as constants. Changing one between steps is then a change of an input
array, which never recompiles, and ``jax.vmap`` over them sweeps hyperparameters in one run.

Scheduled arguments are :class:`gradxform.StatefulSchedule` objects, whose states are kept
beside the hyperparameters and advanced at every update with the update's extra arguments (a
schedule that reacts to ``value=loss``, say); a plain schedule of the count is wrapped as one
(:class:`WrappedSchedule`, whose state is its own count). The state is Optax 0.2.8's
:class:`InjectStatefulHyperparamsState`, with Optax's field names and order.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _tree, _validate
from gradxform._base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    as_transformation,
    expect_state,
    extra_args_filter,
)
from gradxform._types import Schedule, StatefulSchedule, StepCount

# Arguments that are functions of params, never schedules of the step count: a callable passed
# for one of these is handed to the factory as it is.
NEVER_SCHEDULES = frozenset({"mask"})


class InjectStatefulHyperparamsState(NamedTuple):
    """The state of an optimizer built by :func:`inject_hyperparams` (Optax's fields).

    ``count``: updates made (int32). ``hyperparams``: ``{name: array}``, the numeric
    hyperparameters and the values the scheduled ones took at the last update (read them, or
    overwrite the numeric ones between steps). ``hyperparams_states``: ``{name: schedule
    state}`` for the scheduled ones. ``inner_state``: the wrapped optimizer's state.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.inject_hyperparams(gx.sgd)(learning_rate=0.1).init(jnp.ones(2))
      >>> lr = state.hyperparams["learning_rate"]
      >>> type(state).__name__, int(state.count), round(float(lr), 6)
      ('InjectStatefulHyperparamsState', 0, 0.1)
    """

    count: StepCount
    hyperparams: dict[str, jax.Array]
    hyperparams_states: dict[str, Any]
    inner_state: Any


InjectHyperparamsState = InjectStatefulHyperparamsState
"""The same class: the state :func:`inject_hyperparams` returns (Optax 0.2.8 returns
``InjectStatefulHyperparamsState`` from ``inject_hyperparams`` too)."""


class WrappedScheduleState(NamedTuple):
    """The state of a :class:`WrappedSchedule`: ``count``, the updates made (int32).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> sched = gx.WrappedSchedule(lambda count: 0.5 ** count)
      >>> sched.update(sched.init())
      WrappedScheduleState(count=Array(1, dtype=int32))
    """

    count: StepCount


class WrappedSchedule:
    """A schedule of the update count as a :class:`gradxform.StatefulSchedule`.

    ::

        state_0 = (count=0);   value(state) = schedule_fn(count);   update: count <- count + 1

    Args:
      schedule_fn: the schedule, a function of the update count.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> sched = gx.WrappedSchedule(lambda count: 0.5 ** count)
      >>> state = sched.update(sched.update(sched.init()))
      >>> float(sched(sched.init())), float(sched(state))  # schedule_fn(0), schedule_fn(2)
      (1.0, 0.25)
    """

    def __init__(self, schedule_fn: Schedule):
        _validate.function("WrappedSchedule", "schedule_fn", schedule_fn)
        self.schedule_fn = schedule_fn

    def init(self) -> WrappedScheduleState:
        return WrappedScheduleState(count=jnp.zeros([], jnp.int32))

    def update(self, state: WrappedScheduleState, **extra_args: Any) -> WrappedScheduleState:
        del extra_args
        return WrappedScheduleState(count=_tree.safe_increment(state.count))

    def __call__(self, state: WrappedScheduleState, **extra_args: Any) -> Any:
        del extra_args
        return self.schedule_fn(state.count)


def is_numeric(value: Any) -> bool:
    """Python and NumPy numbers and numeric (not boolean) arrays, concrete or traced."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, numbers.Number | np.number):
        return True
    if isinstance(value, np.ndarray | jax.Array):
        return jnp.issubdtype(value.dtype, jnp.number)
    return False


def abstract_dtype(x: Any) -> np.dtype:
    dtype = jnp.result_type(x)
    return dtype if jnp.issubdtype(dtype, jnp.inexact) else _tree.default_float_dtype()


def hyperparam_float_dtype(hyperparam_dtype: Any | None) -> np.dtype:
    if hyperparam_dtype is None:
        return _tree.default_float_dtype()
    return jnp.dtype(hyperparam_dtype)


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any | None = None,
) -> Callable[..., GradientTransformationExtraArgs]:
    """Wraps an optimizer factory so that its hyperparameters are kept in the state.

    ``inject_hyperparams(factory)(*args, **kwargs)`` takes the factory's own arguments and
    returns a transformation whose state is :class:`InjectStatefulHyperparamsState` (also
    importable as ``InjectHyperparamsState``). Its arguments are sorted once, when it is built:

    - numbers and numeric arrays (Python ints included) are stored in ``state.hyperparams``
      as arrays of ``hyperparam_dtype``;
    - :class:`gradxform.StatefulSchedule` objects and other callables (schedules of the count,
      wrapped in :class:`WrappedSchedule`) are schedules: for a schedule ``s``, update ``k``
      runs ``h_k = s(state_k, **extra_args)``, ``state_{k+1} = s.update(state_k,
      **extra_args)``, with the schedule states in ``state.hyperparams_states`` and ``h_k`` in
      ``state.hyperparams``;
    - everything else (bools, strings, dtypes, masks, ``None``), every name in
      ``static_args``, and arguments called ``mask`` stay Python values.

    Defaults the caller does not pass are injected by the same rules, zeros included, so that
    every numeric hyperparameter can be changed later. An injected value runs the general
    program, correct for every value it may take: an injected ``momentum=0`` keeps a momentum
    buffer and an injected ``weight_decay=0`` a decay pass, where the plain factory, given a
    static 0, leaves them out. Name such an argument in ``static_args`` to keep it a fixed
    Python value (and the program without that part).

    Each ``init`` and ``update`` calls ``inner_factory`` with the hyperparameters as arrays
    and runs the result, so both build the same structure and a step compiled once serves
    every value of the hyperparameters::

        state = state._replace(hyperparams={**state.hyperparams, "learning_rate": new_lr})

    Overwrite values with arrays of the same dtype and shape (other dtypes are cast back, but
    a new input dtype costs one compilation); changing a scheduled value has no effect, it is
    recomputed at the next update from its schedule state.

    Differences from Optax 0.2.8's: hyperparameters are stored in float32 (float64 under
    ``jax_enable_x64``) or ``hyperparam_dtype``, not in the params' highest dtype; zeros and
    Python ints are injected as floats; arguments are checked when the optimizer is built.

    Args:
      inner_factory: a function of hyperparameters returning a transformation. It must
        accept arrays for its numeric arguments (every gradxform factory does).
      static_args: names of numeric arguments to keep as Python values (say a count that
        decides a shape).
      hyperparam_dtype: the floating dtype of the stored hyperparameters; by default float32,
        or float64 with ``jax_enable_x64``.

    Returns:
      A function with the factory's signature returning the wrapped transformation.

    Raises:
      TypeError: at construction, for argument names the factory does not take.
      ValueError: at construction, for values the factory rejects (a negative learning rate).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.inject_hyperparams(gx.sgd)(learning_rate=0.1)
      >>> params = {"w": jnp.ones(2)}
      >>> state = opt.init(params)
      >>> state = state._replace(
      ...     hyperparams={**state.hyperparams, "learning_rate": jnp.asarray(0.5)}
      ... )
      >>> opt.update({"w": jnp.ones(2)}, state, params)[0]["w"].tolist()
      [-0.5, -0.5]
    """
    return injector("inject_hyperparams", inner_factory, static_args, hyperparam_dtype)


def injector(
    caller: str,
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str],
    hyperparam_dtype: Any | None,
) -> Callable[..., GradientTransformationExtraArgs]:
    """:func:`inject_hyperparams`, with ``caller`` naming the public function in messages."""
    if not callable(inner_factory) or hasattr(inner_factory, "init"):
        raise TypeError(
            f"{caller}: `inner_factory` must be a function returning a transformation "
            f"(say gradxform.adam, not gradxform.adam()), got {inner_factory!r}"
        )
    name = getattr(inner_factory, "__name__", repr(inner_factory))
    who = f"{caller}({name})"
    static_names = {static_args} if isinstance(static_args, str) else set(static_args)
    _validate.dtype(who, "hyperparam_dtype", hyperparam_dtype)
    signature = inspect.signature(inner_factory)
    parameters = signature.parameters
    takes_any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown_static = sorted(static_names - set(parameters))
    if unknown_static and not takes_any_keyword:
        raise TypeError(
            f"{who}: `static_args` names arguments the factory does not take: {unknown_static}; "
            f"it takes {list(parameters)}"
        )

    @functools.wraps(inner_factory)
    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformationExtraArgs:
        unknown = sorted(set(kwargs) - set(parameters))
        if unknown and not takes_any_keyword:
            raise TypeError(
                f"{who} got unknown arguments {unknown}; the factory takes {list(parameters)}"
            )
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{who}: {error}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)

        numeric, schedules = [], {}
        for arg_name, value in arguments.items():
            if arg_name in static_names or arg_name in NEVER_SCHEDULES:
                continue
            kind = parameters[arg_name].kind
            if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            if isinstance(value, StatefulSchedule):
                schedules[arg_name] = value
            elif callable(value):
                schedules[arg_name] = WrappedSchedule(value)
            elif is_numeric(value):
                numeric.append(arg_name)
        injected = sorted([*numeric, *schedules])  # the order jax gives dicts
        scheduled = sorted(schedules)

        def as_hyperparam(n: str, value: Any) -> jax.Array:
            if jnp.shape(value) != ():
                source = "the schedule returned" if n in schedules else "the state holds"
                raise ValueError(
                    f"{who}: hyperparameter `{n}` must be a scalar; {source} shape "
                    f"{jnp.shape(value)} (a hyperparameter is never broadcast against the "
                    "updates; to sweep values, vmap over scalars)"
                )
            # A copy, never the caller's array: state leaves must not share buffers (nor with
            # each other), or donating the state would fail or delete them.
            # The default dtype is read now: it follows `jax_enable_x64` at init and update.
            return jnp.array(value, hyperparam_float_dtype(hyperparam_dtype))

        def current_hyperparams(stored: dict, states: dict, extra_args: dict) -> dict:
            return {
                n: as_hyperparam(
                    n, schedules[n](states[n], **extra_args) if n in schedules else stored[n]
                )
                for n in injected
            }

        def initial_states() -> dict[str, Any]:
            return {n: schedules[n].init() for n in scheduled}

        def build(hyperparams: dict[str, Any]) -> GradientTransformation:
            call = inspect.BoundArguments(signature, {**arguments, **hyperparams})
            return as_transformation(inner_factory(*call.args, **call.kwargs), who)

        # The factory validates the values now, once, with each schedule's first value.
        build(current_hyperparams(arguments, initial_states(), {}))

        def init_fn(params):
            states = initial_states()
            hyperparams = current_hyperparams(arguments, states, {})
            inner_state = build(hyperparams).init(params)
            return InjectStatefulHyperparamsState(
                jnp.zeros([], jnp.int32), hyperparams, states, inner_state
            )

        def update_fn(updates, state, params=None, **extra_args):
            expect_state(who, state, InjectStatefulHyperparamsState)
            stored, states = state.hyperparams, state.hyperparams_states
            for field, keys, got in (
                ("hyperparams", injected, stored),
                ("hyperparams_states", scheduled, states),
            ):
                if not isinstance(got, dict) or sorted(got) != keys:
                    raise ValueError(
                        f"{who}: `state.{field}` must keep the keys {keys}, got "
                        f"{sorted(got) if isinstance(got, dict) else type(got).__name__}. "
                        "Overwrite their values; other arguments are fixed at construction."
                    )
            hyperparams = current_hyperparams(stored, states, extra_args)
            new_states = {n: schedules[n].update(states[n], **extra_args) for n in scheduled}
            inner = build(hyperparams)
            _check_inner_structure(inner, state.inner_state, updates if params is None else params)
            updates, inner_state = inner.update(
                updates, state.inner_state, params, **extra_args_filter(inner.update)(extra_args)
            )
            count = _tree.safe_increment(state.count)
            return updates, InjectStatefulHyperparamsState(
                count, hyperparams, new_states, inner_state
            )

        def _check_inner_structure(inner, inner_state, params) -> None:
            # Trace-time only: what `init` would build now must match the state given. The
            # updates stand in for the params when none are given; `init` wants floating
            # leaves, and the structure it builds does not depend on the dtype.
            shapes = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(jnp.shape(x), abstract_dtype(x)), params
            )
            expected = jax.tree.structure(jax.eval_shape(inner.init, shapes))
            got = jax.tree.structure(inner_state)
            if expected != got:
                raise ValueError(
                    f"{who}: the inner state does not match the optimizer the hyperparameters "
                    f"build.\n  expected: {expected}\n  got: {got}\nWas `inner_state` replaced "
                    "by the state of a different optimizer?"
                )

        return GradientTransformationExtraArgs(init_fn, update_fn)

    return wrapped
