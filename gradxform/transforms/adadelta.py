"""Adadelta's preconditioner: the ratio of two running root mean squares, of the updates and
of the gradients.

torch's ``Adadelta`` and Optax's ``scale_by_adadelta`` compute the same formulas in the same
order, up to how a moving average is written (``rho * v + ((1 - rho) * g) * g``, torch's, here;
``(1 - rho) * g^2 + rho * v`` in Optax): a rounding apart, so there is no option to choose.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._types import StepCount


class ScaleByAdaDeltaState(NamedTuple):
    """``count`` (int32); ``e_g`` and ``e_x``: the running averages of ``|g|^2`` and of the
    squared updates (torch's ``square_avg`` and ``acc_delta``), one leaf per param.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_adadelta(eps=0.1)
      >>> _, state = tx.update(jnp.array([3.0, -3.0]), tx.init(jnp.zeros(2)))
      >>> state.e_g.round(4), state.e_x.round(4)  # (1 - rho) g^2 and (1 - rho) u^2
      (Array([0.9, 0.9], dtype=float32), Array([0.09, 0.09], dtype=float32))
    """

    count: StepCount
    e_g: Any
    e_x: Any


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> GradientTransformation:
    """Adadelta's preconditioner (Zeiler, 2012), as ``torch.optim.Adadelta`` and Optax.

    ::

        e_g <- rho * e_g + (1 - rho) * |g_t|^2
        u_t = sqrt(e_x + eps) / sqrt(e_g + eps) * g_t       (e_x before this step's update)
        e_x <- rho * e_x + (1 - rho) * |u_t|^2

    The update's own average ``e_x`` is updated after the step, so the first step is
    ``sqrt(eps) / sqrt((1 - rho) g^2 + eps) * g``. A learning rate multiplies ``u_t`` after
    (torch's ``lr``, 1.0 by default).

    Args:
      rho: the decay of both averages, in [0, 1] (1 keeps them at 0: the step is then ``g``).
      eps: added to both averages inside the roots (>= 0).

    Returns:
      A transformation whose state is :class:`ScaleByAdaDeltaState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_adadelta(eps=0.1)
      >>> # the first step: sqrt(eps) / sqrt((1 - rho) g^2 + eps) g = sqrt(0.1) / sqrt(1.0) g
      >>> [round(float(u), 4) for u in tx.update(jnp.array([3.0, -3.0]), tx.init(jnp.zeros(2)))[0]]
      [0.9487, -0.9487]
    """
    who = "scale_by_adadelta"
    _validate.probability(who, "rho", rho, closed=True)
    _validate.non_negative(who, "eps", eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        e_g = _tree.tree_zeros_like(params)
        return ScaleByAdaDeltaState(jnp.zeros([], jnp.int32), e_g, _tree.tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByAdaDeltaState)
        _checks.check_updates(who, updates, state.e_g, "average of squared gradients")

        def leaf(g, e_g, e_x):
            dtype = _tree.compute_dtype(g.dtype, e_g.dtype, e_x.dtype)
            out_dtype, g = _tree.update_dtype(g, e_g, e_x), g.astype(dtype)
            real = _tree.real_dtype(dtype)
            new_e_g = _tree.square_moment_update(e_g, g, rho, dtype)
            epsilon = _tree.cast_scalar(eps, real)
            std = jnp.sqrt(new_e_g + epsilon)
            # One division, last, always behind the guard: XLA rewrites (a / b) * g into
            # (a * g) / b, and a / sqrt(b) into a * rsqrt(b), in some programs and not in
            # others, an ulp apart; a static and an injected eps must give the same numbers.
            u = _tree.safe_divide(jnp.sqrt(_tree.as_real(e_x, real) + epsilon) * g, std, True)
            new_e_x = _tree.square_moment_update(e_x, u, rho, dtype)
            return u.astype(out_dtype), new_e_g.astype(e_g.dtype), new_e_x.astype(e_x.dtype)

        u, e_g, e_x = _tree.tree_map_multi(leaf, 3, updates, state.e_g, state.e_x)
        return u, ScaleByAdaDeltaState(_tree.safe_increment(state.count), e_g, e_x)

    return GradientTransformation(init_fn, update_fn)
