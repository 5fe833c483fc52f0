"""Hyperparameters kept in the optimizer state, where a training loop can read and change them.

:func:`inject_hyperparams` wraps an optimizer factory (``gradxform.adam``, ``gradxform.sgd``,
...) so that its numeric arguments live in the state as arrays instead of being baked into
the compiled step as constants. Changing one between steps is then a change of an input
array, which never recompiles, and ``jax.vmap`` over them sweeps hyperparameters in one run.
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

from gradxform import _tree
from gradxform._base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    as_transformation,
    expect_state,
    extra_args_filter,
)

# Arguments that are functions of params, never schedules of the step count: a callable passed
# for one of these is handed to the factory as it is.
NEVER_SCHEDULES = frozenset({"mask"})


class InjectHyperparamsState(NamedTuple):
    """The state of an optimizer built by :func:`inject_hyperparams`.

    ``count``: updates made (int32). ``hyperparams``: ``{name: array}``, the numeric
    hyperparameters and the current values of the scheduled ones (read them, or overwrite the
    numeric ones between steps). ``inner_state``: the wrapped optimizer's state.
    """

    count: jax.Array
    hyperparams: dict[str, jax.Array]
    inner_state: Any


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
) -> Callable[..., GradientTransformation]:
    """Wraps an optimizer factory so that its hyperparameters are kept in the state.

    ``inject_hyperparams(factory)(*args, **kwargs)`` takes the factory's own arguments and
    returns a transformation whose state is :class:`InjectHyperparamsState`. Its arguments are
    sorted once, when it is built:

    - numbers and numeric arrays (Python ints included) are stored in ``state.hyperparams``
      as arrays of ``hyperparam_dtype``;
    - callables are schedules: ``state.hyperparams[name] = schedule(count)`` before each update,
      the value that update uses;
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
    recomputed at the next update.

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
    if not callable(inner_factory) or hasattr(inner_factory, "init"):
        raise TypeError(
            f"inject_hyperparams: `inner_factory` must be a function returning a transformation "
            f"(say gradxform.adam, not gradxform.adam()), got {inner_factory!r}"
        )
    name = getattr(inner_factory, "__name__", repr(inner_factory))
    who = f"inject_hyperparams({name})"
    static_names = {static_args} if isinstance(static_args, str) else set(static_args)
    if hyperparam_dtype is not None and not jnp.issubdtype(hyperparam_dtype, jnp.floating):
        raise TypeError(
            f"{who}: `hyperparam_dtype` must be a floating dtype, got {hyperparam_dtype!r}"
        )
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
    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformation:
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

        numeric, schedules = [], []
        for arg_name, value in arguments.items():
            if arg_name in static_names or arg_name in NEVER_SCHEDULES:
                continue
            kind = parameters[arg_name].kind
            if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            if callable(value):
                schedules.append(arg_name)
            elif is_numeric(value):
                numeric.append(arg_name)
        injected = numeric + schedules

        def build(hyperparams: dict[str, Any]) -> GradientTransformation:
            call = inspect.BoundArguments(signature, {**arguments, **hyperparams})
            return as_transformation(inner_factory(*call.args, **call.kwargs), who)

        def current_hyperparams(count: jax.Array, stored: dict[str, Any]) -> dict[str, jax.Array]:
            dtype = hyperparam_float_dtype(hyperparam_dtype)
            values = {}
            for n in sorted(injected):  # the order jax gives dicts, so printed states agree
                value = arguments[n](count) if n in schedules else stored[n]
                if jnp.shape(value) != ():
                    source = "the schedule returned" if n in schedules else "the state holds"
                    raise ValueError(
                        f"{who}: hyperparameter `{n}` must be a scalar; {source} shape "
                        f"{jnp.shape(value)} (a hyperparameter is never broadcast against the "
                        "updates; to sweep values, vmap over scalars)"
                    )
                # A copy, never the caller's array: state leaves must not share buffers (nor
                # with each other), or donating the state would fail or delete them.
                values[n] = jnp.array(value, dtype)
            return values

        # The factory validates the values now, once, with each schedule's value at count 0.
        build(current_hyperparams(jnp.zeros([], jnp.int32), arguments))

        def init_fn(params):
            count = jnp.zeros([], jnp.int32)
            hyperparams = current_hyperparams(count, arguments)
            inner_state = build(hyperparams).init(params)
            return InjectHyperparamsState(count, hyperparams, inner_state)

        def update_fn(updates, state, params=None, **extra_args):
            expect_state(who, state, InjectHyperparamsState)
            stored = state.hyperparams
            if not isinstance(stored, dict) or set(stored) != set(injected):
                raise ValueError(
                    f"{who}: `state.hyperparams` must keep the keys {sorted(injected)}, got "
                    f"{sorted(stored) if isinstance(stored, dict) else type(stored).__name__}. "
                    "Overwrite their values; other arguments are fixed at construction."
                )
            hyperparams = current_hyperparams(state.count, stored)
            inner = build(hyperparams)
            _check_inner_structure(inner, state.inner_state, updates if params is None else params)
            updates, inner_state = inner.update(
                updates, state.inner_state, params, **extra_args_filter(inner.update)(extra_args)
            )
            count = _tree.safe_increment(state.count)
            return updates, InjectHyperparamsState(count, hyperparams, inner_state)

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
