"""MoMo: momentum with a Polyak-type step size from the loss value (``update(..., value=)``),
with Optax's numbers.

Each is a whole optimizer, as in Optax: the learning rate caps the adaptive step inside the
rule, so there is no preconditioner to chain it after. Scalars (the averaged loss, ``gamma`` and
the lower bound) are kept in the widest param dtype (at least float32), the moments in each
param's dtype. Complex params are updated as (real, imaginary) pairs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform._types import ScalarOrSchedule
from gradxform.transforms.complex import real_pairs
from gradxform.transforms.dog import scalar_dtype
from gradxform.transforms.momo import MomoAdamState, MomoState

# Optax compares the squared norm of the momentum with float64's machine epsilon (its
# `jnp.finfo(float).eps`), whatever the params' dtype.
_TINY_NORM = float(np.finfo(np.float64).eps)


def _check_value(who: str, value: Any) -> None:
    if value is None:
        raise ValueError(f"{who} needs the loss: call `update(grads, state, params, value=loss)`")


def _init_scalars(params: Any, lower_bound: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    dtype = scalar_dtype(params)
    return jnp.zeros([], dtype), jnp.zeros([], dtype), jnp.asarray(lower_bound, dtype)


def _step_size(alpha, weight_decay, barf, gamma, iprod, norm, lb, lower_bound, adapt, bc1):
    """MoMo's step ``tau`` and the lower bound used, with (``bc1`` != 1) Adam's correction."""
    decayed = 1 + alpha * weight_decay
    if adapt:
        cap = decayed * (barf - gamma) + iprod
        lb = jnp.where(
            cap < decayed * bc1 * lb, jnp.maximum(cap / (2 * bc1 * decayed), lower_bound), lb
        )
    t1 = jnp.maximum(decayed * (barf - bc1 * lb - gamma) + iprod, 0.0)
    t1 = jnp.where(norm <= _TINY_NORM, 0.0, t1 / jnp.where(norm <= _TINY_NORM, 1, norm))
    return jnp.minimum(alpha / bc1, t1), lb


def _check_momo(who, learning_rate, lower_bound, weight_decay, adapt_lower_bound):
    _validate.learning_rate(who, learning_rate)
    _validate.finite(who, "lower_bound", lower_bound)
    _validate.non_negative(who, "weight_decay", weight_decay)
    _validate.boolean(who, "adapt_lower_bound", adapt_lower_bound)


def momo(
    learning_rate: ScalarOrSchedule = 1.0,
    beta: float = 0.9,
    lower_bound: float = 0.0,
    weight_decay: float = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformation:
    """MoMo (Schaipp et al., 2023), SGD with momentum and a model-based step, as Optax's.

    With ``b = 0`` at the first update and ``beta`` afterwards, the loss ``f_t`` (``value=``)
    and ``lr = alpha_t``::

        d_t = b * d_{t-1} + (1 - b) * g_t
        f_t' = b * f_{t-1}' + (1 - b) * f_t,     gamma_t = b * gamma_{t-1} + (1 - b) * <g_t, x_t>
        tau_t = min(lr, max((1 + lr wd) (f_t' - lb - gamma_t) + <d_t, x_t>, 0) / ||d_t||^2)
        u_t = -lr wd / (1 + lr wd) * x_t - tau_t * d_t

    (``tau_t`` uses 0 for the second term when ``||d_t||^2`` is below float64's epsilon.)
    With ``adapt_lower_bound`` the lower bound ``lb`` is re-estimated at each step.

    Args:
      learning_rate: the largest step (a number >= 0 or a schedule of the step count).
      beta: the momentum, in [0, 1).
      lower_bound: a lower bound of the loss.
      weight_decay: decoupled weight decay (>= 0).
      adapt_lower_bound: re-estimate the lower bound online.

    Returns:
      A transformation whose state is :class:`MomoState`; its ``update`` needs ``params``
      and ``value=`` (the loss at the params). Schaipp, Ohana, Eickenberg, Defazio & Gower,
      "MoMo: Momentum Models for Adaptive Learning Rates", ICML 2024.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.momo(), {"w": jnp.array([1.0, -2.0])}
      >>> grads, state = {"w": jnp.array([3.0, 4.0])}, opt.init(params)
      >>> updates, _ = opt.update(grads, state, params, value=jnp.array(5.0))
      >>> [round(u, 4) for u in updates["w"].tolist()]  # tau = min(lr, f / ||g||^2) = 0.2: -tau * g
      [-0.6, -0.8]
    """
    who = "momo"
    _check_momo(who, learning_rate, lower_bound, weight_decay, adapt_lower_bound)
    _validate.probability(who, "beta", beta)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        barf, gamma, lb = _init_scalars(params, lower_bound)
        return MomoState(_tree.tree_zeros_like(params), barf, gamma, lb, jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        expect_state(who, state, MomoState)
        require_params(who, params, "the step size depends on them")
        _checks.check_updates(who, updates, state.exp_avg, "momentum")
        _check_value(who, value)
        dtype = state.barf.dtype
        b = jnp.where(state.count == 0, 0.0, _tree.cast_scalar(beta, dtype)).astype(dtype)
        barf = b * state.barf + (1 - b) * jnp.asarray(value).astype(dtype)
        exp_avg = jax.tree.map(
            lambda d, g: _tree.moment_update(d, g.astype(d.dtype), b, d.dtype).astype(d.dtype),
            state.exp_avg,
            updates,
        )
        gamma = b * state.gamma + (1 - b) * _tree.tree_vdot(updates, params).astype(dtype)
        norm = _tree.tree_squared_norm(exp_avg).astype(dtype)
        iprod = _tree.tree_vdot(exp_avg, params).astype(dtype)
        alpha = learning_rate(state.count) if callable(learning_rate) else learning_rate
        alpha = jnp.asarray(alpha).astype(dtype)
        tau, lb = _step_size(
            alpha, weight_decay, barf, gamma, iprod, norm, state.lb, lower_bound,
            adapt_lower_bound, 1.0,
        )  # fmt: skip
        shrink = alpha * weight_decay / (1 + alpha * weight_decay)
        new_updates = jax.tree.map(
            lambda d, p: (-shrink * p.astype(dtype) - tau * d.astype(dtype)).astype(
                _tree.update_dtype(d, p)
            ),
            exp_avg,
            params,
        )
        if adapt_lower_bound:
            lb = jnp.maximum((barf + iprod - gamma) - tau * norm / 2, lower_bound).astype(dtype)
        else:
            lb = state.lb
        count = _tree.safe_increment(state.count)
        return new_updates, MomoState(exp_avg, barf, gamma, lb, count)

    return real_pairs(GradientTransformation(init_fn, update_fn))


def momo_adam(
    learning_rate: ScalarOrSchedule = 1e-2,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    lower_bound: float = 0.0,
    weight_decay: float = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformation:
    """MoMo-Adam (Schaipp et al., 2023): MoMo's step in Adam's geometry, as Optax's.

    With ``c1 = 1 - b1^t``, ``c2 = 1 - b2^t``, ``D_t = eps + sqrt(v_t / c2)`` and the loss
    ``f_t`` (``value=``)::

        d_t = b1 d_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
        f_t' = b1 f_{t-1}' + (1 - b1) f_t,   gamma_t = b1 gamma_{t-1} + (1 - b1) <g_t, x_t>
        tau_t = min(lr / c1, max((1 + lr wd) (f_t' - c1 lb - gamma_t) + <d_t, x_t>, 0)
                             / <d_t, d_t / D_t>)
        u_t = -lr wd / (1 + lr wd) * x_t - tau_t * d_t / D_t

    Args:
      learning_rate: the largest step (a number >= 0 or a schedule of the step count).
      b1: decay of the momentum and the averages, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the preconditioner (>= 0).
      lower_bound: a lower bound of the loss.
      weight_decay: decoupled weight decay (>= 0).
      adapt_lower_bound: re-estimate the lower bound online.

    Returns:
      A transformation whose state is :class:`MomoAdamState`; its ``update`` needs
      ``params`` and ``value=``. Schaipp et al., "MoMo: Momentum Models for Adaptive Learning
      Rates", ICML 2024.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, params = gx.momo_adam(1.0), {"w": jnp.array([1.0, -2.0])}
      >>> grads, state = {"w": jnp.array([3.0, 4.0])}, opt.init(params)
      >>> updates, _ = opt.update(grads, state, params, value=jnp.array(5.0))
      >>> [round(u, 4) for u in updates["w"].tolist()]  # tau = f / sum |g| = 5 / 7: -tau * sign(g)
      [-0.7143, -0.7143]
    """
    who = "momo_adam"
    _check_momo(who, learning_rate, lower_bound, weight_decay, adapt_lower_bound)
    _validate.probability(who, "b1", b1)
    _validate.probability(who, "b2", b2)
    _validate.non_negative(who, "eps", eps)
    may_be_zero = not _validate.is_static_nonzero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        barf, gamma, lb = _init_scalars(params, lower_bound)
        zeros = _tree.tree_zeros_like(params)
        return MomoAdamState(
            zeros, _tree.tree_zeros_like(params), barf, gamma, lb, jnp.zeros([], jnp.int32)
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        expect_state(who, state, MomoAdamState)
        require_params(who, params, "the step size depends on them")
        _checks.check_updates(who, updates, state.exp_avg, "momentum")
        _check_value(who, value)
        dtype = state.barf.dtype
        count = _tree.safe_increment(state.count)
        barf = b1 * state.barf + (1 - b1) * jnp.asarray(value).astype(dtype)
        bc1 = _tree.bias_correction(b1, count).astype(dtype)
        bc2 = _tree.bias_correction(b2, count).astype(dtype)

        def leaf(g, d, v):
            leaf_dtype = _tree.compute_dtype(g.dtype, d.dtype, v.dtype)
            g = g.astype(leaf_dtype)
            new_d = _tree.moment_update(d, g, b1, leaf_dtype)
            new_v = _tree.square_moment_update(v, g, b2, leaf_dtype)
            precond = _tree.cast_scalar(eps, leaf_dtype) + jnp.sqrt(
                new_v / _tree.cast_scalar(bc2, leaf_dtype)
            )
            weighted = _tree.safe_divide(new_d, precond, may_be_zero)
            return new_d.astype(d.dtype), new_v.astype(v.dtype), weighted

        exp_avg, exp_avg_sq, weighted = _tree.tree_map_multi(
            leaf, 3, updates, state.exp_avg, state.exp_avg_sq
        )
        norm = _tree.tree_vdot(exp_avg, weighted).astype(dtype)
        gamma = b1 * state.gamma + (1 - b1) * _tree.tree_vdot(updates, params).astype(dtype)
        iprod = _tree.tree_vdot(exp_avg, params).astype(dtype)
        alpha = learning_rate(state.count) if callable(learning_rate) else learning_rate
        alpha = jnp.asarray(alpha).astype(dtype)
        tau, lb = _step_size(
            alpha, weight_decay, barf, gamma, iprod, norm, state.lb, lower_bound,
            adapt_lower_bound, bc1,
        )  # fmt: skip
        shrink = alpha * weight_decay / (1 + alpha * weight_decay)
        new_updates = jax.tree.map(
            lambda w, p: (-shrink * p.astype(dtype) - tau * w.astype(dtype)).astype(
                _tree.update_dtype(w, p)
            ),
            weighted,
            params,
        )
        if adapt_lower_bound:
            lb = ((barf + iprod - gamma) - tau * norm / 2) / bc1
            lb = jnp.maximum(lb, lower_bound).astype(dtype)
        else:
            lb = state.lb
        return new_updates, MomoAdamState(exp_avg, exp_avg_sq, barf, gamma, lb, count)

    return real_pairs(GradientTransformation(init_fn, update_fn))
