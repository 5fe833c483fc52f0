"""SM3, the memory-efficient adaptive method: one accumulator per axis of each param, their
minimum standing for the full second moment (Anil et al., 2019)."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state


class ScaleBySM3State(NamedTuple):
    """Optax's fields: ``mu``, per param a list of per-axis accumulators, and ``nu``, the
    momentum (param-shaped).

    Axis ``i``'s accumulator of a param of rank >= 2 keeps the param's rank, with every axis but
    ``i`` of size 1 (Optax keeps the 1-D vector), so that it broadcasts as it is; a param of
    rank 0 or 1 has one accumulator of its own shape.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.scale_by_sm3().init({"b": jnp.zeros(3), "w": jnp.zeros((2, 3))})
      >>> {k: [m.shape for m in v] for k, v in state.mu.items()}  # one accumulator per axis
      {'b': [(3,)], 'w': [(2, 1), (1, 3)]}
    """

    mu: Any
    nu: Any


def _accumulator_shapes(shape: tuple) -> list[tuple]:
    if len(shape) < 2:
        return [shape]
    return [tuple(n if j == i else 1 for j, n in enumerate(shape)) for i in range(len(shape))]


def scale_by_sm3(b1: float = 0.9, b2: float = 1.0, eps: float = 1e-8) -> GradientTransformation:
    """SM3's preconditioner (Anil et al., 2019, SM3-II), as Optax computes it.

    For a param of rank >= 2 with per-axis accumulators ``mu_i`` (one entry per index of axis
    ``i``), and ``w = 1 - b2`` (``w = 1`` when ``b2 = 1``, the paper's sum)::

        a_t = w * g_t^2 + b2 * min_i mu_i                 (broadcast to the param's shape)
        mu_i <- max of a_t over every axis but i
        m_t = b1 * m_{t-1} + (1 - b1) * g_t / sqrt(a_t + eps)    (0 where a_t = 0)
        u_t = m_t

    A param of rank 0 or 1 keeps the full accumulator ``a_t = w * g_t^2 + b2 * a_{t-1}``.

    Args:
      b1: the momentum's decay, in [0, 1).
      b2: the accumulators' decay, in [0, 1] (1: they sum, as the paper's).
      eps: added under the root (>= 0).

    Returns:
      A transformation whose state is :class:`ScaleBySM3State`. Real params only.

    References:
      Anil et al., `Memory-Efficient Adaptive Optimization for Large-Scale Learning
      <https://arxiv.org/abs/1901.11150>`_, 2019.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_sm3()
      >>> u, _ = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> [round(float(x), 4) for x in u]  # (1 - b1) g / sqrt(g^2 + eps)
      [0.1, -0.1]
    """
    who = "scale_by_sm3"
    _validate.probability(who, "b1", b1)
    _validate.probability(who, "b2", b2, closed=True)
    _validate.non_negative(who, "eps", eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        for path, p in jax.tree_util.tree_leaves_with_path(params):
            if jnp.iscomplexobj(p):
                raise TypeError(
                    f"{who}: parameter {_tree.path_name(path)} is complex ({p.dtype}); SM3 "
                    "takes real params only, as Optax's does."
                )

        def accumulators(p):
            return [jnp.zeros(s, p.dtype) for s in _accumulator_shapes(p.shape)]

        mu = jax.tree.map(accumulators, params)
        return ScaleBySM3State(mu, _tree.tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleBySM3State)
        _checks.check_updates(who, updates, state.nu, "momentum")
        treedef = jax.tree.structure(updates)
        accumulator_lists = treedef.flatten_up_to(state.mu)

        def leaf(g, m, accumulators):
            dtype = _tree.compute_dtype(g.dtype, m.dtype)
            g32 = g.astype(dtype)
            if _validate.is_static_number(b2):
                weight: float | jax.Array = 1.0 if float(b2) == 1.0 else 1.0 - float(b2)
            else:
                weight = jnp.where(jnp.asarray(b2) == 1, 1.0, 1.0 - jnp.asarray(b2))
            smallest = functools.reduce(jnp.minimum, [a.astype(dtype) for a in accumulators])
            a = _tree.cast_scalar(weight, dtype) * g32 * g32
            a = a + _tree.cast_scalar(b2, dtype) * smallest
            inverse_root = jnp.where(a > 0, jax.lax.rsqrt(a + _tree.cast_scalar(eps, dtype)), 0)
            new_m = _tree.moment_update(m, g32 * inverse_root, b1, dtype)
            if g.ndim < 2:
                new_accumulators = [a.astype(accumulators[0].dtype)]
            else:
                new_accumulators = [
                    jnp.max(
                        a,
                        axis=tuple(j for j in range(g.ndim) if j != i),
                        keepdims=True,
                        initial=0.0,
                    ).astype(acc.dtype)
                    for i, acc in enumerate(accumulators)
                ]
            return new_m.astype(_tree.update_dtype(g, m)), new_m.astype(m.dtype), new_accumulators

        leaves = [
            leaf(g, m, accumulators)
            for g, m, accumulators in zip(
                treedef.flatten_up_to(updates),
                treedef.flatten_up_to(state.nu),
                accumulator_lists,
                strict=True,
            )
        ]
        u = treedef.unflatten([x[0] for x in leaves])
        nu = treedef.unflatten([x[1] for x in leaves])
        mu = treedef.unflatten([x[2] for x in leaves])
        return u, ScaleBySM3State(mu, nu)

    return GradientTransformation(init_fn, update_fn)
