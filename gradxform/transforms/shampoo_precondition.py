"""Shampoo's preconditioner (Gupta, Koren & Singer, 2018), as ``pytorch-optimizer``'s
``Shampoo`` computes it: one Kronecker factor per dimension of every tensor, its inverse root
from an SVD, and the momentum that mixes the previous preconditioned direction into the gradient.

The statistics update, the inverse roots and the preconditioning are written for one leaf and
mapped by a ``LeafLayout`` (``gradxform._stacking``): leaf by leaf by default, or, with
``stack_by_shape``, one ``vmap``-ped computation per distinct shape over state kept stacked,
where the inverse roots of one axis's factors, from all params of one shape, share one batched
SVD. The periodic root (every ``preconditioning_compute_steps`` steps) is one ``lax.cond`` on
the step count, outside any ``vmap``, whose branches take the factors and the old roots and
return only the roots.

Sharding (under ``jit`` with params sharded over explicit mesh axes): the momentum, the
update and the mixing of the gradient with the momentum are sharded like the param; the
Kronecker factors and their roots, ``d x d`` for each dimension ``d``, are replicated (the
factors contract every axis but one, and their SVD needs the whole matrix). The mixed
gradient is gathered once per step, the factors and the direction computed whole on every
device, and the direction resharded like the param. With automatic (``Auto``) axes the
placement is XLA's: measured, it returns the update and momentum replicated unless the
caller's ``out_shardings`` say otherwise.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform._stacking import LeafLayout, columns
from gradxform._tree import path_name
from gradxform._types import StepCount


class ScaleByShampooState(NamedTuple):
    """``count`` (int32); ``momentum``, the last preconditioned direction (param's shape and
    dtype); per param a tuple with one ``d x d`` matrix per dimension ``d``: the Kronecker
    factors ``statistics`` and their inverse roots ``roots`` (float32 for bf16/f16 params).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.scale_by_shampoo().init(jnp.zeros((2, 2)))
      >>> state.count, [s.shape for s in state.statistics], [r.shape for r in state.roots]
      (Array(0, dtype=int32), [(2, 2), (2, 2)], [(2, 2), (2, 2)])
    """

    count: StepCount
    momentum: Any
    statistics: Any
    roots: Any


def inverse_root(matrix: jax.Array, exponent: jax.Array) -> jax.Array:
    """``U diag(s^exponent) V^T`` from the SVD ``matrix = U diag(s) V^T``, as
    ``pytorch_optimizer``'s ``compute_power_svd`` computes it (in float32, or float64 for a
    float64 matrix)."""
    u, s, vh = jnp.linalg.svd(matrix, full_matrices=False)
    return jnp.matmul(u * jnp.power(s, exponent)[None, :], vh, precision=jax.lax.Precision.HIGHEST)


def inverse_roots(statistics: tuple) -> tuple:
    """Each factor's ``L_i^{-1/(2n)}``, ``n`` the number of factors (the param's order)."""
    return tuple(
        inverse_root(f, jnp.asarray(-1.0 / (2 * len(statistics)), f.dtype)) for f in statistics
    )


def _unfold(g: jax.Array, axis: int) -> jax.Array:
    rest = math.prod(g.shape) // g.shape[axis] if g.shape[axis] else 0
    return jnp.moveaxis(g, axis, 0).reshape(g.shape[axis], rest)


def _accumulate(g: jax.Array, statistics: tuple) -> tuple:
    """``L_i <- L_i + G_(i) G_(i)^T`` for each dimension ``i`` (``G_(i)``: ``g`` unfolded)."""
    out = []
    for axis, factor in enumerate(statistics):
        unfolded = _unfold(g.astype(factor.dtype), axis)
        product = jnp.matmul(unfolded, unfolded.T, precision=jax.lax.Precision.HIGHEST)
        out.append(factor + product)
    return tuple(out)


def _precondition(g: jax.Array, roots: tuple) -> jax.Array:
    """``g x_0 R_0 x_1 R_1 ... x_{n-1} R_{n-1}``: every dimension but the last multiplied as
    ``R_i @ g_(i)`` and the last as ``g @ R_{n-1}``, the reference's products (the roots are
    symmetric only up to rounding)."""
    order = len(roots)
    for axis, root in enumerate(roots):
        x = g.astype(root.dtype)
        if axis == order - 1:
            g = jnp.tensordot(x, root, axes=([axis], [0]), precision=jax.lax.Precision.HIGHEST)
        else:
            g = jnp.tensordot(root, x, axes=([1], [axis]), precision=jax.lax.Precision.HIGHEST)
            g = jnp.moveaxis(g, 0, axis)
    return g


def _whole(x: jax.Array) -> jax.Array:
    """``x`` whole on every device when it is sharded over explicit mesh axes (the factors
    contract every axis and their SVD needs the whole matrix); as it is otherwise."""
    spec = jax.typeof(x).sharding.spec
    if all(axis is None for axis in spec):
        return x
    return jax.sharding.reshard(x, jax.sharding.PartitionSpec())


def _like(x: jax.Array, reference: jax.Array) -> jax.Array:
    """``x`` sharded as ``reference`` over explicit mesh axes (no-op otherwise)."""
    spec = jax.typeof(reference).sharding.spec
    if all(axis is None for axis in spec):
        return x
    return jax.sharding.reshard(x, spec)


def _check_real(who: str, params: Any) -> None:
    _tree.check_inexact_leaves(params, who)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jnp.iscomplexobj(leaf):
            raise TypeError(
                f"{who}: parameter {path_name(path)} is complex "
                f"({jnp.result_type(leaf)}); Shampoo (as pytorch-optimizer's) preconditions "
                "real tensors."
            )


def shampoo_direction(
    who: str,
    momentum: Any,
    weight_decay: Any,
    preconditioning_compute_steps: Any,
    matrix_eps: Any,
    stack_by_shape: bool,
) -> GradientTransformation:
    """:func:`scale_by_shampoo` with errors naming ``who`` (the optimizer users call)."""
    decays = not _validate.is_static_zero(weight_decay)
    mixes = not _validate.is_static_zero(momentum)

    def init_fn(params):
        _check_real(who, params)
        leaves = LeafLayout(params, stacked=stack_by_shape)

        def one_leaf(p):
            dtype = _tree.compute_dtype(p.dtype)
            eye = [jnp.eye(d, dtype=dtype) for d in jnp.shape(p)]
            statistics = tuple(e * _tree.cast_scalar(matrix_eps, dtype) for e in eye)
            roots = tuple(e * _tree.cast_scalar(0.0, dtype) for e in eye)
            return _tree.tree_zeros_like(p), statistics, roots

        momenta, statistics, roots = columns(leaves.map(one_leaf, leaves.units(params)), 3)
        return ScaleByShampooState(
            count=jnp.zeros([], jnp.int32),
            momentum=leaves.state(momenta),
            statistics=leaves.state(statistics),
            roots=leaves.state(roots),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, ScaleByShampooState)
        leaves = LeafLayout(updates, stacked=stack_by_shape)
        momenta = leaves.checked_units(who, state.momentum, "momentum", updates)
        if decays:
            require_params(who, params, "weight decay adds a multiple of them to the gradient")
            _checks.check_updates(who, updates, params, "param", inexact=False)
        count = _tree.safe_increment(state.count)

        def mix(g, m, p=None):
            dtype = _tree.compute_dtype(g.dtype, m.dtype)
            g = g.astype(dtype)
            if mixes:
                # The buffer starts as the first gradient, so the first step is g itself.
                weight = _tree.cast_scalar(momentum, dtype)
                mixed = _tree.torch_lerp(g, m.astype(dtype), weight)
                use = state.count > 0
                if not _validate.is_static_number(momentum):
                    use = use & (weight > 0)
                g = jnp.where(use, mixed, g)
            if decays:
                g = g + _tree.cast_scalar(weight_decay, dtype) * p.astype(dtype)
            return g

        grads = leaves.units(updates)
        sharded = leaves.map(mix, grads, momenta, *([leaves.units(params)] if decays else []))
        mixed = [_whole(x) for x in sharded]
        statistics = leaves.map(_accumulate, mixed, leaves.state_units(state.statistics))

        def refresh(statistics, roots):
            del roots
            return leaves.map(inverse_roots, statistics)

        if isinstance(preconditioning_compute_steps, int) and preconditioning_compute_steps == 1:
            roots = refresh(statistics, None)
        else:
            # An array (an injected hyperparameter, stored as a float) runs the general program.
            every = preconditioning_compute_steps
            if not isinstance(every, int):
                every = jnp.asarray(every).astype(jnp.int32)
            roots = jax.lax.cond(
                count % every == 0,
                refresh,
                lambda statistics, roots: roots,
                statistics,
                leaves.state_units(state.roots),
            )
        directions = [
            _like(d, x)
            for d, x in zip(leaves.map(_precondition, mixed, roots), sharded, strict=True)
        ]
        new_momenta = leaves.map(lambda d, m: d.astype(m.dtype), directions, momenta)
        out = leaves.map(
            lambda d, g, m: d.astype(_tree.update_dtype(g, m)), directions, grads, momenta
        )
        return leaves.tree(out), ScaleByShampooState(
            count,
            leaves.state(new_momenta),
            leaves.state(statistics),
            leaves.state(roots),
        )

    return GradientTransformation(init_fn, update_fn)


def check_shampoo(
    who: str,
    momentum: Any,
    weight_decay: Any,
    preconditioning_compute_steps: Any,
    matrix_eps: Any,
    stack_by_shape: Any,
) -> None:
    """The arguments of Shampoo's preconditioner."""
    _validate.probability(who, "momentum", momentum)
    _validate.non_negative(who, "weight_decay", weight_decay)
    _validate.count(
        who, "preconditioning_compute_steps", preconditioning_compute_steps, traced_ok=True
    )
    _validate.non_negative(who, "matrix_eps", matrix_eps)
    _validate.boolean(who, "stack_by_shape", stack_by_shape)


def scale_by_shampoo(
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    preconditioning_compute_steps: int = 1,
    matrix_eps: float = 1e-6,
    stack_by_shape: bool = False,
) -> GradientTransformation:
    """Shampoo's direction (Gupta, Koren & Singer, 2018), as ``pytorch_optimizer.Shampoo``.

    For a param of order ``n`` (``n`` dimensions) and step ``t = 1, 2, ...``, with ``G_(i)``
    the gradient unfolded along dimension ``i`` (a ``d_i x rest`` matrix), ``x_i`` the product
    along dimension ``i`` and ``k = preconditioning_compute_steps``::

        g_t <- g_t + momentum (m_{t-1} - g_t)                  (t > 1; torch's lerp)
        g_t <- g_t + weight_decay * p                           (coupled decay)
        L_i <- L_i + G_(i) G_(i)^T,   L_i = matrix_eps * I at the start
        R_i <- L_i^{-1/(2n)}  (from the SVD of L_i)          if t % k == 0;  R_i = 0 until then
        u_t = m_t = g_t x_0 R_0 x_1 R_1 ... x_{n-1} R_{n-1}

    Vectors are preconditioned too (one factor); scalars pass through. The momentum holds the
    PRECONDITIONED direction of the previous step and the first step uses the gradient itself,
    as the reference keeps it; the coupled decay sits between the mixing and the
    preconditioning, which is why it is an argument here and not a link of its own. With
    ``k > 1`` the roots are zero, and so is the update, until step ``k``, as in the reference.

    Args:
      momentum: the weight of the previous direction, in [0, 1).
      weight_decay: coupled (L2) decay added to the mixed gradient (>= 0); needs ``params``.
      preconditioning_compute_steps: recompute the roots every this many steps (>= 1); the
        count is traced, so the step does not recompile. A Python int 1 drops the ``cond``; an
        array (e.g. injected) runs the general program.
      matrix_eps: the multiple of the identity the factors start from (>= 0).
      stack_by_shape: keep the state of same-shape leaves stacked, one stack per shape and
        dtype, and compute each group under one ``vmap`` (the same numbers; compile time set
        by the number of distinct shapes, not of leaves: ``gradxform._stacking.LeafLayout``).
        The state's ``momentum``, ``statistics`` and ``roots`` are then tuples of stacks, not
        trees of the params' structure.

    Returns:
      A transformation whose state is :class:`ScaleByShampooState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.scale_by_shampoo(matrix_eps=0.0)
      >>> g = {"w": jnp.array([[2.0, 0.0], [0.0, 8.0]])}
      >>> u, _ = opt.update(g, opt.init(g))
      >>> [round(float(x), 3) for x in jnp.diag(u["w"])]
      [1.0, 1.0]

    References:
      Gupta, Koren & Singer, `Shampoo: Preconditioned Stochastic Tensor Optimization
      <https://arxiv.org/abs/1802.09568>`_, ICML 2018.
    """
    who = "scale_by_shampoo"
    args = (momentum, weight_decay, preconditioning_compute_steps, matrix_eps, stack_by_shape)
    check_shampoo(who, *args)
    return shampoo_direction(who, *args)
