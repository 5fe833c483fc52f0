"""What the element-wise check (:mod:`gradxform.wrappers.elementwise`) knows about a value of
``inner``'s program on one device's slices: a :class:`Mark`.

Marks, best first: ``R`` the same in both programs (constants, step counts, whole-model sums
after ``psum``); ``E`` each element from the same element of the inputs; ``SUM`` linear in sums
over all the elements of slices of values that are zero at the padding, right once summed over
the devices; ``PART`` non-linear in such sums; ``PADDED`` a sum over the padding of values not
known to be zero there; ``UNKNOWN`` from a primitive not on the list; ``MIXED`` combines
elements or depends on their positions. A result takes its operands' worst mark, or worse.

**Values at the padding.** Each leaf is padded with zeros to ``n * k`` elements, and ``inner``
computes at the padded positions too. What an ``R`` or ``E`` value is there (its "pad") is one
of:

- a tuple of 0-d NumPy arrays: the values it may take there, exactly (usually one; a zero of
  unknown sign is ``(+0, -0)``), as the rules of :mod:`gradxform.wrappers.primitive_table`
  compute them;
- :data:`UNIFORM`: a value equal on every device and at every position (a step size, a norm
  after ``psum``). It is taken to be finite and non-zero where it multiplies or divides a zero:
  where it is not, it gives infinities or NaNs at the parameters' own elements too, so that the
  result on the whole parameters is not finite either;
- :data:`FINITE`: finite, its value not known exactly (``rsqrt`` of a known positive value);
- ``None``: not known.

The cause of an ``E`` mark says why it is not known to be zero there, for the error that a sum
of it raises.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

R, E, SUM, PART, PADDED, UNKNOWN, MIXED = range(7)
UNIFORM = "uniform"  # the pad of a value equal on every device and at every position
FINITE = "finite"  # the pad of a value known only to be finite there
Pad = tuple | str | None
_MOST_VALUES = 4  # more possible values than this at a position: not known


class Mark(NamedTuple):
    """What a value is on slices: ``level`` (``R`` ... ``MIXED``), ``cause`` (what made it
    so, for errors) and, for ``R`` and ``E``, ``pad``: its value at the padded positions."""

    level: int
    cause: str = ""
    pad: Pad = None


def value_set(values: Sequence[Any], dtype: Any) -> tuple | None:
    """The distinct values (bit for bit) of ``values`` in ``dtype``; ``None`` if too many."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # complex to real drops the imaginary part, as in XLA
        arrays = [np.asarray(v).astype(dtype) for v in values]
    distinct = {a.tobytes(): a for a in arrays}
    # XLA may flush subnormal numbers to zero: they are not known exactly.
    tiny = lambda a: jnp.issubdtype(a.dtype, jnp.inexact) and 0 < abs(a) < jnp.finfo(a.dtype).tiny  # noqa: E731
    if len(distinct) > _MOST_VALUES or any(map(tiny, arrays)):
        return None
    return tuple(distinct.values())


def zeros(dtype: Any) -> tuple:
    """A zero of unknown sign in ``dtype``."""
    signs: tuple[complex, ...] = (0.0, -0.0) if np.issubdtype(dtype, np.floating) else (0,)
    if np.issubdtype(dtype, np.complexfloating):
        signs = tuple(complex(a, b) for a in (0.0, -0.0) for b in (0.0, -0.0))
    return value_set(signs, dtype) or ()


def is_zero(pad: Pad) -> bool:
    """Whether ``pad`` is known to be zero (of either sign) at every padded position."""
    return isinstance(pad, tuple) and bool(pad) and all(v == 0 for v in pad)


def describe(pad: Pad) -> str:
    """``pad`` in words, for error messages."""
    if isinstance(pad, tuple):
        return " or ".join(str(v.item()) for v in pad)
    if pad is UNIFORM or pad is FINITE:
        return "a value equal on every device" if pad is UNIFORM else "a finite value"
    return "not known"


def join_pads(pads: Sequence[Pad], dtype: Any = None) -> Pad:
    """What a value that is any one of ``pads`` is at the padding."""
    known = [p for p in pads if isinstance(p, tuple)]
    if pads and len(known) == len(pads):
        values = [v for p in known for v in p]
        return value_set(values, dtype or values[0].dtype) if values else None
    return UNIFORM if pads and all(p is UNIFORM for p in pads) else None


def finite(pad: Pad) -> bool:
    """Whether ``pad`` is finite (:data:`UNIFORM` is taken to be)."""
    if pad is UNIFORM or pad is FINITE:
        return True
    return isinstance(pad, tuple) and all(np.all(np.isfinite(v)) for v in pad)


def join(marks: Iterable[Mark]) -> Mark:
    """A value that may be any one of ``marks``: the worst level, and the pads joined."""
    marks = list(marks)
    if not marks:
        return Mark(R, "", UNIFORM)
    level = max(m.level for m in marks)
    if level > E:
        return Mark(level, next(m.cause for m in marks if m.level == level))
    pads = [m.pad for m in marks]
    # Different values (a loop's, a state's over the steps) are not followed, but for zeros.
    pad = pads[0] if all(_key(p) == _key(pads[0]) for p in pads) else None
    if pad is None and all(map(is_zero, pads)):
        pad = join_pads(pads)
    if level == R:  # a value equal on every device
        return Mark(R, "", pad if isinstance(pad, tuple) else UNIFORM)
    return Mark(E, "" if is_zero(pad) else next((m.cause for m in marks if m.cause), ""), pad)


def _key(pad: Pad) -> Any:
    return tuple((v.dtype.str, v.tobytes()) for v in pad) if isinstance(pad, tuple) else pad


def same(a: Mark, b: Mark) -> bool:
    """Whether two marks say the same."""
    return a.level == b.level and _key(a.pad) == _key(b.pad)
