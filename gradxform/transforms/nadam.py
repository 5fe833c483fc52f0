"""NAdam's preconditioner: Adam with Nesterov momentum on torch's momentum schedule.

Moments and arithmetic follow ``adam.py``: moments in each param's dtype, arithmetic in at
least float32, the second moment accumulated as ``b2 * v + ((1 - b2) * g) * g``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._types import StepCount
from gradxform.transforms.adam import check_moments, root_may_be_zero


class ScaleByNadamState(NamedTuple):
    """``count`` (int32), ``mu_product`` (the product of momentum coefficients), ``mu``, ``nu``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_nadam()
      >>> _, state = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> state.count, state.mu_product.round(6)  # mu_1 = b1 (1 - 0.5 * 0.96^0.004)
      (Array(1, dtype=int32), Array(0.450073, dtype=float32))
    """

    count: StepCount
    mu_product: jax.Array
    mu: Any
    nu: Any


def scale_by_nadam(
    b1: float = 0.9,
    *,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    momentum_decay: float = 4e-3,
) -> GradientTransformation:
    """NAdam's preconditioner (Dozat, 2016), as ``torch.optim.NAdam``.

    With the momentum schedule ``mu_t = b1 * (1 - 0.5 * 0.96^(t * momentum_decay))`` and
    ``P_t = mu_1 * ... * mu_t``::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|^2
        d_t = sqrt(v_t / (1 - b2^t) + eps_root) + eps
        u_t = (1 - mu_t) / (1 - P_t) * g_t / d_t + mu_{t+1} / (1 - P_t * mu_{t+1}) * m_t / d_t

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator (>= 0).
      eps_root: added inside the root (>= 0).
      momentum_decay: ``psi`` in the momentum schedule (>= 0; torch's default 4e-3).

    Returns:
      A transformation whose state is :class:`ScaleByNadamState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_nadam()
      >>> # the first step: (1 + (1 - b1) mu_2 / (1 - mu_1 mu_2)) g / |g|
      >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0].round(4)
      Array([ 1.0565, -1.0565], dtype=float32)
    """
    who = "scale_by_nadam"
    check_moments(who, b1, b2, eps, eps_root)
    _validate.non_negative(who, "momentum_decay", momentum_decay)
    may_be_zero = root_may_be_zero(eps, eps_root)

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
        expect_state(who, state, ScaleByNadamState)
        _checks.check_updates(who, updates, state.mu, "first moment")
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
            new_v = _tree.square_moment_update(v, g, b2, dtype)
            # torch's NAdam divides by the bias correction before the root (unlike its Adam):
            # the same order gives its numbers, also where v / c2 overflows to inf.
            v_hat = new_v * _tree.cast_scalar(1 / correction2, new_v.dtype)
            if not _validate.is_static_zero(eps_root):
                v_hat = v_hat + _tree.cast_scalar(eps_root, new_v.dtype)
            denominator = jnp.sqrt(v_hat) + _tree.cast_scalar(eps, new_v.dtype)
            weighted = g * _tree.cast_scalar(gradient_weight, dtype) + new_m * _tree.cast_scalar(
                moment_weight, dtype
            )
            u = _tree.safe_divide(weighted, denominator, may_be_zero)
            return u.astype(out_dtype), new_m.astype(m.dtype), new_v.astype(v.dtype)

        u, mu, nu = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByNadamState(count, mu_product, mu, nu)

    return GradientTransformation(init_fn, update_fn)
