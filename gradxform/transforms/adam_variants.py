"""Adam's relatives that normalise by an earlier second moment, with Optax's numbers: ADOPT
(the gradient divided by the root of the previous second moment, then averaged) and ACProp
(the gradient divided by the previous centred second moment); and the Adam of GaLore's
reference code, ``eps`` added to the root of the raw second moment.

Both keep Optax's state, :class:`gradxform.ScaleByAdamState` (``count``, ``mu``, ``nu``), with
the moments in each param's dtype (ADOPT's ``mu_dtype`` overrides its first moment).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform.transforms.adam import ScaleByAdamState, check_moments


def _quarter_power(count: jax.Array) -> jax.Array:
    return count**0.25


def scale_by_adopt(
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], Any] = _quarter_power,
) -> GradientTransformation:
    """ADOPT's preconditioner (Taniguchi et al., 2024), as ``optax.contrib.scale_by_adopt``.

    With ``c_t = clip_value_fn(t - 1)`` (``(t - 1)^(1/4)`` by default) and ``t = 1, 2, ...``::

        v_t = |g_1|^2 if t = 1, else b2 * v_{t-1} + (1 - b2) * |g_t|^2
        d_t = clip(g_t / max(sqrt(v_{t-1}), eps), -c_t, c_t)   (no clip without use_clipping)
        m_t = 0 if t = 1, else b1 * m_{t-1} + (1 - b1) * d_t
        u_t = m_t, or b1 * m_t + (1 - b1) * d_t with nesterov (and m_1 for t = 1)

    The first update is 0: it only initialises ``v``.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: the floor of ``sqrt(v)`` (>= 0).
      mu_dtype: dtype of the first moment; by default each param's dtype.
      nesterov: Nesterov's form of the momentum.
      use_clipping: clip the normalised gradient to ``[-c_t, c_t]``.
      clip_value_fn: ``c`` as a function of the step count (0 for the first update).

    Returns:
      A transformation whose state is :class:`gradxform.ScaleByAdamState`. Taniguchi et al.,
      "ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate", NeurIPS 2024.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_adopt()
      >>> u1, state = tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))  # sets v = g^2
      >>> u2, state = tx.update(jnp.array([0.5, -4.0]), state)
      >>> u1, [round(float(u), 4) for u in u2]  # u_2 = (1 - b1) clip(g_2 / |g_1|, -1, 1)
      (Array([0., 0.], dtype=float32), [0.05, -0.1])
    """
    who = "scale_by_adopt"
    _validate.probability(who, "b1", b1)
    _validate.probability(who, "b2", b2)
    _validate.non_negative(who, "eps", eps)
    _validate.dtype(who, "mu_dtype", mu_dtype)
    _validate.boolean(who, "nesterov", nesterov)
    _validate.boolean(who, "use_clipping", use_clipping)
    _validate.function(who, "clip_value_fn", clip_value_fn)
    may_be_zero = not _validate.is_static_nonzero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=_tree.tree_zeros_like(params, mu_dtype),
            nu=_tree.tree_zeros_like(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByAdamState)
        _checks.check_updates(who, updates, state.mu, "first moment")
        first = state.count == 0
        clip_value = clip_value_fn(state.count) if use_clipping else None

        def leaf(g, m, v):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype)
            out_dtype, g = _tree.update_dtype(g, m, v), g.astype(dtype)
            decay2 = jnp.where(first, 0, _tree.cast_scalar(b2, dtype)).astype(dtype)
            decay1 = jnp.where(first, 1, _tree.cast_scalar(b1, dtype)).astype(dtype)
            new_v = _tree.square_moment_update(v, g, decay2, dtype)
            floor = jnp.maximum(jnp.sqrt(v.astype(dtype)), _tree.cast_scalar(eps, dtype))
            normalised = _tree.safe_divide(g, floor, may_be_zero)
            if use_clipping:
                c = jnp.asarray(clip_value).astype(dtype)
                normalised = jnp.clip(normalised, -c, c)
            new_m = _tree.moment_update(m, normalised, decay1, dtype)
            u = _tree.moment_update(new_m, normalised, decay1, dtype) if nesterov else new_m
            return u.astype(out_dtype), new_m.astype(m.dtype), new_v.astype(v.dtype)

        u, mu, nu = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(_tree.safe_increment(state.count), mu, nu)

    return GradientTransformation(init_fn, update_fn)


def scale_by_acprop(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
) -> GradientTransformation:
    """ACProp's preconditioner (Zhuang et al., 2021), as ``optax.contrib.scale_by_acprop``.

    ::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        s_t = b2 * s_{t-1} + (1 - b2) * |g_t - m_{t-1}|^2 + eps_root
        u_t = g_t / (sqrt(s_{t-1} / (1 - b2^(t-1))) + eps)      (u_1 = g_1 / (1 + eps))

    The step normalises the gradient by the centred second moment of the steps before it
    ("asynchronous" centring: ``s_{t-1}`` does not depend on ``g_t``). As in Optax, the first
    moment is tracked but the update is the normalised gradient itself.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the centred second moment, in [0, 1).
      eps: added to the denominator (>= 0).
      eps_root: added to the centred second moment at every step (>= 0).

    Returns:
      A transformation whose state is :class:`gradxform.ScaleByAdamState` (Optax's is its
      ``ScaleByBeliefState``, with the same fields). Zhuang et al., "Momentum Centering and
      Asynchronous Update for Adaptive Gradient Methods", NeurIPS 2021.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_acprop()
      >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]  # u_1 = g / (1 + eps)
      Array([ 0.5, -2. ], dtype=float32)
    """
    who = "scale_by_acprop"
    _validate.probability(who, "b1", b1)
    _validate.probability(who, "b2", b2)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "eps_root", eps_root)
    may_be_zero = not _validate.is_static_nonzero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=_tree.tree_zeros_like(params),
            nu=_tree.tree_zeros_like(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByAdamState)
        _checks.check_updates(who, updates, state.mu, "first moment")
        first = state.count == 0
        # The previous moment's bias correction; its count is 0 on the first step, where the
        # moment is replaced by 1.
        correction2 = _tree.bias_correction(b2, jnp.maximum(state.count, 1))

        def leaf(g, m, s):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, s.dtype)
            out_dtype, g = _tree.update_dtype(g, m, s), g.astype(dtype)
            new_m = _tree.moment_update(m, g, b1, dtype)
            error = g - m.astype(dtype)
            new_s = _tree.square_moment_update(s, error, b2, dtype)
            new_s = new_s + _tree.cast_scalar(eps_root, new_s.dtype)
            s_hat = s.astype(new_s.dtype) / _tree.cast_scalar(correction2, new_s.dtype)
            s_hat = jnp.where(first, 1, s_hat)
            denominator = jnp.sqrt(s_hat) + _tree.cast_scalar(eps, new_s.dtype)
            u = _tree.safe_divide(g, denominator, may_be_zero)
            return u.astype(out_dtype), new_m.astype(m.dtype), new_s.astype(s.dtype)

        u, mu, nu = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(_tree.safe_increment(state.count), mu, nu)

    return GradientTransformation(init_fn, update_fn)


def scale_by_adam_raw_eps(
    b1: float = 0.9, *, b2: float = 0.999, eps: float = 1e-6
) -> GradientTransformation:
    """Adam with ``eps`` added to the root of the raw second moment and the bias corrections
    in the step size (Kingma & Ba's "efficient" order; transformers' ``AdamW``, which GaLore's
    reference extends; the example shows ``eps`` on the small gradient's first step)::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|^2
        u_t = sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)

    That is ``scale_by_adam``'s ``m_hat / (sqrt(v_hat) + eps / sqrt(1 - b2^t))``: the same rule
    with an ``eps`` that shrinks as ``t`` grows.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to ``sqrt(v_t)`` (>= 0).

    Returns:
      A transformation whose state is :class:`gradxform.ScaleByAdamState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_adam_raw_eps()
      >>> [round(float(x), 5) for x in tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]]
      [0.99994, -0.99998]
    """
    who = "scale_by_adam_raw_eps"
    check_moments(who, b1, b2, eps)
    may_be_zero = not _validate.is_static_nonzero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        zeros = _tree.tree_zeros_like(params)
        return ScaleByAdamState(jnp.zeros([], jnp.int32), zeros, _tree.tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByAdamState)
        _checks.check_updates(who, updates, state.mu, "first moment")
        count = _tree.safe_increment(state.count)
        step = jnp.sqrt(_tree.bias_correction(b2, count)) / _tree.bias_correction(b1, count)

        def leaf(g, m, v):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype)
            out_dtype, g = _tree.update_dtype(g, m, v), g.astype(dtype)
            new_m = _tree.moment_update(m, g, b1, dtype)
            new_v = _tree.square_moment_update(v, g, b2, dtype)
            denominator = jnp.sqrt(new_v) + _tree.cast_scalar(eps, new_v.dtype)
            u = _tree.cast_scalar(step, dtype) * _tree.safe_divide(new_m, denominator, may_be_zero)
            return u.astype(out_dtype), new_m.astype(m.dtype), new_v.astype(v.dtype)

        u, mu, nu = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)
