"""Clipping updates: by value, by global norm, by block RMS, and adaptively (AGC).

:func:`clip` bounds each element, :func:`clip_by_global_norm` the norm of the whole update
(torch's ``clip_grad_norm_``), :func:`clip_by_block_rms` the RMS of each leaf, and
:func:`adaptive_grad_clip` the norm of each unit relative to its parameter's norm (NFNets'
AGC). Every norm is accumulated in at least float32 and the
clipped update keeps its dtype; a zero update (or zero params) is never divided by zero.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import EmptyState, GradientTransformation, require_params


def clip(max_delta: float) -> GradientTransformation:
    """Clips every element to ``[-max_delta, max_delta]``: ``u <- clamp(u, -d, d)``.

    Args:
      max_delta: the bound ``d`` (>= 0).

    Returns:
      A stateless transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.clip(1.0).update(jnp.array([0.5, -2.0, 3.0]), gx.EmptyState())[0]
      Array([ 0.5, -1. ,  1. ], dtype=float32)
    """
    _validate.non_negative("clip", "max_delta", max_delta)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params("clip", updates, params)

        def leaf(u):
            bound = _tree.cast_scalar(max_delta, u.dtype)
            return jnp.clip(u, -bound, bound).astype(u.dtype)

        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init_fn, update_fn)


# torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing.
_TORCH_NORM_EPS = 1e-6


def _global_p_norm(updates: Any, p: float, axis_name: str | None) -> jax.Array:
    """``(sum_i |u_i|^p)^(1/p)`` over every element of every leaf (``max |u_i|`` for ``inf``),
    accumulated in at least float32 and, with ``axis_name``, over the mapped axis too."""
    if p == 2:
        return _tree.tree_global_norm(updates, axis_name)
    total = jnp.zeros([], _tree.default_float_dtype())
    for leaf in jax.tree.leaves(updates):
        magnitude = jnp.abs(leaf.astype(_tree.compute_dtype(leaf.dtype))).astype(total.dtype)
        if math.isinf(p):
            total = jnp.maximum(total, jnp.max(magnitude, initial=0))
        else:
            total = total + jnp.sum(magnitude if p == 1 else magnitude**p)
    if math.isinf(p):
        return total if axis_name is None else jax.lax.pmax(total, axis_name)
    if axis_name is not None:
        total = jax.lax.psum(total, axis_name)
    return total if p == 1 else total ** (1 / p)


def clip_by_global_norm(
    max_norm: float, *, norm_type: float = 2.0, axis_name: str | None = None
) -> GradientTransformation:
    """Rescales all updates together so that their global norm is at most ``max_norm``.

    With ``p = norm_type``::

        n = (sum_i |u_i|^p)^(1/p)          (over every element of every leaf; max_i |u_i|
                                            for p = inf)
        u <- u * min(1, max_norm / (n + 1e-6))

    exactly as ``torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)`` (including its
    ``1e-6``); Optax's ``clip_by_global_norm`` is the 2-norm scaled to exactly ``max_norm``.

    Args:
      max_norm: the bound (> 0).
      norm_type: ``p``, a number >= 1 or ``float("inf")`` (a Python number: it decides the
        program).
      axis_name: when updates are sharded over a mapped axis (``pmap``/``shard_map``), its
        name, so that ``n`` is the norm of the whole model rather than of each shard.

    Returns:
      A stateless transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.clip_by_global_norm(1.0)
      >>> u = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}  # global norm 5
      >>> {k: round(float(v[0]), 4) for k, v in tx.update(u, tx.init(u))[0].items()}  # u / 5
      {'a': 0.6, 'b': 0.8}
    """
    who = "clip_by_global_norm"
    _validate.positive(who, "max_norm", max_norm)
    if not _validate.is_static_number(norm_type):
        raise TypeError(
            f"{who}: `norm_type` must be a Python number >= 1 or float('inf') (it selects the "
            f"program), got {norm_type!r}"
        )
    if float(norm_type) != math.inf:
        _validate.at_least(who, "norm_type", norm_type, 1)
    p = float(norm_type)
    _validate.axis_name(who, axis_name)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params(who, updates, params)
        norm = _global_p_norm(updates, p, axis_name)
        factor = jnp.minimum(1.0, max_norm / (norm + _TORCH_NORM_EPS))
        return _tree.tree_scale(factor, updates), state

    return GradientTransformation(init_fn, update_fn)


def _clip_factor(norm: jax.Array, bound: Any) -> jax.Array:
    """``min(1, bound / norm)``, without dividing by zero: 1 wherever ``norm <= bound``."""
    over = norm > bound
    return jnp.where(over, bound / jnp.where(over, norm, 1), 1).astype(norm.dtype)


def clip_by_block_rms(threshold: float) -> GradientTransformation:
    """Rescales each leaf so that its root mean square is at most ``threshold``.

    ::

        rms(u) = sqrt(mean |u|^2)                 (over the elements of one leaf)
        u <- u * min(1, threshold / rms(u))

    A leaf whose RMS is zero (all zeros, or no elements) is returned unchanged.

    Args:
      threshold: the bound on each leaf's RMS (>= 0).

    Returns:
      A stateless transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> clip = gx.clip_by_block_rms(1.0)
      >>> clip.update({"w": jnp.array([3.0, -3.0])}, clip.init(None))[0]["w"].tolist()
      [1.0, -1.0]
    """
    _validate.non_negative("clip_by_block_rms", "threshold", threshold)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params("clip_by_block_rms", updates, params)

        def leaf(u):
            if u.size == 0:  # the mean of no elements would be 0/0
                return u
            dtype = _tree.compute_dtype(u.dtype)
            x = u.astype(dtype)
            rms = jnp.sqrt(jnp.mean(_tree.abs_sq(x)))
            factor = _clip_factor(rms, _tree.cast_scalar(threshold, dtype))
            return (x * factor).astype(u.dtype)

        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init_fn, update_fn)


def _unit_squared_norms(x: jax.Array) -> jax.Array:
    """``sum |x|^2`` over every axis but the last (all axes for ``ndim <= 1``), kept as size-1
    axes so that the result broadcasts against ``x``."""
    axes = tuple(range(x.ndim - 1)) if x.ndim >= 2 else None
    return jnp.sum(_tree.abs_sq(x), axis=axes, keepdims=True)


def unitwise_norm(x: jax.Array, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """Optax's per-unit norm, broadcast back to ``x``'s shape.

    ``sqrt(sum |x|^2)`` over ``axis`` when given; otherwise over all of ``x`` when
    ``squeeze(x)`` has rank <= 1, over axis 0 for rank 2 and 3 (``(in, out)`` kernels, one
    unit per output, or per head and output), over the first three axes for rank 4 (``HWIO``)
    and the first four for rank 5 (``DHWIO``).

    Args:
      x: an array.
      axis: the axes to reduce over, or ``None`` for the rule above.

    Returns:
      An array of ``x``'s shape whose elements are the norms of their units.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.unitwise_norm(jnp.array([[3.0, 1.0], [4.0, 0.0]]))  # a column's norm, broadcast
      Array([[5., 1.],
             [5., 1.]], dtype=float32)
    """
    x = jnp.asarray(x)
    if axis is None:
        if jnp.squeeze(x).ndim <= 1:
            axis = None
        elif x.ndim in (2, 3):
            axis = 0
        elif x.ndim in (4, 5):
            axis = tuple(range(x.ndim - 1))
        else:
            raise ValueError(
                f"unitwise_norm: expected an array of rank 1 to 5, got shape {x.shape}; pass "
                "`axis` to name the axes a unit spans"
            )
    squared = jnp.sum(_tree.abs_sq(x), axis=axis, keepdims=True)
    return jnp.broadcast_to(jnp.sqrt(squared), x.shape)


def unitwise_clip(
    g_norm: jax.Array, max_norm: jax.Array, grad: jax.Array, div_eps: float = 1e-6
) -> jax.Array:
    """Optax's clipping of each unit to its largest norm.

    ``g`` where ``g_norm < max_norm``, else ``g * max_norm / max(g_norm, div_eps)``.

    Args:
      g_norm: the unit norms of ``grad``, of its shape (see :func:`unitwise_norm`).
      max_norm: the largest norm of each unit, of the same shape.
      grad: the gradient.
      div_eps: the floor on the divisor.

    Returns:
      The clipped gradient.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> g = jnp.array([[3.0, 1.0], [4.0, 0.0]])  # column norms 5 and 1
      >>> gx.unitwise_clip(gx.unitwise_norm(g), jnp.full((2, 2), 2.0), g)  # column 0 times 2 / 5
      Array([[1.2, 1. ],
             [1.6, 0. ]], dtype=float32)
    """
    shapes = {jnp.shape(g_norm), jnp.shape(max_norm), jnp.shape(grad)}
    if len(shapes) != 1:
        raise ValueError(
            "unitwise_clip: `g_norm`, `max_norm` and `grad` must have the same shape, got "
            f"{jnp.shape(g_norm)}, {jnp.shape(max_norm)} and {jnp.shape(grad)}"
        )
    clipped = grad * (max_norm / jnp.maximum(g_norm, div_eps))
    return jnp.where(g_norm < max_norm, grad, clipped)


def adaptive_grad_clip(
    clipping: float,
    eps: float = 1e-3,
    axis: int | tuple[int, ...] | None = None,
    *,
    axis_name: str | None = None,
) -> GradientTransformation:
    """Adaptive gradient clipping (AGC; Brock et al., 2021): clips each unit's update relative
    to the norm of its parameters.

    A *unit* is one slice along the last axis of a leaf with ``ndim >= 2`` (one output unit of
    a dense ``(in, out)`` kernel or of an ``HWIO`` convolution kernel); a leaf with ``ndim <= 1``
    is a single unit. With norms taken over each unit::

        u <- u * min(1, clipping * max(||w||, eps) / ||u||)

    so units whose update is small next to their weights are left alone, and zero-initialised
    weights may still move by up to ``clipping * eps``. Zero updates stay zero.

    This is Optax's ``adaptive_grad_clip`` for leaves of rank 0, 1, 2, 4 and 5; Optax differs
    for rank-3 leaves (it reduces over axis 0 only) and for leaves with size-1 axes (it treats
    ``squeeze(x)`` of rank <= 1 as one unit). With ``axis`` given, a unit spans the axes
    ``axis`` of every leaf, as in Optax (the same numbers up to rounding).

    Args:
      clipping: the largest allowed ratio ``||u|| / max(||w||, eps)`` (>= 0).
      eps: the floor on parameter norms (>= 0).
      axis: ``None`` for the rule above, or the axes (an int or a tuple of ints) that each
        unit spans in every leaf (Optax's ``axis``).
      axis_name: when params and updates are sharded over a mapped axis (``pmap`` or
        ``shard_map``) along the axes the norms reduce over (the input axes of kernels, any
        axis of vectors), its name: each unit's squared norms are summed over it
        (``lax.psum``). Every leaf must then be sharded so; a replicated leaf would have its
        norms counted once per device.

    Returns:
      A stateless transformation; its ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> agc = gx.adaptive_grad_clip(0.5)
      >>> params = {"w": jnp.array([[3.0, 0.0], [4.0, 1.0]])}   # unit norms 5 and 1
      >>> grads = {"w": jnp.array([[0.5, 0.0], [0.25, 2.0]])}   # unit norms 0.56 and 2
      >>> agc.update(grads, agc.init(params), params)[0]["w"].tolist()  # 2 -> 0.5 * 1
      [[0.5, 0.0], [0.25, 0.5]]

    References:
      Brock, De, Smith & Simonyan, *High-Performance Large-Scale Image Recognition Without
      Normalization*, 2021 (https://arxiv.org/abs/2102.06171).
    """
    who = "adaptive_grad_clip"
    _validate.non_negative(who, "clipping", clipping)
    _validate.non_negative(who, "eps", eps)
    _validate.axis_name(who, axis_name)
    if axis is not None:
        axes = axis if isinstance(axis, tuple) else (axis,)
        if not axes or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
            raise TypeError(f"{who}: `axis` must be None, an int or a tuple of ints, got {axis!r}")

    def unit_squares(x):
        if axis is None:
            return _unit_squared_norms(x)
        return jnp.sum(_tree.abs_sq(x), axis=axis, keepdims=True)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        require_params(who, params, "each update is clipped relative to its param's norm")
        _checks.check_updates(who, updates, params, "param", inexact=False)

        def squared(u, p):
            dtype = _tree.compute_dtype(u.dtype, p.dtype)
            return unit_squares(u.astype(dtype)), unit_squares(p.astype(dtype))

        u_sq, p_sq = _tree.tree_map_multi(squared, 2, updates, params)
        if axis_name is not None:
            u_sq, p_sq = jax.lax.psum((u_sq, p_sq), axis_name)

        def leaf(u, u_sq, p_sq):
            bound = _tree.cast_scalar(clipping, u_sq.dtype) * jnp.maximum(
                jnp.sqrt(p_sq), _tree.cast_scalar(eps, p_sq.dtype)
            )
            factor = _clip_factor(jnp.sqrt(u_sq), bound)
            dtype = _tree.compute_dtype(u.dtype)
            return (u.astype(dtype) * factor).astype(u.dtype)

        return jax.tree.map(leaf, updates, u_sq, p_sq), state

    return GradientTransformation(init_fn, update_fn)
