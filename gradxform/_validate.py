"""Validation of every public factory's arguments: one helper per kind of argument.

Each helper raises, naming the function (``who``), the argument and the value:

- ``TypeError`` for a value of the wrong kind: ``None``, a string, a bool where a number is
  expected, an array of more than one element (or of a shape other than ``()``) where a scalar
  is expected, a fraction where a whole number is expected;
- ``ValueError`` for a value of the right kind out of range: negative, NaN, infinite, beyond a
  bound.

Python and NumPy numbers and concrete arrays are checked in full. Traced values (hyperparameters
injected by :func:`gradxform.inject_hyperparams`, vmapped over, or passed inside ``jit``) are
checked for their kind and shape only, since their values are not known when the factory runs.

A static number may specialise the program (``is_static_zero(weight_decay)`` drops the decay
link); an array, even a concrete one, always gets the general program, correct for every value.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform._masks import is_mask_function

INT32_MAX = int(np.iinfo(np.int32).max)


# ----------------------------------------------------------------------------------------------
# Static or traced: what may specialise the program.


def is_static_number(value: Any) -> bool:
    """True for Python and NumPy real numbers (not bools, arrays, tracers or callables)."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and np.issubdtype(value.dtype, np.number)
    return isinstance(value, numbers.Real | np.number) and not isinstance(value, np.complexfloating)


def is_static_zero(value: Any) -> bool:
    """True only when ``value`` is a static number equal to zero."""
    return is_static_number(value) and float(value) == 0.0


def is_static_nonzero(value: Any) -> bool:
    """True only when ``value`` is a static number other than zero."""
    return is_static_number(value) and float(value) != 0.0


def is_traced(value: Any) -> bool:
    """True for a JAX tracer: a value whose number is not known while the factory runs."""
    return isinstance(value, jax.core.Tracer)


# ----------------------------------------------------------------------------------------------
# Numbers.


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray | jax.Array):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def _scalar(who: str, name: str, value: Any, what: str) -> float | None:
    """``value`` as a float, or ``None`` when it is traced; ``TypeError`` unless it is a real
    scalar (a Python or NumPy number, or an array of shape ``()`` and a real numeric dtype)."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{who}: `{name}` must be {what}, got the bool {value!r}")
    if isinstance(value, np.ndarray | jax.Array | np.generic):
        dtype = jnp.result_type(value)
        shape = tuple(np.shape(value))
        if shape != () or not (
            jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
        ):
            raise TypeError(
                f"{who}: `{name}` must be {what} (a scalar of shape ()), got {_describe(value)}"
            )
        if is_traced(value):
            return None
        return float(value)
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:  # an int too large for a float
            return -math.inf if value < 0 else math.inf
    raise TypeError(f"{who}: `{name}` must be {what}, got {_describe(value)}")


def number(
    who: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """A finite real scalar, optionally within ``[low, high]`` (``low_open``/``high_open``
    exclude the ends)."""
    parts = []
    if low is not None:
        parts.append(f"> {low:g}" if low_open else f">= {low:g}")
    if high is not None:
        parts.append(f"< {high:g}" if high_open else f"<= {high:g}")
    requirement = "a finite number" + (f" {' and '.join(parts)}" if parts else "")
    if low is not None and high is not None:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        requirement = f"a number in {left}{low:g}, {high:g}{right}"
    v = _scalar(who, name, value, requirement)
    if v is None:
        return
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        raise ValueError(f"{who}: `{name}` must be {requirement}, got {value!r}")


def finite(who: str, name: str, value: Any) -> None:
    """Any finite real scalar."""
    number(who, name, value)


def non_negative(who: str, name: str, value: Any) -> None:
    """A finite real scalar ``>= 0``."""
    number(who, name, value, low=0)


def positive(who: str, name: str, value: Any) -> None:
    """A finite real scalar ``> 0``."""
    number(who, name, value, low=0, low_open=True)


def probability(who: str, name: str, value: Any, *, closed: bool = False) -> None:
    """A decay or probability: in ``[0, 1)``, or ``[0, 1]`` with ``closed``."""
    number(who, name, value, low=0, high=1, high_open=not closed)


def at_least(who: str, name: str, value: Any, minimum: float, *, strict: bool = False) -> None:
    """A finite real scalar ``>= minimum`` (``> minimum`` with ``strict``)."""
    number(who, name, value, low=minimum, low_open=strict)


def count(
    who: str,
    name: str,
    value: Any,
    *,
    minimum: int = 1,
    maximum: int = INT32_MAX,
    traced_ok: bool = False,
    integral_float_ok: bool = False,
) -> None:
    """A whole number in ``[minimum, maximum]`` (by default a positive int32).

    ``traced_ok`` also accepts scalar arrays (an injected or vmapped count, which the code using
    it must handle as an array); concrete ones are checked like numbers. ``integral_float_ok``
    accepts floats such as ``1e4`` that are whole numbers.
    """
    requirement = (
        f"a whole number >= {minimum}"
        if maximum == math.inf
        else f"a whole number in [{minimum}, {maximum}]"
    )
    is_array = isinstance(value, np.ndarray | jax.Array)
    if is_array and not traced_ok:
        raise TypeError(
            f"{who}: `{name}` must be a Python int ({requirement}; it decides the program's "
            f"structure, so it cannot be an array), got {_describe(value)}"
        )
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{who}: `{name}` must be {requirement}, got the bool {value!r}")
    if isinstance(value, numbers.Integral):
        v: float | None = int(value)
    elif is_array or (integral_float_ok and isinstance(value, numbers.Real)):
        v = _scalar(who, name, value, requirement)
        if v is not None and not (math.isfinite(v) and float(v).is_integer()):
            raise (TypeError if math.isfinite(v) else ValueError)(
                f"{who}: `{name}` must be {requirement}, got {value!r}"
            )
    else:
        raise TypeError(f"{who}: `{name}` must be {requirement}, got {_describe(value)}")
    if v is not None and not minimum <= v <= maximum:
        raise ValueError(f"{who}: `{name}` must be {requirement}, got {value!r}")


def pair(
    who: str,
    name: str,
    value: Any,
    checks: tuple[Callable[[str, str, Any], None], Callable[[str, str, Any], None]],
    labels: tuple[str, str],
    *,
    ordered: bool = False,
) -> tuple[Any, Any]:
    """Two numbers given together (a tuple or list of two, as torch's ``etas=(0.5, 1.2)``),
    returned as a tuple.

    ``checks[i](who, labels[i], value[i])`` checks each; its error is raised again naming
    ``name`` and the whole pair, the kind kept (``TypeError`` or ``ValueError``). With
    ``ordered`` the first may not exceed the second when both are static numbers.
    """
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise TypeError(
            f"{who}: `{name}` must be a pair ({labels[0]}, {labels[1]}) of numbers, got "
            f"{_describe(value)}"
        )
    first, second = value
    for check, label, element in zip(checks, labels, value, strict=True):
        try:
            check(who, label, element)
        except (TypeError, ValueError) as error:
            reason = str(error).removeprefix(f"{who}: ")
            raise type(error)(f"{who}: `{name}` = {value!r}: {reason}") from None
    both_static = is_static_number(first) and is_static_number(second)
    if ordered and both_static and float(first) > float(second):
        raise ValueError(
            f"{who}: `{name}` must be a pair ({labels[0]}, {labels[1]}) with "
            f"{labels[0]} <= {labels[1]}, got {value!r}"
        )
    return first, second


# ----------------------------------------------------------------------------------------------
# Other kinds.


def boolean(who: str, name: str, value: Any) -> None:
    """A Python (or NumPy) bool: it decides the program's structure."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{who}: `{name}` must be True or False, got {_describe(value)}")


def dtype(who: str, name: str, value: Any, *, floating: bool = True) -> None:
    """``None`` or a dtype (a floating one with ``floating``)."""
    if value is None:
        return
    try:
        resolved = jnp.dtype(value)
    except TypeError:
        resolved = None
    if isinstance(value, bool | int | float) or resolved is None:
        raise TypeError(f"{who}: `{name}` must be None or a dtype, got {value!r}")
    if floating and not jnp.issubdtype(resolved, jnp.floating):
        raise TypeError(f"{who}: `{name}` must be a floating dtype, got {value!r}")


def choice(who: str, name: str, value: Any, options: Iterable[Any]) -> None:
    """One of ``options`` (strings, usually)."""
    options = tuple(options)
    if not isinstance(value, Hashable) or value not in options:
        listed = ", ".join(repr(o) for o in options)
        raise ValueError(f"{who}: `{name}` must be one of {listed}, got {value!r}")


def function(who: str, name: str, value: Any) -> None:
    """A callable."""
    if not callable(value):
        raise TypeError(f"{who}: `{name}` must be a function, got {_describe(value)}")


def scalar_or_schedule(
    who: str, name: str, value: Any, check: Callable[[str, str, Any], None] = finite
) -> None:
    """A schedule (a function of the step count), or a scalar passing ``check``."""
    if callable(value):
        return
    check(who, name, value)


def learning_rate(who: str, value: Any, name: str = "learning_rate") -> None:
    """A non-negative number or a schedule (a function of the update count)."""
    if value is None or isinstance(value, str | bytes):
        raise TypeError(
            f"{who}: `{name}` must be a number or a schedule (a function of the step count), "
            f"got {value!r}"
        )
    scalar_or_schedule(who, name, value, non_negative)


def axis_name(who: str, value: Any, *, optional: bool = True) -> None:
    """The name of a mapped axis (hashable; not a number or a bool), or ``None`` if optional."""
    if value is None and optional:
        return
    if value is None or isinstance(value, bool | numbers.Number) or not isinstance(value, Hashable):
        raise TypeError(
            f"{who}: `axis_name` must be the name of a mapped axis (the `axis_name` of "
            f"`jax.pmap`, or a mesh axis of `jax.shard_map`), got {value!r}"
        )


def mask(who: str, name: str, value: Any) -> None:
    """``None``, a mask function, or a tree whose leaves are Python bools.

    Whether a tree matches the params is only known at ``init``; its leaves are checked now.
    """
    if value is None or is_mask_function(value):
        return
    for leaf in jax.tree.leaves(value):
        if not isinstance(leaf, bool):
            raise TypeError(
                f"{who}: `{name}` must be a tree of Python bools with the params' structure (or a "
                f"prefix of it), or a function of the params returning one; found the leaf "
                f"{_describe(leaf)}"
            )
