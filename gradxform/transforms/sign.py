"""Sign-based updates: Lion."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state


class ScaleByLionState(NamedTuple):
    """``mu``: the momentum."""

    mu: Any


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
    _validate.probability(who, "b1", b1)
    _validate.probability(who, "b2", b2)
    _validate.dtype(who, "mu_dtype", mu_dtype)

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
            direction = jnp.sign(_tree.moment_update(m, g, b1, dtype))
            new_m = _tree.moment_update(m, g, b2, dtype)
            return direction.astype(out_dtype), new_m.astype(m.dtype)

        u, mu = _tree.tree_map_multi(leaf, 2, updates, state.mu)
        return u, ScaleByLionState(mu)

    return GradientTransformation(init_fn, update_fn)
