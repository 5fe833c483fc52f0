"""Transformations applied on some steps only: Optax's ``conditionally_transform`` and
``conditionally_mask``.

Both are branch-free: the inner update is computed on every call and kept only where the
condition holds (``jnp.where``), for the reasons :class:`gradxform.MultiSteps` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from gradxform import _tree, _validate
from gradxform._base import (
    GradientTransformation,
    as_transformation,
    expect_state,
    extra_args_filter,
)


class ConditionFn(Protocol):
    """Optax's condition of ``conditionally_transform``/``conditionally_mask``: the number of
    calls so far (an int32 array) and the update's extra arguments to a scalar bool array.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> def after_two(step):  # a ConditionFn
      ...     return step >= 2
      >>> opt = gx.conditionally_mask(gx.sgd(1.0), after_two)
      >>> state, g, out = opt.init(jnp.zeros(1)), jnp.ones(1), []
      >>> for _ in range(3):
      ...     u, state = opt.update(g, state)
      ...     out.append(float(u[0]))
      >>> out  # steps 0 and 1 masked
      [0.0, 0.0, -1.0]
    """

    def __call__(self, step: jax.Array, **extra_args: Any) -> jax.Array: ...


class ConditionallyTransformState(NamedTuple):
    """``inner_state``: the inner transformation's state; ``step``: calls so far (int32).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.conditionally_transform(gx.sgd(1.0), lambda step: step > 0).init(jnp.zeros(1))
      ConditionallyTransformState(inner_state=(EmptyState(),), step=Array(0, dtype=int32))
    """

    inner_state: Any
    step: jax.Array


class ConditionallyMaskState(NamedTuple):
    """``step``: calls so far (int32); ``inner_state``: the inner transformation's state.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.conditionally_mask(gx.sgd(1.0), lambda step: step > 0).init(jnp.zeros(1))
      ConditionallyMaskState(step=Array(0, dtype=int32), inner_state=(EmptyState(),))
    """

    step: jax.Array
    inner_state: Any


def _conditional(who, inner, should_transform_fn, forward_extra_args, on_reject):
    inner = as_transformation(inner, f"{who}: `inner`")
    keep_extra = extra_args_filter(inner.update)
    _validate.function(who, "should_transform_fn", should_transform_fn)
    _validate.boolean(who, "forward_extra_args", forward_extra_args)

    def update(updates, inner_state, step, params, extra_args):
        condition = should_transform_fn(step, **(extra_args if forward_extra_args else {}))
        condition = jnp.asarray(condition)
        if condition.shape != () or condition.dtype != jnp.bool_:
            raise ValueError(
                f"{who}: `should_transform_fn` must return a scalar bool, got dtype "
                f"{condition.dtype} and shape {condition.shape}"
            )
        new_updates, new_state = inner.update(
            updates, inner_state, params, **keep_extra(extra_args)
        )
        out = jax.tree.map(
            lambda new, old: jnp.where(condition, new, on_reject(old)), new_updates, updates
        )
        kept = jax.tree.map(lambda new, old: jnp.where(condition, new, old), new_state, inner_state)
        return out, kept, _tree.safe_increment(step)

    return inner, update


def conditionally_transform(
    inner: GradientTransformation,
    should_transform_fn: ConditionFn | Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformation:
    """Applies ``inner`` on the steps ``should_transform_fn`` selects; passes updates through
    unchanged on the others (Optax's).

    With ``t`` the number of earlier calls::

        u, s <- inner(u, s)   if should_transform_fn(t)   else   u, s

    Args:
      inner: the transformation.
      should_transform_fn: ``f(step, **extra_args) -> bool`` (a scalar bool array).
      forward_extra_args: pass the update's extra keyword arguments to ``should_transform_fn``.

    Returns:
      A transformation whose state is :class:`ConditionallyTransformState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, g = gx.conditionally_transform(gx.sgd(0.5), lambda step: step % 2 == 1), jnp.ones(1)
      >>> u0, state = opt.update(g, opt.init(g))
      >>> u1, state = opt.update(g, state)
      >>> u0.tolist(), u1.tolist()  # g unchanged on step 0, SGD's -lr * g on step 1
      ([1.0], [-0.5])
    """
    who = "conditionally_transform"
    inner, update = _conditional(
        who, inner, should_transform_fn, forward_extra_args, on_reject=lambda u: u
    )

    def init_fn(params):
        return ConditionallyTransformState(inner.init(params), jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, ConditionallyTransformState)
        out, inner_state, step = update(updates, state.inner_state, state.step, params, extra_args)
        return out, ConditionallyTransformState(inner_state, step)

    return GradientTransformation(init_fn, update_fn)


def conditionally_mask(
    inner: GradientTransformation,
    should_transform_fn: ConditionFn | Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformation:
    """Applies ``inner`` on the steps ``should_transform_fn`` selects; returns zero updates on
    the others (Optax's).

    With ``t`` the number of earlier calls::

        u, s <- inner(u, s)   if should_transform_fn(t)   else   0, s

    Args:
      inner: the transformation.
      should_transform_fn: ``f(step, **extra_args) -> bool`` (a scalar bool array).
      forward_extra_args: pass the update's extra keyword arguments to ``should_transform_fn``.

    Returns:
      A transformation whose state is :class:`ConditionallyMaskState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt, g = gx.conditionally_mask(gx.sgd(0.5), lambda step: step % 2 == 1), jnp.ones(1)
      >>> u0, state = opt.update(g, opt.init(g))
      >>> u1, state = opt.update(g, state)
      >>> u0.tolist(), u1.tolist()  # zero on step 0, SGD's -lr * g on step 1
      ([0.0], [-0.5])
    """
    who = "conditionally_mask"
    inner, update = _conditional(
        who, inner, should_transform_fn, forward_extra_args, on_reject=jnp.zeros_like
    )

    def init_fn(params):
        return ConditionallyMaskState(jnp.zeros([], jnp.int32), inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(who, state, ConditionallyMaskState)
        out, inner_state, step = update(updates, state.inner_state, state.step, params, extra_args)
        return out, ConditionallyMaskState(step, inner_state)

    return GradientTransformation(init_fn, update_fn)


def incremental_update(new_tensors: Any, old_tensors: Any, step_size: Any) -> Any:
    """Polyak averaging of a target tree (Optax's): ``step_size * new + (1 - step_size) * old``.

    Args:
      new_tensors: the latest tree (e.g. the online network's params).
      old_tensors: the tree being averaged (e.g. a target network's params).
      step_size: the weight of the new tree, in [0, 1].

    Returns:
      The new average, leaf by leaf.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> new, old = {"w": jnp.array([4.0])}, {"w": jnp.array([0.0])}
      >>> gx.incremental_update(new, old, 0.25)["w"].tolist()  # 0.25 * 4 + 0.75 * 0
      [1.0]
    """
    return jax.tree.map(
        lambda new, old: step_size * new + (1.0 - step_size) * old, new_tensors, old_tensors
    )


def periodic_update(new_tensors: Any, old_tensors: Any, steps: Any, update_period: Any) -> Any:
    """A target tree refreshed every ``update_period`` steps (Optax's).

    ``new_tensors`` where ``steps mod update_period == 0``, else ``old_tensors``.

    Args:
      new_tensors: the latest tree.
      old_tensors: the current target tree.
      steps: the step count.
      update_period: the refresh period.

    Returns:
      The target tree for this step.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> new, old = jnp.array([1.0]), jnp.array([0.0])
      >>> [gx.periodic_update(new, old, step, 3).tolist() for step in (2, 3)]  # 3 mod 3 == 0
      [[0.0], [1.0]]
    """
    refresh = jnp.mod(steps, update_period) == 0
    return jax.tree.map(lambda new, old: jnp.where(refresh, new, old), new_tensors, old_tensors)
