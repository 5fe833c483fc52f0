"""Adam's relatives from Optax's catalogue: AdaBelief, Yogi and NovoGrad's preconditioners,
with Optax's numbers.

Moments are kept in each param's dtype (NovoGrad's per-leaf scalar second moment in at least
float32), arithmetic runs in at least float32, and complex gradients count ``|g|^2``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform._types import StepCount
from gradxform.transforms.adam import ScaleByAdamState, check_moments, root_may_be_zero


class ScaleByBeliefState(NamedTuple):
    """``count`` (int32), first moment ``mu`` and the belief ``nu`` (second central moment).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_belief()
      >>> _, state = tx.update(jnp.array([10.0, -20.0]), tx.init(jnp.zeros(2)))
      >>> state.mu, state.nu.round(4)  # (1 - b1) g and (1 - b2) (g - m)^2 = 0.001 * (0.9 g)^2
      (Array([ 1., -2.], dtype=float32), Array([0.081, 0.324], dtype=float32))
    """

    count: StepCount
    mu: Any
    nu: Any


class ScaleByNovogradState(NamedTuple):
    """``count`` (int32), the momentum ``mu`` (per param) and ``nu`` (one scalar per leaf).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_novograd()
      >>> _, state = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init({"w": jnp.zeros(2)}))
      >>> state.nu  # one scalar per leaf: ||g||^2
      {'w': Array(25., dtype=float32)}
    """

    count: StepCount
    mu: Any
    nu: Any


def _squared_weighted(x: jax.Array, weight: Any, real: Any) -> jax.Array:
    """``weight * |x|^2`` in the real dtype ``real``."""
    return _tree.cast_scalar(weight, real) * _tree.abs_sq(x).astype(real)


def scale_by_belief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """AdaBelief's preconditioner (Zhuang et al., 2020), as Optax computes it.

    ::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        s_t = b2 * s_{t-1} + (1 - b2) * |g_t - m_t|^2 + eps_root     (eps_root is stored)
        m'_t = m_t / (1 - b1^t)
               (Nesterov: b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t))
        u_t = m'_t / (sqrt(s_t / (1 - b2^t)) + eps)

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the belief, in [0, 1).
      eps: added to the denominator (>= 0).
      eps_root: added to the belief at every step (>= 0).
      nesterov: Nesterov's look-ahead first moment.

    Returns:
      A transformation whose state is :class:`ScaleByBeliefState`.

    References:
      Zhuang et al., `AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
      Gradients <https://arxiv.org/abs/2010.07468>`_, 2020.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_belief()
      >>> # the first step: g / sqrt((g - m_1)^2) = g / (0.9 |g|)
      >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0].round(4)
      Array([ 1.1111, -1.1111], dtype=float32)
    """
    who = "scale_by_belief"
    check_moments(who, b1, b2, eps, eps_root)
    _validate.boolean(who, "nesterov", nesterov)
    may_be_zero = root_may_be_zero(eps, eps_root)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        zeros = _tree.tree_zeros_like(params)
        return ScaleByBeliefState(jnp.zeros([], jnp.int32), zeros, _tree.tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByBeliefState)
        _checks.check_updates(who, updates, state.mu, "first moment")
        count = _tree.safe_increment(state.count)
        correction1 = _tree.bias_correction(b1, count)
        correction2 = _tree.bias_correction(b2, count)
        if nesterov:
            moment_weight, gradient_weight = _tree.nesterov_weights(b1, count)

        def leaf(g, m, s):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, s.dtype)
            real = _tree.real_dtype(dtype)
            out_dtype, g = _tree.update_dtype(g, m, s), g.astype(dtype)
            new_m = _tree.moment_update(m, g, b1, dtype)
            belief = _squared_weighted(g - new_m, 1 - b2, real)
            new_s = belief + _tree.cast_scalar(b2, real) * _tree.as_real(s, real)
            new_s = new_s + _tree.cast_scalar(eps_root, real)
            if nesterov:
                m_hat = (
                    _tree.cast_scalar(moment_weight, dtype) * new_m
                    + _tree.cast_scalar(gradient_weight, dtype) * g
                )
            else:
                m_hat = new_m * _tree.cast_scalar(1 / correction1, dtype)
            s_hat = new_s * _tree.cast_scalar(1 / correction2, real)
            denominator = jnp.sqrt(s_hat) + _tree.cast_scalar(eps, real)
            u = _tree.safe_divide(m_hat, denominator, may_be_zero)
            return u.astype(out_dtype), new_m.astype(m.dtype), new_s.astype(s.dtype)

        u, mu, nu = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByBeliefState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


def scale_by_yogi(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
) -> GradientTransformation:
    """Yogi's preconditioner (Zaheer et al., 2018), as Optax computes it.

    Both moments start at ``initial_accumulator_value``; the second moves towards ``|g|^2``
    additively, by at most ``(1 - b2) |g|^2`` per step::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = v_{t-1} - (1 - b2) * sign(v_{t-1} - |g_t|^2) * |g_t|^2
        u_t = (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t) + eps_root) + eps)

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: the second moment's rate, in [0, 1).
      eps: added to the denominator (>= 0).
      eps_root: added inside the root (>= 0).
      initial_accumulator_value: the moments' initial value (>= 0).

    Returns:
      A transformation whose state is :class:`gradxform.ScaleByAdamState` (as Optax's).

    References:
      Zaheer et al., `Adaptive Methods for Nonconvex Optimization
      <https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization>`_, 2018.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_yogi()
      >>> # m_1 = 0.9e-6 + 0.1 g, v_1 = 1e-6 + 0.001 g^2: u = 10 m_1 / (sqrt(1000 v_1) + 1e-3)
      >>> tx.update(jnp.array([1.0, -1.0]), tx.init(jnp.zeros(2)))[0].round(4)
      Array([ 0.9985, -0.9985], dtype=float32)
    """
    who = "scale_by_yogi"
    check_moments(who, b1, b2, eps, eps_root)
    _validate.non_negative(who, "initial_accumulator_value", initial_accumulator_value)
    may_be_zero = root_may_be_zero(eps, eps_root)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        value = initial_accumulator_value
        return ScaleByAdamState(
            jnp.zeros([], jnp.int32),
            _tree.tree_full_like(params, value),
            _tree.tree_full_like(params, value),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByAdamState)
        _checks.check_updates(who, updates, state.mu, "first moment")
        count = _tree.safe_increment(state.count)
        correction1 = _tree.bias_correction(b1, count)
        correction2 = _tree.bias_correction(b2, count)

        def leaf(g, m, v):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype)
            real = _tree.real_dtype(dtype)
            out_dtype, g = _tree.update_dtype(g, m, v), g.astype(dtype)
            new_m = _tree.moment_update(m, g, b1, dtype)
            square = _tree.abs_sq(g).astype(real)
            v_real = _tree.as_real(v, real)
            step = _tree.cast_scalar(1 - b2, real) * jnp.sign(v_real - square) * square
            new_v = v_real - step
            # The corrections as reciprocals computed once: XLA would rewrite a division by a
            # traced scalar differently in different programs (flat buffers, trees).
            v_hat = new_v * _tree.cast_scalar(1 / correction2, real)
            root = jnp.sqrt(v_hat + _tree.cast_scalar(eps_root, real))
            denominator = root + _tree.cast_scalar(eps, real)
            m_hat = new_m * _tree.cast_scalar(1 / correction1, dtype)
            u = _tree.safe_divide(m_hat, denominator, may_be_zero)
            return u.astype(out_dtype), new_m.astype(m.dtype), new_v.astype(v.dtype)

        u, mu, nu = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


def scale_by_novograd(
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mu_dtype: Any | None = None,
) -> GradientTransformation:
    """NovoGrad's preconditioner (Ginsburg et al., 2019), as Optax computes it.

    Per leaf, with ``||g||`` the l2 norm of the leaf's gradient::

        v_1 = ||g_1||^2,                   v_t = b2 * v_{t-1} + (1 - b2) * ||g_t||^2
        d_t = g_t / (sqrt(v_t + eps_root) + eps) + weight_decay * p
        m_1 = d_1,                         m_t = b1 * m_{t-1} + d_t
        u_t = m_t

    ``v`` is one scalar per leaf, kept in at least float32 (Optax keeps it in the param's
    dtype: the same numbers for float32 and float64 params).

    Args:
      b1: the momentum, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator (>= 0).
      eps_root: added inside the root (>= 0).
      weight_decay: the decay added to the normalised gradient (>= 0).
      mu_dtype: dtype of the momentum; by default each param's dtype.

    Returns:
      A transformation whose state is :class:`ScaleByNovogradState`. Needs ``params`` when
      ``weight_decay`` is not a static 0.

    References:
      Ginsburg et al., `Stochastic Gradient Methods with Layer-wise Adaptive Moments for
      Training of Deep Networks <https://arxiv.org/abs/1905.11286>`_, 2019.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_novograd()
      >>> tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))[0]  # the first step: g / ||g||
      Array([0.6, 0.8], dtype=float32)
    """
    who = "scale_by_novograd"
    check_moments(who, b1, b2, eps, eps_root)
    _validate.non_negative(who, "weight_decay", weight_decay)
    _validate.dtype(who, "mu_dtype", mu_dtype)
    may_be_zero = root_may_be_zero(eps, eps_root)
    decays = not _validate.is_static_zero(weight_decay)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        nu = jax.tree.map(
            lambda p: jnp.zeros([], _tree.real_dtype(_tree.compute_dtype(p.dtype))), params
        )
        return ScaleByNovogradState(
            jnp.zeros([], jnp.int32), _tree.tree_zeros_like(params, mu_dtype), nu
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, ScaleByNovogradState)
        _checks.check_updates(who, updates, state.mu, "momentum")
        if decays:
            require_params(who, params, "its weight decay adds a multiple of them")
        first = state.count == 0
        count = _tree.safe_increment(state.count)

        def leaf(g, m, v, p=None):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype)
            real = _tree.real_dtype(dtype)
            out_dtype, g = _tree.update_dtype(g, m), g.astype(dtype)
            square = jnp.sum(_tree.abs_sq(g)).astype(real)
            b2_ = _tree.cast_scalar(b2, real)
            new_v = jnp.where(first, square, b2_ * v.astype(real) + (1 - b2_) * square)
            root = jnp.sqrt(new_v + _tree.cast_scalar(eps_root, real))
            d = _tree.safe_divide(g, root + _tree.cast_scalar(eps, real), may_be_zero)
            if decays:
                d = d + _tree.cast_scalar(weight_decay, dtype) * p.astype(dtype)
            new_m = jnp.where(first, d, _tree.cast_scalar(b1, dtype) * m.astype(dtype) + d)
            new_m = new_m.astype(m.dtype)
            return new_m.astype(out_dtype), new_m, new_v.astype(v.dtype)

        trees = (updates, state.mu, state.nu) + ((params,) if decays else ())
        u, mu, nu = _tree.tree_map_multi(leaf, 3, *trees)
        return u, ScaleByNovogradState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)
