"""Factored second moments (Adafactor): torch's preconditioner, and the parameter scale of
Adafactor's relative step (Optax's factored preconditioner is in ``factored_rms``).

A matrix's second moment is kept as a row and a column statistic, ``m + n`` numbers instead of
``m * n`` (Shazeer & Stern, 2018). :func:`scale_by_adafactor` is ``torch.optim.Adafactor``'s
formulation (the last two axes of every leaf of rank >= 2, ``eps1`` applied after the
statistics, the decay ``1 - t^beta2_decay``); :func:`scale_by_factored_rms` is Optax's (the two
largest axes, when both reach ``min_dim_size_to_factor``, ``epsilon`` added to the squares).
Leaves that are not factored keep a full second moment. Unused entries of a state are ``None``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import EmptyState, GradientTransformation, expect_state, require_params
from gradxform._types import StepCount


def _is_none(x: Any) -> bool:
    return x is None


def zeros_of_shape(shape: tuple[int, ...], like: Any) -> jax.Array:
    """Zeros of ``shape`` in ``like``'s dtype (a factored statistic of the leaf ``like``)."""
    return jnp.zeros(shape, jnp.result_type(like))


# ----------------------------------------------------------------------------------------------
# torch.optim.Adafactor's preconditioner.


class ScaleByAdafactorState(NamedTuple):
    """``count`` (int32) and per param torch's statistics of ``|g|^2``: ``row_var`` (shape
    ``(..., m, 1)``) and ``col_var`` (``(..., 1, n)``) for a leaf of shape ``(..., m, n)``, or
    ``variance`` (the leaf's shape) for a vector or a scalar; the other entries are ``None``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.scale_by_adafactor().init(jnp.zeros((3, 2)))
      >>> state.count, state.row_var.shape, state.col_var.shape, state.variance
      (Array(0, dtype=int32), (3, 1), (1, 2), None)
    """

    count: StepCount
    row_var: Any
    col_var: Any
    variance: Any


def _adafactor_zeros(p: Any) -> tuple:
    shape = jnp.shape(p)
    if len(shape) < 2:
        return None, None, _tree.tree_zeros_like(p)
    return zeros_of_shape((*shape[:-1], 1), p), zeros_of_shape((*shape[:-2], 1, shape[-1]), p), None


def _adafactor_shapes(state: ScaleByAdafactorState) -> Any:
    """The params' shapes and dtypes, as the state records them (what updates must match)."""

    def leaf(row, col, variance):
        if variance is not None or row is None:
            return variance
        return jax.ShapeDtypeStruct((*row.shape[:-1], col.shape[-1]), row.dtype)

    return jax.tree.map(leaf, state.row_var, state.col_var, state.variance, is_leaf=_is_none)


def scale_by_adafactor(
    beta2_decay: float = -0.8, *, eps1: float | None = None
) -> GradientTransformation:
    """Adafactor's factored preconditioner (Shazeer & Stern, 2018) as ``torch.optim.Adafactor``.

    With ``w_t = t^beta2_decay`` (torch's ``1 - beta2_t``; 1 at the first step) and ``g`` of
    shape ``(..., m, n)``, the statistics over its last two axes::

        R_t = R_{t-1} + w_t * (mean_n |g_t|^2 - R_{t-1})        (shape (..., m, 1))
        C_t = C_{t-1} + w_t * (mean_m |g_t|^2 - C_{t-1})        (shape (..., 1, n))
        V_t = R_t * C_t / max(mean_m R_t, eps1)

    and for a vector or a scalar ``V_t = V_{t-1} + w_t * (|g_t|^2 - V_{t-1})``; then::

        u_t = g_t / sqrt(max(V_t, eps1^2))

    ``eps1 = None`` is the machine epsilon of each param's dtype, as torch's default. Where
    ``eps1`` is 0 (or its square underflows) and ``V_t`` is 0, the update is ``g_t`` (which is
    0 unless the statistics underflowed) rather than torch's NaN.

    :func:`gradxform.adafactor` follows this with the RMS clipping, the parameter scale and the
    relative step size of torch's Adafactor.

    Args:
      beta2_decay: the exponent of the decay, ``<= 0`` (torch's ``beta2_decay``).
      eps1: the floor of the row mean and of ``sqrt(V)`` (``>= 0``), or ``None``.

    Returns:
      A transformation whose state is :class:`ScaleByAdafactorState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> t = gx.scale_by_adafactor()
      >>> g = {"w": jnp.array([[1.0, -2.0], [0.5, 4.0]])}
      >>> [round(x, 4) for x in t.update(g, t.init(g))[0]["w"].ravel().tolist()]
      [1.8439, -0.922, 0.5114, 1.0228]

    References:
      Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear Memory Cost*, 2018
      (https://arxiv.org/abs/1804.04235).
    """
    who = "scale_by_adafactor"
    _validate.number(who, "beta2_decay", beta2_decay, high=0)
    if eps1 is not None:
        _validate.non_negative(who, "eps1", eps1)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        row, col, variance = _tree.tree_map_multi(_adafactor_zeros, 3, params)
        return ScaleByAdafactorState(jnp.zeros([], jnp.int32), row, col, variance)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByAdafactorState)
        _checks.check_updates(who, updates, _adafactor_shapes(state), "param")
        count = _tree.safe_increment(state.count)
        steps = count.astype(_tree.default_float_dtype())
        weight = steps ** _tree.cast_scalar(beta2_decay, steps.dtype)

        def leaf(g, row, col, variance):
            moment = variance if row is None else row
            dtype = _tree.compute_dtype(g.dtype, moment.dtype)
            out_dtype, g = _tree.update_dtype(g, moment), g.astype(dtype)
            if g.size == 0:  # a mean over no elements would be 0/0
                return g.astype(out_dtype), row, col, variance
            real = _tree.real_dtype(dtype)
            eps = float(jnp.finfo(moment.dtype).eps) if eps1 is None else eps1
            eps = _tree.cast_scalar(eps, real)
            w = _tree.cast_scalar(weight, real)

            def lerp(old, new):
                old = _tree.as_real(old, real)
                return old + w * (new - old)

            squares = _tree.abs_sq(g)
            if row is None:
                new_variance = lerp(variance, squares)
                estimate = new_variance
                new_state = (None, None, new_variance.astype(variance.dtype))
            else:
                new_row = lerp(row, jnp.mean(squares, axis=-1, keepdims=True))
                new_col = lerp(col, jnp.mean(squares, axis=-2, keepdims=True))
                row_mean = jnp.maximum(jnp.mean(new_row, axis=-2, keepdims=True), eps)
                # eps1 may be 0, or round to 0 in the compute dtype: every division is guarded.
                estimate = _tree.safe_divide(new_row * new_col, row_mean, True)
                new_state = (new_row.astype(row.dtype), new_col.astype(col.dtype), None)
            root = jnp.sqrt(jnp.maximum(estimate, eps * eps))
            return (_tree.safe_divide(g, root, True).astype(out_dtype), *new_state)

        u, row, col, variance = _tree.tree_map_multi(
            leaf, 4, updates, state.row_var, state.col_var, state.variance
        )
        return u, ScaleByAdafactorState(count, row, col, variance)

    return GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# Optax's preconditioner and parameter scale.


def scale_by_param_block_rms(min_scale: float = 1e-3) -> GradientTransformation:
    """Optax's ``scale_by_param_block_rms``: scales each leaf's update by its param's RMS.

    ::

        u <- u * max(min_scale, sqrt(mean |p|^2))      (over the elements of one leaf)

    This is Adafactor's parameter scale: with ``min_scale`` torch's ``eps2`` (Optax's
    default 1e-3 is also torch's), the step is relative to the size of the weights. Written as
    Optax's ``safe_root_mean_squares``, so that its gradient is finite at ``p = 0``.

    Args:
      min_scale: the floor of the scale (>= 0).

    Returns:
      A stateless transformation; its ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> t = gx.scale_by_param_block_rms()
      >>> p = {"w": jnp.array([3.0, -4.0, 0.0, 0.0])}
      >>> t.update({"w": jnp.ones(4)}, t.init(p), p)[0]["w"].tolist()
      [2.5, 2.5, 2.5, 2.5]
    """
    who = "scale_by_param_block_rms"
    _validate.non_negative(who, "min_scale", min_scale)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        require_params(who, params, "each update is scaled by its param's root mean square")
        _checks.check_updates(who, updates, params, "param", inexact=False)

        def leaf(u, p):
            dtype = _tree.compute_dtype(u.dtype, p.dtype)
            p = p.astype(dtype)
            floor = _tree.cast_scalar(min_scale, _tree.real_dtype(dtype))
            small = jnp.sqrt(jnp.mean(_tree.abs_sq(p))) <= floor
            safe = jnp.where(small, jnp.ones_like(p), p)
            scale = jnp.where(small, floor, jnp.sqrt(jnp.mean(_tree.abs_sq(safe))))
            return u.astype(dtype) * scale

        return jax.tree.map(leaf, updates, params), state

    return GradientTransformation(init_fn, update_fn)
