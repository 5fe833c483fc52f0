"""Adan, the adaptive Nesterov momentum algorithm: its preconditioner, with Optax's numbers or
the authors' official code's, and the official code's proximal weight decay.

Optax's ``scale_by_adan`` and the official PyTorch code (github.com/sail-sg/Adan) differ in two
places, both offered here (``numerics=``): Optax weighs the gradient difference by ``1 - b2``
where the official code (and the paper's Algorithm 1 with its ``1 - beta`` convention) uses
``b2``, and Optax's ``adan`` decays the weights as ``p (1 - lr wd)`` where the official code
divides, ``p / (1 + lr wd)`` (:func:`proximal_decayed_weights`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform._types import MaskOrFn, ScalarOrSchedule, StepCount
from gradxform.transforms.adam import root_may_be_zero
from gradxform.wrappers.masking import masked

NUMERICS = ("optax", "official")


class ScaleByAdanState(NamedTuple):
    """Optax's fields: moments ``m``, ``v`` (of the gradient difference) and ``n``, the previous
    gradient ``g`` and the step counter ``t`` (int32, also readable as ``count``).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_adan()
      >>> _, state = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> state.t, state.g, state.m.round(4)  # the previous gradient; (1 - b1) g
      (Array(1, dtype=int32), Array([ 0.5, -2. ], dtype=float32), Array([ 0.01, -0.04],
      dtype=float32))
    """

    m: Any
    v: Any
    n: Any
    g: Any
    t: jax.Array

    # Optax's name for the counter, shadowing tuple.count on purpose (mypy issue 3950).
    @property
    def count(self) -> jax.Array:  # type: ignore[override]
        return self.t


class ProximalDecayState(NamedTuple):
    """``count``: how many updates have been made (int32), for a learning-rate schedule."""

    count: StepCount


def scale_by_adan(
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    numerics: str = "optax",
) -> GradientTransformation:
    """Adan's preconditioner (Xie et al., 2022, Algorithm 1).

    With ``d_t = g_t - g_{t-1}`` (``d_1 = 0``) and ``c = 1 - b2`` (Optax's numbers, the default)
    or ``c = b2`` (``numerics="official"``, the authors' code)::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * d_t
        n_t = b3 * n_{t-1} + (1 - b3) * |g_t + c * d_t|^2
        u_t = (m_t / (1 - b1^t) + c * v_t / (1 - b2^t)) / (sqrt(n_t / (1 - b3^t) + eps_root) + eps)

    Args:
      b1: decay of the gradient's average, in [0, 1).
      b2: decay of the gradient difference's average, in [0, 1).
      b3: decay of the second moment, in [0, 1).
      eps: added to the denominator (>= 0).
      eps_root: added inside the root (>= 0).
      numerics: ``"optax"`` (``c = 1 - b2``) or ``"official"`` (``c = b2``).

    Returns:
      A transformation whose state is :class:`ScaleByAdanState`.

    References:
      Xie et al., `Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
      Models <https://arxiv.org/abs/2208.06677>`_, 2022.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_adan()
      >>> [round(float(u), 4) for u in tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]]
      [1.0, -1.0]
    """
    who = "scale_by_adan"
    for name, value in (("b1", b1), ("b2", b2), ("b3", b3)):
        _validate.probability(who, name, value)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "eps_root", eps_root)
    _validate.choice(who, "numerics", numerics, NUMERICS)
    may_be_zero = root_may_be_zero(eps, eps_root)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        m, v, n, g = (_tree.tree_zeros_like(params) for _ in range(4))
        return ScaleByAdanState(m, v, n, g, t=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByAdanState)
        _checks.check_updates(who, updates, state.m, "first moment")
        first = state.t == 0
        t = _tree.safe_increment(state.t)
        corrections = [_tree.bias_correction(b, t) for b in (b1, b2, b3)]

        def leaf(g, m, v, n, previous):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype, n.dtype)
            real = _tree.real_dtype(dtype)
            out_dtype, g = _tree.update_dtype(g, m, v, n), g.astype(dtype)
            c = _tree.cast_scalar(b2 if numerics == "official" else 1 - b2, dtype)
            d = jnp.where(first, 0, g - previous.astype(dtype))
            new_m = _tree.moment_update(m, g, b1, dtype)
            new_v = _tree.moment_update(v, d, b2, dtype)
            b3_ = _tree.cast_scalar(b3, real)
            new_n = (1 - b3_) * _tree.abs_sq(g + c * d) + b3_ * _tree.as_real(n, real)
            # m_hat + c v_hat = (m + v * (c c1 / c2)) / c1, with the corrections' scalars
            # computed once: one product in the sum and no division by a traced scalar, which
            # XLA would contract and rewrite differently in different programs (flat buffers).
            c1, c2, c3 = corrections
            weight = _tree.cast_scalar(c1 / c2, dtype) * c
            numerator = (new_m + new_v * weight) * _tree.cast_scalar(1 / c1, dtype)
            n_hat = new_n * _tree.cast_scalar(1 / c3, real)
            root = jnp.sqrt(n_hat + _tree.cast_scalar(eps_root, real))
            u = _tree.safe_divide(numerator, root + _tree.cast_scalar(eps, real), may_be_zero)
            return (
                u.astype(out_dtype),
                new_m.astype(m.dtype),
                new_v.astype(v.dtype),
                new_n.astype(n.dtype),
                g.astype(previous.dtype),
            )

        u, m, v, n, g = _tree.tree_map_multi(leaf, 5, updates, state.m, state.v, state.n, state.g)
        return u, ScaleByAdanState(m, v, n, g, t)

    return GradientTransformation(init_fn, update_fn)


def proximal_decayed_weights(
    learning_rate: ScalarOrSchedule, weight_decay: Any, mask: MaskOrFn = None, *, who: str
) -> GradientTransformation:
    """The official Adan code's weight decay, after the learning rate (``u = -lr * step``)::

        p <- (p + u) / (1 + lr * wd),   as an update:   u <- (u - lr * wd * p) / (1 + lr * wd)

    Not exported: it is :func:`gradxform.adan`'s ``numerics="official"`` link.
    """
    _validate.learning_rate(who, learning_rate)
    _validate.non_negative(who, "weight_decay", weight_decay)

    def init_fn(params):
        del params
        return ProximalDecayState(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, ProximalDecayState)
        require_params(who, params, "its weight decay divides them by 1 + lr * weight_decay")
        _checks.check_updates(who, updates, params, "param", inexact=False)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate

        def leaf(u, p):
            dtype = _tree.compute_dtype(jnp.result_type(u), p.dtype)
            shrink = _tree.cast_scalar(lr, dtype) * _tree.cast_scalar(weight_decay, dtype)
            return (u.astype(dtype) - shrink * p.astype(dtype)) / (1 + shrink)

        new_state = ProximalDecayState(_tree.safe_increment(state.count))
        return jax.tree.map(leaf, updates, params), new_state

    transform = GradientTransformation(init_fn, update_fn)
    return transform if mask is None else masked(transform, mask)
