"""Coin betting: COCOB-Backprop, a learning-rate-free step from the wealth of a betting game
on each coordinate, with Optax's numbers.

The state keeps a copy of the initial params (never an alias of them) and four moments, each in
its param's dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform.transforms.dog import copy_params


class COCOBState(NamedTuple):
    """Per param: ``init_particles`` (the initial params), ``cumulative_gradients`` (``C``),
    ``scale`` (``L``, the largest ``|g|``), ``subgradients`` (``G``, the sum of ``|g|``) and
    ``reward`` (``R``).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_cocob(), jnp.ones(2)
      >>> _, state = tx.update(jnp.array([0.5, -2.0]), tx.init(params), params)
      >>> state.cumulative_gradients, state.scale, state.subgradients  # C = -g, L = G = |g|
      (Array([-0.5,  2. ], dtype=float32), Array([0.5, 2. ], dtype=float32), Array([0.5, 2. ],
      dtype=float32))
    """

    init_particles: Any
    cumulative_gradients: Any
    scale: Any
    subgradients: Any
    reward: Any


def scale_by_cocob(alpha: float = 100.0, eps: float = 1e-8) -> GradientTransformation:
    """COCOB-Backprop (Orabona & Tommasi, 2017), as ``optax.contrib.scale_by_cocob``.

    Element-wise, with ``x_0`` the initial params, ``L_0 = eps`` and ``C_0 = G_0 = R_0 = 0``::

        L_t = max(L_{t-1}, |g_t|)
        G_t = G_{t-1} + |g_t|
        R_t = max(R_{t-1} - g_t * (x_t - x_0), 0)
        C_t = C_{t-1} - g_t
        u_t = x_0 + C_t / (L_t * max(G_t + L_t, alpha * L_t)) * (L_t + R_t) - x_t

    The update moves the params to their new value: no learning rate follows it.

    Args:
      alpha: bounds the first steps' fraction of the wealth that is bet (> 0).
      eps: the initial ``L`` (>= 0).

    Returns:
      A transformation whose state is :class:`COCOBState`; it needs ``params``. Orabona &
      Tommasi, "Training Deep Networks without Learning Rates Through Coin Betting", NeurIPS
      2017.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_cocob(), jnp.ones(2)
      >>> # the first step: C_1 / (L_1 max(G_1 + L_1, alpha L_1)) L_1 = -g / (100 |g|)
      >>> u, _ = tx.update(jnp.array([0.5, -2.0]), tx.init(params), params)
      >>> [round(float(x), 4) for x in u]
      [-0.01, 0.01]
    """
    who = "scale_by_cocob"
    _validate.positive(who, "alpha", alpha)
    _validate.non_negative(who, "eps", eps)
    may_be_zero = not _validate.is_static_nonzero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return COCOBState(
            init_particles=copy_params(params),
            cumulative_gradients=_tree.tree_zeros_like(params),
            scale=_tree.tree_full_like(params, eps),
            subgradients=_tree.tree_zeros_like(params),
            reward=_tree.tree_zeros_like(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, COCOBState)
        require_params(who, params, "COCOB's update is the move from them to the new params")
        _checks.check_updates(who, updates, state.cumulative_gradients, "cumulative gradient")

        def leaf(g, x, x0, c, scale, total, reward):
            dtype = _tree.compute_dtype(g.dtype, x.dtype, x0.dtype, c.dtype)
            out_dtype = _tree.update_dtype(g, x, c)
            g, x, x0 = g.astype(dtype), x.astype(dtype), x0.astype(dtype)
            new_scale = jnp.maximum(scale.astype(dtype), jnp.abs(g))
            new_total = total.astype(dtype) + jnp.abs(g)
            new_reward = jnp.maximum(reward.astype(dtype) - g * (x - x0), 0)
            new_c = c.astype(dtype) - g
            bet = new_scale * jnp.maximum(
                new_total + new_scale, _tree.cast_scalar(alpha, dtype) * new_scale
            )
            fraction = _tree.safe_divide(new_c, bet, may_be_zero)
            u = -x + (x0 + fraction * (new_scale + new_reward))
            return (
                u.astype(out_dtype),
                new_c.astype(c.dtype),
                new_scale.astype(scale.dtype),
                new_total.astype(total.dtype),
                new_reward.astype(reward.dtype),
            )

        u, c, scale, total, reward = _tree.tree_map_multi(
            leaf,
            5,
            updates,
            params,
            state.init_particles,
            state.cumulative_gradients,
            state.scale,
            state.subgradients,
            state.reward,
        )
        return u, COCOBState(state.init_particles, c, scale, total, reward)

    return GradientTransformation(init_fn, update_fn)
