"""Schedule-free averaging (Defazio et al., 2024): the iterate ``z``, its weighted average ``x``
and the point ``y`` between them where gradients are taken, and the eval-mode params ``x``.

The params a chain holds are the train-mode ``y``, as in the authors' ``schedulefree`` package
in train mode; :func:`schedule_free_eval_params` recovers ``x`` from ``y`` and ``z`` as that
package's ``optimizer.eval()`` does. The scalars of the average (its weight sum, the largest
learning rate so far) are kept in the default float dtype (float64 with ``jax_enable_x64``), as
the reference keeps them in Python floats.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, find_state, require_params
from gradxform._types import ScalarOrSchedule, StepCount


class ScheduleFreeState(NamedTuple):
    """``count`` (int32, steps taken), ``b1`` (the interpolation, kept for the eval params),
    ``weight_sum`` (the sum of averaging weights), ``lr_max`` (the largest warmed-up learning
    rate so far, -1 before the first step) and ``z`` (the base iterate, one leaf per param).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.scale_by_schedule_free(1.0), jnp.zeros(2)
      >>> _, state = tx.update(jnp.array([1.0, -2.0]), tx.init(params), params)
      >>> state.count, state.weight_sum, state.lr_max, state.z  # z_1 = z_0 - lr d
      (Array(1, dtype=int32), Array(1., dtype=float32), Array(1., dtype=float32), Array([-1.,  2.],
      dtype=float32))
    """

    count: StepCount
    b1: jax.Array
    weight_sum: jax.Array
    lr_max: jax.Array
    z: Any


def check_schedule_free(
    who: str,
    learning_rate: Any,
    warmup_steps: Any,
    b1: Any,
    weight_lr_power: Any,
    r: Any,
    b1_name: str = "b1",
) -> None:
    """The arguments of the averaging: ``b1`` in (0, 1) (eval divides by it), powers >= 0."""
    _validate.learning_rate(who, learning_rate)
    # An array (injected) runs the general program, correct for 0 too.
    _validate.count(who, "warmup_steps", warmup_steps, minimum=0, traced_ok=True)
    _validate.number(who, b1_name, b1, low=0, high=1, low_open=True, high_open=True)
    _validate.non_negative(who, "weight_lr_power", weight_lr_power)
    _validate.non_negative(who, "r", r)


def scale_by_schedule_free(
    learning_rate: ScalarOrSchedule,
    *,
    warmup_steps: int = 0,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    r: float = 0.0,
) -> GradientTransformation:
    """Schedule-free averaging of a base step ``d`` (a gradient, or a preconditioned one).

    With ``k`` the steps taken before this one::

        lr_k = learning_rate(k) * min(1, (k + 1) / warmup_steps)
        lr_max = max(lr_max, lr_k)
        w_k = (k + 1)^r * lr_max^weight_lr_power,   W_k = W_{k-1} + w_k
        c = w_k / W_k                                (0 when W_k = 0)
        y <- y + c * (z - y) + lr_k * (b1 * (1 - c) - 1) * d     (the update, y the params)
        z <- z - lr_k * d

    so that ``x = (y - (1 - b1) z) / b1`` is the weighted average of the ``z`` iterates (see
    :func:`schedule_free_eval_params`). This is the step of the authors' ``SGDScheduleFree``
    and ``AdamWScheduleFree`` (train mode) after their gradient and weight-decay processing.

    Args:
      learning_rate: the base learning rate (>= 0), a number or a schedule of the step count.
      warmup_steps: steps of linear warmup (0: none), as the reference's ``warmup_steps``.
      b1: the interpolation between ``z`` and ``x`` (the reference's momentum or ``beta1``), in
        (0, 1).
      weight_lr_power: the power of the largest learning rate in the averaging weights (>= 0).
      r: the power of the step number in the averaging weights (>= 0).

    Returns:
      A transformation whose state is :class:`ScheduleFreeState`. Needs ``params`` (``y``).

    References:
      Defazio, Yang, Mehta, Mishchenko, Khaled, Cutkosky, "The Road Less Scheduled", 2024.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, y, d = gx.scale_by_schedule_free(1.0), jnp.zeros(2), jnp.array([1.0, -2.0])
      >>> u1, state = tx.update(d, tx.init(y), y)  # c = 1: y + (z - y) - d = -d
      >>> y = gx.apply_updates(y, u1)
      >>> u2, state = tx.update(d, state, y)  # c = 1/2, z = y: (b1 / 2 - 1) d
      >>> u1, [round(float(x), 4) for x in u2]
      (Array([-1.,  2.], dtype=float32), [-0.55, 1.1])
    """
    who = "scale_by_schedule_free"
    check_schedule_free(who, learning_rate, warmup_steps, b1, weight_lr_power, r)
    return schedule_free_averaging(who, learning_rate, warmup_steps, b1, weight_lr_power, r)


def schedule_free_averaging(
    who: str,
    learning_rate: Any,
    warmup_steps: Any,
    b1: Any,
    weight_lr_power: Any,
    r: Any,
    *,
    scaled: bool = False,
    z_dtype: Any | None = None,
) -> GradientTransformation:
    """:func:`scale_by_schedule_free` with errors naming ``who`` (arguments already checked).

    With ``scaled`` it takes Optax's input instead, a base optimizer's update ``u = -lr_k d``
    already scaled by its own learning rate (:func:`gradxform.schedule_free`): then
    ``z <- z + u``, ``y <- y + c (z - y) + (1 - b1 (1 - c)) u``, and the averaging weights
    read ``learning_rate(k + 1)``, as Optax's counter starts at 1. ``z_dtype`` is the dtype of
    ``z`` (default: each param's).
    """

    def init_fn(params):
        _tree.check_inexact_leaves(params, who)
        scalar = _tree.default_float_dtype()
        # A copy, so that the state never aliases the params (donation must work).
        z = jax.tree.map(
            lambda p: jnp.array(p, dtype=p.dtype if z_dtype is None else z_dtype, copy=True), params
        )
        return ScheduleFreeState(
            count=jnp.zeros([], jnp.int32),
            b1=jnp.asarray(b1, scalar),
            weight_sum=jnp.zeros([], scalar),
            lr_max=jnp.full([], -1.0, scalar),
            z=z,
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, ScheduleFreeState)
        _checks.check_updates(who, updates, state.z, "iterate z")
        require_params(who, params, "the update moves the params y towards the iterate z")
        scalar = _tree.default_float_dtype()
        k = state.count.astype(scalar)
        if callable(learning_rate):
            lr = learning_rate(_tree.safe_increment(state.count) if scaled else state.count)
        else:
            lr = learning_rate
        lr = jnp.asarray(lr, scalar)
        if not _validate.is_static_zero(warmup_steps):
            warmup = jnp.asarray(warmup_steps, scalar)
            lr = lr * jnp.where(k < warmup, (k + 1) / jnp.where(k < warmup, warmup, 1.0), 1.0)
        lr_max = jnp.maximum(state.lr_max, lr)
        weight = jnp.power(lr_max, jnp.asarray(weight_lr_power, scalar))
        if not _validate.is_static_zero(r):
            weight = jnp.power(k + 1, jnp.asarray(r, scalar)) * weight
        weight_sum = state.weight_sum + weight
        c = jnp.where(weight_sum == 0, 0.0, weight / jnp.where(weight_sum == 0, 1.0, weight_sum))
        # The factors of the base step (d, or scaled u) in the steps of y and of z.
        step = (1 - state.b1 * (1 - c)) if scaled else lr * (state.b1 * (1 - c) - 1)
        z_step = 1.0 if scaled else -lr

        def leaf(d, y, z):
            dtype = _tree.compute_dtype(d.dtype, y.dtype, z.dtype)
            out_dtype = _tree.update_dtype(d, y, z)
            d, y32, z32 = d.astype(dtype), y.astype(dtype), z.astype(dtype)
            u = _tree.cast_scalar(c, dtype) * (z32 - y32) + _tree.cast_scalar(step, dtype) * d
            new_z = z32 + _tree.cast_scalar(z_step, dtype) * d
            return u.astype(out_dtype), new_z.astype(z.dtype)

        u, z = _tree.tree_map_multi(leaf, 2, updates, params, state.z)
        new_state = ScheduleFreeState(
            count=_tree.safe_increment(state.count),
            b1=state.b1,
            weight_sum=weight_sum,
            lr_max=lr_max,
            z=z,
        )
        return u, new_state

    return GradientTransformation(init_fn, update_fn)


def schedule_free_eval_params(state: Any, params: Any) -> Any:
    """The eval-mode params ``x`` from the train-mode params ``y`` and the iterate ``z``::

        x = y + (1 - 1 / b1) * (z - y)

    as the authors' ``optimizer.eval()`` computes them.

    Args:
      state: the state of a schedule-free optimizer (or of any chain or wrapper holding exactly
        one :class:`ScheduleFreeState`).
      params: the train-mode params ``y`` (those the optimizer's updates were applied to).

    Returns:
      A tree like ``params``, each leaf in its param's dtype.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, y, d = gx.scale_by_schedule_free(1.0), jnp.zeros(2), jnp.array([1.0, -2.0])
      >>> state = tx.init(y)
      >>> for _ in range(2):
      ...     u, state = tx.update(d, state, y)
      ...     y = gx.apply_updates(y, u)
      >>> x = gx.schedule_free_eval_params(state, y)
      >>> [round(float(v), 4) for v in x]  # the mean of z_1 = -d and z_2 = -2 d
      [-1.5, 3.0]
    """
    who = "schedule_free_eval_params"
    found = find_state(state, ScheduleFreeState, who)
    _checks.check_updates(who, params, found.z, "iterate z")

    def leaf(y, z):
        dtype = _tree.compute_dtype(y.dtype, z.dtype)
        weight = 1 - 1 / found.b1.astype(_tree.real_dtype(dtype))
        y32 = y.astype(dtype)
        return (y32 + weight * (z.astype(dtype) - y32)).astype(jnp.result_type(y))

    return jax.tree.map(leaf, params, found.z)
