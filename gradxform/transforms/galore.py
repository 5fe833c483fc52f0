"""GaLore's building blocks: gradients of matrices projected on a low-rank subspace taken from
their SVD, and a base transformation run in that subspace (:func:`scale_by_galore`). The Adam of
GaLore's reference code, whose ``eps`` is added to the root of the raw second moment, is
:func:`gradxform.transforms.adam_variants.scale_by_adam_raw_eps`.

Engineering. The projectors are recomputed every ``update_proj_gap`` steps inside the jitted
step (the count is traced, nothing recompiles) under ONE ``lax.cond`` on the count, outside any
``vmap``: a real conditional, whose branches take the projected leaves' gradients and the old
projectors and return only the projectors. The SVDs and the projections go through
:func:`gradxform._stacking.stacked_map`: one per leaf by default, one batched computation per
distinct shape within ``stacked_by_shape()``. The SVD is
taken of the gradient in float32, as the reference takes it; projectors are kept in the
param's dtype for float32 and float64 params, in float32 for bfloat16 and float16 ones.

Sharding. Under ``jit`` with sharded params the projectors and the low-rank moments are left to
XLA's propagation; ``init`` creates them replicated (a projector is small: ``rank x cols`` or
``rows x rank``), and the SVD needs the whole gradient of a matrix, which is gathered on the
steps that recompute the projectors.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _masks, _tree, _validate
from gradxform._base import (
    GradientTransformation,
    as_transformation,
    expect_state,
)
from gradxform._stacking import stacked_map
from gradxform._tree import path_name
from gradxform._types import MaskOrFn, StepCount
from gradxform.transforms.adam import scale_by_adam

# The reference's projection types: "std" projects a matrix with rows >= cols on the right
# (its rows onto the top right singular vectors), a wider one on the left; "reverse_std" the
# other way round (Optax's choice); "right", "left" and "full" (both sides) for every matrix.
PROJ_TYPES = ("std", "reverse_std", "right", "left", "full")
_HIGHEST = jax.lax.Precision.HIGHEST


class GaLoreState(NamedTuple):
    """``count`` (int32), the base transformation's state (of the projected shapes) and, per
    leaf, its ``projector``: ``None`` for a leaf that is not projected, one matrix for a side,
    a pair ``(left, right)`` for ``proj_type="full"``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.scale_by_galore(rank=1).init({"b": jnp.zeros(3), "w": jnp.zeros((4, 3))}).projector
      {'b': None, 'w': Array([[0.], [0.], [0.], [0.]], dtype=float32)}
    """

    count: StepCount
    base_optimizer_state: Any
    projector: Any


def projection_side(shape: tuple[int, ...], proj_type: str) -> str:
    """``"right"``, ``"left"`` or ``"full"``: where a ``(rows, cols)`` matrix is projected."""
    rows, cols = shape
    if proj_type == "std":
        return "right" if rows >= cols else "left"
    if proj_type == "reverse_std":
        return "left" if rows >= cols else "right"
    return proj_type


def _projector_shapes(shape: tuple[int, int], side: str, rank: int) -> list[tuple[int, int]]:
    rows, cols = shape
    r = min(rank, rows, cols)
    return {"right": [(r, cols)], "left": [(rows, r)], "full": [(rows, r), (r, cols)]}[side]


def _projected_shape(shape: tuple[int, int], side: str, rank: int) -> tuple[int, int]:
    rows, cols = shape
    r = min(rank, rows, cols)
    return {"right": (rows, r), "left": (r, cols), "full": (r, r)}[side]


def orthogonal_factors(g: jax.Array, side: str, rank: int, dtype: Any) -> Any:
    """The projector(s) of one matrix from the SVD ``U S V^T`` of ``g`` in float32: ``V^T``'s
    first ``r`` rows (right), ``U``'s first ``r`` columns (left), or both (full), in ``dtype``."""
    r = min(rank, *g.shape)
    u, _, vt = jnp.linalg.svd(g.astype(jnp.float32), full_matrices=False)
    factors = {"right": (vt[:r],), "left": (u[:, :r],), "full": (u[:, :r], vt[:r])}[side]
    factors = tuple(f.astype(dtype) for f in factors)
    return factors if side == "full" else factors[0]


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=_HIGHEST)


def project(g: jax.Array, projector: Any, side: str) -> jax.Array:
    """``g B^T`` (right), ``A^T g`` (left) or ``A^T g B^T`` (full), in the compute dtype."""
    dtype = _tree.compute_dtype(g.dtype, *(p.dtype for p in jax.tree.leaves(projector)))
    g = g.astype(dtype)
    if side == "right":
        return _matmul(g, projector.astype(dtype).T)
    if side == "left":
        return _matmul(projector.astype(dtype).T, g)
    left, right = (p.astype(dtype) for p in projector)
    return _matmul(_matmul(left.T, g), right.T)


def project_back(n: jax.Array, projector: Any, side: str) -> jax.Array:
    """``n B`` (right), ``A n`` (left) or ``A n B`` (full), in the compute dtype."""
    dtype = _tree.compute_dtype(n.dtype, *(p.dtype for p in jax.tree.leaves(projector)))
    n = n.astype(dtype)
    if side == "right":
        return _matmul(n, projector.astype(dtype))
    if side == "left":
        return _matmul(projector.astype(dtype), n)
    left, right = (p.astype(dtype) for p in projector)
    return _matmul(_matmul(left, n), right)


def _check_projected(who: str, path: tuple, leaf: Any) -> None:
    if jnp.ndim(leaf) != 2:
        raise ValueError(
            f"{who}: GaLore projects matrices, but the parameter at {path_name(path)} selected "
            f"for projection has shape {jnp.shape(leaf)}. Select only 2-D leaves (`projected`)."
        )
    if jnp.iscomplexobj(leaf):
        raise TypeError(
            f"{who}: the parameter at {path_name(path)} is complex ({jnp.result_type(leaf)}); "
            "GaLore projects real matrices."
        )


def _check_against_projector(who: str, path: tuple, u: Any, projector: Any, side: str) -> None:
    """A projected leaf's update against what its projector fixes of its shape."""
    factors = projector if side == "full" else (projector,)
    cols = factors[-1].shape[1] if side in ("right", "full") else None
    rows = factors[0].shape[0] if side in ("left", "full") else None
    shape = jnp.shape(u)
    if (
        len(shape) != 2
        or (cols is not None and shape[1] != cols)
        or (rows is not None and shape[0] != rows)
    ):
        expected = (rows or "*", cols or "*")
        raise ValueError(
            f"{who}: the update at {path_name(path)} has shape {shape}, but the param there is "
            f"a matrix of shape {expected} (from its projector). Updates must match the params "
            "leaf for leaf; nothing is broadcast."
        )
    # The kind of the update (floating, real) against a matrix of its shape and the projector's
    # dtype.
    matrix = jax.ShapeDtypeStruct(shape, factors[0].dtype)
    _checks.check_leaf_update(who, path, u, matrix, "param")


def galore_projection(
    who: str,
    rank: int,
    update_proj_gap: Any,
    scale: Any,
    base_optimizer: GradientTransformation,
    proj_type: str,
    projected: MaskOrFn,
) -> GradientTransformation:
    """:func:`scale_by_galore`, with errors naming ``who`` (the optimizer users call)."""

    def flags_of(tree):
        if projected is None:
            leaves, treedef = jax.tree.flatten(tree)
            return [jnp.ndim(x) == 2 for x in leaves], treedef
        return _masks.mask_flags(projected, tree, who)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        flags, treedef = flags_of(params)
        with_paths = jax.tree_util.tree_flatten_with_path(params)[0]
        projectors: list[jax.Array | tuple[jax.Array, ...] | None] = []
        proxies = []
        for (path, p), on in zip(with_paths, flags, strict=True):
            if not on:
                projectors.append(None)
                proxies.append(p)
                continue
            _check_projected(who, path, p)
            side = projection_side(p.shape, proj_type)
            dtype = _tree.compute_dtype(p.dtype)
            factors = tuple(jnp.zeros(s, dtype) for s in _projector_shapes(p.shape, side, rank))
            projectors.append(factors if side == "full" else factors[0])
            proxies.append(jnp.zeros(_projected_shape(p.shape, side, rank), p.dtype))
        return GaLoreState(
            count=jnp.zeros([], jnp.int32),
            base_optimizer_state=base_optimizer.init(treedef.unflatten(proxies)),
            projector=treedef.unflatten(projectors),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, GaLoreState)
        _checks.check_against_params(who, updates, params)
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(updates)
        try:
            projectors = treedef.flatten_up_to(state.projector)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{who}: the updates tree does not match the params tree of the state "
                f"(updates: {treedef}). Did you pass the gradients of another model?"
            ) from error
        chosen = [i for i, projector in enumerate(projectors) if projector is not None]
        sides = {i: projection_side(jnp.shape(with_paths[i][1]), proj_type) for i in chosen}
        for i in chosen:
            path, u = with_paths[i]
            _check_against_projector(who, path, u, projectors[i], sides[i])
        grads = [with_paths[i][1] for i in chosen]
        old = [projectors[i] for i in chosen]

        def refresh(grads, old):
            def one(g, p):
                side = projection_side(g.shape, proj_type)
                dtype = jax.tree.leaves(p)[0].dtype
                return orthogonal_factors(g, side, rank, dtype)

            return stacked_map(one, grads, old)

        def keep(grads, old):
            del grads
            return old

        count = state.count
        due = count % jnp.asarray(update_proj_gap, count.dtype) == 0
        new = jax.lax.cond(due, refresh, keep, grads, old) if chosen else []

        def low_rank(g, p):
            return project(g, p, projection_side(g.shape, proj_type))

        lows = stacked_map(low_rank, grads, new)
        inner = [u for _, u in with_paths]
        for i, low in zip(chosen, lows, strict=True):
            inner[i] = low
        directions, base_state = base_optimizer.update(
            treedef.unflatten(inner), state.base_optimizer_state, None
        )
        directions = treedef.flatten_up_to(directions)

        def back(n, p, g):
            u = project_back(n, p, projection_side(g.shape, proj_type))
            out_dtype = _tree.update_dtype(g, n, *jax.tree.leaves(p))
            return (_tree.cast_scalar(scale, u.dtype) * u).astype(out_dtype)

        full = stacked_map(back, [directions[i] for i in chosen], new, grads)
        for i, u in zip(chosen, full, strict=True):
            directions[i] = u
        all_projectors = list(projectors)
        for i, p in zip(chosen, new, strict=True):
            all_projectors[i] = p
        new_state = GaLoreState(
            _tree.safe_increment(count), base_state, treedef.unflatten(all_projectors)
        )
        return treedef.unflatten(directions), new_state

    return GradientTransformation(init_fn, update_fn)


def check_galore(
    who: str, rank: Any, update_proj_gap: Any, scale: Any, proj_type: Any, projected: Any
) -> None:
    """The arguments of the projection."""
    _validate.count(who, "rank", rank)
    _validate.count(who, "update_proj_gap", update_proj_gap, traced_ok=True)
    _validate.finite(who, "scale", scale)
    _validate.choice(who, "proj_type", proj_type, PROJ_TYPES)
    _validate.mask(who, "projected", projected)


def scale_by_galore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: GradientTransformation | None = None,
    weight_dimension_numbers: None = None,
    *,
    proj_type: str = "reverse_std",
    projected: MaskOrFn = None,
) -> GradientTransformation:
    """GaLore's gradient low-rank projection (Zhao et al., 2024), around a base transformation.

    For each projected matrix ``G_t`` (``m x n``), with ``r = min(rank, m, n)`` and the SVD
    ``G_t = U S V^T`` taken in float32 at the steps ``t`` (from 0) with ``t % update_proj_gap ==
    0``::

        right:  B = V^T[:r]        R_t = G_t B^T   (m x r)     u_t = scale * N_t B
        left:   A = U[:, :r]       R_t = A^T G_t   (r x n)     u_t = scale * A N_t
        full:   A, B as above      R_t = A^T G_t B^T           u_t = scale * A N_t B
        N_t = base_optimizer(R_t)    (its state of the projected shapes)

    ``proj_type="reverse_std"`` (the default, Optax's ``scale_by_galore``) projects a matrix
    with ``m >= n`` on the left and a wider one on the right; ``"std"`` (GaLore's reference,
    :func:`gradxform.galore_adamw`) the other way round; ``"right"``, ``"left"``, ``"full"``
    every matrix so. The base optimizer's moments are not rotated when the projector changes,
    as in the reference. Leaves that are not projected go through ``base_optimizer`` as they
    are. The base optimizer must not need ``params`` (it sees low-rank shapes).

    Args:
      rank: the projection's rank ``r`` (a positive int; capped by the matrix's dimensions).
      update_proj_gap: steps between recomputations of the projectors (>= 1).
      scale: the factor on the projected-back update (GaLore's ``alpha``).
      base_optimizer: the transformation in the projected space; ``None`` is Optax's
        ``scale_by_adam()``.
      weight_dimension_numbers: Optax's reshaping of higher-rank leaves into matrices; only
        ``None`` (2-D leaves) is supported.
      proj_type: one of ``"std"``, ``"reverse_std"``, ``"right"``, ``"left"``, ``"full"``.
      projected: which leaves to project: a tree of bools or a function of the params; ``None``
        projects every 2-D leaf.

    Returns:
      A transformation whose state is :class:`GaLoreState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.scale_by_galore(rank=1)
      >>> params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
      >>> opt.init(params).projector["w"].shape
      (4, 1)

    References:
      Zhao et al., `GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection
      <https://arxiv.org/abs/2403.03507>`_, ICML 2024.
    """
    who = "scale_by_galore"
    check_galore(who, rank, update_proj_gap, scale, proj_type, projected)
    if weight_dimension_numbers is not None:
        raise TypeError(
            f"{who}: `weight_dimension_numbers` must be None (2-D leaves are projected; reshape "
            f"higher-rank leaves into matrices first), got {weight_dimension_numbers!r}"
        )
    if base_optimizer is None:
        base_optimizer = scale_by_adam()
    base_optimizer = as_transformation(base_optimizer, f"{who}: `base_optimizer`")
    return galore_projection(
        who, rank, update_proj_gap, scale, base_optimizer, proj_type, projected
    )
