"""Sign-based updates: Lion (and its smooth variants), and the sign of the gradient."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import EmptyState, GradientTransformation, expect_state

LION_MODES = ("hard", "smooth", "refined")


class ScaleByLionState(NamedTuple):
    """``mu``: the momentum.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_lion()
      >>> _, state = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> [round(float(x), 4) for x in state.mu]  # (1 - b2) g
      [0.005, -0.02]
    """

    mu: Any


def check_lion(who: str, b1: Any, b2: Any, mu_dtype: Any, mode: Any, smooth_beta: Any) -> None:
    """The arguments of :func:`scale_by_lion`, checked for ``who``."""
    _validate.probability(who, "b1", b1)
    _validate.probability(who, "b2", b2)
    _validate.dtype(who, "mu_dtype", mu_dtype)
    _validate.choice(who, "mode", mode, LION_MODES)
    _validate.non_negative(who, "smooth_beta", smooth_beta)


def scale_by_lion(
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any | None = None,
    *,
    mode: str = "hard",
    smooth_beta: float = 1.0,
) -> GradientTransformation:
    """Lion's update direction (Chen et al., 2023, "Symbolic Discovery of Optimization
    Algorithms"), with Optax's smooth variants of the sign.

    ::

        x_t = b1 * m_{t-1} + (1 - b1) * g_t
        u_t = sign(x_t)                          (mode="hard", the paper's)
              tanh(smooth_beta * x_t)            (mode="smooth")
              x_t if |x_t| < 1 else sign(x_t)    (mode="refined")
        m_t = b2 * m_{t-1} + (1 - b2) * g_t

    Args:
      b1: interpolation for the update direction, in [0, 1).
      b2: decay of the momentum, in [0, 1).
      mu_dtype: dtype of the momentum; by default each param's dtype.
      mode: ``"hard"``, ``"smooth"`` or ``"refined"``, as ``optax.scale_by_lion``.
      smooth_beta: the slope of ``tanh`` at 0 in ``"smooth"`` mode (>= 0).

    Returns:
      A transformation whose state is :class:`ScaleByLionState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_lion()
      >>> tx.update(jnp.array([0.5, -2.0, 0.0]), tx.init(jnp.zeros(3)))[0]  # sign((1 - b1) g)
      Array([ 1., -1.,  0.], dtype=float32)
    """
    who = "scale_by_lion"
    check_lion(who, b1, b2, mu_dtype, mode, smooth_beta)

    def direction(x):
        if mode == "smooth":
            return jnp.tanh(_tree.cast_scalar(smooth_beta, x.dtype) * x)
        if mode == "refined":
            return jnp.where(jnp.abs(x) < 1, x, jnp.sign(x))
        return jnp.sign(x)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleByLionState(_tree.tree_zeros_like(params, mu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByLionState)
        _checks.check_updates(who, updates, state.mu, "momentum")

        def leaf(g, m):
            dtype = _tree.compute_dtype(g.dtype, m.dtype)
            out_dtype, g = _tree.update_dtype(g, m), g.astype(dtype)
            u = direction(_tree.moment_update(m, g, b1, dtype))
            new_m = _tree.moment_update(m, g, b2, dtype)
            return u.astype(out_dtype), new_m.astype(m.dtype)

        u, mu = _tree.tree_map_multi(leaf, 2, updates, state.mu)
        return u, ScaleByLionState(mu)

    return GradientTransformation(init_fn, update_fn)


def scale_by_sign() -> GradientTransformation:
    """The sign of each gradient element, as ``optax.scale_by_sign`` (signSGD: Bernstein et
    al., 2018, "signSGD: Compressed Optimisation for Non-Convex Problems").

    ::

        u_t = sign(g_t)        (-1, 0 or 1; NaN stays NaN; x / |x| for complex x)

    Returns:
      A stateless transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.scale_by_sign().update(jnp.array([0.5, -2.0, 0.0]), gx.EmptyState())[0]
      Array([ 1., -1.,  0.], dtype=float32)
    """
    who = "scale_by_sign"

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params(who, updates, params)

        def leaf(g):
            return jnp.sign(g).astype(_tree.update_dtype(g))

        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init_fn, update_fn)
