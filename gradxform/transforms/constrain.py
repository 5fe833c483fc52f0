"""Constraining updates: replacing NaNs."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree
from gradxform._base import GradientTransformation, expect_state


class ZeroNansState(NamedTuple):
    """``found_nan``: one bool per leaf, whether the last update had a NaN there."""

    found_nan: Any


def zero_nans() -> GradientTransformation:
    """Replaces NaN elements by zero: ``u <- where(isnan(u), 0, u)``.

    Returns:
      A transformation whose state, :class:`ZeroNansState`, records per leaf whether the last
      update contained a NaN.
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
