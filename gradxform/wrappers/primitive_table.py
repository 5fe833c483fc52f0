"""What the element-wise check (:mod:`gradxform.wrappers.elementwise`) knows about each JAX
primitive: how it treats the elements of its operands (:func:`primitive_kind`), and what an
element-wise primitive gives at the padded positions of a slice (:func:`padding_value`, on the
values of :mod:`gradxform.wrappers.marks`).

Both are allow-lists that fail closed: a primitive missing from ``_TABLE`` is refused, and a
value at the padding that no rule below computes exactly is unknown, so that no sum over the
padding of it is accepted. Values are computed only by rules that are exact in every IEEE
implementation: ``+ - * /``, ``sqrt``, comparisons, selections and conversions on any known
values, and functions such as ``exp`` or ``sin`` only at zero, where their value is exact;
elsewhere these are known only to be finite (:data:`gradxform.wrappers.marks.FINITE`).

"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from gradxform.wrappers.marks import (
    FINITE,
    UNIFORM,
    Pad,
    finite,
    is_zero,
    join_pads,
    value_set,
    zeros,
)

# Each primitive the check knows, by how it treats it; every other primitive is refused.
_TABLE = {
    "elementwise": """abs acos acosh add add_any and asin asinh atan atan2 atanh bessel_i0e
        bessel_i1e bitcast_convert_type cbrt ceil clamp clz complex conj convert_element_type
        copy cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt igamma
        igamma_grad_a igammac imag integer_pow is_finite le lgamma log log1p logistic lt max min
        mul ne neg nextafter not or polygamma population_count pow real reduce_precision
        regularized_incomplete_beta rem round rsqrt select_n shift_left shift_right_arithmetic
        shift_right_logical sign sin sinh sqrt square stop_gradient sub tan tanh xor zeta""",
    "reshape": "reshape squeeze",
    "reduction": "reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or reduce_xor "
    "argmax argmin",
    # Known to move or combine elements: refused unless every operand and result is one element.
    "moves": """sort top_k approx_top_k gather slice dynamic_slice dynamic_update_slice
        concatenate pad split stack unstack tile reduce conv_general_dilated fft
        select_and_scatter select_and_scatter_add select_and_gather_add ragged_dot_general
        cholesky cholesky_update eig eigh svd qr lu lu_pivots_to_permutation triangular_solve
        schur hessenberg householder_product geqrf geqp3 ormqr tridiagonal tridiagonal_solve
        symmetric_product""",
    # Values made from positions (and random keys): a slice's positions are not its param's.
    "position": """iota random_bits rng_bit_generator rng_uniform random_gamma random_seed
        random_wrap random_unwrap random_fold_in random_split random_clone threefry2x32""",
    "collective": """psum psum_invariant pmax pmin all_gather all_gather_invariant all_to_all
        ppermute axis_index reduce_scatter pbroadcast ragged_all_to_all""",
    # No data moves: shard_map's typing of values, barriers, names, sharding annotations.
    "passthrough": "pvary pcast optimization_barrier name sharding_constraint reshard",
    "call": "jit pjit closed_call core_call custom_jvp_call custom_vjp_call remat2 checkpoint",
    # A rule of their own each.
    "": "broadcast_in_dim transpose rev dot_general cond while scan",
}
_KINDS = {name: kind or name for kind, names in _TABLE.items() for name in names.split()}


def primitive_kind(name: str) -> str:
    """How the check treats the primitive ``name``: a key of ``_TABLE`` (``"elementwise"``,
    ``"reshape"``, ``"reduction"``, ``"moves"``, ``"position"``, ``"collective"``,
    ``"passthrough"``, ``"call"``), the name itself where it has a rule of its own
    (``"transpose"``, ``"scan"``, ...), or ``"unknown"``: refused."""
    if name.startswith(("cum", "scatter", "reduce_window")):
        return "moves"
    return _KINDS.get(name, "unknown")


# Exact on any known operands: correctly rounded in IEEE arithmetic, in NumPy as in XLA.
_EXACT: dict[str, Callable[..., Any]] = {
    "add": np.add, "add_any": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "neg": np.negative, "abs": np.abs, "sign": np.sign, "sqrt": np.sqrt, "square": np.square,
    "max": np.maximum, "min": np.minimum, "floor": np.floor, "ceil": np.ceil, "real": np.real,
    "imag": np.imag, "conj": np.conj, "copy": np.asarray, "is_finite": np.isfinite,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
    "ge": np.greater_equal, "and": np.bitwise_and, "or": np.bitwise_or,
    "xor": np.bitwise_xor, "not": np.invert,
}  # fmt: skip
_NOT_ON_INTEGERS = {"div", "sqrt"}  # integer division truncates in XLA, floors in NumPy
# Exact at zero only: f(+-0) = +-0 for these (odd functions), and the value given for these.
_ODD = {"asin", "asinh", "atan", "atanh", "cbrt", "erf", "erf_inv", "expm1", "log1p", "sin"}
_ODD |= {"sinh", "tan", "tanh"}
_AT_ZERO = {"exp": 1.0, "exp2": 1.0, "cos": 1.0, "cosh": 1.0, "erfc": 1.0, "logistic": 0.5}


def _at_zero(name: str, params: dict, v: np.ndarray) -> Any:
    """``name`` at the one operand ``v``, where it is exact: mostly only at zero."""
    real = not np.iscomplexobj(v)
    if name == "integer_pow" and real and (v == 0 or v == 1):
        return np.power(v, params["y"])  # exact at 0 and 1, also for negative exponents
    if v != 0:
        return None
    if name in _ODD or name == "reduce_precision":
        return v
    if name in _AT_ZERO:
        return _AT_ZERO[name]
    if name == "rsqrt" and real:
        return np.divide(1, np.sqrt(v))  # +-inf
    return -np.inf if name == "log" and real else None


# Not exact elsewhere, but finite where NumPy's value is with room to spare: XLA's approximations
# differ from it by a few ulps, not by orders of magnitude (and known values are never subnormal).
_APPROXIMATE: dict[str, Callable[..., Any]] = {
    "exp": np.exp, "exp2": np.exp2, "expm1": np.expm1, "log": np.log, "log1p": np.log1p,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "sinh": np.sinh, "cosh": np.cosh,
    "tanh": np.tanh, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "cbrt": np.cbrt,
    "rsqrt": lambda v: 1 / np.sqrt(v), "logistic": lambda v: 1 / (1 + np.exp(-v)),
}  # fmt: skip


def _finite_or_unknown(value: Any, dtype: Any) -> Any:
    bound = float(jnp.finfo(dtype).max) / 4 if jnp.issubdtype(dtype, jnp.inexact) else 0.0
    return FINITE if np.all(np.isfinite(value)) and np.all(np.abs(value) <= bound) else None


def _evaluate(name: str, params: dict, values: Sequence[np.ndarray], dtype: Any) -> Any:
    """``name`` on known operand values: exactly, :data:`FINITE`, or ``None`` (not known)."""
    if name == "convert_element_type":
        (v,), to = values, np.dtype(params["new_dtype"])
        inexact = np.issubdtype(to, np.inexact) or to == np.bool_
        return v.astype(to) if inexact or v.dtype == np.bool_ or v == 0 else None
    if name == "clamp" and all(np.isfinite(values)):
        low, v, high = values
        return np.minimum(np.maximum(v, low), high)
    if name in _EXACT:
        integers = any(np.issubdtype(v.dtype, np.integer) for v in values)
        return None if integers and name in _NOT_ON_INTEGERS else _EXACT[name](*values)
    exact = _at_zero(name, params, values[0]) if len(values) == 1 else None
    if exact is None and name in _APPROXIMATE:
        return _finite_or_unknown(_APPROXIMATE[name](values[0]), dtype)
    if exact is None and name == "integer_pow":
        return _finite_or_unknown(np.power(values[0], params["y"]), dtype)
    return exact


def _signed_zeros(name: str, pads: Sequence[Pad]) -> bool:
    return name in ("max", "min") and all(map(is_zero, pads))


def padding_value(name: str, params: dict, pads: Sequence[Pad], dtype: Any) -> Pad:
    """What the element-wise primitive ``name`` gives at the padding, from what its operands
    are there (``pads``), in the result's ``dtype``."""
    try:
        if name == "select_n":
            cases = pads[1:]
            if isinstance(pads[0], tuple):  # a known predicate picks the cases
                cases = [cases[int(v)] for v in pads[0]]
            return cases[0] if len(cases) == 1 else join_pads(cases, dtype)
        known = [p for p in pads if isinstance(p, tuple)]
        if len(known) == len(pads) and not _signed_zeros(name, pads):
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # complex to real keeps the real part, as in XLA
                results = [_evaluate(name, params, v, dtype) for v in itertools.product(*known)]
            if any(r is None or r is FINITE for r in results):
                return None if any(r is None for r in results) else FINITE
            return value_set(results, dtype)
    except (TypeError, ValueError, IndexError, OverflowError):  # not for these operands: unknown
        return None
    # A zero times (or over) a value equal everywhere: zero (see the module docstring).
    if _signed_zeros(name, pads):
        return zeros(dtype)  # which of two zeros XLA returns is not specified
    if name == "mul" and any(map(is_zero, pads)) and all(map(finite, pads)):
        return zeros(dtype)
    if name == "div" and is_zero(pads[0]) and pads[1] is UNIFORM:
        return zeros(dtype)
    return None
