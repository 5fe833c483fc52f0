"""Preconditioners for sparse gradients: lazy Adam (torch's ``SparseAdam``).

JAX gradients are dense. A gradient that is sparse in substance (an embedding whose step only
looked up a few rows) is written with exact zeros elsewhere, and these transformations treat an
exact zero as "no gradient here": the moments, and the update, of that element are left alone.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._types import StepCount
from gradxform.transforms.adam import check_moments


class ScaleBySparseAdamState(NamedTuple):
    """``count`` (int32, every update), first moment ``mu`` and second moment ``nu``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.scale_by_sparse_adam().init(jnp.zeros(2))
      ScaleBySparseAdamState(count=Array(0, dtype=int32), mu=Array([0., 0.], dtype=float32),
      nu=Array([0., 0.], dtype=float32))
    """

    count: StepCount
    mu: Any
    nu: Any


def scale_by_sparse_adam(
    b1: float = 0.9, *, b2: float = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    """Lazy Adam: Adam's moments and update only where the gradient is not zero.

    With ``t`` the number of updates so far, this one included, and ``g_t != 0`` elementwise::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t        where g_t != 0, else m_{t-1}
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|^2    where g_t != 0, else v_{t-1}
        u_t = sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)    where g_t != 0, else 0

    This is ``torch.optim.SparseAdam`` (Kingma & Ba, 2015, with the moments of the elements a
    sparse gradient holds): ``t`` counts every update, also one whose gradient is zero
    everywhere (torch advances its step on every ``step()`` of a param with a gradient, an empty
    one included, and skips only the arithmetic), and ``eps`` is added to ``sqrt(v_t)`` before
    the bias correction (the paper's efficient form; ``torch.optim.Adam`` adds it after). torch
    updates every element a sparse gradient lists, a stored 0 included; here an exact 0 means
    "not listed". Feeding the dense gradient of an embedding (zeros outside the rows looked up)
    therefore gives torch's numbers whenever the looked-up rows hold no exact 0.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to ``sqrt(v_t)`` (>= 0; with 0, an element whose ``v`` is 0 gets 0).

    Returns:
      A transformation whose state is :class:`ScaleBySparseAdamState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> t = gx.scale_by_sparse_adam()
      >>> u, state = t.update(jnp.array([2.0, 0.0]), t.init(jnp.zeros(2)))
      >>> [round(float(x), 4) for x in u]
      [1.0, 0.0]
    """
    who = "scale_by_sparse_adam"
    check_moments(who, b1, b2, eps)
    may_be_zero = not _validate.is_static_nonzero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleBySparseAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=_tree.tree_zeros_like(params),
            nu=_tree.tree_zeros_like(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleBySparseAdamState)
        _checks.check_updates(who, updates, state.mu, "first moment")
        count = _tree.safe_increment(state.count)
        # torch's step size, lr * sqrt(1 - b2^t) / (1 - b1^t), without the lr.
        step_size = jnp.sqrt(_tree.bias_correction(b2, count)) / _tree.bias_correction(b1, count)

        def leaf(g, m, v):
            dtype = _tree.compute_dtype(g.dtype, m.dtype, v.dtype)
            out_dtype, g = _tree.update_dtype(g, m, v), g.astype(dtype)
            absent = g == 0
            new_m = _tree.moment_update(m, g, b1, dtype)
            new_v = _tree.square_moment_update(v, g, b2, dtype)
            new_m = jnp.where(absent, m.astype(dtype), new_m)
            new_v = jnp.where(absent, _tree.as_real(v, new_v.dtype), new_v)
            denominator = jnp.sqrt(new_v) + _tree.cast_scalar(eps, new_v.dtype)
            # The zeros go into the numerator and the division comes last, as in Adam: XLA then
            # has no product to move across the division, and a leaf rounds the same in any
            # program (a selection after the division let it round differently on flat buffers).
            numerator = jnp.where(absent, 0, new_m * _tree.cast_scalar(step_size, dtype))
            u = _tree.safe_divide(numerator, denominator, may_be_zero)
            return u.astype(out_dtype), new_m.astype(m.dtype), new_v.astype(v.dtype)

        u, mu, nu = _tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleBySparseAdamState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)
