"""The update count ``k`` a schedule is called with, and exact arithmetic between it and steps.

A schedule accepts ``k`` as

- a Python or NumPy integer, a NumPy integer array, or a list of Python ints: a *static*
  count, computed on in NumPy int64, exact for every count below ``2**63`` (a Python int beyond
  int32 included);
- a JAX integer array, possibly traced (the optimizer's int32 counter): computed on in the
  default integer dtype (int32, or int64 under ``jax_enable_x64``), exact;
- a float (Python, NumPy or JAX): computed on in the default float dtype. A float count is an
  exact number, only as fine as its dtype (float32 holds every whole number up to ``2**24``).
  Comparisons with steps are exact (through the nearest float on the correct side of the step)
  and differences from steps are rounded once; a position within a cycle (``k mod period``)
  uses the period rounded to the float dtype, exact while the dtype holds the period.

Step arguments (lengths, boundaries) are static Python ints up to ``2**53`` and may lie beyond
the count's integer range (a decay over ``1e10`` steps driven by the int32 counter). The helpers
here never let such a step meet the count in integer arithmetic where it would overflow: a
comparison with a step beyond the range is decided when the program is built, and a difference
``c - k`` is split as ``(c - a) + (a - k)`` around an anchor ``a`` inside the range, each part
exact before it is rounded, so the float result is within an ulp or two.

A count below 0 is taken as 0, so every schedule holds its first value there.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gradxform._tree import default_float_dtype

Count = np.ndarray | np.int64 | jax.Array
"""A count as the helpers take it: a NumPy int64 array or scalar (static), or a JAX integer or
float array in the default dtype; never below 0."""

Flag = np.ndarray | np.bool_ | jax.Array
"""A comparison of a :data:`Count` with a step: booleans of the count's kind and shape."""

INT64_MAX = int(np.iinfo(np.int64).max)


def default_int_dtype() -> np.dtype:
    """int64 when ``jax_enable_x64`` is on, else int32."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.int64))


def as_count(count: ArrayLike) -> Count:
    """``max(count, 0)`` as a :data:`Count` (see the module docstring for the three kinds)."""
    if isinstance(count, bool | np.bool_) or (
        isinstance(count, np.ndarray | jax.Array) and count.dtype == bool
    ):
        raise TypeError(f"a schedule's count must be a number of updates, got {count!r}")
    if isinstance(count, list | tuple):  # Python ints of any size: through NumPy, not int32
        count = np.asarray(count)
    if isinstance(count, numbers.Integral):
        if not -INT64_MAX <= int(count) <= INT64_MAX:
            raise OverflowError(
                f"a schedule's count must be below 2**63 in magnitude (it is computed on in "
                f"int64, exactly), got {count!r}"
            )
        return np.maximum(np.asarray(int(count), np.int64), 0)
    if isinstance(count, np.ndarray) and np.issubdtype(count.dtype, np.integer):
        if count.dtype == np.uint64 and np.any(count > INT64_MAX):
            raise OverflowError(
                f"a schedule's count must be below 2**63 in magnitude, got {count!r}"
            )
        return np.maximum(count.astype(np.int64), 0)
    try:
        k = jnp.asarray(count)
    except TypeError as error:
        raise TypeError(f"a schedule's count must be a number of updates, got {count!r}") from error
    if jnp.issubdtype(k.dtype, jnp.integer):
        int_dtype = default_int_dtype()
        # An integer dtype that fits is widened exactly; uint32 without x64 does not fit int32
        # and, like uint64, is computed on as a float.
        if jnp.iinfo(k.dtype).max <= jnp.iinfo(int_dtype).max:
            return jnp.maximum(k.astype(int_dtype), 0)
    elif not jnp.issubdtype(k.dtype, jnp.floating):
        raise TypeError(f"a schedule's count must be a real number, got {count!r}")
    return jnp.maximum(k.astype(default_float_dtype()), 0)


def as_argument(k: Count) -> ArrayLike:
    """``k`` for another schedule (possibly a user's function): a static scalar as a Python
    int, which JAX refuses loudly where it does not fit, rather than a NumPy int64 it would
    silently wrap to int32."""
    if _is_static(k) and np.ndim(k) == 0:
        return int(k)
    return k


def _top(k: Count) -> int | None:
    """The largest value of ``k``'s integer dtype; ``None`` for a float count."""
    if jnp.issubdtype(k.dtype, jnp.integer):
        return int(jnp.iinfo(k.dtype).max)
    return None


def _is_static(k: Count) -> bool:
    return isinstance(k, np.ndarray | np.generic)


def _xp(k: Count) -> Any:
    """The array module for ``k``: NumPy for a static count, ``jax.numpy`` otherwise."""
    return np if _is_static(k) else jnp


def _fill(k: Count, value: bool) -> Flag:
    return _xp(k).full(np.shape(k), value)


def to_float(k: Count) -> jax.Array:
    """``k`` in the default float dtype (rounded once)."""
    if isinstance(k, jax.Array):
        return k.astype(default_float_dtype())
    return jnp.asarray(np.asarray(k, np.float64), default_float_dtype())


# A float count is an exact number, and so is a step: a step the float dtype does not hold is
# compared through the nearest float on the correct side of it, and subtracted in two parts.


def _round(c: int, direction: float) -> float:
    """The float of the default dtype nearest to ``c`` towards ``direction`` (+-inf)."""
    dtype = default_float_dtype().type
    f = dtype(float(c))  # the nearest float, up to one more ulp when c needs two roundings
    beyond = (lambda g: int(g) < c) if direction > 0 else (lambda g: int(g) > c)
    if beyond(f):
        f = np.nextafter(f, dtype(direction))
    elif not beyond(np.nextafter(f, dtype(-direction))):
        f = np.nextafter(f, dtype(-direction))
    return float(f)


def _split(c: int) -> tuple[float, float]:
    """``c`` as ``high + low``: ``high`` the nearest float of the default dtype, ``low`` the
    (small, exactly held) rest."""
    high = default_float_dtype().type(float(c))
    return float(high), float(c - int(high))


def below(k: Count, c: int) -> Flag:
    """``k < c`` for a static integer ``c``."""
    top = _top(k)
    if top is None:
        return k < _round(c, math.inf)
    if c > top or c <= 0:  # k is in [0, top]
        return _fill(k, c > top)
    return k < c


def at_least(k: Count, c: int) -> Flag:
    """``k >= c`` for a static integer ``c``."""
    return _xp(k).logical_not(below(k, c))


def at_most(k: Count, c: int) -> Flag:
    """``k <= c`` for a static integer ``c``."""
    top = _top(k)
    if top is None:
        return k <= _round(c, -math.inf)
    if c >= top or c < 0:
        return _fill(k, c >= top)
    return k <= c


def since(k: Count, c: int) -> Count:
    """``max(k - c, 0)``, of the same kind as ``k`` (exact for integers; ``0 <= c``)."""
    top = _top(k)
    if top is None:
        return jnp.maximum(past(k, c), 0)
    xp = _xp(k)
    return xp.zeros_like(k) if c > top else xp.maximum(k - c, 0)  # no overflow: k >= 0


def until(c: int, k: Count) -> jax.Array:
    """``c - k`` as a float, for a static integer ``c`` of either sign and any size."""
    top = _top(k)
    if top is None:
        high, low = _split(c)
        return jnp.subtract(high, k) + low  # high - k is exact where k is near c
    anchor = min(max(c, 0), top)
    near = to_float(anchor - k)  # both in [0, top]: exact
    return near if c == anchor else near + float(c - anchor)


def past(k: Count, c: int) -> jax.Array:
    """``k - c`` as a float, for a static integer ``c``."""
    return -until(c, k)


def floor_div(k: Count, c: int) -> Count:
    """``floor(k / c)`` for a static integer ``c >= 1``."""
    top = _top(k)
    if top is None:
        return jnp.floor_divide(k, float(c))
    return _xp(k).zeros_like(k) if c > top else k // c


def modulo(k: Count, c: int) -> Count:
    """``k mod c`` for a static integer ``c >= 1``."""
    top = _top(k)
    if top is None:
        return jnp.mod(k, float(c))
    return k if c > top else k % c


def locate(k: Count, starts: Sequence[int], ends: Sequence[int]) -> tuple[Count, jax.Array]:
    """The interval ``i`` with ``starts[i] <= k < ends[i]`` and ``ends[i] - k`` as a float.

    ``starts`` are increasing static integers from 0, ``ends[i] == starts[i + 1]``; the last
    interval extends past every count. Intervals that start beyond ``k``'s integer range are
    dropped, and an end beyond it is split around the range's top, as in :func:`until`.
    """
    top = _top(k)
    if top is None:
        dtype = default_float_dtype()
        firsts = jnp.asarray([_round(s, math.inf) for s in starts], dtype)
        index = jnp.searchsorted(firsts, k, side="right") - 1
        high, low = (jnp.asarray(part, dtype) for part in zip(*map(_split, ends), strict=True))
        return index, (high[index] - k) + low[index]
    xp = _xp(k)
    kept = [s for s in starts if s <= top]
    anchors = [min(e, top) for e in ends[: len(kept)]]
    excess = np.asarray([float(e - a) for e, a in zip(ends, anchors, strict=False)])
    index = xp.searchsorted(xp.asarray(kept, k.dtype), k, side="right") - 1
    near = to_float(xp.asarray(anchors, k.dtype)[index] - k)  # both in [0, top]: exact
    return index, near + jnp.asarray(excess, default_float_dtype())[index]
