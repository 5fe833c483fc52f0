"""Clipping updates, and replacing NaNs."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree
from gradxform._base import EmptyState, GradientTransformation


class ZeroNansState(NamedTuple):
    """``found_nan``: one bool per leaf, whether the last update had a NaN there."""

    found_nan: Any


def clip(max_delta: float) -> GradientTransformation:
    """Clips every element to ``[-max_delta, max_delta]``: ``u <- clamp(u, -d, d)``.

    Args:
      max_delta: the bound ``d`` (>= 0).

    Returns:
      A stateless transformation.
    """
    _checks.non_negative("clip", "max_delta", max_delta)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args

        def leaf(u):
            bound = _tree.cast_scalar(max_delta, u.dtype)
            return jnp.clip(u, -bound, bound).astype(u.dtype)

        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init_fn, update_fn)


# torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing.
_TORCH_NORM_EPS = 1e-6


def clip_by_global_norm(max_norm: float, axis_name: str | None = None) -> GradientTransformation:
    """Rescales all updates together so that their global norm is at most ``max_norm``.

    ::

        n = sqrt(sum_i |u_i|^2)            (over every element of every leaf)
        u <- u * min(1, max_norm / (n + 1e-6))

    exactly as ``torch.nn.utils.clip_grad_norm_`` (including its ``1e-6``).

    Args:
      max_norm: the bound (> 0).
      axis_name: when updates are sharded over a mapped axis (``pmap``/``shard_map``), its
        name, so that ``n`` is the norm of the whole model rather than of each shard.

    Returns:
      A stateless transformation.
    """
    _checks.positive("clip_by_global_norm", "max_norm", max_norm)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        norm = _tree.tree_global_norm(updates, axis_name)
        factor = jnp.minimum(1.0, max_norm / (norm + _TORCH_NORM_EPS))
        return _tree.tree_scale(factor, updates), state

    return GradientTransformation(init_fn, update_fn)


def zero_nans() -> GradientTransformation:
    """Replaces NaN elements by zero: ``u <- where(isnan(u), 0, u)``.

    Returns:
      A transformation whose state, :class:`ZeroNansState`, records per leaf whether the last
      update contained a NaN.
    """

    def init_fn(params):
        return ZeroNansState(jax.tree.map(lambda _: jnp.zeros([], jnp.bool_), params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _tree.check_same_structure(state.found_nan, updates, "NaN flags", "updates")
        found = jax.tree.map(lambda u: jnp.any(jnp.isnan(u)), updates)
        cleaned = jax.tree.map(lambda u: jnp.where(jnp.isnan(u), 0, u).astype(u.dtype), updates)
        return cleaned, ZeroNansState(found)

    return GradientTransformation(init_fn, update_fn)
