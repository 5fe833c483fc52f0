"""Adam's family of preconditioners: Adam (and AMSGrad, torch's and Optax's), Adamax (NAdam is
in ``nadam.py``).

Each transformation computes a leaf's update and its new moments in one function, so XLA can
produce all of them in a single pass over memory. Moments are kept in each param's dtype
(``mu_dtype``/``nu_dtype`` override), arithmetic runs in at least float32, and the second
moment is accumulated as torch does, ``b2 * v + ((1 - b2) * g) * g``, so that a finite
gradient never overflows it. Complex values use ``|g|^2``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._types import StepCount


class ScaleByAdamState(NamedTuple):
    """``count`` (int32), first moment ``mu`` and second moment ``nu``, one leaf per param.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_adam()
      >>> _, state = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> [[round(float(x), 5) for x in m] for m in (state.mu, state.nu)]  # (1-b1) g, (1-b2) g^2
      [[0.05, -0.2], [0.00025, 0.004]]
    """

    count: StepCount
    mu: Any
    nu: Any


class ScaleByAmsgradState(NamedTuple):
    """Adam's state plus ``nu_max``, the running maximum of the second moment: of the raw one
    for ``scale_by_adam(amsgrad=True)`` (torch's), of the bias-corrected one for
    :func:`scale_by_amsgrad` (Optax's).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.scale_by_adam(amsgrad=True).init(jnp.zeros(2))
      ScaleByAmsgradState(count=Array(0, dtype=int32), mu=Array([0., 0.], dtype=float32),
      nu=Array([0., 0.], dtype=float32), nu_max=Array([0., 0.], dtype=float32))
    """

    count: StepCount
    mu: Any
    nu: Any
    nu_max: Any


class ScaleByAdamaxState(NamedTuple):
    """``count`` (int32), first moment ``mu`` and the infinity-norm accumulator ``u``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_adamax()
      >>> _, state = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> state.u  # max(b2 * 0, |g| + eps)
      Array([0.5, 2. ], dtype=float32)
    """

    count: StepCount
    mu: Any
    u: Any


def check_moments(who: str, b1: Any, b2: Any, eps: Any, eps_root: Any = 0.0) -> None:
    """The arguments every Adam-like factory takes: two decays in [0, 1) and two epsilons."""
    _validate.probability(who, "b1", b1)
    _validate.probability(who, "b2", b2)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "eps_root", eps_root)


def root_may_be_zero(eps: Any, eps_root: Any) -> bool:
    """Whether ``sqrt(v + eps_root) + eps`` can be 0: unless a static epsilon says otherwise."""
    return not (_validate.is_static_nonzero(eps) or _validate.is_static_nonzero(eps_root))


def corrected_root(v: jax.Array, eps_root: Any, correction2: jax.Array, dtype: Any) -> jax.Array:
    """``sqrt(v / c2 + eps_root)`` written as ``sqrt(v + eps_root * c2) / sqrt(c2)``.

    Taking the root before dividing by ``c2 = 1 - b2^t`` (as torch does) keeps ``v / c2`` from
    overflowing when ``v`` is near the largest float. A static ``eps_root`` of 0 adds nothing.
    """
    if not _validate.is_static_zero(eps_root):
        v = v + _tree.cast_scalar(eps_root, dtype) * _tree.cast_scalar(correction2, dtype)
    return jnp.sqrt(v) * _tree.cast_scalar(jax.lax.rsqrt(correction2), dtype)


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    amsgrad: bool = False,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """Adam's preconditioner (Kingma & Ba, 2015), optionally AMSGrad (Reddi et al., 2018) or
    Nesterov's momentum (Dozat, 2016, "Incorporating Nesterov Momentum into Adam").

    ::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|^2
        v'_t = max(v'_{t-1}, v_t) if amsgrad else v_t      (raw, before bias correction)
        m'_t = m_t / (1 - b1^t)
             or, with nesterov,  b1 * m_t / (1 - b1^(t+1)) + (1 - b1) * g_t / (1 - b1^t)
        u_t = m'_t / (sqrt(v'_t / (1 - b2^t) + eps_root) + eps)

    With the defaults this is the update direction of ``torch.optim.Adam``; with ``nesterov``
    it is ``optax.scale_by_adam(nesterov=True)`` (Optax's NAdam, without the momentum schedule
    of :func:`scale_by_nadam`, which is torch's).

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the root (>= 0).
      eps_root: added inside the root (>= 0); a small positive value keeps gradients through
        the update (meta-learning) finite where a gradient is zero.
      mu_dtype: dtype of the first moment; by default each param's dtype.
      nesterov: Nesterov's look-ahead on the first moment (Optax's ``nesterov``).
      amsgrad: use the running maximum of the second moment (torch's ``amsgrad``); not with
        ``nesterov`` (no reference defines the two together).
      nu_dtype: dtype of the second moment (and its maximum); by default each param's dtype.
        float16 params want float32 here: squares of gradients below ~2e-4 underflow in float16.

    Returns:
      A transformation whose state is :class:`ScaleByAdamState`
      (:class:`ScaleByAmsgradState` with ``amsgrad``).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_adam()
      >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]  # the first step: g / |g|
      Array([ 1., -1.], dtype=float32)
    """
    who = "scale_by_adam"
    check_moments(who, b1, b2, eps, eps_root)
    _validate.dtype(who, "mu_dtype", mu_dtype)
    _validate.dtype(who, "nu_dtype", nu_dtype)
    _validate.boolean(who, "nesterov", nesterov)
    _validate.boolean(who, "amsgrad", amsgrad)
    if nesterov and amsgrad:
        raise ValueError(f"{who}: `nesterov=True` and `amsgrad=True` cannot be combined")
    may_be_zero = root_may_be_zero(eps, eps_root)
    state_type = ScaleByAmsgradState if amsgrad else ScaleByAdamState

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
        expect_state(who, state, state_type)
        _checks.check_updates(who, updates, state.mu, "first moment")
        count = _tree.safe_increment(state.count)
        correction1 = _tree.bias_correction(b1, count)
        correction2 = _tree.bias_correction(b2, count)
        if nesterov:
            moment_weight, gradient_weight = _tree.nesterov_weights(b1, count)

        def leaf(g, m, v, v_max=None):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype)
            out_dtype, g = _tree.update_dtype(g, m, v), g.astype(dtype)
            new_m = _tree.moment_update(m, g, b1, dtype)
            new_v = _tree.square_moment_update(v, g, b2, dtype)
            v_used = jnp.maximum(_tree.as_real(v_max, new_v.dtype), new_v) if amsgrad else new_v
            denominator = corrected_root(v_used, eps_root, correction2, new_v.dtype)
            denominator = denominator + _tree.cast_scalar(eps, new_v.dtype)
            if nesterov:
                m_hat = (
                    _tree.cast_scalar(moment_weight, dtype) * new_m
                    + _tree.cast_scalar(gradient_weight, dtype) * g
                )
            else:
                m_hat = new_m * _tree.cast_scalar(1 / correction1, dtype)
            u = _tree.safe_divide(m_hat, denominator, may_be_zero)
            outputs: tuple[jax.Array, ...]
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


def scale_by_amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> GradientTransformation:
    """AMSGrad's preconditioner (Reddi et al., 2018, "On the Convergence of Adam and Beyond"),
    as ``optax.scale_by_amsgrad``: the maximum is taken of the bias-corrected second moment.

    ::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t,   v_t = b2 * v_{t-1} + (1 - b2) * |g_t|^2
        m'_t = m_t / (1 - b1^t)   (m_t without bias_correction_mu)
        v'_t = v_t / (1 - b2^t)   (v_t without bias_correction_nu)
        n_t = max(n_{t-1}, v'_t),   n_0 = 0
        u_t = m'_t / (sqrt(n_t + eps_root) + eps)

    torch's AMSGrad (``scale_by_adam(amsgrad=True)``, :func:`gradxform.amsgrad`) takes the
    maximum of the raw moment and corrects it after; the two differ once ``1 - b2^t`` grows.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the root (>= 0).
      eps_root: added inside the root (>= 0).
      mu_dtype: dtype of the first moment; by default each param's dtype.
      bias_correction_mu: divide the first moment by ``1 - b1^t`` (``False``: the paper's).
      bias_correction_nu: divide the second moment by ``1 - b2^t`` before the maximum
        (``False``: the paper's).

    Returns:
      A transformation whose state is :class:`ScaleByAmsgradState` (``nu_max`` is ``n``).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_amsgrad()
      >>> updates, state = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> updates, state.nu_max.round(4)  # g / |g|; max of v / (1 - b2) = g^2
      (Array([ 1., -1.], dtype=float32), Array([0.25, 4.  ], dtype=float32))
    """
    who = "scale_by_amsgrad"
    check_moments(who, b1, b2, eps, eps_root)
    _validate.dtype(who, "mu_dtype", mu_dtype)
    _validate.boolean(who, "bias_correction_mu", bias_correction_mu)
    _validate.boolean(who, "bias_correction_nu", bias_correction_nu)
    may_be_zero = root_may_be_zero(eps, eps_root)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleByAmsgradState(
            count=jnp.zeros([], jnp.int32),
            mu=_tree.tree_zeros_like(params, mu_dtype),
            nu=_tree.tree_zeros_like(params),
            nu_max=_tree.tree_zeros_like(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByAmsgradState)
        _checks.check_updates(who, updates, state.mu, "first moment")
        count = _tree.safe_increment(state.count)
        correction1 = _tree.bias_correction(b1, count)
        correction2 = _tree.bias_correction(b2, count)

        def leaf(g, m, v, v_max):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype, v_max.dtype)
            out_dtype, g = _tree.update_dtype(g, m, v, v_max), g.astype(dtype)
            new_m = _tree.moment_update(m, g, b1, dtype)
            new_v = _tree.square_moment_update(v, g, b2, dtype)
            real = new_v.dtype
            m_hat = new_m / _tree.cast_scalar(correction1, dtype) if bias_correction_mu else new_m
            v_hat = new_v / _tree.cast_scalar(correction2, real) if bias_correction_nu else new_v
            new_max = jnp.maximum(_tree.as_real(v_max, real), v_hat)
            root = new_max
            if not _validate.is_static_zero(eps_root):
                root = root + _tree.cast_scalar(eps_root, real)
            denominator = jnp.sqrt(root) + _tree.cast_scalar(eps, real)
            u = _tree.safe_divide(m_hat, denominator, may_be_zero)
            outputs = (u.astype(out_dtype), new_m.astype(m.dtype), new_v.astype(v.dtype))
            return (*outputs, new_max.astype(v_max.dtype))

        u, mu, nu, nu_max = _tree.tree_map_multi(leaf, 4, updates, state.mu, state.nu, state.nu_max)
        return u, ScaleByAmsgradState(count, mu, nu, nu_max)

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

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_adamax()
      >>> u, _ = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> [round(float(x), 4) for x in u]  # the first step: g / |g|
      [1.0, -1.0]
    """
    who = "scale_by_adamax"
    check_moments(who, b1, b2, eps)
    may_be_zero = not _validate.is_static_nonzero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        zeros = _tree.tree_zeros_like(params)
        return ScaleByAdamaxState(jnp.zeros([], jnp.int32), zeros, _tree.tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByAdamaxState)
        _checks.check_updates(who, updates, state.mu, "first moment")
        count = _tree.safe_increment(state.count)
        correction1 = _tree.bias_correction(b1, count)

        def leaf(g, m, u_inf):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, u_inf.dtype)
            out_dtype, g = _tree.update_dtype(g, m, u_inf), g.astype(dtype)
            new_m = _tree.moment_update(m, g, b1, dtype)
            real = _tree.real_dtype(dtype)
            scaled = _tree.cast_scalar(b2, real) * _tree.as_real(u_inf, real)
            new_u_inf = jnp.maximum(scaled, jnp.abs(g) + _tree.cast_scalar(eps, real))
            m_hat = new_m * _tree.cast_scalar(1 / correction1, dtype)
            u = _tree.safe_divide(m_hat, new_u_inf, may_be_zero)
            return u.astype(out_dtype), new_m.astype(m.dtype), new_u_inf.astype(u_inf.dtype)

        u, mu, u_inf = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.u)
        return u, ScaleByAdamaxState(count, mu, u_inf)

    return GradientTransformation(init_fn, update_fn)
