"""SOAP's per-leaf linear algebra (:func:`gradxform.scale_by_soap`): the shape a leaf is
worked in, the projections onto its eigenbases, the factors' statistics, the bases from an
eigendecomposition or one power-iteration step with a QR, and the reordering of the second
moment that goes with it. Each function takes one leaf's arrays; ``scale_by_soap`` maps them
leaf by leaf or, vmapped, over stacks of same-shape leaves.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _tree

HIGHEST = jax.lax.Precision.HIGHEST
# What pytorch-optimizer adds to a factor's diagonal before its eigendecomposition.
EIGH_JITTER = 1e-30


def merged_shape(shape: tuple[int, ...], max_precond_dim: int) -> tuple[int, ...]:
    """``pytorch-optimizer``'s ``merge_small_dims``: consecutive axes merged while their product
    stays ``<= max_precond_dim``. Where everything merges into one axis, the reference returns
    ``(1,)`` and then fails to reshape a leaf of more than one element; here that axis keeps
    the leaf's size."""
    merged, product = [], 1
    for d in shape:
        product *= d
        if product > max_precond_dim:
            merged.append(product // d)
            product = d
    merged.append(product)
    return tuple(merged)


def soap_layout(
    shape: tuple[int, ...], max_precond_dim: int, merge_dims: bool, precondition_1d: bool
) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """The shape SOAP works in and, per axis of it, whether it has a factor."""
    if len(shape) == 1:
        return shape, (precondition_1d and shape[0] <= max_precond_dim,)
    work = merged_shape(shape, max_precond_dim) if merge_dims else shape
    return work, tuple(d <= max_precond_dim for d in work)


def project(x: jax.Array, bases: tuple, forward: bool) -> jax.Array:
    """``x`` (in the working shape) times ``Q_i^T`` (``forward``) or ``Q_i`` along each axis
    ``i`` with a basis; the others are left as they are."""
    for q in bases:
        if q is None:
            x = jnp.moveaxis(x, 0, -1)
        else:
            x = jnp.tensordot(x, q, axes=([0], [0 if forward else 1]), precision=HIGHEST)
    return x


def factor_statistics(g: jax.Array, factors: tuple, weight: Any) -> tuple:
    """``L_i <- lerp(L_i, G_(i) G_(i)^T, weight)``, ``G_(i)`` the gradient unfolded along
    axis ``i``."""
    new: list[jax.Array | None] = []
    for i, f in enumerate(factors):
        if f is None:
            new.append(None)
            continue
        others = [a for a in range(g.ndim) if a != i]
        outer = jnp.tensordot(g, g, axes=(others, others), precision=HIGHEST)
        new.append(_tree.torch_lerp(f, outer.astype(f.dtype), _tree.cast_scalar(weight, f.dtype)))
    return tuple(new)


def eigenbases(factors: tuple) -> tuple:
    """Eigenvectors of each factor, by decreasing eigenvalue."""

    def one(f):
        _, q = jnp.linalg.eigh(f + EIGH_JITTER * jnp.eye(f.shape[0], dtype=f.dtype))
        return jnp.flip(q, axis=1)

    return tuple(None if f is None else one(f) for f in factors)


def refreshed_bases(factors: tuple, bases: tuple) -> tuple[tuple, tuple]:
    """One power-iteration step per factor: ``Q <- qr(L Q P)``, ``P`` ordering the columns
    by decreasing estimated eigenvalue ``diag(Q^T L Q)``. Returns the bases and each ``P`` as
    indices (``nu`` is reordered by them)."""
    new: list[jax.Array | None] = []
    orders: list[jax.Array | None] = []
    for f, q in zip(factors, bases, strict=True):
        if f is None:
            new.append(None)
            orders.append(None)
            continue
        product = jnp.matmul(f, q, precision=HIGHEST)
        order = jnp.argsort(jnp.sum(q * product, axis=0), descending=True)
        new.append(jnp.linalg.qr(product[:, order])[0])
        orders.append(order)
    return tuple(new), tuple(orders)


def identity_orders(bases: tuple) -> tuple:
    """The orders that leave ``nu`` as it is."""
    return tuple(None if q is None else jnp.arange(q.shape[0]) for q in bases)


def reorder(nu: jax.Array, orders: tuple, work: tuple[int, ...]) -> jax.Array:
    """``nu`` (of the param's shape) with the entries along each preconditioned axis of the
    working shape taken in ``orders``."""
    shape = nu.shape
    nu = nu.reshape(work)
    for axis, order in enumerate(orders):
        if order is not None:
            nu = jnp.take(nu, order, axis=axis)
    return nu.reshape(shape)


def bias_scale(b1: Any, b2: Any, count: jax.Array, dtype: Any) -> jax.Array:
    """``sqrt(1 - b2^k) / (1 - b1^k)``, ``k = count - 1`` (floored at 1: the first step's
    direction is zero)."""
    k = jnp.maximum(count - 1, 1).astype(dtype)
    b1, b2 = _tree.cast_scalar(b1, dtype), _tree.cast_scalar(b2, dtype)
    return jnp.sqrt(1 - jnp.power(b2, k)) / (1 - jnp.power(b1, k))
