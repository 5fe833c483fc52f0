"""Per-coordinate preconditioners: Adam, AMSGrad, Adamax, NAdam, RMSProp, Adagrad, Lion.

Each transformation computes a leaf's update and its new moments in one function, so XLA can
produce all of them in a single pass over memory. Moments are kept in each param's dtype
(``mu_dtype`` overrides the first moment), and arithmetic runs in at least float32. Where a
square appears, complex values use ``|g|^2``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree
from gradxform._base import GradientTransformation


class ScaleByAdamState(NamedTuple):
    """``count`` (int32), first moment ``mu`` and second moment ``nu``, one leaf per param."""

    count: jax.Array
    mu: Any
    nu: Any


class ScaleByAmsgradState(NamedTuple):
    """Adam's state plus ``nu_max``, the running maximum of the raw second moment."""

    count: jax.Array
    mu: Any
    nu: Any
    nu_max: Any


class ScaleByAdamaxState(NamedTuple):
    """``count`` (int32), first moment ``mu`` and the infinity-norm accumulator ``u``."""

    count: jax.Array
    mu: Any
    u: Any


class ScaleByNadamState(NamedTuple):
    """``count`` (int32), ``mu_product`` (the product of momentum coefficients), ``mu``, ``nu``."""

    count: jax.Array
    mu_product: jax.Array
    mu: Any
    nu: Any


class ScaleByRmsState(NamedTuple):
    """``nu``: the moving average of squared gradients."""

    nu: Any


class ScaleByRStdDevState(NamedTuple):
    """``mu`` and ``nu``: moving averages of gradients and of squared gradients."""

    mu: Any
    nu: Any


class ScaleByRssState(NamedTuple):
    """``sum_of_squares``: Adagrad's accumulator."""

    sum_of_squares: Any


class ScaleByLionState(NamedTuple):
    """``mu``: the momentum."""

    mu: Any


def _divide(numerator: jax.Array, denominator: jax.Array, guard_zero: bool) -> jax.Array:
    """``numerator / denominator``, giving 0 where the denominator is 0 if ``guard_zero``.

    The guard is only compiled in when ``eps`` is statically 0: it is the one case in which a
    zero gradient history would otherwise turn finite input into 0/0 = NaN.
    """
    if guard_zero:
        return numerator / jnp.where(denominator == 0, 1, denominator)
    return numerator / denominator


def _check_moments(who: str, b1: Any, b2: Any, eps: Any) -> None:
    _checks.in_unit_interval(who, "b1", b1)
    _checks.in_unit_interval(who, "b2", b2)
    _checks.non_negative(who, "eps", eps)


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    amsgrad: bool = False,
    *,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """Adam's preconditioner (Kingma & Ba, 2015), optionally AMSGrad (Reddi et al., 2018).

    ::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|^2
        v'_t = max(v'_{t-1}, v_t) if amsgrad else v_t      (raw, before bias correction)
        u_t = (m_t / (1 - b1^t)) / (sqrt(v'_t / (1 - b2^t) + eps_root) + eps)

    With the defaults this is the update direction of ``torch.optim.Adam``.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the root (>= 0).
      eps_root: added inside the root (>= 0); useful when differentiating through the update.
      mu_dtype: dtype of the first moment; by default each param's dtype.
      amsgrad: use the running maximum of the second moment (torch's ``amsgrad``).
      nu_dtype: dtype of the second moment (and its maximum); by default each param's dtype.
        float16 params want float32 here: squares of gradients below ~2e-4 underflow in float16.

    Returns:
      A transformation whose state is :class:`ScaleByAdamState`
      (:class:`ScaleByAmsgradState` with ``amsgrad``).
    """
    who = "scale_by_adam"
    _check_moments(who, b1, b2, eps)
    _checks.non_negative(who, "eps_root", eps_root)
    no_eps_root = _checks.is_static_zero(eps_root)
    guard_zero = _checks.is_static_zero(eps) and no_eps_root

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        count = jnp.zeros([], jnp.int32)
        mu = _tree.tree_zeros_like(params, mu_dtype)
        nu = _tree.tree_zeros_like(params, nu_dtype)
        if amsgrad:
            return ScaleByAmsgradState(count, mu, nu, _tree.tree_zeros_like(params, nu_dtype))
        return ScaleByAdamState(count, mu, nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _tree.check_same_structure(state.mu, updates, "first moment", "updates")
        count = _tree.safe_increment(state.count)
        correction1 = _tree.bias_correction(b1, count)
        correction2 = _tree.bias_correction(b2, count)

        def leaf(g, m, v, v_max=None):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype)
            out_dtype, g = _tree.update_dtype(g, m, v), g.astype(dtype)
            new_m = _tree.moment_update(m, g, b1, dtype)
            new_v = _tree.moment_update(v, _tree.abs_sq(g), b2, dtype)
            v_used = new_v
            if amsgrad:
                v_used = jnp.maximum(v_max.astype(dtype), new_v)
            if no_eps_root:
                root = jnp.sqrt(v_used) * _tree.cast_scalar(jax.lax.rsqrt(correction2), dtype)
            else:
                v_hat = v_used * _tree.cast_scalar(1 / correction2, dtype)
                root = jnp.sqrt(v_hat + _tree.cast_scalar(eps_root, dtype))
            denominator = root + _tree.cast_scalar(eps, dtype)
            m_hat = new_m * _tree.cast_scalar(1 / correction1, dtype)
            u = _divide(m_hat, denominator, guard_zero)
            outputs = (u.astype(out_dtype), new_m.astype(m.dtype), new_v.astype(v.dtype))
            if amsgrad:
                outputs += (v_used.astype(v_max.dtype),)
            return outputs

        if amsgrad:
            u, mu, nu, nu_max = _tree.tree_map_multi(
                leaf, 4, updates, state.mu, state.nu, state.nu_max
            )
            return u, ScaleByAmsgradState(count, mu, nu, nu_max)
        u, mu, nu = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


def scale_by_adamax(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    """Adamax's preconditioner (Kingma & Ba, 2015, section 7), as ``torch.optim.Adamax``.

    ::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        u_t = max(b2 * u_{t-1}, |g_t| + eps)          (eps inside the max, as torch)
        update = (m_t / (1 - b1^t)) / u_t

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the infinity norm, in [0, 1).
      eps: added to ``|g|`` (>= 0).

    Returns:
      A transformation whose state is :class:`ScaleByAdamaxState`.
    """
    who = "scale_by_adamax"
    _check_moments(who, b1, b2, eps)
    guard_zero = _checks.is_static_zero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        zeros = _tree.tree_zeros_like(params)
        return ScaleByAdamaxState(jnp.zeros([], jnp.int32), zeros, _tree.tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _tree.check_same_structure(state.mu, updates, "first moment", "updates")
        count = _tree.safe_increment(state.count)
        correction1 = _tree.bias_correction(b1, count)

        def leaf(g, m, u_inf):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, u_inf.dtype)
            out_dtype, g = _tree.update_dtype(g, m, u_inf), g.astype(dtype)
            new_m = _tree.moment_update(m, g, b1, dtype)
            scaled = _tree.cast_scalar(b2, dtype) * u_inf.astype(dtype)
            new_u_inf = jnp.maximum(scaled, jnp.abs(g) + _tree.cast_scalar(eps, dtype))
            m_hat = new_m * _tree.cast_scalar(1 / correction1, dtype)
            u = _divide(m_hat, new_u_inf, guard_zero)
            return u.astype(out_dtype), new_m.astype(m.dtype), new_u_inf.astype(u_inf.dtype)

        u, mu, u_inf = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.u)
        return u, ScaleByAdamaxState(count, mu, u_inf)

    return GradientTransformation(init_fn, update_fn)


def scale_by_nadam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, momentum_decay: float = 4e-3
) -> GradientTransformation:
    """NAdam's preconditioner (Dozat, 2016), as ``torch.optim.NAdam``.

    With the momentum schedule ``mu_t = b1 * (1 - 0.5 * 0.96^(t * momentum_decay))`` and
    ``P_t = mu_1 * ... * mu_t``::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|^2
        d_t = sqrt(v_t / (1 - b2^t)) + eps
        u_t = (1 - mu_t) / (1 - P_t) * g_t / d_t + mu_{t+1} / (1 - P_t * mu_{t+1}) * m_t / d_t

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator (>= 0).
      momentum_decay: ``psi`` in the momentum schedule (>= 0; torch's default 4e-3).

    Returns:
      A transformation whose state is :class:`ScaleByNadamState`.
    """
    who = "scale_by_nadam"
    _check_moments(who, b1, b2, eps)
    _checks.non_negative(who, "momentum_decay", momentum_decay)
    guard_zero = _checks.is_static_zero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleByNadamState(
            count=jnp.zeros([], jnp.int32),
            mu_product=jnp.ones([], _tree.default_float_dtype()),
            mu=_tree.tree_zeros_like(params),
            nu=_tree.tree_zeros_like(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _tree.check_same_structure(state.mu, updates, "first moment", "updates")
        count = _tree.safe_increment(state.count)
        step = count.astype(_tree.default_float_dtype())
        momentum = b1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
        next_momentum = b1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
        mu_product = (state.mu_product * momentum).astype(state.mu_product.dtype)
        gradient_weight = (1.0 - momentum) / (1.0 - mu_product)
        moment_weight = next_momentum / (1.0 - mu_product * next_momentum)
        correction2 = _tree.bias_correction(b2, count)

        def leaf(g, m, v):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype)
            out_dtype, g = _tree.update_dtype(g, m, v), g.astype(dtype)
            new_m = _tree.moment_update(m, g, b1, dtype)
            new_v = _tree.moment_update(v, _tree.abs_sq(g), b2, dtype)
            root = jnp.sqrt(new_v * _tree.cast_scalar(1 / correction2, dtype))
            denominator = root + _tree.cast_scalar(eps, dtype)
            weighted = g * _tree.cast_scalar(gradient_weight, dtype) + new_m * _tree.cast_scalar(
                moment_weight, dtype
            )
            u = _divide(weighted, denominator, guard_zero)
            return u.astype(out_dtype), new_m.astype(m.dtype), new_v.astype(v.dtype)

        u, mu, nu = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByNadamState(count, mu_product, mu, nu)

    return GradientTransformation(init_fn, update_fn)


def scale_by_rms(
    decay: float = 0.99,
    eps: float = 1e-8,
    eps_in_sqrt: bool = False,
    centered: bool = False,
    initial_scale: float = 0.0,
) -> GradientTransformation:
    """RMSProp's preconditioner (Hinton, 2012), as ``torch.optim.RMSprop``.

    ::

        v_t = decay * v_{t-1} + (1 - decay) * |g_t|^2,   v_0 = initial_scale
        c_t = decay * c_{t-1} + (1 - decay) * g_t        (only if centered)
        s_t = v_t - |c_t|^2 if centered else v_t         (clamped at 0)
        u_t = g_t / (sqrt(s_t) + eps)      or   g_t / sqrt(s_t + eps)   with eps_in_sqrt

    The defaults are torch's (eps outside the root); Optax's ``scale_by_rms`` defaults to
    ``decay=0.9, eps_in_sqrt=True``.

    Args:
      decay: torch's ``alpha``, in [0, 1).
      eps: added to the denominator (>= 0).
      eps_in_sqrt: add ``eps`` inside the square root instead.
      centered: divide by the estimated standard deviation instead of the root mean square.
      initial_scale: the initial value of ``v`` (>= 0).

    Returns:
      A transformation whose state is :class:`ScaleByRmsState`
      (:class:`ScaleByRStdDevState` when centered).
    """
    who = "scale_by_stddev" if centered else "scale_by_rms"
    _checks.in_unit_interval(who, "decay", decay)
    _checks.non_negative(who, "eps", eps)
    _checks.non_negative(who, "initial_scale", initial_scale)
    guard_zero = _checks.is_static_zero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        nu = _tree.tree_full_like(params, initial_scale)
        if centered:
            return ScaleByRStdDevState(mu=_tree.tree_zeros_like(params), nu=nu)
        return ScaleByRmsState(nu=nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _tree.check_same_structure(state.nu, updates, "second moment", "updates")

        def leaf(g, v, c=None):
            dtype = _tree.compute_dtype(g.dtype, v.dtype)
            out_dtype, g = _tree.update_dtype(g, v, c), g.astype(dtype)
            new_v = _tree.moment_update(v, _tree.abs_sq(g), decay, dtype)
            spread = new_v
            if centered:
                new_c = _tree.moment_update(c, g, decay, dtype)
                # Rounding can make v - c^2 slightly negative; the root of that would be NaN.
                spread = jnp.maximum(new_v - _tree.abs_sq(new_c), 0)
            eps_ = _tree.cast_scalar(eps, dtype)
            denominator = jnp.sqrt(spread + eps_) if eps_in_sqrt else jnp.sqrt(spread) + eps_
            u = _divide(g, denominator, guard_zero).astype(out_dtype)
            if centered:
                return u, new_v.astype(v.dtype), new_c.astype(c.dtype)
            return u, new_v.astype(v.dtype)

        if centered:
            u, nu, mu = _tree.tree_map_multi(leaf, 3, updates, state.nu, state.mu)
            return u, ScaleByRStdDevState(mu=mu, nu=nu)
        u, nu = _tree.tree_map_multi(leaf, 2, updates, state.nu)
        return u, ScaleByRmsState(nu=nu)

    return GradientTransformation(init_fn, update_fn)


def scale_by_stddev(
    decay: float = 0.99, eps: float = 1e-8, eps_in_sqrt: bool = False, initial_scale: float = 0.0
) -> GradientTransformation:
    """Centered RMSProp's preconditioner: :func:`scale_by_rms` with ``centered=True``.

    ::

        u_t = g_t / (sqrt(v_t - |c_t|^2) + eps)

    with ``v`` and ``c`` the moving averages of ``|g|^2`` and ``g`` (see :func:`scale_by_rms`).

    Returns:
      A transformation whose state is :class:`ScaleByRStdDevState`.
    """
    return scale_by_rms(decay, eps, eps_in_sqrt, centered=True, initial_scale=initial_scale)


def scale_by_rss(
    initial_accumulator_value: float = 0.0, eps: float = 1e-10
) -> GradientTransformation:
    """Adagrad's preconditioner (Duchi et al., 2011), as ``torch.optim.Adagrad``.

    ::

        s_t = s_{t-1} + |g_t|^2,   s_0 = initial_accumulator_value
        u_t = g_t / (sqrt(s_t) + eps)

    The defaults are torch's; Optax's ``scale_by_rss`` uses ``0.1`` and ``1e-7`` with eps
    inside the root.

    Args:
      initial_accumulator_value: the accumulator's start (>= 0).
      eps: added to the denominator, outside the root (>= 0).

    Returns:
      A transformation whose state is :class:`ScaleByRssState`.
    """
    who = "scale_by_rss"
    _checks.non_negative(who, "initial_accumulator_value", initial_accumulator_value)
    _checks.non_negative(who, "eps", eps)
    guard_zero = _checks.is_static_zero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleByRssState(_tree.tree_full_like(params, initial_accumulator_value))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _tree.check_same_structure(state.sum_of_squares, updates, "accumulator", "updates")

        def leaf(g, s):
            dtype = _tree.compute_dtype(g.dtype, s.dtype)
            out_dtype, g = _tree.update_dtype(g, s), g.astype(dtype)
            new_s = s.astype(dtype) + _tree.abs_sq(g)
            denominator = jnp.sqrt(new_s) + _tree.cast_scalar(eps, dtype)
            return _divide(g, denominator, guard_zero).astype(out_dtype), new_s.astype(s.dtype)

        u, sums = _tree.tree_map_multi(leaf, 2, updates, state.sum_of_squares)
        return u, ScaleByRssState(sums)

    return GradientTransformation(init_fn, update_fn)


def scale_by_lion(
    b1: float = 0.9, b2: float = 0.99, mu_dtype: Any | None = None
) -> GradientTransformation:
    """Lion's update direction (Chen et al., 2023, "Symbolic Discovery of Optimization
    Algorithms").

    ::

        u_t = sign(b1 * m_{t-1} + (1 - b1) * g_t)
        m_t = b2 * m_{t-1} + (1 - b2) * g_t

    Args:
      b1: interpolation for the update direction, in [0, 1).
      b2: decay of the momentum, in [0, 1).
      mu_dtype: dtype of the momentum; by default each param's dtype.

    Returns:
      A transformation whose state is :class:`ScaleByLionState`.
    """
    who = "scale_by_lion"
    _checks.in_unit_interval(who, "b1", b1)
    _checks.in_unit_interval(who, "b2", b2)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleByLionState(_tree.tree_zeros_like(params, mu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _tree.check_same_structure(state.mu, updates, "momentum", "updates")

        def leaf(g, m):
            dtype = _tree.compute_dtype(g.dtype, m.dtype)
            out_dtype, g = _tree.update_dtype(g, m), g.astype(dtype)
            direction = jnp.sign(_tree.moment_update(m, g, b1, dtype))
            new_m = _tree.moment_update(m, g, b2, dtype)
            return direction.astype(out_dtype), new_m.astype(m.dtype)

        u, mu = _tree.tree_map_multi(leaf, 2, updates, state.mu)
        return u, ScaleByLionState(mu)

    return GradientTransformation(init_fn, update_fn)
