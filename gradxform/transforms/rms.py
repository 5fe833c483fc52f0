"""Root-mean-square preconditioners: RMSProp (plain and centered) and Adagrad.

Each divides the gradient by the square root of an accumulated square of gradients. Squares
are accumulated as torch does, ``decay * v + ((1 - decay) * g) * g``, so that a finite gradient
never overflows them, and complex values use ``|g|^2``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._types import StepCount
from gradxform.transforms.adam import root_may_be_zero


class ScaleByRmsState(NamedTuple):
    """``nu``: the moving average of squared gradients.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_rms()
      >>> _, state = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> [round(float(x), 4) for x in state.nu]  # (1 - decay) g^2
      [0.0025, 0.04]
    """

    nu: Any


class ScaleByRStdDevState(NamedTuple):
    """``mu`` and ``nu``: moving averages of gradients and of squared gradients.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_stddev()
      >>> _, state = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> [[round(float(x), 4) for x in v] for v in state]  # (1 - decay) g and (1 - decay) g^2
      [[0.005, -0.02], [0.0025, 0.04]]
    """

    mu: Any
    nu: Any


class ScaleByRmsWithCountState(NamedTuple):
    """``count`` (int32) and ``nu``: :class:`ScaleByRmsState` with ``bias_correction``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.scale_by_rms(bias_correction=True).init(jnp.zeros(2))
      ScaleByRmsWithCountState(count=Array(0, dtype=int32), nu=Array([0., 0.], dtype=float32))
    """

    count: StepCount
    nu: Any


class ScaleByRStdDevWithCountState(NamedTuple):
    """``count`` (int32), ``mu`` and ``nu``: :class:`ScaleByRStdDevState` with
    ``bias_correction``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.scale_by_stddev(bias_correction=True).init(jnp.zeros(2))
      ScaleByRStdDevWithCountState(count=Array(0, dtype=int32), mu=Array([0., 0.], dtype=float32),
      nu=Array([0., 0.], dtype=float32))
    """

    count: StepCount
    mu: Any
    nu: Any


class ScaleByRssState(NamedTuple):
    """``sum_of_squares``: Adagrad's accumulator.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_rss()
      >>> _, state = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> state  # the sum of g^2
      ScaleByRssState(sum_of_squares=Array([0.25, 4.  ], dtype=float32))
    """

    sum_of_squares: Any


def _root(spread: jax.Array, eps: Any, eps_root: Any, eps_in_sqrt: bool) -> jax.Array:
    """``sqrt(s + eps_root) + eps``, or ``sqrt(s + eps_root + eps)`` with ``eps_in_sqrt``."""
    dtype = spread.dtype
    if not _validate.is_static_zero(eps_root):
        spread = spread + _tree.cast_scalar(eps_root, dtype)
    if eps_in_sqrt:
        return jnp.sqrt(spread + _tree.cast_scalar(eps, dtype))
    return jnp.sqrt(spread) + _tree.cast_scalar(eps, dtype)


def scale_by_rms(
    decay: float = 0.99,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = False,
    bias_correction: bool = False,
    *,
    centered: bool = False,
    eps_root: float = 0.0,
) -> GradientTransformation:
    """RMSProp's preconditioner (Hinton, 2012), as ``torch.optim.RMSprop``.

    ::

        v_t = decay * v_{t-1} + (1 - decay) * |g_t|^2,   v_0 = initial_scale
        c_t = decay * c_{t-1} + (1 - decay) * g_t        (only if centered)
        v'_t, c'_t = v_t / (1 - decay^t), c_t / (1 - decay^t)  with bias_correction
                                                         (v_t, c_t without)
        s_t = v'_t - |c'_t|^2 if centered else v'_t      (clamped at 0)
        u_t = g_t / (sqrt(s_t + eps_root) + eps)   or   g_t / sqrt(s_t + eps_root + eps)
                                                         with eps_in_sqrt

    The defaults are torch's (eps outside the root); Optax's ``scale_by_rms`` defaults to
    ``decay=0.9, eps_in_sqrt=True``. Given Optax's arguments it gives Optax's numbers,
    ``bias_correction`` included (``scale_by_rms(b2, eps, 0.0, False, True)`` is Adam's
    preconditioner with ``b1 = 0``).

    Args:
      decay: torch's ``alpha``, in [0, 1).
      eps: added to the denominator (>= 0).
      initial_scale: the initial value of ``v`` (>= 0).
      eps_in_sqrt: add ``eps`` inside the square root instead.
      bias_correction: divide the moving averages by ``1 - decay^t`` (Optax's option).
      centered: divide by the estimated standard deviation instead of the root mean square.
      eps_root: added inside the root (>= 0); a small positive value keeps gradients through
        the update (meta-learning) finite where a gradient is zero.

    Returns:
      A transformation whose state is :class:`ScaleByRmsState` (:class:`ScaleByRStdDevState`
      when centered; the ``...WithCountState`` of either with ``bias_correction``).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_rms()
      >>> u, _ = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> [round(float(x), 4) for x in u]  # g / sqrt((1 - decay) g^2) = 10 g / |g|
      [10.0, -10.0]
    """
    return _rms(
        "scale_by_rms", decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered, eps_root
    )


_STATES = {
    (False, False): ScaleByRmsState,
    (True, False): ScaleByRStdDevState,
    (False, True): ScaleByRmsWithCountState,
    (True, True): ScaleByRStdDevWithCountState,
}


def _rms(
    who: str,
    decay: Any,
    eps: Any,
    initial_scale: Any,
    eps_in_sqrt: bool,
    bias_correction: bool,
    centered: bool,
    eps_root: Any,
) -> GradientTransformation:
    _validate.probability(who, "decay", decay)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "initial_scale", initial_scale)
    _validate.boolean(who, "eps_in_sqrt", eps_in_sqrt)
    _validate.boolean(who, "bias_correction", bias_correction)
    _validate.boolean(who, "centered", centered)
    _validate.non_negative(who, "eps_root", eps_root)
    may_be_zero = root_may_be_zero(eps, eps_root)
    state_type = _STATES[centered, bias_correction]

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        fields = {"nu": _tree.tree_full_like(params, initial_scale)}
        if centered:
            fields["mu"] = _tree.tree_zeros_like(params)
        if bias_correction:
            fields["count"] = jnp.zeros([], jnp.int32)
        return state_type(**fields)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, state_type)
        _checks.check_updates(who, updates, state.nu, "second moment")
        fields = {}
        if bias_correction:
            fields["count"] = _tree.safe_increment(state.count)
            # A reciprocal computed once, multiplied per element: XLA rewrites a division by a
            # traced scalar into this product in some programs and not in others (the flat
            # path's and the tree path's would round differently).
            inverse_correction = 1 / _tree.bias_correction(decay, fields["count"])

        def corrected(moment):
            if not bias_correction:
                return moment
            return moment * _tree.cast_scalar(inverse_correction, moment.dtype)

        def leaf(g, v, c=None):
            dtype = _tree.compute_dtype(g.dtype, v.dtype)
            out_dtype, g = _tree.update_dtype(g, v, c), g.astype(dtype)
            new_v = _tree.square_moment_update(v, g, decay, dtype)
            spread = corrected(new_v)
            if centered:
                new_c = _tree.moment_update(c, g, decay, dtype)
                # Rounding can make v - c^2 slightly negative; the root of that would be NaN.
                spread = jnp.maximum(spread - _tree.abs_sq(corrected(new_c)), 0)
            denominator = _root(spread, eps, eps_root, eps_in_sqrt)
            u = _tree.safe_divide(g, denominator, may_be_zero).astype(out_dtype)
            if centered:
                return u, new_v.astype(v.dtype), new_c.astype(c.dtype)
            return u, new_v.astype(v.dtype)

        if centered:
            u, fields["nu"], fields["mu"] = _tree.tree_map_multi(
                leaf, 3, updates, state.nu, state.mu
            )
        else:
            u, fields["nu"] = _tree.tree_map_multi(leaf, 2, updates, state.nu)
        return u, state_type(**fields)

    return GradientTransformation(init_fn, update_fn)


def scale_by_stddev(
    decay: float = 0.99,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = False,
    bias_correction: bool = False,
    *,
    eps_root: float = 0.0,
) -> GradientTransformation:
    """Centered RMSProp's preconditioner: :func:`scale_by_rms` with ``centered=True``.

    ::

        u_t = g_t / (sqrt(v'_t - |c'_t|^2 + eps_root) + eps)

    with ``v`` and ``c`` the moving averages of ``|g|^2`` and ``g``, each divided by
    ``1 - decay^t`` with ``bias_correction`` (see :func:`scale_by_rms`, whose arguments these
    are).

    Returns:
      A transformation whose state is :class:`ScaleByRStdDevState`
      (:class:`ScaleByRStdDevWithCountState` with ``bias_correction``).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_stddev()
      >>> u, _ = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> [round(float(x), 4) for x in u]  # g / sqrt(0.01 g^2 - (0.01 g)^2) = 10.0504 g / |g|
      [10.0504, -10.0504]
    """
    return _rms(
        "scale_by_stddev", decay, eps, initial_scale, eps_in_sqrt, bias_correction, True, eps_root
    )


def scale_by_rss(
    initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, eps_root: float = 0.0
) -> GradientTransformation:
    """Adagrad's preconditioner (Duchi et al., 2011), as ``torch.optim.Adagrad``.

    ::

        s_t = s_{t-1} + |g_t|^2,   s_0 = initial_accumulator_value
        u_t = g_t / (sqrt(s_t + eps_root) + eps)

    The defaults are torch's; Optax's ``scale_by_rss`` uses ``0.1`` and ``1e-7`` with eps
    inside the root.

    Args:
      initial_accumulator_value: the accumulator's start (>= 0).
      eps: added to the denominator, outside the root (>= 0).
      eps_root: added inside the root (>= 0), for finite gradients through the update.

    Returns:
      A transformation whose state is :class:`ScaleByRssState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_rss()
      >>> u1, state = tx.update(jnp.array([3.0, -1.0]), tx.init(jnp.zeros(2)))
      >>> u2, state = tx.update(jnp.array([4.0, 0.0]), state)
      >>> u1, u2  # g_1 / |g_1|, then g_2 / sqrt(g_1^2 + g_2^2)
      (Array([ 1., -1.], dtype=float32), Array([0.8, 0. ], dtype=float32))
    """
    who = "scale_by_rss"
    _validate.non_negative(who, "initial_accumulator_value", initial_accumulator_value)
    _validate.non_negative(who, "eps", eps)
    _validate.non_negative(who, "eps_root", eps_root)
    may_be_zero = root_may_be_zero(eps, eps_root)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleByRssState(_tree.tree_full_like(params, initial_accumulator_value))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(who, state, ScaleByRssState)
        _checks.check_updates(who, updates, state.sum_of_squares, "accumulator")

        def leaf(g, s):
            dtype = _tree.compute_dtype(g.dtype, s.dtype)
            out_dtype, g = _tree.update_dtype(g, s), g.astype(dtype)
            new_s = _tree.as_real(s, _tree.real_dtype(dtype)) + _tree.abs_sq(g)
            denominator = _root(new_s, eps, eps_root, eps_in_sqrt=False)
            u = _tree.safe_divide(g, denominator, may_be_zero)
            return u.astype(out_dtype), new_s.astype(s.dtype)

        u, sums = _tree.tree_map_multi(leaf, 2, updates, state.sum_of_squares)
        return u, ScaleByRssState(sums)

    return GradientTransformation(init_fn, update_fn)
