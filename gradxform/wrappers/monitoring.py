"""Measuring the updates as they pass: Optax's ``snapshot``, ``monitor`` and
``measure_with_ema``.

Each passes the updates through unchanged and keeps its measurements in its state, where a
training loop reads them (e.g. ``state.measurements["norm"]``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _validate
from gradxform._base import (
    GradientTransformation,
    as_transformation,
    chain,
    expect_state,
    extra_args_filter,
    stateless,
)
from gradxform._types import Params, Updates
from gradxform.transforms.momentum import ema


class SnapshotState(NamedTuple):
    """``measurement``: ``{measure_name: measure(updates)}`` of the last call (of the params
    after ``init``).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.snapshot("norm", gx.global_norm).init(jnp.array([3.0, 4.0]))  # the params' norm
      SnapshotState(measurement={'norm': Array(5., dtype=float32)})
    """

    measurement: dict


class MonitorState(NamedTuple):
    """``measurements``: ``{name: measurement}`` of the last call (empty after ``init``);
    ``measure_states``: the states of the measures that are transformations, in order.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.monitor({"max": lambda u: jnp.max(u)})
      >>> _, state = opt.update(jnp.array([1.0, 3.0]), opt.init(jnp.zeros(2)))
      >>> type(state).__name__, float(state.measurements["max"])
      ('MonitorState', 3.0)
    """

    measurements: dict
    measure_states: tuple


def snapshot(measure_name: str, measure: Callable[[Any], Any]) -> GradientTransformation:
    """Records ``measure(updates)`` in the state under ``measure_name``; updates pass unchanged.

    Args:
      measure_name: the key of the measurement in :attr:`SnapshotState.measurement`.
      measure: a function of the updates returning a tree of arrays (e.g. a global norm).

    Returns:
      A transformation whose state is :class:`SnapshotState`. Its ``init`` measures the params,
      so that the state keeps one structure.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.snapshot("norm", gx.global_norm)
      >>> updates, state = opt.update(jnp.array([3.0, 4.0]), opt.init(jnp.zeros(2)))
      >>> updates.tolist(), float(state.measurement["norm"])
      ([3.0, 4.0], 5.0)
    """
    who = "snapshot"
    if not isinstance(measure_name, str):
        raise TypeError(f"{who}: `measure_name` must be a string, got {measure_name!r}")
    _validate.function(who, "measure", measure)

    def init_fn(params):
        return SnapshotState({measure_name: measure(params)})

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, SnapshotState)
        _checks.check_against_params(who, updates, params)
        return updates, SnapshotState({measure_name: measure(updates)})

    return GradientTransformation(init_fn, update_fn)


def _of_updates(measure: Callable[[Updates], Any]) -> Callable[[Updates, Params | None], Any]:
    """A measure of the updates as a function of ``(updates, params)``."""
    return lambda updates, params: measure(updates)


def monitor(measures: Mapping[str, Any]) -> GradientTransformation:
    """Records several measurements of the updates; updates pass unchanged.

    A measure is a function of the updates, or a transformation whose *output* is the
    measurement (e.g. :func:`measure_with_ema`, or a chain ending in one), run on the updates
    this wrapper receives, with their params and extra arguments.

    Args:
      measures: ``{name: measure}``.

    Returns:
      A transformation whose state is :class:`MonitorState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> ema = gx.measure_with_ema(gx.global_norm, 0.5)  # debiased: 5 after one step
      >>> opt = gx.monitor({"norm": gx.global_norm, "ema": ema})
      >>> updates, state = opt.update(jnp.array([3.0, 4.0]), opt.init(jnp.zeros(2)))
      >>> updates.tolist(), {k: float(v) for k, v in state.measurements.items()}
      ([3.0, 4.0], {'norm': 5.0, 'ema': 5.0})
    """
    who = "monitor"
    if not isinstance(measures, Mapping):
        raise TypeError(f"{who}: `measures` must be a dict {{name: measure}}, got {measures!r}")
    names = tuple(measures)
    transforms: dict[Hashable, GradientTransformation] = {}
    for name, measure in measures.items():
        if callable(measure) and not hasattr(measure, "init"):
            transforms[name] = stateless(_of_updates(measure))
        else:
            transforms[name] = as_transformation(measure, f"{who}: measures[{name!r}]")
    filters = {name: extra_args_filter(t.update) for name, t in transforms.items()}

    def init_fn(params):
        states = tuple(transforms[name].init(params) for name in names)
        measurements = {}
        for name, measure_state in zip(names, states, strict=True):
            shapes = jax.eval_shape(
                lambda s, t=transforms[name]: t.update(params, s, params)[0], measure_state
            )
            measurements[name] = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        return MonitorState(measurements, states)

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, MonitorState)
        measurements, new_states = {}, []
        for name, measure_state in zip(names, state.measure_states, strict=True):
            measurements[name], measure_state = transforms[name].update(
                updates, measure_state, params, **filters[name](extra_args)
            )
            new_states.append(measure_state)
        return updates, MonitorState(measurements, tuple(new_states))

    return GradientTransformation(init_fn, update_fn)


def measure_with_ema(
    measure: Callable[[Any], Any],
    decay: float,
    debias: bool = True,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    """A measurement of the updates smoothed by an exponential moving average (Optax's).

    With ``m_t = measure(u_t)``::

        e_t = decay * e_{t-1} + (1 - decay) * m_t,   e_0 = 0
        out_t = e_t / (1 - decay^t)   (debias)   or   e_t

    Its *output* is the smoothed measurement, not the updates: use it as a measure of
    :func:`monitor`.

    Args:
      measure: a function of the updates returning a tree of floating arrays.
      decay: the EMA's decay, in [0, 1).
      debias: divide by ``1 - decay^t``.
      accumulator_dtype: dtype of the average; by default the measurement's.

    Returns:
      A transformation whose state is ``(EmptyState(), EmaState)``, the EMA over the
      measurement's structure.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> ema = gx.measure_with_ema(gx.global_norm, 0.5, debias=False)
      >>> out, state = ema.update(jnp.array([3.0, 4.0]), ema.init(jnp.zeros(2)))
      >>> float(out)  # (1 - 0.5) * ||u||
      2.5
    """
    who = "measure_with_ema"
    _validate.function(who, "measure", measure)
    _validate.boolean(who, "debias", debias)
    _validate.probability(who, "decay", decay, closed=not debias)
    _validate.dtype(who, "accumulator_dtype", accumulator_dtype)
    smooth = ema(decay, debias=debias, accumulator_dtype=accumulator_dtype)
    measured = stateless(lambda u, p: measure(u))
    inner = chain(measured, smooth)

    def init_fn(params):
        return (measured.init(params), smooth.init(measure(params)))

    return GradientTransformation(init_fn, inner.update)
