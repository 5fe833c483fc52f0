"""Multiplying updates by a constant, a learning rate, a schedule of the step count or the
inverse of their norm, or replacing them by zeros; and scaling a gradient on the backward pass
(:func:`scale_gradient`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import EmptyState, GradientTransformation, expect_state
from gradxform._types import ScalarOrSchedule, Schedule, StepCount


def _scaled(factor: Any, updates: Any) -> Any:
    """``factor * u`` leaf by leaf, in the compute dtype (at least float32)."""

    def leaf(u):
        dtype = _tree.compute_dtype(u.dtype)
        return _tree.cast_scalar(factor, dtype) * u.astype(dtype)

    return jax.tree.map(leaf, updates)


class ScaleByScheduleState(NamedTuple):
    """``count``: how many updates have been made (int32).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_schedule(lambda k: 0.5**k)
      >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[1]  # one update made
      ScaleByScheduleState(count=Array(1, dtype=int32))
    """

    count: StepCount


def scale(step_size: float | jax.Array) -> GradientTransformation:
    """Multiplies updates by a constant: ``u <- step_size * u``.

    Like every transformation, it computes in at least float32: bf16 or float16 updates come
    out as float32, and ``apply_updates`` rounds each parameter once.

    Args:
      step_size: the factor (any sign).

    Returns:
      A stateless transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.scale(0.5).update(jnp.array([1.0, -2.0]), gx.EmptyState())[0]
      Array([ 0.5, -1. ], dtype=float32)
    """
    _validate.finite("scale", "step_size", step_size)

    def init_fn(params):
        _tree.check_inexact_leaves(params, "scale")
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params("scale", updates, params)
        return _scaled(step_size, updates), state

    return GradientTransformation(init_fn, update_fn)


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiplies updates by a schedule of the step count: ``u <- s(k) * u``.

    ``k`` counts the updates made before this one (0 for the first update).

    Args:
      step_size_fn: a function of the int32 count returning a scalar.

    Returns:
      A transformation whose state is :class:`ScaleByScheduleState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_schedule(lambda k: 0.5**k)
      >>> u1, state = tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))
      >>> u2, state = tx.update(jnp.array([1.0, -2.0]), state)
      >>> u1, u2  # s(0) g and s(1) g
      (Array([ 1., -2.], dtype=float32), Array([ 0.5, -1. ], dtype=float32))
    """
    who = "scale_by_schedule"
    _validate.function(who, "step_size_fn", step_size_fn)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, ScaleByScheduleState)
        _checks.check_against_params(who, updates, params)
        step_size = step_size_fn(state.count)
        if jnp.shape(step_size) != ():
            raise ValueError(
                f"{who}: the schedule must return a scalar, got shape {jnp.shape(step_size)} "
                f"at count {state.count!r}; a schedule is never broadcast against the updates"
            )
        updates = _scaled(step_size, updates)
        return updates, ScaleByScheduleState(count=_tree.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """Scales updates by the learning rate, for descent: ``u <- -lr * u``.

    Args:
      learning_rate: a non-negative number, or a schedule ``k -> lr`` of the step count.
      flip_sign: negate, so that adding the update descends (the default).

    Returns:
      :func:`scale` for a number, :func:`scale_by_schedule` for a schedule.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_learning_rate(lambda k: 0.5 / (k + 1))
      >>> u1, state = tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))
      >>> u2, state = tx.update(jnp.array([1.0, -2.0]), state)
      >>> u1, u2  # -lr(0) g and -lr(1) g
      (Array([-0.5,  1. ], dtype=float32), Array([-0.25,  0.5 ], dtype=float32))
    """
    who = "scale_by_learning_rate"
    _validate.learning_rate(who, learning_rate)
    _validate.boolean(who, "flip_sign", flip_sign)
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)


def set_to_zero() -> GradientTransformation:
    """Replaces every update by zeros: ``u <- 0``.

    The zeros are exact (a NaN or infinite gradient also becomes 0) and nothing is stored.

    Returns:
      A stateless transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.set_to_zero().update(jnp.array([1.0, jnp.nan]), gx.EmptyState())[0]
      Array([0., 0.], dtype=float32)
    """

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params("set_to_zero", updates, params)
        return jax.tree.map(jnp.zeros_like, updates), state

    return GradientTransformation(init_fn, update_fn)


def normalize_by_update_norm(
    scale_factor: float = 1.0, eps: float = 1e-6
) -> GradientTransformation:
    """Divides the updates by their global norm, as ``optax.normalize_by_update_norm``.

    ::

        u <- scale_factor * u / (||u||_2 + eps)        (||u||_2 over all leaves together)

    Where ``||u|| + eps`` is 0 (``eps`` 0, or one that may be 0, and all updates 0) the update
    is 0, where Optax's would be NaN.

    Args:
      scale_factor: the norm of the result (any sign; -1 for descent with no learning rate).
      eps: added to the norm (>= 0).

    Returns:
      A stateless transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.normalize_by_update_norm()
      >>> u, _ = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, gx.EmptyState())
      >>> {k: round(float(v[0]), 4) for k, v in u.items()}  # u / ||u|| = u / 5
      {'a': 0.6, 'b': 0.8}
    """
    who = "normalize_by_update_norm"
    _validate.finite(who, "scale_factor", scale_factor)
    _validate.non_negative(who, "eps", eps)
    may_be_zero = not _validate.is_static_nonzero(eps)

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params(who, updates, params)
        denominator = _tree.tree_global_norm(updates) + _tree.cast_scalar(
            eps, _tree.default_float_dtype()
        )
        factor = _tree.safe_divide(
            jnp.asarray(scale_factor, denominator.dtype), denominator, may_be_zero
        )
        return _scaled(factor, updates), state

    return GradientTransformation(init_fn, update_fn)


@jax.custom_vjp
def _scaled_backward(inputs: Any, factor: Any) -> Any:
    del factor  # used by the backward pass only
    return inputs


def _scaled_backward_forward(inputs: Any, factor: Any) -> tuple[Any, Any]:
    return inputs, factor


def _scaled_backward_backward(factor: Any, cotangent: Any) -> tuple[Any, None]:
    scaled = jax.tree.map(
        lambda c: (c * _tree.cast_scalar(factor, c.dtype)).astype(c.dtype), cotangent
    )
    return scaled, None


_scaled_backward.defvjp(_scaled_backward_forward, _scaled_backward_backward)


def scale_gradient(inputs: Any, scale: float | jax.Array) -> Any:
    """The identity on ``inputs``, whose gradient is multiplied by ``scale`` on the way back,
    as ``optax.scale_gradient``: ``f(x) = x``, ``df/dx = scale``.

    Not a transformation: it goes inside a loss, to scale (or, with 0, stop) the gradient
    that flows into part of a model.

    Args:
      inputs: a tree of arrays.
      scale: the factor on the backward pass (any finite number; 1 is the identity, 0 is
        ``jax.lax.stop_gradient``).

    Returns:
      ``inputs``, with the scaled backward pass.

    Example:
      >>> import jax, gradxform as gx
      >>> f = lambda x: gx.scale_gradient(x, 0.5) ** 2
      >>> f(3.0), jax.grad(f)(3.0)  # the value of x^2; the gradient 2 x times 0.5
      (9.0, Array(3., dtype=float32))
    """
    _validate.finite("scale_gradient", "scale", scale)
    if _validate.is_static_number(scale) and float(scale) == 1.0:
        return inputs
    if _validate.is_static_zero(scale):
        return jax.lax.stop_gradient(inputs)
    return _scaled_backward(inputs, scale)
