"""Layer-wise scalings by norms: LAMB's and LARS's trust ratio, Fromage's, and the param-block
norm. Each leaf (a layer's weight or bias) is scaled by a ratio of norms taken over that leaf.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import EmptyState, GradientTransformation, require_params


def safe_norm(x: jax.Array, min_norm: Any, dtype: Any) -> jax.Array:
    """``max(||x||_2, min_norm)`` in ``dtype``, with a finite gradient where ``||x|| <= min_norm``.

    ``max`` alone would differentiate ``||x||`` at 0 (NaN); the elements are replaced by ones
    where the floor applies, so the branch that is not taken stays differentiable.
    """
    x = x.astype(dtype)
    floor = _tree.cast_scalar(min_norm, dtype)
    norm = jnp.sqrt(jnp.sum(_tree.abs_sq(x)))
    floored = norm <= floor
    masked_norm = jnp.sqrt(jnp.sum(_tree.abs_sq(jnp.where(floored, jnp.ones_like(x), x))))
    return jnp.where(floored, floor, masked_norm).astype(_tree.real_dtype(dtype))


def _stateless_init(who: str):
    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return EmptyState()

    return init_fn


def scale_by_trust_ratio(
    min_norm: float = 0.0, trust_coefficient: float = 1.0, eps: float = 0.0
) -> GradientTransformation:
    """Scales each leaf's update by its trust ratio (You et al., 2017 and 2020: LARS, LAMB).

    Per leaf, with ``||.||`` the l2 norm over the leaf floored at ``min_norm``::

        r = trust_coefficient * ||p|| / (||u|| + eps)      (r = 1 where ||p|| or ||u|| is 0)
        u <- r * u

    Args:
      min_norm: the floor of both norms (>= 0); 0 floors nothing.
      trust_coefficient: the factor ``eta`` of LARS (a number).
      eps: added to the update's norm (>= 0).

    Returns:
      A stateless transformation. Needs ``params``.

    References:
      You et al., `Large Batch Training of Convolutional Networks
      <https://arxiv.org/abs/1708.03888>`_, 2017; You et al., `Large Batch Optimization for
      Deep Learning: Training BERT in 76 minutes <https://arxiv.org/abs/1904.00962>`_, 2020.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_trust_ratio(), jnp.array([3.0, 4.0])
      >>> tx.update(jnp.array([0.0, 2.0]), tx.init(params), params)[0]  # ||p|| / ||u|| u = 2.5 u
      Array([0., 5.], dtype=float32)
    """
    who = "scale_by_trust_ratio"
    _validate.non_negative(who, "min_norm", min_norm)
    _validate.finite(who, "trust_coefficient", trust_coefficient)
    _validate.non_negative(who, "eps", eps)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        require_params(who, params, "the trust ratio divides the params' norm by the update's")
        _checks.check_updates(who, updates, params, "param", inexact=False)

        def leaf(u, p):
            dtype = _tree.compute_dtype(jnp.result_type(u), p.dtype)
            real = _tree.real_dtype(dtype)
            param_norm = safe_norm(p, min_norm, dtype)
            update_norm = safe_norm(u, min_norm, dtype)
            zero = (param_norm == 0) | (update_norm == 0)
            denominator = update_norm + _tree.cast_scalar(eps, real)
            ratio = _tree.cast_scalar(trust_coefficient, real) * param_norm
            ratio = jnp.where(zero, 1, ratio / jnp.where(zero, 1, denominator))
            return (u.astype(dtype) * ratio).astype(dtype)

        return jax.tree.map(leaf, updates, params), state

    return GradientTransformation(_stateless_init(who), update_fn)


def scale_by_param_block_norm(min_scale: float = 1e-3) -> GradientTransformation:
    """Scales each leaf's update by the norm of its param (a block of params), floored.

    ::

        u <- max(||p||_2, min_scale) * u

    Args:
      min_scale: the floor of the norm (>= 0).

    Returns:
      A stateless transformation. Needs ``params``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_param_block_norm(), jnp.array([3.0, 4.0])
      >>> tx.update(jnp.array([1.0, -1.0]), tx.init(params), params)[0]  # ||p|| u = 5 u
      Array([ 5., -5.], dtype=float32)
    """
    who = "scale_by_param_block_norm"
    _validate.non_negative(who, "min_scale", min_scale)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        require_params(who, params, "each update is scaled by its param's norm")
        _checks.check_updates(who, updates, params, "param", inexact=False)

        def leaf(u, p):
            dtype = _tree.compute_dtype(jnp.result_type(u), p.dtype)
            return u.astype(dtype) * safe_norm(p, min_scale, dtype)

        return jax.tree.map(leaf, updates, params), state

    return GradientTransformation(_stateless_init(who), update_fn)


def add_scaled_params(factor: Any, who: str) -> GradientTransformation:
    """``u <- u + factor * p`` for a factor of any sign (Fromage's shrinkage ``factor < 0``).

    Not exported: :func:`gradxform.add_decayed_weights` is the public form, for a decay >= 0.
    """
    _validate.finite(who, "factor", factor)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        require_params(who, params, "it adds a multiple of them to the updates")
        _checks.check_updates(who, updates, params, "param", inexact=False)

        def leaf(u, p):
            dtype = _tree.compute_dtype(jnp.result_type(u), p.dtype)
            return u.astype(dtype) + _tree.cast_scalar(factor, dtype) * p.astype(dtype)

        return jax.tree.map(leaf, updates, params), state

    return GradientTransformation(init_fn, update_fn)
