"""Optax's ``inject_stateful_hyperparams``: :func:`gradxform.inject_hyperparams` under its older
name.

Optax 0.2.8's ``inject_hyperparams`` accepts stateful schedules itself and keeps their states
in ``InjectStatefulHyperparamsState``; ``inject_stateful_hyperparams`` remains as its
deprecated alias. Here both build the same transformation, with the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gradxform._base import GradientTransformation, GradientTransformationExtraArgs
from gradxform.wrappers.hyperparams import (
    InjectStatefulHyperparamsState,
    WrappedSchedule,
    WrappedScheduleState,
    injector,
)

__all__ = [
    "InjectStatefulHyperparamsState",
    "WrappedSchedule",
    "WrappedScheduleState",
    "inject_stateful_hyperparams",
]


def inject_stateful_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any | None = None,
) -> Callable[..., GradientTransformationExtraArgs]:
    """Wraps an optimizer factory so that its hyperparameters live in the state, scheduled
    ones by :class:`gradxform.StatefulSchedule` objects: :func:`gradxform.inject_hyperparams`.

    For a hyperparameter ``h`` given as a stateful schedule ``s`` (a plain function of the
    count is wrapped in :class:`WrappedSchedule`), update ``k`` runs::

        h_k = s(state_k, **extra_args);   state_{k+1} = s.update(state_k, **extra_args)

    and the optimizer built with ``h_k``. Numbers (Python ints included) are injected as
    arrays of ``hyperparam_dtype``, zeros included; bools, strings, masks and the names in
    ``static_args`` stay fixed.

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
    return injector("inject_stateful_hyperparams", inner_factory, static_args, hyperparam_dtype)
