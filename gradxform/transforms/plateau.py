"""Reducing the step size when the loss stops improving (PyTorch's ``ReduceLROnPlateau``)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state
from gradxform._types import StepCount


class ReduceLROnPlateauState(NamedTuple):
    """The state of :func:`reduce_on_plateau`.

    ``scale``: the factor applied to the updates (starts at 1). ``best_value``: the best mean
    loss so far (starts at ``inf``). ``plateau_count``: decisions since the last improvement
    (torch's ``num_bad_epochs``). ``cooldown_count``: decisions left in the cooldown.
    ``count``: losses accumulated towards the next decision; ``avg_value``: their mean.
    The field names are Optax's.
    Counters are int32, the rest the default float dtype.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.reduce_on_plateau(patience=0)
      >>> state = tx.init(jnp.zeros(2))
      >>> state.scale, state.best_value
      (Array(1., dtype=float32), Array(inf, dtype=float32))
      >>> _, state = tx.update(jnp.ones(2), state, value=1.0)  # the best so far
      >>> _, state = tx.update(jnp.ones(2), state, value=2.0)  # worse: with patience 0, x factor
      >>> state.scale, state.best_value
      (Array(0.1, dtype=float32), Array(1., dtype=float32))
    """

    scale: jax.Array
    best_value: jax.Array
    plateau_count: jax.Array
    cooldown_count: jax.Array
    count: StepCount
    avg_value: jax.Array


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
    *,
    eps: float = 1e-8,
    learning_rate: float | None = None,
) -> GradientTransformation:
    """Multiplies updates by a scale that drops by ``factor`` when the loss stops improving.

    Each update takes the loss as ``update(updates, state, params, value=loss)`` (inside
    :func:`gradxform.chain`, pass ``value=loss`` to the chain's update). Every
    ``accumulation_size`` calls, the mean ``v`` of their losses is compared with the best so
    far, as ``torch.optim.lr_scheduler.ReduceLROnPlateau(mode="min")`` does::

        improved = v < best * (1 - rtol) - atol
        best, bad = (v, 0) if improved else (best, bad + 1)
        if cooldown_left > 0:  cooldown_left -= 1;  bad = 0
        if bad > patience:     new = max(scale * factor, min_scale)
                               if lr * (scale - new) > eps:  scale = new
                               cooldown_left = cooldown;  bad = 0
        u <- scale * u

    ``rtol`` alone is torch's ``threshold_mode="rel"`` and ``atol`` alone its ``"abs"``; given
    both, an improvement must clear both margins at once. The scale decided by a call applies
    to that call's updates (the loss of the current params is known before they change), where
    torch's applies from the next ``optimizer.step()``; the sequence of scales is torch's.

    ``eps`` is torch's rule for tiny reductions: torch lowers the learning rate only when that
    lowers it by more than ``eps`` (``old_lr - new_lr > eps``), and otherwise leaves it, while
    the cooldown and the count of bad decisions restart as after a reduction. The learning rate
    here is ``lr * scale``, with ``lr`` the rate of the optimizer this transformation scales,
    which it cannot see: pass it as ``learning_rate`` to get torch's decisions exactly. Without
    it (``None``) ``lr`` is 1, and ``eps`` applies to the scale itself. ``eps=0`` makes every
    reduction, however small.

    Args:
      factor: the multiplier of the scale at each reduction, in [0, 1).
      patience: how many decisions without improvement are tolerated before a reduction.
      rtol: the relative improvement needed, in [0, 1) (torch's ``threshold``).
      atol: the absolute improvement needed (>= 0).
      cooldown: decisions after a reduction during which bad decisions are not counted.
      accumulation_size: how many losses are averaged into one decision (>= 1).
      min_scale: the floor of the scale, in [0, 1] (torch's ``min_lr / lr``).
      eps: the smallest change of the learning rate that a reduction makes (>= 0; torch's
        ``eps``, whose default this is).
      learning_rate: the base learning rate ``lr`` of the optimizer being scaled, a number
        (>= 0), which ``eps`` is compared in units of; ``None`` compares ``eps`` with the scale.

    Returns:
      A transformation whose state is :class:`ReduceLROnPlateauState`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> opt = gx.reduce_on_plateau(factor=0.5, patience=1)
      >>> state = opt.init(None)
      >>> for loss in [1.0, 1.0, 1.0, 1.0]:
      ...     u, state = opt.update(jnp.ones(1), state, value=loss)
      >>> float(state.scale)
      0.5
    """
    who = "reduce_on_plateau"
    _validate.probability(who, "factor", factor)
    _validate.probability(who, "rtol", rtol)
    _validate.non_negative(who, "atol", atol)
    _validate.probability(who, "min_scale", min_scale, closed=True)
    # Injected counts are arrays; the decision below compares with them as arrays.
    _validate.count(who, "patience", patience, minimum=0, traced_ok=True)
    _validate.count(who, "cooldown", cooldown, minimum=0, traced_ok=True)
    _validate.count(who, "accumulation_size", accumulation_size, traced_ok=True)
    _validate.non_negative(who, "eps", eps)
    if learning_rate is not None:
        _validate.non_negative(who, "learning_rate", learning_rate)

    def init_fn(params):
        del params
        dtype = _tree.default_float_dtype()
        # One array per leaf: leaves sharing a buffer could not all be donated.
        return ReduceLROnPlateauState(
            scale=jnp.ones([], dtype),
            best_value=jnp.full([], jnp.inf, dtype),
            plateau_count=jnp.zeros([], jnp.int32),
            cooldown_count=jnp.zeros([], jnp.int32),
            count=jnp.zeros([], jnp.int32),
            avg_value=jnp.zeros([], dtype),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        expect_state(who, state, ReduceLROnPlateauState)
        _checks.check_against_params(who, updates, params)
        if value is None:
            raise ValueError(
                f"{who} needs the loss: call `update(updates, state, params, value=loss)` "
                "(with `chain`, pass `value=loss` to the chain's update)"
            )
        if jnp.shape(value) != ():
            raise ValueError(f"{who}: `value` must be a scalar loss, got shape {jnp.shape(value)}")
        dtype = state.avg_value.dtype
        count = state.count + 1
        # Optax's running mean; with one loss per decision (torch's case) it is the loss exactly.
        mean = (state.count.astype(dtype) * state.avg_value + jnp.asarray(value).astype(dtype)) / (
            count.astype(dtype)
        )
        decide = count >= accumulation_size

        # The decision, computed every call and kept only when `decide` (no branch on data).
        improved = mean < state.best_value * (1 - rtol) - atol
        best_value = jnp.where(improved, mean, state.best_value)
        plateau_count = jnp.where(improved, 0, _tree.safe_increment(state.plateau_count))
        in_cooldown = state.cooldown_count > 0
        cooldown_count = jnp.where(in_cooldown, state.cooldown_count - 1, state.cooldown_count)
        plateau_count = jnp.where(in_cooldown, 0, plateau_count)
        reduce = plateau_count > patience
        reduced = jnp.maximum(state.scale * factor, min_scale).astype(dtype)
        change = state.scale - reduced
        if learning_rate is not None:
            change = change * jnp.asarray(learning_rate).astype(dtype)
        large_enough = change > jnp.asarray(eps).astype(dtype)
        scale = jnp.where(reduce & large_enough, reduced, state.scale)
        cooldown_count = jnp.where(reduce, cooldown, cooldown_count)
        plateau_count = jnp.where(reduce, 0, plateau_count)

        def pick(decided, accumulating):
            return jnp.where(decide, decided, accumulating).astype(jnp.result_type(accumulating))

        new_state = ReduceLROnPlateauState(
            scale=pick(scale, state.scale),
            best_value=pick(best_value, state.best_value),
            plateau_count=pick(plateau_count, state.plateau_count),
            cooldown_count=pick(cooldown_count, state.cooldown_count),
            count=pick(0, count),
            avg_value=pick(0, mean),
        )
        return _tree.tree_scale(new_state.scale, updates), new_state

    return GradientTransformation(init_fn, update_fn)
