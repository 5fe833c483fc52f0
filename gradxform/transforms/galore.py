"""GaLore's building blocks: gradients of matrices projected on a low-rank subspace taken from
their SVD, and a base transformation run in that subspace (:func:`scale_by_galore`). The Adam of
GaLore's reference code, whose ``eps`` is added to the root of the raw second moment, is
:func:`gradxform.transforms.adam_variants.scale_by_adam_raw_eps`.

Engineering. The projectors are recomputed every ``update_proj_gap`` steps inside the jitted
step (the count is traced, nothing recompiles) under ONE ``lax.cond`` on the count, outside any
``vmap``: a real conditional, whose branches take the projected leaves' gradients and the old
projectors and return only the projectors. With ``stack_by_shape=True`` the projectors of
same-shape, same-dtype projected leaves are kept as one stack per group
(:class:`gradxform._stacking.LeafLayout`), and the SVDs, projections and back-projections run
once per group under ``vmap``: the program holds one SVD per distinct shape, not per layer; the
base optimizer still sees one low-rank leaf per matrix. The SVD is taken of the gradient in
float32, as the reference takes it; projectors are kept in the param's dtype for float32 and
float64 params, in float32 for bfloat16 and float16 ones.

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
from gradxform._stacking import LeafLayout
from gradxform._tree import path_name
from gradxform._types import MaskOrFn, StepCount
from gradxform.transforms.adam import scale_by_adam
from gradxform.transforms.low_rank_projection import (
    PROJ_TYPES,
    orthogonal_factors,
    project,
    project_back,
    projected_shape,
    projection_side,
    projector_shapes,
)


class GaLoreState(NamedTuple):
    """``count`` (int32), the base transformation's state (of the projected shapes) and, per
    leaf, its ``projector``: ``None`` for a leaf that is not projected, one matrix for a side,
    a pair ``(left, right)`` for ``proj_type="full"``. With ``stack_by_shape=True`` the
    ``projector`` is a tuple of stacks, one per group of projected leaves of the same shape and
    dtype (in the order of their first leaf), each with the group's size as leading axis.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.scale_by_galore(rank=1).init({"b": jnp.zeros(3), "w": jnp.zeros((4, 3))}).projector
      {'b': None, 'w': Array([[0.], [0.], [0.], [0.]], dtype=float32)}
    """

    count: StepCount
    base_optimizer_state: Any
    projector: Any


def _check_projected(who: str, path: tuple, leaf: Any, what: str = "parameter") -> None:
    if jnp.ndim(leaf) != 2:
        raise ValueError(
            f"{who}: GaLore projects matrices, but the {what} at {path_name(path)} selected "
            f"for projection has shape {jnp.shape(leaf)}. Select only 2-D leaves (`projected`)."
        )
    if jnp.iscomplexobj(leaf):
        raise TypeError(
            f"{who}: the {what} at {path_name(path)} is complex ({jnp.result_type(leaf)}); "
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


def _checked_stacks(
    who: str, layout: LeafLayout, field: Any, chosen: list, proj_type: str, rank: int
) -> list:
    """Stacked projectors (``stack_by_shape=True``: a tuple, one stack per group of the
    projected updates ``chosen``, ``(path, update)`` pairs) checked against those updates."""
    expected = []
    for (shape, _), members in zip(layout.keys, layout.groups, strict=True):
        side = projection_side(shape, proj_type)
        stacks = tuple((len(members), *s) for s in projector_shapes(shape, side, rank))
        expected.append(stacks if side == "full" else stacks[0])
    found = jax.tree.map(jnp.shape, field)
    if not isinstance(field, tuple) or found != tuple(expected):
        raise ValueError(
            f"{who}: the state's projector holds one stack per group of same-shape projected "
            f"matrices (stack_by_shape=True); the updates' projected matrices group into "
            f"stacks of shapes {expected} (group size first), the state has {found}. Was the "
            "state made for another model, or with stack_by_shape=False?"
        )
    for members, stack in zip(layout.groups, field, strict=True):
        path, u = chosen[members[0]]
        matrix = jax.ShapeDtypeStruct(jnp.shape(u), jax.tree.leaves(stack)[0].dtype)
        _checks.check_leaf_update(who, path, u, matrix, "param")
    return list(field)


def galore_projection(
    who: str,
    rank: int,
    update_proj_gap: Any,
    scale: Any,
    base_optimizer: GradientTransformation,
    proj_type: str,
    projected: MaskOrFn,
    stack_by_shape: bool = False,
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
            factors = tuple(jnp.zeros(s, dtype) for s in projector_shapes(p.shape, side, rank))
            projectors.append(factors if side == "full" else factors[0])
            proxies.append(jnp.zeros(projected_shape(p.shape, side, rank), p.dtype))
        if stack_by_shape:
            layout = LeafLayout(
                [p for (_, p), on in zip(with_paths, flags, strict=True) if on], stacked=True
            )
            projector = layout.state(layout.units([x for x in projectors if x is not None]))
        else:
            projector = treedef.unflatten(projectors)
        return GaLoreState(
            count=jnp.zeros([], jnp.int32),
            base_optimizer_state=base_optimizer.init(treedef.unflatten(proxies)),
            projector=projector,
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, GaLoreState)
        _checks.check_against_params(who, updates, params)
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(updates)
        if stack_by_shape:
            flags, _ = flags_of(updates if params is None else params)
            chosen = [i for i, on in enumerate(flags) if on]
            for i in chosen:
                path, u = with_paths[i]
                _check_projected(who, path, u, what="update")
        else:
            try:
                projectors = treedef.flatten_up_to(state.projector)
            except (ValueError, TypeError) as error:
                raise ValueError(
                    f"{who}: the updates tree does not match the params tree of the state "
                    f"(updates: {treedef}). Did you pass the gradients of another model?"
                ) from error
            chosen = [i for i, projector in enumerate(projectors) if projector is not None]
            for i in chosen:
                path, u = with_paths[i]
                # A non-matrix update has no side: the check rejects it by its shape.
                side = projection_side(jnp.shape(u), proj_type) if jnp.ndim(u) == 2 else ""
                _check_against_projector(who, path, u, projectors[i], side)
        grads = [with_paths[i][1] for i in chosen]
        layout = LeafLayout(grads, stacked=stack_by_shape)
        if stack_by_shape:
            chosen_paths = [with_paths[i] for i in chosen]
            old = _checked_stacks(who, layout, state.projector, chosen_paths, proj_type, rank)
        else:
            old = [projectors[i] for i in chosen]
        grad_units = layout.units(grads)

        def refresh(grad_units, old):
            def one(g, p):
                side = projection_side(g.shape, proj_type)
                dtype = jax.tree.leaves(p)[0].dtype
                return orthogonal_factors(g, side, rank, dtype)

            return layout.map(one, grad_units, old)

        def keep(grad_units, old):
            del grad_units
            return old

        count = state.count
        due = count % jnp.asarray(update_proj_gap, count.dtype) == 0
        new = jax.lax.cond(due, refresh, keep, grad_units, old) if chosen else []

        def low_rank(g, p):
            return project(g, p, projection_side(g.shape, proj_type))

        lows = layout.tree(layout.map(low_rank, grad_units, new))
        inner = [u for _, u in with_paths]
        for i, low in zip(chosen, lows, strict=True):
            inner[i] = low
        directions, base_state = base_optimizer.update(
            treedef.unflatten(inner), state.base_optimizer_state, None
        )
        directions = treedef.flatten_up_to(directions)

        def back(n, p, g):
            return project_back(n, p, projection_side(g.shape, proj_type))

        low_directions = layout.units([directions[i] for i in chosen])
        full = layout.tree(layout.map(back, low_directions, new, grad_units))
        # The scale and the cast per leaf, outside the map: XLA then fuses them with the next
        # link of a chain (a weight decay) as it does leaf by leaf, to the same roundings (FMAs
        # included; measured: within the map, stacked moved galore_adamw's decay by 1 ulp).
        # ``u``'s dtype already promotes the direction's and the projector's.
        for i, u in zip(chosen, full, strict=True):
            out_dtype = _tree.update_dtype(with_paths[i][1], u)
            directions[i] = (_tree.cast_scalar(scale, u.dtype) * u).astype(out_dtype)
        if stack_by_shape:
            projector = layout.state(new)
        else:
            all_projectors = list(projectors)
            for i, p in zip(chosen, new, strict=True):
                all_projectors[i] = p
            projector = treedef.unflatten(all_projectors)
        new_state = GaLoreState(_tree.safe_increment(count), base_state, projector)
        return treedef.unflatten(directions), new_state

    return GradientTransformation(init_fn, update_fn)


def check_galore(
    who: str,
    rank: Any,
    update_proj_gap: Any,
    scale: Any,
    proj_type: Any,
    projected: Any,
    stack_by_shape: Any = False,
) -> None:
    """The arguments of the projection."""
    _validate.count(who, "rank", rank)
    _validate.count(who, "update_proj_gap", update_proj_gap, traced_ok=True)
    _validate.finite(who, "scale", scale)
    _validate.choice(who, "proj_type", proj_type, PROJ_TYPES)
    _validate.mask(who, "projected", projected)
    _validate.boolean(who, "stack_by_shape", stack_by_shape)


def scale_by_galore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: GradientTransformation | None = None,
    weight_dimension_numbers: None = None,
    *,
    proj_type: str = "reverse_std",
    projected: MaskOrFn = None,
    stack_by_shape: bool = False,
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
      stack_by_shape: keep the projectors of same-shape projected leaves stacked, one stack per
        shape and dtype, and compute each group's SVD, projection and projection back under one
        ``vmap`` (the same numbers; compile time set by the number of distinct shapes, not of
        leaves: ``gradxform._stacking.LeafLayout``). The state's ``projector`` is then a tuple
        of stacks, not a tree of the params' structure; the base optimizer's state is per leaf
        either way.

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
    check_galore(who, rank, update_proj_gap, scale, proj_type, projected, stack_by_shape)
    if weight_dimension_numbers is not None:
        raise TypeError(
            f"{who}: `weight_dimension_numbers` must be None (2-D leaves are projected; reshape "
            f"higher-rank leaves into matrices first), got {weight_dimension_numbers!r}"
        )
    if base_optimizer is None:
        base_optimizer = scale_by_adam()
    base_optimizer = as_transformation(base_optimizer, f"{who}: `base_optimizer`")
    return galore_projection(
        who, rank, update_proj_gap, scale, base_optimizer, proj_type, projected, stack_by_shape
    )
