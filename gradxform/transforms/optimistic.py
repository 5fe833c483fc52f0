"""Optimistic gradient methods: the optimistic gradient step (Popov's extrapolation from the
past), which Optax's optimistic Adams run on ``scale_by_adam(nesterov=True)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._types import StepCount


class ScaleByOptimisticGradientState(NamedTuple):
    """``count`` (int32) and the ``previous_gradient``; ``is_initial_step`` (Optax's field) is
    ``count == 0``, kept as a counter so that the state holds no boolean.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_optimistic_gradient()
      >>> _, state = tx.update(jnp.array([1.0, 2.0]), tx.init(jnp.zeros(2)))
      >>> state
      ScaleByOptimisticGradientState(count=Array(1, dtype=int32), previous_gradient=Array([1., 2.],
      dtype=float32))
    """

    count: StepCount
    previous_gradient: Any

    @property
    def is_initial_step(self) -> jax.Array:
        return self.count == 0


def scale_by_optimistic_gradient(alpha: float = 1.0, beta: float = 1.0) -> GradientTransformation:
    """The optimistic gradient step (Popov, 1980; Daskalakis et al., 2018), as Optax's.

    ::

        u_t = (alpha + beta) * g_t - beta * g_{t-1},     g_0 = g_1

    Args:
      alpha: the weight of the current gradient (a number).
      beta: the weight of the optimism, ``g_t - g_{t-1}`` (a number).

    Returns:
      A transformation whose state is :class:`ScaleByOptimisticGradientState`.

    References:
      Daskalakis et al., `Training GANs with Optimism <https://arxiv.org/abs/1711.00141>`_,
      2018; Mokhtari et al., `A Unified Analysis of Extra-gradient and Optimistic Gradient
      Methods for Saddle Point Problems <https://arxiv.org/abs/1901.08511>`_, 2019.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_optimistic_gradient()
      >>> u1, state = tx.update(jnp.array([1.0, 2.0]), tx.init(jnp.zeros(2)))  # g_0 = g_1: u = g
      >>> u2, _ = tx.update(jnp.array([3.0, 3.0]), state)  # 2 g_2 - g_1
      >>> u1, u2
      (Array([1., 2.], dtype=float32), Array([5., 4.], dtype=float32))
    """
    who = "scale_by_optimistic_gradient"
    _validate.finite(who, "alpha", alpha)
    _validate.finite(who, "beta", beta)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleByOptimisticGradientState(
            jnp.zeros([], jnp.int32), _tree.tree_zeros_like(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByOptimisticGradientState)
        _checks.check_updates(who, updates, state.previous_gradient, "previous gradient")
        first = state.count == 0

        def leaf(g, previous):
            dtype = _tree.compute_dtype(g.dtype, previous.dtype)
            g32 = g.astype(dtype)
            # alpha g + beta (g - g_{t-1}): Optax's (alpha + beta) g - beta g_{t-1} to an ulp,
            # with the difference exactly 0 on the first step and, for alpha = 1, one product
            # only; a sum of two products XLA contracts into a fused multiply-add around either
            # one, differently on flat buffers than on the tree.
            change = jnp.where(first, 0, g32 - previous.astype(dtype))
            a, b = _tree.cast_scalar(alpha, dtype), _tree.cast_scalar(beta, dtype)
            u = (g32 if _validate.is_static_number(alpha) and alpha == 1 else a * g32) + b * change
            return u.astype(_tree.update_dtype(g, previous)), g.astype(previous.dtype)

        u, previous = _tree.tree_map_multi(leaf, 2, updates, state.previous_gradient)
        return u, ScaleByOptimisticGradientState(_tree.safe_increment(state.count), previous)

    return GradientTransformation(init_fn, update_fn)
