"""Trace-time checks of what an ``update`` is given: the updates against the tree they update.

Every transformation's ``update`` and ``apply_updates`` call these on shapes and dtypes, which
are known while tracing, so a mismatch raises once, when the step is traced, naming the
function, the leaf's path and both sides. Nothing is broadcast and nothing changes kind
silently.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _tree
from gradxform._tree import path_name
from gradxform._types import ArrayTree


def check_leaf_update(
    who: str, path: tuple, update: Any, reference: Any, name: str, *, inexact: bool = True
) -> None:
    """One update leaf against the leaf it updates (a param, or a state leaf shaped like one).

    Raises ``ValueError`` when the shapes differ (nothing is broadcast), and ``TypeError`` when
    the update is boolean, is complex for a real ``reference`` (its imaginary part would be
    dropped), or, with ``inexact``, is not floating point at all (a transformation that keeps
    floating-point state of its gradients). The message names ``who``, the leaf's path and both
    sides.
    """
    u_shape, r_shape = jnp.shape(update), jnp.shape(reference)
    if u_shape != r_shape:
        raise ValueError(
            f"{who}: the update at {path_name(path)} has shape {u_shape}, but the {name} "
            f"there has shape {r_shape}. Updates must match the params leaf for leaf; nothing "
            "is broadcast."
        )
    u_dtype, r_dtype = jnp.result_type(update), jnp.result_type(reference)
    if u_dtype == jnp.bool_ or (inexact and not jnp.issubdtype(u_dtype, jnp.inexact)):
        raise TypeError(
            f"{who}: the update at {path_name(path)} has dtype {u_dtype}; gradients and "
            "updates must be floating point (or complex, for complex params)."
        )
    if jnp.issubdtype(u_dtype, jnp.complexfloating) and not jnp.issubdtype(
        r_dtype, jnp.complexfloating
    ):
        raise TypeError(
            f"{who}: the update at {path_name(path)} is complex ({u_dtype}) but the {name} "
            f"there is real ({r_dtype}); its imaginary part would be dropped. Take gradients of "
            "real params as real arrays (`jnp.real`), or make the param complex."
        )


def check_updates(
    who: str, updates: ArrayTree, reference: ArrayTree, name: str, *, inexact: bool = True
) -> None:
    """``updates`` against a tree shaped like the params (the params, or a state moment):
    the same structure, and leaf by leaf the same shape and a compatible dtype (see
    :func:`check_leaf_update`). Runs at trace time, on shapes and dtypes only."""
    _tree.check_same_structure(reference, updates, name, "updates", who=who)
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(updates)
    for (path, u), r in zip(with_paths, treedef.flatten_up_to(reference), strict=True):
        check_leaf_update(who, path, u, r, name, inexact=inexact)


def check_against_params(who: str, updates: ArrayTree, params: ArrayTree | None) -> None:
    """For transformations without per-leaf state: ``updates`` against ``params`` (see
    :func:`check_updates`) when the params are given; nothing to compare against otherwise."""
    if params is not None:
        check_updates(who, updates, params, "param", inexact=False)
