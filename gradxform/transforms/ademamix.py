"""AdEMAMix's preconditioners: Adam with a second, slow first moment, and its simplified form,
with Optax's numbers.

Moments are kept in each param's dtype (``mu_dtype`` overrides AdEMAMix's), arithmetic runs in
at least float32, and the second moment is accumulated as ``b2 * v + ((1 - b2) * g) * g``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._types import StepCount
from gradxform.transforms.adam import corrected_root, root_may_be_zero


class ScaleByAdemamixState(NamedTuple):
    """``count`` and ``count_m2`` (int32), the fast and slow first moments ``m1`` and ``m2``,
    and the second moment ``nu``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_ademamix()
      >>> _, state = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> [[round(float(x), 5) for x in m] for m in (state.m1, state.m2)]  # (1-b1) g, (1-b3) g
      [[0.05, -0.2], [5e-05, -0.0002]]
    """

    count: StepCount
    count_m2: jax.Array
    m1: Any
    m2: Any
    nu: Any


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """``t`` (int32, the step count), the accumulated gradient ``m`` and the second moment
    ``n``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_simplified_ademamix()
      >>> _, state = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> state.m, [round(float(x), 4) for x in state.n]  # m = g (a sum), n = (1 - b2) g^2
      (Array([ 0.5, -2. ], dtype=float32), [0.0125, 0.2])
    """

    t: jax.Array
    m: Any
    n: Any


def scheduled(value: Any, count: jax.Array) -> Any:
    """A hyperparameter given as a number or as a schedule of the count, at ``count``."""
    return value(count) if callable(value) else value


def scale_by_ademamix(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: Any = 0.9999,
    alpha: Any = 6.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdEMAMix's preconditioner (Pagliardini et al., 2024), as ``optax.contrib``'s.

    ::

        m1_t = b1 * m1_{t-1} + (1 - b1) * g_t
        m2_t = b3_t * m2_{t-1} + (1 - b3_t) * g_t             (not bias-corrected)
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|^2
        u_t = (m1_t / (1 - b1^t) + alpha_t * m2_t) / (sqrt(v_t / (1 - b2^t) + eps_root) + eps)

    Args:
      b1: decay of the fast first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      b3: decay of the slow first moment, in [0, 1), or a schedule of the step count.
      alpha: the weight of the slow moment (a number or a schedule of the step count).
      eps: added to the denominator (>= 0).
      eps_root: added inside the root (>= 0).
      mu_dtype: dtype of the three moments; by default each param's dtype.

    Returns:
      A transformation whose state is :class:`ScaleByAdemamixState`. Pagliardini, Ablin &
      Grangier, "The AdEMAMix Optimizer: Better, Faster, Older", 2024.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_ademamix()
      >>> # the first step: (g + alpha (1 - b3) g) / |g| = (1 + 6e-4) g / |g|
      >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0].round(4)
      Array([ 1.0006, -1.0006], dtype=float32)
    """
    who = "scale_by_ademamix"
    _validate.probability(who, "b1", b1)
    _validate.probability(who, "b2", b2)
    _validate.scalar_or_schedule(who, "b3", b3, _validate.probability)
    _validate.scalar_or_schedule(who, "alpha", alpha)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "eps_root", eps_root)
    _validate.dtype(who, "mu_dtype", mu_dtype)
    may_be_zero = root_may_be_zero(eps, eps_root)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleByAdemamixState(
            count=jnp.zeros([], jnp.int32),
            count_m2=jnp.zeros([], jnp.int32),
            m1=_tree.tree_zeros_like(params, mu_dtype),
            m2=_tree.tree_zeros_like(params, mu_dtype),
            nu=_tree.tree_zeros_like(params, mu_dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByAdemamixState)
        _checks.check_updates(who, updates, state.m1, "first moment")
        b3_t = scheduled(b3, state.count_m2)
        alpha_t = scheduled(alpha, state.count_m2)
        count = _tree.safe_increment(state.count)
        correction1 = _tree.bias_correction(b1, count)
        correction2 = _tree.bias_correction(b2, count)

        def leaf(g, m1, m2, v):
            dtype = _tree.compute_dtype(g.dtype, m1.dtype, m2.dtype, v.dtype)
            out_dtype, g = _tree.update_dtype(g, m1, m2, v), g.astype(dtype)
            new_m1 = _tree.moment_update(m1, g, b1, dtype)
            new_m2 = _tree.moment_update(m2, g, b3_t, dtype)
            new_v = _tree.square_moment_update(v, g, b2, dtype)
            denominator = corrected_root(new_v, eps_root, correction2, new_v.dtype)
            denominator = denominator + _tree.cast_scalar(eps, new_v.dtype)
            numerator = new_m1 * _tree.cast_scalar(1 / correction1, dtype)
            numerator = numerator + _tree.cast_scalar(alpha_t, dtype) * new_m2
            u = _tree.safe_divide(numerator, denominator, may_be_zero)
            return (
                u.astype(out_dtype),
                new_m1.astype(m1.dtype),
                new_m2.astype(m2.dtype),
                new_v.astype(v.dtype),
            )

        u, m1, m2, nu = _tree.tree_map_multi(leaf, 4, updates, state.m1, state.m2, state.nu)
        count_m2 = _tree.safe_increment(state.count_m2)
        return u, ScaleByAdemamixState(count, count_m2, m1, m2, nu)

    return GradientTransformation(init_fn, update_fn)


def scale_by_simplified_ademamix(
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: Any = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> GradientTransformation:
    """Simplified AdEMAMix's preconditioner (Morwani et al., 2024), as ``optax.contrib``'s.

    ::

        m_t = b1 * m_{t-1} + g_t                          (a sum, not an average)
        n_t = b2 * n_{t-1} + (1 - b2) * |g_t|^2
        u_t = (m_t + alpha_t * g_t) / (sqrt(n_t / (1 - b2^t) + eps_root) + eps)

    Args:
      b1: decay of the accumulated gradient, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      alpha: the weight of the current gradient (a number or a schedule of the step count).
      eps: added to the denominator (>= 0).
      eps_root: added inside the root (>= 0).

    Returns:
      A transformation whose state is :class:`ScaleBySimplifiedAdEMAMixState`. Morwani,
      Vyas, Kakade et al., "Connections between Schedule-Free Optimizers, AdEMAMix, and
      Accelerated SGD Variants", 2024.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_simplified_ademamix(alpha=2.0)
      >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]  # (g + 2 g) / |g|
      Array([ 3., -3.], dtype=float32)
    """
    who = "scale_by_simplified_ademamix"
    _validate.probability(who, "b1", b1)
    _validate.probability(who, "b2", b2)
    _validate.scalar_or_schedule(who, "alpha", alpha)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "eps_root", eps_root)
    may_be_zero = root_may_be_zero(eps, eps_root)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        zeros = _tree.tree_zeros_like(params)
        return ScaleBySimplifiedAdEMAMixState(
            jnp.zeros([], jnp.int32), zeros, _tree.tree_zeros_like(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleBySimplifiedAdEMAMixState)
        _checks.check_updates(who, updates, state.m, "accumulated gradient")
        alpha_t = scheduled(alpha, state.t)
        t = _tree.safe_increment(state.t)
        correction2 = _tree.bias_correction(b2, t)

        def leaf(g, m, n):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, n.dtype)
            out_dtype, g = _tree.update_dtype(g, m, n), g.astype(dtype)
            new_m = g + _tree.cast_scalar(b1, dtype) * m.astype(dtype)
            new_n = _tree.square_moment_update(n, g, b2, dtype)
            denominator = corrected_root(new_n, eps_root, correction2, new_n.dtype)
            denominator = denominator + _tree.cast_scalar(eps, new_n.dtype)
            numerator = new_m + _tree.cast_scalar(alpha_t, dtype) * g
            u = _tree.safe_divide(numerator, denominator, may_be_zero)
            return u.astype(out_dtype), new_m.astype(m.dtype), new_n.astype(n.dtype)

        u, m, n = _tree.tree_map_multi(leaf, 3, updates, state.m, state.n)
        return u, ScaleBySimplifiedAdEMAMixState(t, m, n)

    return GradientTransformation(init_fn, update_fn)
