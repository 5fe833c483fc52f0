"""Factored second moments (Adafactor): torch's and Optax's preconditioners, and the parameter
scale of Adafactor's relative step.

A matrix's second moment is kept as a row and a column statistic, ``m + n`` numbers instead of
``m * n`` (Shazeer & Stern, 2018). :func:`scale_by_adafactor` is ``torch.optim.Adafactor``'s
formulation (the last two axes of every leaf of rank >= 2, ``eps1`` applied after the
statistics, the decay ``1 - t^beta2_decay``); :func:`scale_by_factored_rms` is Optax's (the two
largest axes, when both reach ``min_dim_size_to_factor``, ``epsilon`` added to the squares).
Leaves that are not factored keep a full second moment. Unused entries of a state are ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _checks, _tree, _validate
from gradxform._base import EmptyState, GradientTransformation, expect_state, require_params
from gradxform._types import StepCount


def _is_none(x: Any) -> bool:
    return x is None


def _zeros(shape: tuple[int, ...], like: Any) -> jax.Array:
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
    return _zeros((*shape[:-1], 1), p), _zeros((*shape[:-2], 1, shape[-1]), p), None


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


class FactoredState(NamedTuple):
    """Optax's ``FactoredState``: ``count`` (int32), and per param ``v_row`` and ``v_col`` (the
    param's shape without its largest, respectively second largest, axis) for a factored leaf,
    or ``v`` (its shape) otherwise. Optax keeps a zero array of shape ``(1,)`` in the unused
    entries, gradxform ``None``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> state = gx.scale_by_factored_rms(min_dim_size_to_factor=1).init(jnp.zeros((3, 2)))
      >>> state.count, state.v_row.shape, state.v_col.shape, state.v
      (Array(0, dtype=int32), (2,), (3,), None)
    """

    count: StepCount
    v_row: Any
    v_col: Any
    v: Any


def _factored_dims(
    shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int
) -> tuple[int, int] | None:
    """``(second largest axis, largest axis)``, or ``None`` when the leaf is not factored."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)  # the order Optax takes, ties included
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _decay_rate_pow(step: jax.Array, exponent: Any = 0.8) -> jax.Array:
    """Adafactor's decay ``1 - (k + 1)^(-exponent)`` of the ``k``-th update (0 first), with
    ``k + 1`` in float32, as Optax computes it."""
    t = jnp.asarray(step + 1, jnp.float32)
    return 1.0 - t ** (-exponent)


def _inverse_root(x: jax.Array, may_be_zero: bool) -> jax.Array:
    """``x^(-1/2)``, written as Optax does; 0 where ``x`` is 0 if ``may_be_zero``."""
    if may_be_zero:
        return jnp.where(x > 0, jnp.where(x > 0, x, 1) ** -0.5, 0)
    return x**-0.5


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
    decay_rate_fn: Callable[[jax.Array, Any], jax.Array] = _decay_rate_pow,
) -> GradientTransformation:
    """Optax's ``scale_by_factored_rms``: Adafactor's preconditioner, Optax's numbers.

    With ``b_k = decay_rate_fn(k - step_offset, decay_rate)`` (by default ``1 - (k + 1)^-0.8``
    for the ``k``-th update, 0 first) and ``s = |g|^2 + epsilon``: a leaf whose two largest
    axes ``a`` (second largest) and ``b`` (largest) have at least ``min_dim_size_to_factor``
    elements keeps ``r = mean_b s`` and ``c = mean_a s`` as moving averages::

        r_k = b_k * r_{k-1} + (1 - b_k) * mean_b s,   c_k = b_k * c_{k-1} + (1 - b_k) * mean_a s
        u = g * (r_k / mean_a r_k)^(-1/2) * c_k^(-1/2)      (r along a, c along b)

    and every other leaf ``v_k = b_k * v_{k-1} + (1 - b_k) * s``, ``u = g * v_k^(-1/2)``.
    Where ``epsilon`` may be 0, a zero statistic gives a zero update instead of NaN.

    Optax's ``adafactor`` is this chain, a link in brackets present only with its option::

        gx.chain(
            gx.scale_by_factored_rms(factored, decay_rate, decay_offset,
                                     min_dim_size_to_factor, eps),
            [gx.clip_by_block_rms(clipping_threshold)],            # if not None (default 1.0)
            [gx.scale_by_learning_rate(learning_rate, flip_sign=False)],   # if not None
            [gx.scale_by_param_block_rms()],                       # multiply_by_parameter_scale
            [gx.ema(momentum, debias=False, accumulator_dtype=dtype_momentum)],  # momentum
            [gx.add_decayed_weights(weight_decay_rate, weight_decay_mask)],      # decay rate
            gx.scale(-1.0),
        )

    with Optax's defaults ``decay_rate=0.8, decay_offset=0, min_dim_size_to_factor=128,
    eps=1e-30, clipping_threshold=1.0, multiply_by_parameter_scale=True,
    dtype_momentum=jnp.float32`` (no learning rate, momentum or decay). gradxform's
    ``add_decayed_weights`` takes a number, not a schedule. (:func:`gradxform.adafactor` is
    torch's Adafactor, other numbers.)

    Args:
      factored: factor the second moment of leaves of rank >= 2.
      decay_rate: the argument of ``decay_rate_fn`` (>= 0).
      step_offset: subtracted from the update count (a whole number >= 0), e.g. the step at
        which fine-tuning starts.
      min_dim_size_to_factor: factor only leaves whose two largest axes have at least this
        size.
      epsilon: added to the squares (>= 0).
      decay_rate_fn: ``(k, decay_rate) -> b_k``; e.g. a capped decay (Zhai et al., 2021).

    Returns:
      A transformation whose state is :class:`FactoredState`; its ``update`` needs ``params``
      (as Optax's).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> t = gx.scale_by_factored_rms(min_dim_size_to_factor=2)
      >>> p = {"w": jnp.ones((2, 3))}
      >>> [x.shape for x in (t.init(p).v_row["w"], t.init(p).v_col["w"])]
      [(2,), (3,)]

    References:
      Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear Memory Cost*, 2018
      (https://arxiv.org/abs/1804.04235); Zhai et al., *Scaling Vision Transformers*, 2021
      (https://arxiv.org/abs/2106.04560).
    """
    who = "scale_by_factored_rms"
    _validate.boolean(who, "factored", factored)
    _validate.non_negative(who, "decay_rate", decay_rate)
    _validate.count(who, "step_offset", step_offset, minimum=0, traced_ok=True)
    _validate.count(who, "min_dim_size_to_factor", min_dim_size_to_factor, minimum=0)
    _validate.non_negative(who, "epsilon", epsilon)
    _validate.function(who, "decay_rate_fn", decay_rate_fn)
    may_be_zero = not _validate.is_static_nonzero(epsilon)

    def dims(x: Any) -> tuple[int, int] | None:
        return _factored_dims(jnp.shape(x), factored, min_dim_size_to_factor)

    def init_leaf(p):
        axes = dims(p)
        if axes is None:
            return None, None, _tree.tree_zeros_like(p)
        shape = jnp.shape(p)
        without = [tuple(n for i, n in enumerate(shape) if i != axis) for axis in axes]
        return _zeros(without[1], p), _zeros(without[0], p), None

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        v_row, v_col, v = _tree.tree_map_multi(init_leaf, 3, params)
        return FactoredState(jnp.zeros([], jnp.int32), v_row, v_col, v)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, FactoredState)
        require_params(who, params, "the factored axes are chosen from each param's shape")
        _checks.check_updates(who, updates, params, "param")
        rate = decay_rate_fn(state.count - step_offset, decay_rate)

        def leaf(g, p, v_row, v_col, v):
            axes = dims(p)
            moment = v if axes is None else v_row
            dtype = _tree.compute_dtype(g.dtype, moment.dtype)
            out_dtype, g = _tree.update_dtype(g, moment), g.astype(dtype)
            real = _tree.real_dtype(dtype)
            # 1 - b_k in b_k's own dtype (float32 by default), as Optax rounds it.
            keep, fresh = _tree.cast_scalar(rate, real), _tree.cast_scalar(1.0 - rate, real)
            squares = _tree.abs_sq(g) + _tree.cast_scalar(epsilon, real)

            def average(old, mean):
                new = keep * _tree.as_real(old, real) + fresh * mean
                return new.astype(old.dtype)  # Optax rounds to the state's dtype, then uses it

            if axes is None:
                new_v = average(v, squares)
                u = g * _inverse_root(_tree.as_real(new_v, real), may_be_zero)
                return u.astype(out_dtype), None, None, new_v
            a, b = axes
            new_row = average(v_row, jnp.mean(squares, axis=b))
            new_col = average(v_col, jnp.mean(squares, axis=a))
            rows = _tree.as_real(new_row, real)
            row_mean = jnp.mean(rows, axis=a - 1 if a > b else a, keepdims=True)
            row_factor = _inverse_root(_tree.safe_divide(rows, row_mean, may_be_zero), may_be_zero)
            col_factor = _inverse_root(_tree.as_real(new_col, real), may_be_zero)
            u = g * jnp.expand_dims(row_factor, b) * jnp.expand_dims(col_factor, a)
            return u.astype(out_dtype), new_row, new_col, None

        u, v_row, v_col, v = _tree.tree_map_multi(
            leaf, 4, updates, params, state.v_row, state.v_col, state.v
        )
        return u, FactoredState(_tree.safe_increment(state.count), v_row, v_col, v)

    return GradientTransformation(init_fn, update_fn)


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
