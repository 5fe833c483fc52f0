"""Validation of hyperparameters, done once in each factory, in plain Python.

Only static values (Python and NumPy numbers) are checked: arrays and tracers (injected or
vmapped hyperparameters) and schedules pass through, since their values are not known here.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def is_static_number(value: Any) -> bool:
    """True for Python and NumPy real numbers (not bools, arrays, tracers or callables)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and np.issubdtype(value.dtype, np.number)
    return isinstance(value, numbers.Real | np.number)


def is_static_zero(value: Any) -> bool:
    """True only when ``value`` is known, now, to be zero."""
    return is_static_number(value) and float(value) == 0.0


def is_static_nonzero(value: Any) -> bool:
    """True only when ``value`` is known, now, to be non-zero."""
    return is_static_number(value) and float(value) != 0.0


def _fail(who: str, name: str, value: Any, requirement: str) -> None:
    raise ValueError(f"{who}: `{name}` must be {requirement}, got {value!r}")


def non_negative(who: str, name: str, value: Any) -> None:
    if is_static_number(value) and not float(value) >= 0:
        _fail(who, name, value, ">= 0")


def positive(who: str, name: str, value: Any) -> None:
    if is_static_number(value) and not float(value) > 0:
        _fail(who, name, value, "> 0")


def in_unit_interval(who: str, name: str, value: Any, *, closed_right: bool = False) -> None:
    """``0 <= value < 1`` (or ``<= 1`` with ``closed_right``)."""
    if not is_static_number(value):
        return
    v = float(value)
    ok = 0 <= v <= 1 if closed_right else 0 <= v < 1
    if not ok:
        _fail(who, name, value, "in [0, 1]" if closed_right else "in [0, 1)")


def learning_rate(who: str, value: Any) -> None:
    """A learning rate is a non-negative number or a schedule (a callable)."""
    if callable(value):
        return
    if is_static_number(value):
        non_negative(who, "learning_rate", value)
        return
    if isinstance(value, str | bytes | bool) or value is None:
        raise TypeError(
            f"{who}: `learning_rate` must be a number or a schedule (a function of the step "
            f"count), got {value!r}"
        )
