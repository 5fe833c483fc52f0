"""A matrix's low-rank projection from the SVD of its gradient, as GaLore takes it: which side
a matrix is projected on, the shapes of its projectors and of its projection, the projectors
themselves, the projection and the projection back (used by :mod:`gradxform.transforms.galore`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _tree

# The reference's projection types: "std" projects a matrix with rows >= cols on the right
# (its rows onto the top right singular vectors), a wider one on the left; "reverse_std" the
# other way round (Optax's choice); "right", "left" and "full" (both sides) for every matrix.
PROJ_TYPES = ("std", "reverse_std", "right", "left", "full")
HIGHEST = jax.lax.Precision.HIGHEST


def projection_side(shape: tuple[int, ...], proj_type: str) -> str:
    """``"right"``, ``"left"`` or ``"full"``: where a ``(rows, cols)`` matrix is projected."""
    rows, cols = shape
    if proj_type == "std":
        return "right" if rows >= cols else "left"
    if proj_type == "reverse_std":
        return "left" if rows >= cols else "right"
    return proj_type


def projector_shapes(shape: tuple[int, int], side: str, rank: int) -> list[tuple[int, int]]:
    """The shapes of a ``(rows, cols)`` matrix's projector(s): ``(r, cols)`` (right), ``(rows, r)``
    (left), both (full), ``r = min(rank, rows, cols)``."""
    rows, cols = shape
    r = min(rank, rows, cols)
    return {"right": [(r, cols)], "left": [(rows, r)], "full": [(rows, r), (r, cols)]}[side]


def projected_shape(shape: tuple[int, int], side: str, rank: int) -> tuple[int, int]:
    """The shape of a ``(rows, cols)`` matrix projected on ``side``."""
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
    return jnp.matmul(a, b, precision=HIGHEST)


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
