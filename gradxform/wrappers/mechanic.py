"""Mechanic: a learned scale for any optimizer's updates, with Optax's numbers.

:func:`mechanize` runs the base optimizer, and moves the params to ``x_0 + s * (sum of the base
updates)``, where the scale ``s`` is learned online by a few coin-betting (wealth) estimators,
one per averaging horizon. The state keeps a copy of the initial params (never an alias of them)
and five vectors of ``num_betas`` scalars, in the widest param dtype (at least float32).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import (
    GradientTransformation,
    as_transformation,
    expect_state,
    extra_args_filter,
    require_params,
)
from gradxform._types import StepCount
from gradxform.transforms.dog import copy_params, scalar_dtype


class MechanicState(NamedTuple):
    """``base_optimizer_state``, ``count`` (int32), the per-horizon vectors ``r`` (reward),
    ``m`` (running max of ``|h|``), ``v`` (sum of ``h^2``) and ``s`` (scales), and ``x0``
    (the params at the first update).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.mechanize(gx.sgd(0.1), num_betas=2).init(jnp.ones(2))
      >>> type(state).__name__, int(state.count), [round(s / 1e-6, 4) for s in state.s.tolist()]
      ('MechanicState', 0, [1.0, 1.0])
    """

    base_optimizer_state: Any
    count: StepCount
    r: jax.Array
    m: jax.Array
    v: jax.Array
    s: jax.Array
    x0: Any


def mechanize(
    base_optimizer: GradientTransformation,
    weight_decay: float = 1e-2,
    eps: float = 1e-8,
    s_init: float = 1e-6,
    num_betas: int = 6,
) -> GradientTransformation:
    """Mechanic (Cutkosky et al., 2023): tunes the scale of ``base_optimizer``'s updates.

    With ``Delta_t = (x_0 - x_t) / (S_{t-1} + eps)`` (the base updates so far, per unit of
    scale; ``S = sum_i s_i``), ``beta_i = 1 - 10^-i`` for ``i = 1..num_betas``, and the
    gradient with a scale-aware weight decay
    ``g'_t = g_t + weight_decay * S_{t-1} * ||g_t|| / (||x_t|| + eps) * x_t``::

        h_t = <g'_t, Delta_t>
        m_i = max(beta_i * m_i, |h_t| + eps)
        v_i = beta_i^2 * v_i + h_t^2
        r_i = beta_i * r_i + clip(h_t, -m_i_old, m_i_old) * s_i_old
        s_i = (s_init / num_betas * m_i + max(r_i, 0)) / (sqrt(v_i) + eps)
        x_{t+1} = x_0 - S_t * (Delta_t - base_update_t),   u_t = x_{t+1} - x_t

    Args:
      base_optimizer: the transformation whose updates are scaled (any gradxform or Optax
        transformation; it receives the params and the extra arguments).
      weight_decay: the scale-aware weight decay (>= 0).
      eps: added to the denominators (>= 0).
      s_init: the initial scale of each estimator (>= 0).
      num_betas: the number of averaging horizons (a whole number >= 1).

    Returns:
      A transformation whose state is :class:`MechanicState`; it needs ``params``. Cutkosky,
      Defazio & Mehta, "Mechanic: A Learning Rate Tuner", NeurIPS 2023.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.mechanize(gx.sgd(1.0)), jnp.zeros(2)
      >>> updates, state = jax.jit(opt.update)(jnp.array([0.5, -4.0]), opt.init(params), params)
      >>> [round(u / 1e-6, 4) for u in updates.tolist()]  # S_1 = s_init = 1e-6: S_1 * (-g)
      [-0.5, 4.0]
    """
    who = "mechanize"
    base_optimizer = as_transformation(base_optimizer, f"{who}: `base_optimizer`")
    _validate.non_negative(who, "weight_decay", weight_decay)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "s_init", s_init)
    _validate.count(who, "num_betas", num_betas)
    keep_extra = extra_args_filter(base_optimizer.update)
    betas_float = [1.0 - 0.1**i for i in range(1, num_betas + 1)]

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        dtype = scalar_dtype(params)
        return MechanicState(
            base_optimizer_state=base_optimizer.init(params),
            count=jnp.zeros([], jnp.int32),
            r=jnp.zeros([num_betas], dtype),
            m=jnp.zeros([num_betas], dtype),
            v=jnp.zeros([num_betas], dtype),
            s=jnp.full([num_betas], s_init, dtype),
            x0=copy_params(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, MechanicState)
        require_params(who, params, "Mechanic moves the params from where they started")
        _checks.check_updates(who, updates, state.x0, "initial param")
        base_updates, base_state = base_optimizer.update(
            updates, state.base_optimizer_state, params, **keep_extra(extra_args)
        )
        first = state.count == 0
        x0 = jax.tree.map(lambda p, x: jnp.where(first, p, x).astype(x.dtype), params, state.x0)
        dtype = state.s.dtype
        s_sum = jnp.sum(state.s)
        grad_norm = jnp.sqrt(_tree.tree_squared_norm(updates)).astype(dtype)
        param_norm = jnp.sqrt(_tree.tree_squared_norm(params)).astype(dtype)
        decay = weight_decay * s_sum * grad_norm / (param_norm + eps)
        decayed = jax.tree.map(
            lambda g, p: (
                g.astype(_tree.compute_dtype(g.dtype, p.dtype))
                + _tree.cast_scalar(decay, _tree.compute_dtype(g.dtype, p.dtype)) * p
            ),
            updates,
            params,
        )
        spent = s_sum + eps

        def delta_prev_leaf(x, x_start):
            leaf_dtype = _tree.compute_dtype(x.dtype, x_start.dtype)
            difference = x_start.astype(leaf_dtype) - x.astype(leaf_dtype)
            return difference / _tree.cast_scalar(spent, leaf_dtype)

        delta_prev = jax.tree.map(delta_prev_leaf, params, x0)
        h = _tree.tree_vdot(decayed, delta_prev).astype(dtype)
        clipped_h = jnp.clip(h, -state.m, state.m)
        betas = jnp.asarray(betas_float, dtype)
        m = jnp.maximum(betas * state.m, jnp.abs(h) + eps)
        v = betas**2 * state.v + h**2
        r = betas * state.r + clipped_h * state.s
        wealth = (s_init / num_betas) * m + jnp.maximum(0.0, r)
        s = wealth / (jnp.sqrt(v) + eps)
        total_scale = jnp.sum(s)

        def leaf(x, x_start, d_prev, base):
            leaf_dtype = _tree.compute_dtype(x.dtype, d_prev.dtype, base.dtype)
            delta = d_prev.astype(leaf_dtype) - base.astype(leaf_dtype)
            new_x = x_start.astype(leaf_dtype) - _tree.cast_scalar(total_scale, leaf_dtype) * delta
            return (new_x - x.astype(leaf_dtype)).astype(_tree.update_dtype(base, x))

        new_updates = jax.tree.map(leaf, params, x0, delta_prev, base_updates)
        count = _tree.safe_increment(state.count)
        return new_updates, MechanicState(base_state, count, r, m, v, s, x0)

    return GradientTransformation(init_fn, update_fn)
