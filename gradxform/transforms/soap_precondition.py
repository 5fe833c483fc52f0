"""SOAP's building block: Adam run in the eigenbasis of Shampoo's Kronecker factors
(:func:`scale_by_soap`). The decay that ``pytorch-optimizer`` applies after SOAP's step is
:func:`gradxform.decay_after_step` (``stepped_decay``).

Layout of a leaf. A leaf of rank >= 2 (its shape merged first with ``merge_dims``, as
``pytorch-optimizer``'s ``merge_small_dims`` merges it) gets one factor ``L_i`` of shape
``(d_i, d_i)`` per axis of length ``d_i <= max_precond_dim``; a longer axis gets none (the
identity). A vector gets one factor only with ``precondition_1d``; a scalar gets none (with
``merge_dims`` a ``1 x 1`` factor, which changes nothing). A leaf without factors is Adam.

Engineering. Per-matrix work is written for one leaf and mapped by a ``LeafLayout``
(``gradxform._stacking``): leaf by leaf by default, or, with ``stack_by_shape``, one ``vmap``
per shape over state kept stacked (one stack per shape and dtype). The expensive step
(``eigh`` on step 1, a power-iteration step and a QR every ``precondition_frequency`` steps) is
one ``lax.switch`` on the traced count, outside any ``vmap``, taking and returning only the
bases (and order).

Sharding (``jit``, ``NamedSharding`` params, ``Auto`` mesh; tested on rows over 8 devices):
``init`` shards ``mu`` and ``nu`` like the param and replicates the ``(d_i, d_i)`` factors and
bases (a projection contracts the sharded axis). ``update`` keeps that when the step pins the
state's ``out_shardings`` to init's (left to XLA: ``nu`` replicated, ``L`` row-sharded). The
projections and ``G G^T`` need whole rows: the step all-gathers param-shaped arrays (measured:
four on a ``(16, 6)`` leaf). ``Explicit`` meshes fail: ``G G^T`` of a row-sharded ``G`` needs
an ``out_sharding`` the code does not give.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._stacking import LeafLayout, columns
from gradxform._types import StepCount
from gradxform.transforms.soap_bases import (
    bias_scale,
    eigenbases,
    factor_statistics,
    identity_orders,
    project,
    refreshed_bases,
    reorder,
    soap_layout,
)


class ScaleBySoapState(NamedTuple):
    """``count`` (int32); ``mu``, the first moment in the params' basis, and ``nu``, the
    second moment in the eigenbasis, both of each param's shape and dtype; per param a tuple of
    ``factors`` ``L_i`` and of ``bases`` ``Q_i`` (one per axis of the merged shape, ``None``
    where that axis is not preconditioned), float32 for params of 32 bits or fewer, float64
    for float64 params.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.scale_by_soap().init(jnp.zeros((2, 2)))
      >>> state.count, [f.shape for f in state.factors], [q.shape for q in state.bases]
      (Array(0, dtype=int32), [(2, 2), (2, 2)], [(2, 2), (2, 2)])
    """

    count: StepCount
    mu: Any
    nu: Any
    factors: Any
    bases: Any


def soap_direction(
    who: str,
    b1: Any,
    b2: Any,
    shampoo_beta: Any,
    eps: Any,
    precondition_frequency: Any,
    max_precond_dim: int,
    merge_dims: bool,
    precondition_1d: bool,
    normalize_grads: bool,
    correct_bias: bool,
    stack_by_shape: bool,
) -> GradientTransformation:
    """:func:`scale_by_soap` with errors naming ``who``."""
    if _validate.is_static_number(shampoo_beta):
        factor_decay = b2 if shampoo_beta < 0 else shampoo_beta
    else:
        factor_decay = jnp.where(jnp.asarray(shampoo_beta) < 0, b2, shampoo_beta)
    frequency = precondition_frequency
    # eps = 0 and a zero history: 0 / 0 (NaN in the reference) gives 0 (``safe_divide``).
    may_be_zero = not _validate.is_static_nonzero(eps)

    def layout(shape):
        return soap_layout(tuple(shape), max_precond_dim, merge_dims, precondition_1d)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        leaves = LeafLayout(params, stacked=stack_by_shape)

        def factors(p):
            work, sides = layout(jnp.shape(p))
            dtype = _tree.compute_dtype(jnp.result_type(p))
            return tuple(
                jnp.zeros((d, d), dtype) if side else None
                for d, side in zip(work, sides, strict=True)
            )

        def one_leaf(p):
            zeros = factors(p)
            eyes = tuple(None if f is None else jnp.eye(f.shape[0], dtype=f.dtype) for f in zeros)
            return _tree.tree_zeros_like(p), _tree.tree_zeros_like(p), zeros, eyes

        mu, nu, zeros, eyes = columns(leaves.map(one_leaf, leaves.units(params)), 4)
        return ScaleBySoapState(
            count=jnp.zeros([], jnp.int32),
            mu=leaves.state(mu),
            nu=leaves.state(nu),
            factors=leaves.state(zeros),
            bases=leaves.state(eyes),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleBySoapState)
        leaves = LeafLayout(updates, stacked=stack_by_shape)
        mu = leaves.checked_units(who, state.mu, "first moment", updates)
        nu = leaves.checked_units(who, state.nu, "second moment", updates)
        count = _tree.safe_increment(state.count)
        first = count == 1

        def direction(g, mu, nu, factors, bases):
            dtype = _tree.compute_dtype(g.dtype, mu.dtype)
            work = layout(g.shape)[0]
            g = g.astype(dtype)
            w = g.reshape(work)
            new_mu = _tree.torch_lerp(mu.astype(dtype), g, _tree.cast_scalar(1 - b1, dtype))
            new_nu = _tree.torch_lerp(
                nu.astype(dtype).reshape(work),
                jnp.square(project(w, bases, True)),
                _tree.cast_scalar(1 - b2, dtype),
            )
            denominator = jnp.sqrt(new_nu) + _tree.cast_scalar(eps, dtype)
            m = project(new_mu.reshape(work), bases, True)
            d = _tree.safe_divide(m, denominator, may_be_zero)
            d = project(d, bases, False).reshape(g.shape)
            if normalize_grads:
                rms = jnp.sqrt(jnp.mean(jnp.square(d)))
                d = _tree.safe_divide(d, rms + _tree.cast_scalar(eps, dtype), may_be_zero)
            if correct_bias:
                d = bias_scale(b1, b2, count, dtype) * d
            return (
                jnp.where(first, jnp.zeros_like(d), d).astype(_tree.update_dtype(g, mu)),
                jnp.where(first, mu, new_mu.astype(mu.dtype)),
                jnp.where(first, nu, new_nu.reshape(g.shape).astype(nu.dtype)),
                factor_statistics(w, factors, 1 - factor_decay),
            )

        bases = leaves.state_units(state.bases)
        results = leaves.map(
            direction, leaves.units(updates), mu, nu, leaves.state_units(state.factors), bases
        )
        u, mu, nu, factors = columns(results, 4)
        # Only the units with a factor enter the switch (vmap needs an array to map over).
        held = [i for i, f in enumerate(factors) if any(x is not None for x in f)]

        def keep(held_factors, held_bases):
            return held_bases, leaves.map(identity_orders, held_bases)

        def first_bases(held_factors, held_bases):
            return leaves.map(eigenbases, held_factors), leaves.map(identity_orders, held_bases)

        def refresh(held_factors, held_bases):
            both = leaves.map(refreshed_bases, held_factors, held_bases)
            return [b for b, _ in both], [o for _, o in both]

        due = jnp.logical_and(count > 1, (count - 1) % frequency == 0)
        branch = jnp.where(first, 1, jnp.where(due, 2, 0))
        new_bases, orders = jax.lax.switch(
            branch,
            (keep, first_bases, refresh),
            [factors[i] for i in held],
            [bases[i] for i in held],
        )

        def reordered(nu, orders):
            return reorder(nu, orders, layout(nu.shape)[0])

        for i, b, n in zip(
            held, new_bases, leaves.map(reordered, [nu[i] for i in held], orders), strict=True
        ):
            bases[i], nu[i] = b, n
        state = ScaleBySoapState(
            count=count,
            mu=leaves.state(mu),
            nu=leaves.state(nu),
            factors=leaves.state(factors),
            bases=leaves.state(bases),
        )
        return leaves.tree(u), state

    return GradientTransformation(init_fn, update_fn)


def check_soap(
    who: str,
    b1: Any,
    b2: Any,
    shampoo_beta: Any,
    eps: Any,
    precondition_frequency: Any,
    max_precond_dim: Any,
    merge_dims: Any,
    precondition_1d: Any,
    normalize_grads: Any,
    correct_bias: Any,
    stack_by_shape: Any,
) -> None:
    """The arguments of :func:`scale_by_soap`."""
    _validate.probability(who, "b1", b1)
    _validate.probability(who, "b2", b2)
    # A negative shampoo_beta (the authors' -1) means b2.
    _validate.number(who, "shampoo_beta", shampoo_beta, high=1, high_open=True)
    _validate.non_negative(who, "eps", eps)
    _validate.count(who, "precondition_frequency", precondition_frequency, traced_ok=True)
    _validate.count(who, "max_precond_dim", max_precond_dim)
    for name, flag in (
        ("merge_dims", merge_dims),
        ("precondition_1d", precondition_1d),
        ("normalize_grads", normalize_grads),
        ("correct_bias", correct_bias),
        ("stack_by_shape", stack_by_shape),
    ):
        _validate.boolean(who, name, flag)


def scale_by_soap(
    b1: float = 0.95,
    *,
    b2: float = 0.95,
    shampoo_beta: float = -1.0,
    eps: float = 1e-8,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    normalize_grads: bool = False,
    correct_bias: bool = True,
    stack_by_shape: bool = False,
) -> GradientTransformation:
    """SOAP's direction (Vyas et al., 2024): Adam in the eigenbasis of Shampoo's factors.

    For a matrix gradient ``G_t`` (any rank: one factor per axis, see the module), with
    ``beta = shampoo_beta`` (``b2`` where negative), ``F = precondition_frequency``, Adam's
    rule in the basis ``Q_L, Q_R`` of the step before, ``k = t - 1``::

        m_t = lerp(m_{t-1}, G_t, 1 - b1)                     (kept in the params' basis)
        v_t = lerp(v_{t-1}, (Q_L^T G_t Q_R)^2, 1 - b2)       (kept in the eigenbasis)
        D_t = Q_L [(Q_L^T m_t Q_R) / (sqrt(v_t) + eps)] Q_R^T
        D_t <- D_t / (rms(D_t) + eps)                         if normalize_grads
        u_t = sqrt(1 - b2^k) / (1 - b1^k) D_t                 (1 without correct_bias)

    then the factors and, every ``F`` steps, the bases::

        L_t = lerp(L_{t-1}, G_t G_t^T, 1 - beta),   R_t = lerp(R_{t-1}, G_t^T G_t, 1 - beta)
        Q_L <- qr(L_t Q_L P)      if k > 0 and k % F == 0   (P: columns by decreasing
                                                              diag(Q_L^T L_t Q_L); v_t's
                                                              rows reordered by P alike)

    The first step only gathers statistics: ``L_1``, ``R_1`` and their eigenvectors ``Q``
    (by decreasing eigenvalue); its update is zero and the moments stay zero. ``lerp`` is
    torch's. As ``pytorch-optimizer``'s ``SOAP``, except that the QR runs in the factors'
    dtype (float64 for float64 params), where the reference rounds it through float32,
    and that 0 / 0 (eps = 0, a zero history) gives 0 where the reference gives NaN.

    Args:
      b1: the first moment's decay, in [0, 1).
      b2: the second moment's decay, in [0, 1).
      shampoo_beta: the factors' decay, < 1; a negative value (the default) means ``b2``.
      eps: added to ``sqrt(v)`` (and to the rms with ``normalize_grads``), >= 0.
      precondition_frequency: steps between refreshes of the bases (>= 1).
      max_precond_dim: an axis longer than this gets no factor (and merging stops there).
      merge_dims: merge consecutive small axes first (``merge_small_dims``).
      precondition_1d: give vectors a factor too (else they get Adam).
      normalize_grads: divide the direction by its rms.
      correct_bias: Adam's bias correction, as above.
      stack_by_shape: keep the state of same-shape leaves stacked, one stack per shape and
        dtype, and compute each group under one ``vmap`` (the same numbers; compile time set
        by the number of distinct shapes, not of leaves: ``gradxform._stacking.LeafLayout``).
        The state's ``mu``, ``nu``, ``factors`` and ``bases`` are then tuples of stacks, not
        trees of the params' structure.

    Returns:
      A transformation whose state is :class:`ScaleBySoapState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.scale_by_soap()
      >>> g = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
      >>> state = opt.init(g)
      >>> u, state = opt.update(g, state)  # the first step gathers statistics
      >>> float(jnp.abs(u["w"]).max())
      0.0
      >>> u, state = opt.update(g, state)
      >>> u["w"].shape
      (2, 2)

    References:
      Vyas et al., `SOAP: Improving and Stabilizing Shampoo using Adam
      <https://arxiv.org/abs/2409.11321>`_, 2024.
    """
    who = "scale_by_soap"
    args = (b1, b2, shampoo_beta, eps, precondition_frequency, max_precond_dim)
    flags = (merge_dims, precondition_1d, normalize_grads, correct_bias, stack_by_shape)
    check_soap(who, *args, *flags)
    return soap_direction(who, *args, *flags)
