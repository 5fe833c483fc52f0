"""Rectified Adam's preconditioner, in torch's arithmetic or in Optax's.

RAdam (Liu et al., 2020) is Adam whose adaptive step is switched on only once the variance of
the adaptive learning rate is tractable, and then scaled by a rectification factor ``r_t``
that grows from 0 to 1. torch's ``RAdam`` and Optax's ``scale_by_radam`` agree on the rule but
not on two details, which ``numerics`` selects: where ``eps`` goes, and whether the threshold
itself rectifies (``rho_t > 5`` in torch, ``rho_t >= threshold`` in Optax).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform.transforms.adam import (
    ScaleByAdamState,
    check_moments,
    corrected_root,
    root_may_be_zero,
)

NUMERICS = ("torch", "optax")


def _rectification(b2: Any, count: jax.Array, threshold: Any, strict: bool):
    """``(rectified, r_t)``: whether the step is adaptive, and the factor that scales it.

    ``rho_inf = 2 / (1 - b2) - 1`` and ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)``, the length
    of the approximated simple moving average; the step is adaptive where ``rho_t`` passes the
    threshold (``>`` with ``strict``, torch's rule, else ``>=``), with ::

        r_t = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))

    Below the threshold the root's argument can be negative (``rho_t`` in (2, 4)) or
    undefined (``b2 <= 0.6``); there ``r_t`` is 1 and unused, so no NaN reaches a gradient.
    """
    dtype = _tree.default_float_dtype()
    steps = count.astype(dtype)
    rho_inf = 2 / (1 - b2) - 1
    if _validate.is_static_number(b2):  # the logarithm in Python's float64, as torch's powers
        log_b2: float | jax.Array = math.log(float(b2)) if float(b2) > 0 else -math.inf
    else:
        log_b2 = jnp.log(jnp.asarray(b2).astype(dtype))
    # rho_t is a difference of two numbers near rho_inf (1999 - 1992 = 7 at t = 7 for
    # b2 = 0.999), so 1 - b2^t must be accurate: -expm1(t log b2) (`bias_correction`), not a
    # subtraction. torch subtracts in Python's float64, Optax in the default dtype: in float32
    # that puts r_t 6e-3 off at t = 7, this form 6e-5; in float64 the two forms give r_t
    # ~3e-12 apart (relative) at t = 7, the rounding of b2^t in the subtraction.
    b2_t = jnp.exp(steps * log_b2)
    rho_t = rho_inf - 2 * steps * b2_t / _tree.bias_correction(b2, count)
    rectified = rho_t > threshold if strict else rho_t >= threshold
    ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
    return rectified, jnp.sqrt(jnp.where(rectified, ratio, 1))


def scale_by_radam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
    numerics: str = "torch",
) -> GradientTransformation:
    """Rectified Adam's preconditioner (Liu et al., 2020); by default torch's numbers.

    With ``m_hat = m_t / (1 - b1^t)``, ``v_hat = v_t / (1 - b2^t)`` (moments as in
    :func:`gradxform.scale_by_adam`) and ``rho_t``, ``r_t`` the length of the approximated
    moving average and the rectification factor (``rho_inf = 2 / (1 - b2) - 1``)::

        rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        r_t = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))

        numerics="torch":  u_t = r_t m_hat / (sqrt(v_hat + eps_root) + eps / sqrt(1 - b2^t))
                                 if rho_t > threshold, else m_hat
        numerics="optax":  u_t = r_t m_hat / (sqrt(v_hat + eps_root) + eps)
                                 if rho_t >= threshold, else m_hat

    torch computes ``sqrt(1 - b2^t) / (sqrt(v_t) + eps)``, which puts ``eps`` on the raw second
    moment: the first form. With ``nesterov`` (Optax's option, in either form) ``m_hat`` is
    ``b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)``.

    The default, ``numerics="torch"``, gives the update direction of ``torch.optim.RAdam``
    (threshold 5); ``numerics="optax"`` gives ``optax.scale_by_radam``'s numbers.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator (>= 0), as ``numerics`` says.
      eps_root: added to ``v_hat`` inside the root (>= 0).
      threshold: the length ``rho_t`` from which the step is adaptive (>= 4: below 4 the
        factor ``r_t`` can be the root of a negative number). torch's is 5.
      nesterov: Nesterov's momentum on the first moment (Optax's option).
      numerics: ``"torch"`` or ``"optax"``: whose arithmetic, where they differ.

    Returns:
      A transformation whose state is :class:`gradxform.ScaleByAdamState` (as in Optax).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_radam()
      >>> # rho_1 = rho_inf - 2 b2 / (1 - b2) = 1 <= 5: the first step is m_hat = g, not rectified
      >>> u, _ = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> [round(float(x), 4) for x in u]
      [0.5, -2.0]
    """
    who = "scale_by_radam"
    check_moments(who, b1, b2, eps, eps_root)
    _validate.at_least(who, "threshold", threshold, 4.0)
    _validate.boolean(who, "nesterov", nesterov)
    _validate.choice(who, "numerics", numerics, NUMERICS)
    torch_numerics = numerics == "torch"
    may_be_zero = root_may_be_zero(eps, eps_root)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        mu = _tree.tree_zeros_like(params)
        return ScaleByAdamState(jnp.zeros([], jnp.int32), mu, _tree.tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByAdamState)
        _checks.check_updates(who, updates, state.mu, "first moment")
        count = _tree.safe_increment(state.count)
        correction1 = _tree.bias_correction(b1, count)
        correction2 = _tree.bias_correction(b2, count)
        rectified, r_t = _rectification(b2, count, threshold, strict=torch_numerics)
        if nesterov:
            next_correction1 = _tree.bias_correction(b1, _tree.safe_increment(count))
        # torch: eps / sqrt(1 - b2^t) on v_hat's root; Optax: eps.
        scaled_eps = eps * jax.lax.rsqrt(correction2) if torch_numerics else eps

        def leaf(g, m, v):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype)
            out_dtype, g = _tree.update_dtype(g, m, v), g.astype(dtype)
            new_m = _tree.moment_update(m, g, b1, dtype)
            new_v = _tree.square_moment_update(v, g, b2, dtype)
            real = new_v.dtype
            # Reciprocals of scalars, computed once: a division by a traced scalar is rewritten
            # by XLA depending on the surrounding program (see tests/test_flat.py).
            inverse1 = _tree.cast_scalar(1 / correction1, dtype)
            if nesterov:
                b1_ = _tree.cast_scalar(b1, dtype)
                inverse_next = _tree.cast_scalar(1 / next_correction1, dtype)
                m_hat = b1_ * (new_m * inverse_next) + (1 - b1_) * (g * inverse1)
            else:
                m_hat = new_m * inverse1
            root = corrected_root(new_v, eps_root, correction2, real)  # sqrt(v_hat + eps_root)
            denominator = root + _tree.cast_scalar(scaled_eps, real)
            adaptive = _tree.safe_divide(
                _tree.cast_scalar(r_t, real) * m_hat, denominator, may_be_zero
            )
            u = jnp.where(rectified, adaptive, m_hat)
            return u.astype(out_dtype), new_m.astype(m.dtype), new_v.astype(v.dtype)

        u, mu, nu = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)
