"""MoMo's states. The optimizers that keep them, :func:`gradxform.momo` and
:func:`gradxform.momo_adam`, are whole optimizers (their learning rate caps the step inside the
rule) and live in ``gradxform/optimizers/model_based.py``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from gradxform._types import StepCount


class MomoState(NamedTuple):
    """``exp_avg`` (the momentum), the scalars ``barf`` (averaged loss), ``gamma`` (averaged
    ``<g, x>``) and ``lb`` (the loss's lower bound), and ``count`` (int32).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.momo(1.0).init(jnp.zeros(2))
      >>> state.exp_avg, state.barf, state.gamma, state.lb, state.count
      (Array([0., 0.], dtype=float32), Array(0., dtype=float32), Array(0., dtype=float32), Array(0.,
      dtype=float32), Array(0, dtype=int32))
    """

    exp_avg: Any
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: StepCount


class MomoAdamState(NamedTuple):
    """:class:`MomoState` with ``exp_avg_sq``, Adam's second moment.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.momo_adam(0.1).init(jnp.zeros(2))
      >>> state.exp_avg, state.exp_avg_sq, state.count
      (Array([0., 0.], dtype=float32), Array([0., 0.], dtype=float32), Array(0, dtype=int32))
    """

    exp_avg: Any
    exp_avg_sq: Any
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: StepCount
