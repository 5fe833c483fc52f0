"""Exponential, multiplicative and inverse-time decays: ``exponential_decay``,
``multiplicative_schedule``, ``inverse_time_decay``, ``warmup_exponential_decay_schedule``."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gradxform import _validate
from gradxform._tree import default_float_dtype
from gradxform._types import Schedule
from gradxform.schedules._common import (
    floating,
    optional_finite,
    rate_power,
    sequence,
    static_log,
    steps,
)
from gradxform.schedules._counts import as_count, default_int_dtype, floor_div, since, to_float
from gradxform.schedules.polynomial import build_polynomial

__all__ = [
    "exponential_decay",
    "inverse_time_decay",
    "multiplicative_schedule",
    "warmup_exponential_decay_schedule",
]

FACTOR_BLOCK = 128
"""How many factors :func:`multiplicative_schedule` evaluates per loop iteration."""


def _check_decay(
    who: str,
    transition_steps: int,
    decay_rate: ArrayLike,
    transition_begin: int,
    staircase: bool,
    end_value: ArrayLike | None,
) -> tuple[int, int]:
    """Checks the arguments :func:`exponential_decay` shares with its warmup variant."""
    transition_steps = steps(who, "transition_steps", transition_steps)
    _validate.positive(who, "decay_rate", decay_rate)
    transition_begin = steps(who, "transition_begin", transition_begin, minimum=0)
    _validate.boolean(who, "staircase", staircase)
    optional_finite(who, "end_value", end_value)
    return transition_steps, transition_begin


def build_exponential(
    init_value: ArrayLike,
    transition_steps: int,
    decay_rate: ArrayLike,
    transition_begin: int,
    staircase: bool,
    end_value: ArrayLike | None,
) -> Schedule:
    """The decay of :func:`exponential_decay`, arguments already checked."""
    log_rate = static_log(decay_rate)

    def schedule(count: ArrayLike) -> jax.Array:
        elapsed = since(as_count(count), transition_begin)
        if staircase:
            exponent = to_float(floor_div(elapsed, transition_steps))
        else:
            exponent = to_float(elapsed) / float(transition_steps)
        value = floating(init_value) * rate_power(decay_rate, log_rate, exponent)
        if end_value is not None:
            end = floating(end_value)
            decaying = floating(decay_rate) < 1
            value = jnp.where(decaying, jnp.maximum(value, end), jnp.minimum(value, end))
        return value

    return schedule


def exponential_decay(
    init_value: ArrayLike,
    transition_steps: int,
    decay_rate: ArrayLike,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: ArrayLike | None = None,
) -> Schedule:
    """Exponential decay (or growth) of ``init_value``.

    ::

        t = max(k - transition_begin, 0)
        p = floor(t / transition_steps) if staircase else t / transition_steps
        s(k) = init_value * decay_rate ** p,  then clipped at end_value

    ``end_value`` is a floor when ``decay_rate < 1`` and a ceiling when it is > 1.
    ``torch.optim.lr_scheduler.StepLR(step_size, gamma)`` is
    ``exponential_decay(lr, step_size, gamma, staircase=True)``, ``ExponentialLR(gamma)`` is
    ``exponential_decay(lr, 1, gamma)``, and Keras' ``ExponentialDecay`` has the same formula.

    Args:
      init_value: the value until ``transition_begin``.
      transition_steps: the steps over which the value is multiplied by ``decay_rate`` (a whole
        number in [1, 2**53]).
      decay_rate: the factor per ``transition_steps`` (> 0).
      transition_begin: the steps before the decay starts (in [0, 2**53]).
      staircase: decay in whole steps of ``transition_steps`` (an integer ``p``).
      end_value: optional bound where the decay (or growth) stops.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.exponential_decay(1.0, transition_steps=2, decay_rate=0.5, staircase=True)
      >>> [float(sched(k)) for k in range(6)]
      [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """
    who = "exponential_decay"
    _validate.finite(who, "init_value", init_value)
    transition_steps, transition_begin = _check_decay(
        who, transition_steps, decay_rate, transition_begin, staircase, end_value
    )
    return build_exponential(
        init_value, transition_steps, decay_rate, transition_begin, staircase, end_value
    )


def inverse_time_decay(
    init_value: ArrayLike,
    *,
    decay_rate: ArrayLike,
    decay_steps: int = 1,
    staircase: bool = False,
) -> Schedule:
    """Inverse time decay, as Keras' ``InverseTimeDecay``.

    ::

        p = floor(k / decay_steps) if staircase else k / decay_steps
        s(k) = init_value / (1 + decay_rate * p)

    Optax has no schedule of this name, so every argument after ``init_value`` is keyword-only
    (Keras takes ``(initial_learning_rate, decay_steps, decay_rate)`` in that order).

    Args:
      init_value: the value at ``k = 0``.
      decay_rate: how fast the value falls (>= 0).
      decay_steps: the unit of ``k`` in the formula (a whole number in [1, 2**53]).
      staircase: use whole multiples of ``decay_steps``.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.inverse_time_decay(1.0, decay_rate=1.0, decay_steps=2)
      >>> [float(sched(k)) for k in (0, 2, 6)]
      [1.0, 0.5, 0.25]
    """
    who = "inverse_time_decay"
    _validate.finite(who, "init_value", init_value)
    _validate.non_negative(who, "decay_rate", decay_rate)
    decay_steps = steps(who, "decay_steps", decay_steps)
    _validate.boolean(who, "staircase", staircase)

    def schedule(count: ArrayLike) -> jax.Array:
        k = as_count(count)
        p = to_float(floor_div(k, decay_steps)) if staircase else to_float(k) / decay_steps
        return floating(init_value) / (1 + floating(decay_rate) * p)

    return schedule


def warmup_exponential_decay_schedule(
    init_value: ArrayLike,
    peak_value: ArrayLike,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: ArrayLike,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: ArrayLike | None = None,
) -> Schedule:
    """A linear warmup from ``init_value`` to ``peak_value``, then :func:`exponential_decay`.

    ::

        s(k) = init_value + (peak_value - init_value) * k / warmup_steps    for k < warmup_steps
        s(k) = exponential_decay(peak_value, transition_steps, decay_rate, transition_begin,
                                 staircase, end_value)(k - warmup_steps)     otherwise

    Args:
      init_value: the value at ``k = 0``.
      peak_value: the value at ``k = warmup_steps``.
      warmup_steps: the length of the warmup (in [0, 2**53]).
      transition_steps: see :func:`exponential_decay` (in [1, 2**53]).
      decay_rate: see :func:`exponential_decay` (> 0).
      transition_begin: steps after the warmup before the decay starts (in [0, 2**53]).
      staircase: see :func:`exponential_decay`.
      end_value: see :func:`exponential_decay`.

    Returns:
      The schedule.

    Example:
      >>> import gradxform as gx
      >>> sched = gx.warmup_exponential_decay_schedule(0.0, 1.0, 2, 1, decay_rate=0.5)
      >>> [float(sched(k)) for k in range(5)]
      [0.0, 0.5, 1.0, 0.5, 0.25]
    """
    who = "warmup_exponential_decay_schedule"
    _validate.finite(who, "init_value", init_value)
    _validate.finite(who, "peak_value", peak_value)
    warmup_steps = steps(who, "warmup_steps", warmup_steps, minimum=0)
    transition_steps, transition_begin = _check_decay(
        who, transition_steps, decay_rate, transition_begin, staircase, end_value
    )
    decay = build_exponential(
        peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value
    )
    if warmup_steps == 0:
        return decay
    warmup = build_polynomial(init_value, peak_value, 1, warmup_steps, 0)
    return sequence([warmup, decay], [warmup_steps])


def multiplicative_schedule(
    init_value: ArrayLike, *, factor_fn: Callable[[jax.Array], ArrayLike]
) -> Schedule:
    """``init_value`` times ``factor_fn`` of every step so far, as torch's ``MultiplicativeLR``.

    ::

        s(k) = init_value * factor_fn(1) * factor_fn(2) * ... * factor_fn(k)

    so ``s(0) = init_value``. ``torch.optim.lr_scheduler.MultiplicativeLR(lr_lambda)`` on an
    optimizer whose learning rate is ``lr`` is ``multiplicative_schedule(lr,
    factor_fn=lr_lambda)``, with ``lr_lambda`` written in ``jax.numpy`` (``jnp.where`` rather
    than ``if``): it is called with a traced integer count, one at a time (under ``vmap``).

    Cost: a product over ``k`` steps has no shortcut for a general ``factor_fn``. It is a
    loop of ``ceil(k / 128)`` iterations, each evaluating ``factor_fn`` on 128 counts at once
    and multiplying them in: ``O(k)`` work at every call, which inside an optimizer grows with
    the step count (about 8,000 iterations at ``k = 10**6``). The loop runs under ``jit`` and
    ``vmap`` for any ``k`` up to the largest count of the default integer dtype. A constant
    factor ``f`` is ``exponential_decay(init_value, 1, f)``, whose closed form ``f ** k`` costs
    the same at every ``k``. The product is computed in the default float dtype: ``k`` factors
    (each already rounded by ``factor_fn``) cost up to ``k`` roundings, against ~3 for a closed
    form.

    Args:
      init_value: the value at ``k = 0``.
      factor_fn: ``j -> factor`` for step ``j >= 1``, in ``jax.numpy``, jit-able in ``j``.

    Returns:
      The schedule.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> halve_even = lambda j: jnp.where(j % 2 == 0, 0.5, 1.0)
      >>> sched = gx.multiplicative_schedule(1.0, factor_fn=halve_even)
      >>> [float(sched(k)) for k in range(6)]
      [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """
    who = "multiplicative_schedule"
    _validate.finite(who, "init_value", init_value)
    _validate.function(who, "factor_fn", factor_fn)

    def block_product(first: jax.Array, k: jax.Array) -> jax.Array:
        """The product of factor_fn(j) for j in [first, first + FACTOR_BLOCK) with j <= k."""
        js = first + jnp.arange(FACTOR_BLOCK, dtype=first.dtype)
        factors = jnp.broadcast_to(floating(jax.vmap(factor_fn)(js)), js.shape)
        # js > 0: the last block may run past the integer range and wrap around.
        counted = (js > 0) & (js.astype(k.dtype) <= k[..., None])
        return jnp.prod(jnp.where(counted, factors, 1), axis=-1)

    def schedule(count: ArrayLike) -> jax.Array:
        k = as_count(count)
        if isinstance(k, np.ndarray | np.generic):  # static: NumPy int64, into the loop's ints
            top = int(np.iinfo(default_int_dtype()).max)
            if np.any(k > top):
                raise OverflowError(
                    f"{who}: the product runs over counts of the default integer dtype, up to "
                    f"{top}; got {count!r}"
                )
            k = jnp.asarray(k, default_int_dtype())
        largest = jnp.max(k, initial=0)
        # ceil(largest / FACTOR_BLOCK), without the sum that overflows at the top of the range.
        blocks = largest // FACTOR_BLOCK + (largest % FACTOR_BLOCK > 0)
        blocks = blocks.astype(default_int_dtype())

        def body(carry):
            i, product = carry
            first = i * FACTOR_BLOCK + 1
            return i + 1, product * block_product(first, k)

        start = (jnp.zeros([], blocks.dtype), jnp.ones(jnp.shape(k), default_float_dtype()))
        _, product = jax.lax.while_loop(lambda carry: carry[0] < blocks, body, start)
        return floating(init_value) * product

    return schedule
