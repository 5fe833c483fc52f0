"""Hyperparameters driven by stateful schedules (Optax's ``inject_stateful_hyperparams``).

A :class:`gradxform.StatefulSchedule` keeps a state of its own, advanced at every update with
the update's extra arguments (a schedule that reacts to ``value=loss``, say). A plain schedule
of the count is wrapped as one (:class:`WrappedSchedule`, whose state is the count).
:func:`inject_stateful_hyperparams` keeps these states beside the hyperparameters, in
:class:`InjectStatefulHyperparamsState`; otherwise it injects as :func:`inject_hyperparams`
does.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _tree, _validate
from gradxform._base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    as_transformation,
    expect_state,
    extra_args_filter,
)
from gradxform._types import Schedule, StatefulSchedule
from gradxform.wrappers.hyperparams import (
    NEVER_SCHEDULES,
    abstract_dtype,
    hyperparam_float_dtype,
    is_numeric,
)


class WrappedScheduleState(NamedTuple):
    """The state of a :class:`WrappedSchedule`: ``count``, the updates made (int32)."""

    count: jax.Array


class WrappedSchedule:
    """A schedule of the update count as a :class:`gradxform.StatefulSchedule`.

    ::

        state_0 = (count=0);   value(state) = schedule_fn(count);   update: count <- count + 1

    Args:
      schedule_fn: the schedule, a function of the update count.
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


class InjectStatefulHyperparamsState(NamedTuple):
    """The state of an optimizer built by :func:`inject_stateful_hyperparams`.

    ``count``: updates made (int32). ``hyperparams``: ``{name: array}``, the values the last
    update used (overwrite the numeric ones between steps). ``hyperparams_states``: ``{name:
    schedule state}`` for the scheduled ones. ``inner_state``: the wrapped optimizer's state.
    """

    count: jax.Array
    hyperparams: dict[str, jax.Array]
    hyperparams_states: dict[str, Any]
    inner_state: Any


def inject_stateful_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any | None = None,
) -> Callable[..., GradientTransformationExtraArgs]:
    """Wraps an optimizer factory so that its hyperparameters live in the state, scheduled
    ones by :class:`gradxform.StatefulSchedule` objects.

    For a hyperparameter ``h`` given as a stateful schedule ``s`` (a plain function of the
    count is wrapped in :class:`WrappedSchedule`), update ``k`` runs::

        h_k = s(state_k, **extra_args);   state_{k+1} = s.update(state_k, **extra_args)

    and the optimizer built with ``h_k``. Numbers (Python ints included) are injected as
    arrays of ``hyperparam_dtype``, zeros included, as :func:`gradxform.inject_hyperparams`
    does; bools, strings, masks and the names in ``static_args`` stay fixed.

    Differences from Optax 0.2.8's: no ``DeprecationWarning``; hyperparameters are stored in
    float32 (float64 under ``jax_enable_x64``) or ``hyperparam_dtype``, not in the params'
    highest dtype; arguments are checked when the optimizer is built.

    Args:
      inner_factory: a function of hyperparameters returning a transformation.
      static_args: names of arguments to keep as Python values.
      hyperparam_dtype: the floating dtype of the stored hyperparameters.

    Returns:
      A function with the factory's signature returning the wrapped transformation, whose
      state is :class:`InjectStatefulHyperparamsState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.inject_stateful_hyperparams(gx.sgd)(learning_rate=lambda k: 0.1 * (k + 1))
      >>> params = {"w": jnp.ones(1)}
      >>> state = opt.init(params)
      >>> _, state = opt.update({"w": jnp.ones(1)}, state, params)
      >>> _, state = opt.update({"w": jnp.ones(1)}, state, params)
      >>> round(float(state.hyperparams["learning_rate"]), 4)
      0.2
    """
    if not callable(inner_factory) or hasattr(inner_factory, "init"):
        raise TypeError(
            "inject_stateful_hyperparams: `inner_factory` must be a function returning a "
            f"transformation (say gradxform.adam, not gradxform.adam()), got {inner_factory!r}"
        )
    who = f"inject_stateful_hyperparams({getattr(inner_factory, '__name__', inner_factory)!s})"
    _validate.dtype(who, "hyperparam_dtype", hyperparam_dtype)
    static_names = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    parameters = signature.parameters
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if static_names - set(parameters) and not any_keyword:
        raise TypeError(
            f"{who}: `static_args` names arguments the factory does not take: "
            f"{sorted(static_names - set(parameters))}; it takes {list(parameters)}"
        )
    dtype = hyperparam_float_dtype(hyperparam_dtype)

    @functools.wraps(inner_factory)
    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformationExtraArgs:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{who}: {error}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        numeric, schedules = [], {}
        for name, value in arguments.items():
            kind = parameters[name].kind
            if (
                name in static_names
                or name in NEVER_SCHEDULES
                or kind
                in (
                    inspect.Parameter.VAR_POSITIONAL,
                    inspect.Parameter.VAR_KEYWORD,
                )
            ):
                continue
            if isinstance(value, StatefulSchedule):
                schedules[name] = value
            elif callable(value):
                schedules[name] = WrappedSchedule(value)
            elif is_numeric(value):
                numeric.append(name)

        def as_hyperparam(name: str, value: Any) -> jax.Array:
            if jnp.shape(value) != ():
                raise ValueError(
                    f"{who}: hyperparameter `{name}` must be a scalar, got shape {jnp.shape(value)}"
                )
            return jnp.array(value, dtype)  # a copy: state leaves never share buffers

        def values(stored: dict, states: dict, extra_args: dict) -> dict[str, jax.Array]:
            current = {n: as_hyperparam(n, stored[n]) for n in numeric}
            for n, schedule in schedules.items():
                current[n] = as_hyperparam(n, schedule(states[n], **extra_args))
            return dict(sorted(current.items()))

        def build(hyperparams: dict[str, jax.Array]) -> GradientTransformation:
            call = inspect.BoundArguments(signature, {**arguments, **hyperparams})
            return as_transformation(inner_factory(*call.args, **call.kwargs), who)

        def initial_states() -> dict[str, Any]:
            return {n: s.init() for n, s in sorted(schedules.items())}

        # The factory checks the values now, once, with each schedule's first value.
        build(values(arguments, initial_states(), {}))

        def init_fn(params):
            states = initial_states()
            hyperparams = values(arguments, states, {})
            inner_state = build(hyperparams).init(params)
            return InjectStatefulHyperparamsState(
                jnp.zeros([], jnp.int32), hyperparams, states, inner_state
            )

        def update_fn(updates, state, params=None, **extra_args):
            expect_state(who, state, InjectStatefulHyperparamsState)
            stored, states = state.hyperparams, state.hyperparams_states
            expected = sorted([*numeric, *schedules])
            if not isinstance(stored, dict) or sorted(stored) != expected:
                raise ValueError(
                    f"{who}: `state.hyperparams` must keep the keys {expected}, got "
                    f"{sorted(stored) if isinstance(stored, dict) else type(stored).__name__}"
                )
            hyperparams = values(stored, states, extra_args)
            new_states = {n: s.update(states[n], **extra_args) for n, s in schedules.items()}
            inner = build(hyperparams)
            reference = updates if params is None else params
            shapes = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(jnp.shape(x), abstract_dtype(x)), reference
            )
            want = jax.tree.structure(jax.eval_shape(inner.init, shapes))
            if want != jax.tree.structure(state.inner_state):
                raise ValueError(
                    f"{who}: the inner state does not match the optimizer the hyperparameters "
                    f"build.\n  expected: {want}\n  got: {jax.tree.structure(state.inner_state)}"
                )
            updates, inner_state = inner.update(
                updates, state.inner_state, params, **extra_args_filter(inner.update)(extra_args)
            )
            return updates, InjectStatefulHyperparamsState(
                _tree.safe_increment(state.count), hyperparams, new_states, inner_state
            )

        return GradientTransformationExtraArgs(init_fn, update_fn)

    return wrapped
