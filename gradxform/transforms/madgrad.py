"""MADGRAD: dual averaging with momentum and a cube-root preconditioner, with Optax's numbers.

The state keeps a copy of the initial params (never an alias of them) and two sums, each in its
param's dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform._types import ScalarOrSchedule, StepCount
from gradxform.transforms.dog import copy_params


class MadgradState(NamedTuple):
    """``count`` (int32), ``grad_sum_sq`` (the weighted sum of ``g^2``), ``s`` (the weighted
    sum of ``g``) and ``x0`` (the initial params).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_madgrad(0.5), jnp.zeros(2)
      >>> _, state = tx.update(jnp.array([1.0, -2.0]), tx.init(params), params)
      >>> # S_0 = lambda_0 g^2 and s_0 = lambda_0 g, with lambda_0 = lr = 0.5 (to eps)
      >>> [[round(float(x), 4) for x in v] for v in (state.grad_sum_sq, state.s)]
      [[0.5, 2.0], [0.5, -1.0]]
    """

    count: StepCount
    grad_sum_sq: Any
    s: Any
    x0: Any


def scale_by_madgrad(
    learning_rate: ScalarOrSchedule, momentum: float = 0.9, eps: float = 1e-6
) -> GradientTransformation:
    """MADGRAD (Defazio & Jelassi, 2021), as ``optax.contrib.scale_by_madgrad``.

    With ``lambda_k = (lr_k + eps) * sqrt(k + 1)`` at the ``k``-th update (``k = 0, 1, ...``;
    as in Optax, ``sqrt(k + 1)`` is rounded to float32 and ``lambda_k`` has the learning rate's
    dtype; a Python ``lr`` counts as the default float dtype, where Optax rounds ``lambda_k`` to
    float32)::

        S_k = S_{k-1} + lambda_k * g_k^2
        s_k = s_{k-1} + lambda_k * g_k
        z_k = x_0 - s_k / (S_k^(1/3) + eps)
        u_k = (1 - momentum) * z_k + momentum * x_k - x_k = (1 - momentum) * (z_k - x_k)

    The learning rate is part of the rule: the update moves the params to their new value,
    and no learning rate follows it.

    Args:
      learning_rate: a number (>= 0) or a schedule of the update count.
      momentum: the weight of the current params in the average, in [0, 1].
      eps: added to the learning rate and to the cube root (>= 0).

    Returns:
      A transformation whose state is :class:`MadgradState`; it needs ``params``. Defazio &
      Jelassi, "Adaptivity without Compromise: A Momentumized, Adaptive, Dual Averaged
      Gradient Method for Stochastic Optimization", JMLR 2022.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_madgrad(0.5, momentum=0.0), jnp.zeros(2)
      >>> u, _ = tx.update(jnp.array([1.0, -8.0]), tx.init(params), params)
      >>> [round(float(x), 4) for x in u]  # z_0 = -lambda_0 g / (lambda_0 g^2)^(1/3)
      [-0.63, 1.2599]
    """
    who = "scale_by_madgrad"
    _validate.learning_rate(who, learning_rate)
    _validate.probability(who, "momentum", momentum, closed=True)
    _validate.non_negative(who, "eps", eps)
    may_be_zero = not _validate.is_static_nonzero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return MadgradState(
            count=jnp.zeros([], jnp.int32),
            grad_sum_sq=_tree.tree_zeros_like(params),
            s=_tree.tree_zeros_like(params),
            x0=copy_params(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, MadgradState)
        require_params(who, params, "MADGRAD's update is the move from them to the new params")
        _checks.check_updates(who, updates, state.s, "sum of gradients")
        rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
        # As Optax: the root of the int32 count is taken in float32 (JAX's result dtype for an
        # integer argument), and the product with lr + eps in the learning rate's dtype. A Python
        # number counts as the array that inject_hyperparams would hold (the default float
        # dtype), so that both give the same step; Optax's product with a Python lr is float32
        # (weak typing), also under x64.
        if isinstance(rate, int | float):
            rate = jnp.asarray(rate, _tree.default_float_dtype())
        root = jnp.sqrt((state.count + 1).astype(jnp.float32))
        weight = (rate + eps) * root

        def leaf(g, x, x0, total_sq, total):
            dtype = _tree.compute_dtype(g.dtype, x.dtype, total.dtype)
            out_dtype = _tree.update_dtype(g, x, total)
            g, x = g.astype(dtype), x.astype(dtype)
            w = _tree.cast_scalar(weight, dtype)
            new_total_sq = total_sq.astype(dtype) + w * (g * g)
            new_total = total.astype(dtype) + w * g
            # The cube root as pow(S, 1/3) (S >= 0), not lax.cbrt: XLA on CPU lowers cbrt as
            # copysign(pow(|S|, 1/3), S) where it compiles a small loop body as one function,
            # and as a call to libm's cbrt in a fusion's own kernel, an ulp apart (measured: an
            # optimizer run in lax.scan, plain vs inject_hyperparams). pow is the same call in
            # both; it is within an ulp or two of Optax's cbrt (rtol 1e-12 over 100 steps).
            sigma = jnp.power(new_total_sq, 1 / 3) + _tree.cast_scalar(eps, dtype)
            z = x0.astype(dtype) - _tree.safe_divide(new_total, sigma, may_be_zero)
            # (1 - m) z + m x - x as one product: XLA contracts a sum of two products into a
            # fused multiply-add around either one, and picks differently for a scalar leaf
            # than for a vector (measured: the flat and tree paths an ulp apart).
            mix = _tree.cast_scalar(momentum, dtype)
            u = (1 - mix) * (z - x)
            return (
                u.astype(out_dtype),
                new_total_sq.astype(total_sq.dtype),
                new_total.astype(total.dtype),
            )

        u, total_sq, total = _tree.tree_map_multi(
            leaf, 3, updates, params, state.x0, state.grad_sum_sq, state.s
        )
        count = _tree.safe_increment(state.count)
        return u, MadgradState(count, total_sq, total, state.x0)

    return GradientTransformation(init_fn, update_fn)
