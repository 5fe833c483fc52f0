"""What the schedule families share: argument checks, float numerics, and the join of schedules.

The checks add to :mod:`gradxform._validate` only what is particular to schedules (a step
count up to ``2**53``, a static fraction, a ``{step: scale}`` mapping); everything else goes
through that module directly. The count arithmetic lives in :mod:`._counts`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gradxform import _validate
from gradxform._tree import default_float_dtype
from gradxform._types import Schedule
from gradxform.schedules._counts import Count, as_argument, as_count, below, since

MAX_STEPS = 2**53
"""The largest step argument: beyond it float64 no longer tells consecutive steps apart."""


# ----------------------------------------------------------------------------------------------
# Argument checks.


def steps(who: str, name: str, value: Any, *, minimum: int = 1) -> int:
    """A step argument: a whole number in ``[minimum, 2**53]`` (an integral float such as
    ``1e4`` is accepted); ``TypeError`` for a fraction, ``ValueError`` out of range."""
    _validate.count(who, name, value, minimum=minimum, maximum=MAX_STEPS, integral_float_ok=True)
    return int(value)


def optional_finite(who: str, name: str, value: Any) -> None:
    """``None``, or a finite real scalar."""
    if value is not None:
        _validate.finite(who, name, value)


def static_fraction(who: str, name: str, value: Any) -> float:
    """A number in the open interval ``(0, 1)`` known when the schedule is built (it places
    phase boundaries, so it cannot be traced)."""
    _validate.number(who, name, value, low=0, high=1, low_open=True, high_open=True)
    if _validate.is_traced(value):
        raise TypeError(
            f"{who}: `{name}` must be a number in (0, 1) known when the schedule is built (it "
            f"places the phase boundaries), got a traced value {value!r}"
        )
    return float(value)


def scales_by_boundary(who: str, boundaries_and_scales: Any) -> list[tuple[int, Any]]:
    """A ``{step: scale}`` mapping (or ``None``): steps in ``[0, 2**53]``, scales finite and
    ``>= 0``; returns its items sorted by step."""
    name = "boundaries_and_scales"
    if boundaries_and_scales is None:
        return []
    if not isinstance(boundaries_and_scales, Mapping):
        raise TypeError(
            f"{who}: `{name}` must be a dict {{step: scale}} or None, got {boundaries_and_scales!r}"
        )
    items = []
    for boundary, scale in boundaries_and_scales.items():
        step = steps(who, name, boundary, minimum=0)
        _validate.non_negative(who, f"{name}[{boundary!r}]", scale)
        items.append((step, scale))
    return sorted(items, key=lambda item: item[0])


# ----------------------------------------------------------------------------------------------
# Float numerics.


def floating(x: ArrayLike) -> jax.Array:
    """``x`` in the default float dtype, read when the schedule is called (so under x64 too)."""
    return jnp.asarray(x, default_float_dtype())


def broadcast(value: ArrayLike, k: Count) -> jax.Array:
    """``value`` in the default float dtype, broadcast to the shape of the count ``k``."""
    return jnp.broadcast_to(floating(value), np.shape(k))


def is_static_one(value: Any) -> bool:
    """True only for a static number equal to 1."""
    return _validate.is_static_number(value) and float(value) == 1.0


def to_power(base: jax.Array, exponent: Any) -> jax.Array:
    """``base ** exponent``, exact (no pow call) when the exponent is statically 1."""
    return base if is_static_one(exponent) else base ** floating(exponent)


def static_log(value: Any) -> float | None:
    """``log(value)`` in float64, now, when ``value`` is a static positive number.

    A schedule raises its rate to the power ``p`` through ``exp(p * log(rate))``. Rounding a
    rate such as 0.9999 to float32 first would make ``rate ** p`` drift by ``p`` times that
    rounding error (up to 3e-3 relative after 1e5 steps); rounding its logarithm instead keeps
    the error at a few float32 ulps of ``p * log(rate)``.
    """
    if _validate.is_static_number(value) and float(value) > 0:
        return math.log(float(value))
    return None


def rate_power(rate: Any, log_rate: float | None, exponent: jax.Array) -> jax.Array:
    """``rate ** exponent`` as ``exp(exponent * log(rate))``, with ``log_rate`` from above."""
    log = jnp.log(floating(rate)) if log_rate is None else floating(log_rate)
    return jnp.exp(exponent * log)


def cosine_weight(remaining: jax.Array, length: ArrayLike) -> jax.Array:
    """The weight of the start value in a cosine anneal that has ``remaining`` of ``length``
    steps to go: ``(1 + cos(pi * (1 - remaining / length))) / 2``.

    It is computed as ``sin(pi/2 * remaining / length) ** 2``, the same number, which keeps
    its relative precision as it goes to 0 at the end of the anneal, where ``1 + cos(.)``
    cancels (over a 300-step anneal in float32: at most 3e-7 relative error this way, 1.4e-4
    the other).
    """
    return jnp.sin((jnp.pi / 2) * (remaining / length)) ** 2


def interpolate(
    first: jax.Array, last: jax.Array, done: jax.Array, remaining: jax.Array, cosine: bool
) -> jax.Array:
    """From ``first`` to ``last``, ``done`` of the way there (``done + remaining == 1``).

    Written as a weighted sum, ``first * w(remaining) + last * w(done)``, rather than as
    ``first + (last - first) * done``: between values of the same sign each term keeps its
    relative precision, so a one-cycle warmup from ``peak / 25`` or a decay to ``peak / 1e5``
    is exact to a few ulps at both ends, where the difference form loses up to
    ``peak / value`` ulps. ``done`` and ``remaining`` are computed separately from integers.
    """
    if cosine:
        return first * cosine_weight(remaining, 1.0) + last * cosine_weight(done, 1.0)
    return first * remaining + last * done


# ----------------------------------------------------------------------------------------------
# Joining.


def sequence(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """``schedules[i](k - boundaries[i - 1])`` on ``[boundaries[i - 1], boundaries[i])``;
    arguments already checked (see :func:`gradxform.join_schedules`)."""

    def schedule(count: ArrayLike) -> jax.Array:
        k = as_count(count)
        value = broadcast(schedules[0](as_argument(k)), k)
        for boundary, later in zip(boundaries, schedules[1:], strict=True):
            shifted = later(as_argument(since(k, boundary)))
            value = jnp.where(below(k, boundary), value, broadcast(shifted, k))
        return value

    return schedule
