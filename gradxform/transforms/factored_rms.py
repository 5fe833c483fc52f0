"""Optax's factored second moments (``scale_by_factored_rms``, Shazeer & Stern, 2018): the two
largest axes of a leaf, when both reach ``min_dim_size_to_factor``, keep a row and a column
statistic, ``epsilon`` added to the squares; other leaves keep a full second moment. torch's
formulation is :func:`gradxform.transforms.factored.scale_by_adafactor`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform._types import StepCount
from gradxform.transforms.factored import zeros_of_shape


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
        return zeros_of_shape(without[1], p), zeros_of_shape(without[0], p), None

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
