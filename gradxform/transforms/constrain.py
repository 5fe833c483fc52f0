"""Constraining updates: replacing NaNs, keeping params non-negative, centring gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree
from gradxform._base import EmptyState, GradientTransformation, expect_state, require_params


class ZeroNansState(NamedTuple):
    """``found_nan``: one bool per leaf, whether the last update had a NaN there.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.zero_nans()
      >>> updates = {"a": jnp.array([jnp.nan]), "b": jnp.ones(1)}
      >>> _, state = tx.update(updates, tx.init(updates))
      >>> state.found_nan
      {'a': Array(True, dtype=bool), 'b': Array(False, dtype=bool)}
    """

    found_nan: Any


def zero_nans() -> GradientTransformation:
    """Replaces NaN elements by zero: ``u <- where(isnan(u), 0, u)``.

    Returns:
      A transformation whose state, :class:`ZeroNansState`, records per leaf whether the last
      update contained a NaN.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.zero_nans()
      >>> tx.update(jnp.array([1.0, jnp.nan]), tx.init(jnp.zeros(2)))[0]
      Array([1., 0.], dtype=float32)
    """

    def init_fn(params):
        return ZeroNansState(jax.tree.map(lambda _: jnp.zeros([], jnp.bool_), params))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state("zero_nans", state, ZeroNansState)
        _tree.check_same_structure(
            state.found_nan, updates, "NaN flags", "updates", who="zero_nans"
        )
        _checks.check_against_params("zero_nans", updates, params)
        found = jax.tree.map(lambda u: jnp.any(jnp.isnan(u)), updates)
        cleaned = jax.tree.map(lambda u: jnp.where(jnp.isnan(u), 0, u).astype(u.dtype), updates)
        return cleaned, ZeroNansState(found)

    return GradientTransformation(init_fn, update_fn)


def keep_params_nonnegative() -> GradientTransformation:
    """Stops params at zero from below (Optax's): ``u <- -p where p + u < 0, else u``.

    Params that start non-negative stay so: an update that would take one below zero takes it
    to zero exactly instead.

    Returns:
      A stateless transformation; its ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> params = jnp.array([1.0, 1.0])
      >>> gx.keep_params_nonnegative().update(jnp.array([-0.5, -3.0]), gx.EmptyState(), params)[0]
      Array([-0.5, -1. ], dtype=float32)
    """
    who = "keep_params_nonnegative"

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        require_params(who, params, "it compares `params + updates` with zero")
        _checks.check_updates(who, updates, params, "param", inexact=False)
        out = jax.tree.map(
            lambda p, u: jnp.where(p + u < 0, -p, u).astype(u.dtype), params, updates
        )
        return out, state

    return GradientTransformation(init_fn, update_fn)


def centralize() -> GradientTransformation:
    """Gradient centralization (Yong et al., 2020): each unit's gradient has zero mean.

    For a leaf of rank >= 2, the mean over every axis but the first is subtracted::

        g[i, ...] <- g[i, ...] - mean(g[i, ...])

    Leaves of rank <= 1 pass unchanged (Optax's rule).

    Returns:
      A stateless transformation.

    References:
      Yong, Huang, Hua & Zhang, *Gradient Centralization: A New Optimization Technique for Deep
      Neural Networks*, 2020 (https://arxiv.org/abs/2004.01461).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> g = jnp.array([[1.0, 3.0], [2.0, 2.0]])  # row means 2 and 2
      >>> gx.centralize().update(g, gx.EmptyState())[0]
      Array([[-1.,  1.],
             [ 0.,  0.]], dtype=float32)
    """
    who = "centralize"

    def leaf(g):
        if g.ndim <= 1:
            return g
        dtype = _tree.compute_dtype(g.dtype)
        x = g.astype(dtype)
        return (x - x.mean(tuple(range(1, g.ndim)), keepdims=True)).astype(g.dtype)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params(who, updates, params)
        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init_fn, update_fn)
