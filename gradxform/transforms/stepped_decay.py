"""Decoupled weight decay applied to the stepped params, ``p <- (p + u) (1 - lr wd)``: after
the learning rate as ``pytorch-optimizer``'s SOAP applies it (:func:`decay_after_step`), and
before it as GaLore's reference does (:func:`decay_before_learning_rate`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _checks, _tree, _validate
from gradxform._base import GradientTransformation, expect_state, require_params
from gradxform._types import ScalarOrSchedule, StepCount


class DecayAfterStepState(NamedTuple):
    """``count`` (int32): the learning rate's schedule step.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.decay_after_step(0.1, weight_decay=0.5), jnp.ones(2)
      >>> tx.update(jnp.zeros(2), tx.init(params), params)[1]
      DecayAfterStepState(count=Array(1, dtype=int32))
    """

    count: StepCount


def decay_after_step(
    learning_rate: ScalarOrSchedule,
    *,
    weight_decay: float = 0.0,
    skip_first_step: bool = False,
) -> GradientTransformation:
    """Decoupled weight decay of the stepped params, as ``pytorch-optimizer`` applies it::

        p <- (p + u) (1 - lr * weight_decay),   that is   u <- u - lr * weight_decay * (p + u)

    for the update ``u`` of the links before it (the learning rate included): the decay
    comes after the step rather than beside it (AdamW's ``p - lr wd p + u``); the two differ
    by ``lr * wd * u``.

    Args:
      learning_rate: ``lr``, a number or a schedule of the step count.
      weight_decay: ``wd`` (>= 0).
      skip_first_step: no decay on the first step (SOAP's, which only gathers statistics).

    Returns:
      A transformation whose state is :class:`DecayAfterStepState`. Needs ``params``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx, params = gx.decay_after_step(0.1, weight_decay=0.5), jnp.array([2.0, 4.0])
      >>> u, _ = tx.update(jnp.array([0.0, -2.0]), tx.init(params), params)
      >>> [round(float(x), 4) for x in u]  # u - 0.1 * 0.5 (p + u), p + u = (2, 2)
      [-0.1, -2.1]
    """
    who = "decay_after_step"
    _validate.learning_rate(who, learning_rate)
    _validate.non_negative(who, "weight_decay", weight_decay)
    _validate.boolean(who, "skip_first_step", skip_first_step)
    return decayed_after_step(who, learning_rate, weight_decay, skip_first_step)


def decayed_after_step(
    who: str, learning_rate: Any, weight_decay: Any, skip_first_step: bool
) -> GradientTransformation:
    """:func:`decay_after_step` with errors naming ``who``."""

    def leaf(u, p, lr, count):
        dtype = _tree.compute_dtype(u.dtype, p.dtype)
        c = _tree.cast_scalar(lr, dtype) * _tree.cast_scalar(weight_decay, dtype)
        u32 = u.astype(dtype)
        decayed = u32 - c * (p.astype(dtype) + u32)
        active = count > 0 if skip_first_step else True
        return jnp.where(active, decayed, u32).astype(_tree.update_dtype(u, p))

    return _stepped(who, learning_rate, "the decay is a multiple of the stepped params", leaf)


def decay_before_learning_rate(
    learning_rate: ScalarOrSchedule, weight_decay: Any, *, who: str
) -> GradientTransformation:
    """GaLore's reference decays the params after the step, ``p <- p' - lr * wd * p'`` with
    ``p' = p - lr * u``. Placed before the learning rate (which then scales the whole step)::

        u <- u + wd * (p - lr * u)      so that   p - lr * u_new = (p - lr * u) (1 - lr * wd)

    Before rather than after the learning rate, so that the last link is the learning rate
    whether or not the decay is there (an injected ``wd = 0`` then gives the plain program's
    numbers bit for bit: XLA may fuse ``p + lr * u`` into one rounding only when nothing
    comes between them). Not exported: it is :func:`gradxform.galore_adamw`'s decay link;
    :func:`decay_after_step` is the same decay placed after the learning rate (SOAP's).
    """
    _validate.learning_rate(who, learning_rate)
    _validate.non_negative(who, "weight_decay", weight_decay)

    def leaf(u, p, lr, count):
        del count
        dtype = _tree.compute_dtype(jnp.result_type(u), p.dtype)
        u = u.astype(dtype)
        new_p = p.astype(dtype) - _tree.cast_scalar(lr, dtype) * u
        return u + _tree.cast_scalar(weight_decay, dtype) * new_p

    return _stepped(who, learning_rate, "its weight decay shrinks the new params p - lr * u", leaf)


def _stepped(
    who: str, learning_rate: Any, why: str, leaf: Callable[..., jax.Array]
) -> GradientTransformation:
    """The transformation both decays share: ``leaf(u, p, lr, count)`` per leaf, a count."""

    def init_fn(params):
        del params
        return DecayAfterStepState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(who, state, DecayAfterStepState)
        require_params(who, params, why)
        _checks.check_updates(who, updates, params, "param")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        decayed = jax.tree.map(lambda u, p: leaf(u, p, lr, state.count), updates, params)
        return decayed, DecayAfterStepState(count=_tree.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)
