"""Does a transformation treat the elements of a parameter independently? A data-flow pass over
its jaxpr, with which :func:`gradxform.shard_optimizer_state` refuses transformations that would
compute something else on a device's slice of a parameter than on the whole parameter.

An allow-list that fails closed: a primitive passes only where this module knows how it moves
elements; any other, or a program that changes with the shapes, is refused and named. ``inner``
is traced on the whole parameters and on one device's slices (shape ``(1, ..., 1, k)``, a
contiguous chunk of the row-major flattening), and both programs are walked side by side: the
whole one tells what is combined, the sliced one what runs (its shapes, and constants that must
agree). Marks, best first: ``R`` the same in both programs (constants, step counts, whole-model
sums after ``psum``); ``E`` each element from the same element of the inputs; ``SUM`` linear in
sums over all the elements of slices, right once summed over the devices (the slices partition
the model and the padding is zero); ``PART`` non-linear in such sums; ``UNKNOWN`` from a
primitive not on the list; ``MIXED`` combines elements or depends on their positions. A result
takes its operands' worst mark, or worse. Allowed, with sizes checked in both programs:

- element-wise primitives, where an operand of one element spread over many is ``R``; on
  ``SUM``, ``add``/``sub`` of sums, zeros and one-element leaves, ``mul``/``div`` by ``R``,
  ``neg`` and conversions keep ``SUM``;
- ``reshape``/``squeeze`` (they keep the row-major order); ``broadcast_in_dim`` of ``R``, or of
  anything when the size does not change; ``transpose``/``rev`` moving only axes of size 1;
- reductions over one element; ``reduce_sum``/``dot_general`` over all elements (``SUM``);
  ``psum`` over the axis of ``SUM`` (giving ``R``);
- calls, ``cond``, ``while`` and ``scan`` (not along a parameter's axis), followed inside;
- any listed primitive on ``R`` operands with the same results in both programs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from gradxform._base import GradientTransformation

Mark = tuple[int, str]
_R, _E, _SUM, _PART, _UNKNOWN, _MIXED = range(6)
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
_LINEAR_UNARY = ("neg", "convert_element_type", "copy", "real", "imag", "conj")


def primitive_kind(name: str) -> str:
    """How the check treats the primitive ``name``: a key of ``_TABLE`` (``"elementwise"``,
    ``"reshape"``, ``"reduction"``, ``"moves"``, ``"position"``, ``"collective"``,
    ``"passthrough"``, ``"call"``), the name itself where it has a rule of its own
    (``"transpose"``, ``"scan"``, ...), or ``"unknown"``: refused."""
    if name.startswith(("cum", "scatter", "reduce_window")):
        return "moves"
    return _KINDS.get(name, "unknown")


def slice_shape(shape: Sequence[int], n: int) -> tuple[int, ...]:
    """One device's slice of a leaf of ``shape`` over ``n`` devices: ``(1, ..., 1, k)`` with
    ``k = ceil(size / n)``, keeping the rank (so rank-based masks select the same leaves)."""
    return (1,) * (len(shape) - 1) + (-(-math.prod(shape) // n),) if shape else ()


class _DivergedError(Exception):
    """The two programs run different operations (they branch on shapes)."""


def _shape(var: Any) -> tuple[int, ...]:
    return tuple(getattr(var.aval, "shape", ()))


def _size(var: Any) -> int:
    return math.prod(_shape(var))


def _worst(marks: Iterable[Mark]) -> Mark:
    return max(marks, key=lambda mark: mark[0], default=(_R, ""))


def _constant(whole: Any, sliced: Any) -> Mark:
    """``R`` for a constant that is the same in both programs."""
    same = whole is sliced
    try:
        a, b = np.asarray(whole), np.asarray(sliced)
        same = same or (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes())
    except Exception:  # tracers, and other values that cannot be compared by value
        pass
    cause = f"a constant computed from the shapes: {whole} on whole parameters, {sliced} on slices"
    return (_R, "") if same else (_MIXED, cause)


def _reshapes(eqn: Any) -> bool:
    """Size-preserving shape changes, which JAX leaves out where the shape does not change."""
    return primitive_kind(eqn.primitive.name) == "reshape" or (
        eqn.primitive.name == "broadcast_in_dim" and _size(eqn.invars[0]) == _size(eqn.outvars[0])
    )


def _pairs(whole: Any, sliced: Any) -> Iterator[tuple[Any, Any]]:
    """Each equation of the whole program, with its counterpart on slices or ``None``."""
    ws, ss, i, j = whole.eqns, sliced.eqns, 0, 0
    while i < len(ws) or j < len(ss):
        w, s = ws[i] if i < len(ws) else None, ss[j] if j < len(ss) else None
        arity = lambda e: (e.primitive, len(e.invars), len(e.outvars))  # noqa: E731
        if w is not None and s is not None and arity(w) == arity(s):
            yield w, s
            i, j = i + 1, j + 1
        elif s is not None and _reshapes(s):
            j += 1
        elif w is not None and _reshapes(w):
            yield w, None
            i += 1
        else:
            name = lambda e: f"`{e.primitive.name}`" if e else "nothing"  # noqa: E731
            raise _DivergedError(f"{name(w)} on whole parameters, {name(s)} on slices")


def _walk(axis: Hashable, whole: Any, sliced: Any, ins: list[Mark]) -> list[Mark]:
    """The marks (with causes) of the outputs of jaxpr ``whole``, walked with ``sliced``."""
    unpack = lambda j: (j.jaxpr, j.consts) if isinstance(j, jex_core.ClosedJaxpr) else (j, ())  # noqa: E731
    (whole, consts), (sliced, sliced_consts) = unpack(whole), unpack(sliced)
    arity = lambda j, c: (len(j.invars), len(j.outvars), len(c))  # noqa: E731
    if arity(whole, consts) != arity(sliced, sliced_consts):
        raise _DivergedError("other inputs or outputs on whole parameters than on slices")
    env = dict(zip(whole.invars, ins, strict=True))
    env.update(zip(whole.constvars, map(_constant, consts, sliced_consts), strict=True))

    def read(var: Any, other: Any) -> Mark:  # a literal on either side must be on both
        if not any(isinstance(v, jex_core.Literal) for v in (var, other)):
            return env.get(var, (_UNKNOWN, "a value the check could not follow"))
        literal = lambda v: getattr(v, "val", v)  # noqa: E731
        return (_R, "") if other is None else _constant(literal(var), literal(other))

    for ew, es in _pairs(whole, sliced):
        marks = [read(v, es.invars[i] if es else None) for i, v in enumerate(ew.invars)]
        env.update(zip(ew.outvars, _eqn_marks(axis, ew, es, marks), strict=True))
    return [read(v, s) for v, s in zip(whole.outvars, sliced.outvars, strict=True)]


def _eqn_marks(axis: Hashable, ew: Any, es: Any, ins: list[Mark]) -> list[Mark]:
    name, count = ew.primitive.name, len(ew.outvars)
    kind = primitive_kind(name)
    if kind in _FOLLOWED:
        return _FOLLOWED[kind](axis, ew, es, ins)
    if kind == "passthrough":
        return ins[:count] if len(ins) == count else [_worst(ins)] * count
    if kind == "unknown":
        return [_worst([(_UNKNOWN, f"`{name}`"), *ins])] * count
    if all(m[0] == _R for m in ins) and es is not None and _identical(ew, es):
        return [(_R, "")] * count
    worst = _worst(ins)
    return [worst if worst[0] >= _PART else _RULES[kind](ew, es or ew, ins, worst)] * count


def _identical(ew: Any, es: Any) -> bool:
    """Whether ``ew`` and ``es`` compute the same results from the same operands."""
    avals = lambda e: [(_shape(v), v.aval.dtype) for v in e.outvars]  # noqa: E731
    try:
        return avals(ew) == avals(es) and bool(ew.params == es.params)
    except Exception:  # parameters that cannot be compared: not the same
        return False


def _elementwise(ew: Any, es: Any, ins: list[Mark], worst: Mark, name: str = "") -> Mark:
    """An element-wise primitive (``name`` if given) of operands whose worst mark is ``worst``."""
    name = name or ew.primitive.name
    if name == "bitcast_convert_type" and _shape(ew.invars[0]) != _shape(ew.outvars[0]):
        return (_MIXED, "`bitcast_convert_type` to another bit width")
    for e in (ew, es):  # lax broadcasts axes of size 1: an operand may be spread over others
        out = e.outvars[0]
        for m, v in zip(ins, e.invars, strict=True):
            if m[0] == _E and _size(v) < _size(out):
                return (_MIXED, f"`{name}` of a {_shape(v)} operand into {_shape(out)}")
    pairs = list(zip(ins, ew.invars, strict=True))
    if worst[0] < _SUM:
        return (_E, "")
    sums = [m[0] == _SUM for m in ins]
    if name in ("add", "sub", "add_any"):
        # Operands: sums, literal zeros, and one-element leaves (their own sums).
        zero = lambda v: isinstance(v, jex_core.Literal) and not np.any(np.asarray(v.val))  # noqa: E731
        linear = all(m[0] == _SUM or zero(v) or (m[0] == _E and _size(v) <= 1) for m, v in pairs)
    elif name == "mul":
        linear = sum(sums) == 1 and all(s or m[0] == _R for s, m in zip(sums, ins, strict=True))
    else:
        linear = name in _LINEAR_UNARY or (name == "div" and sums[0] and ins[1][0] == _R)
    return worst if linear else (_PART, f"{worst[1]}, then `{name}`")


def _broadcast(ew: Any, es: Any, ins: list[Mark], worst: Mark) -> Mark:
    grows = any(_size(e.invars[0]) != _size(e.outvars[0]) for e in (ew, es))
    if worst[0] == _R or (worst[0] == _E and not grows):
        return (_E, "")
    if worst[0] == _SUM:
        return worst  # copies of a slice sum: still linear in it
    return (_MIXED, f"`broadcast_in_dim` of {_shape(ew.invars[0])} to {_shape(ew.outvars[0])}")


def _moves_axes(ew: Any, es: Any, ins: list[Mark], worst: Mark) -> Mark:
    """``transpose`` and ``rev``: allowed where they move axes of size 1 only."""
    key = "permutation" if ew.primitive.name == "transpose" else "dimensions"

    def keeps_order(eqn: Any) -> bool:
        shape = _shape(eqn.invars[0])
        moved = [a for a in eqn.params[key] if shape[a] != 1]
        return moved == sorted(moved) and (key == "permutation" or not moved)

    if keeps_order(ew) and keeps_order(es):
        return max(worst, (_E, ""))
    return (_MIXED, f"`{ew.primitive.name}` {ew.params[key]} of a {_shape(ew.invars[0])} array")


def _reduction(ew: Any, es: Any, ins: list[Mark], worst: Mark) -> Mark:
    name, axes = ew.primitive.name, tuple(ew.params["axes"])
    if all(math.prod(_shape(e.invars[0])[a] for a in e.params["axes"]) <= 1 for e in (ew, es)):
        return max(worst, (_E, ""))  # a squeeze
    full = all(len(e.params["axes"]) == len(_shape(e.invars[0])) for e in (ew, es))
    if name == "reduce_sum" and full and worst[0] <= _E:
        return (_SUM, "`reduce_sum`")
    return (_MIXED, f"`{name}` over axes {axes} of a {_shape(ew.invars[0])} array")


def _dot_general(ew: Any, es: Any, ins: list[Mark], worst: Mark) -> Mark:
    if any(_size(v) <= 1 for v in ew.invars):
        return _elementwise(ew, es, ins, worst, "mul")  # a product with a scalar

    def full(eqn: Any) -> bool:
        (lhs, rhs), (batch, _) = eqn.params["dimension_numbers"]
        return not batch and (len(lhs), len(rhs)) == tuple(len(_shape(v)) for v in eqn.invars)

    if full(ew) and full(es) and worst[0] <= _E:
        return (_SUM, "`dot_general`")
    return (_MIXED, f"`dot_general` of {' and '.join(str(_shape(v)) for v in ew.invars)}")


def _moves(ew: Any, es: Any, ins: list[Mark], worst: Mark) -> Mark:
    """Operations that move elements, or make values from positions: allowed on one element."""
    if all(_size(v) <= 1 for e in (ew, es) for v in (*e.invars, *e.outvars)):
        return max(worst, (_E, ""))
    return (_MIXED, f"`{ew.primitive.name}` giving a {_shape(ew.outvars[0])} array")


_RULES = {"elementwise": _elementwise, "broadcast_in_dim": _broadcast, "reduction": _reduction}
_RULES |= {"dot_general": _dot_general, "transpose": _moves_axes, "rev": _moves_axes}
_RULES |= {"moves": _moves, "position": _moves, "reshape": lambda ew, es, ins, w: max(w, (_E, ""))}


def _collective(axis: Hashable, eqn: Any, es: Any, ins: list[Mark]) -> list[Mark]:
    name, names = eqn.primitive.name, ()
    for value in (eqn.params.get("axes", ()), eqn.params.get("axis_name", ())):
        names += tuple(value) if isinstance(value, tuple | list) else (value,)
    if axis not in names:
        cause = f"`{name}` over {names} (the check follows collectives over {axis!r} only)"
        return [_worst([(_UNKNOWN, cause), *ins])] * len(eqn.outvars)
    if name not in ("psum", "psum_invariant"):
        return [_worst([(_MIXED, f"`{name}` over {axis!r}"), *ins])] * len(eqn.outvars)
    outs = []
    for var, mark in zip(eqn.invars, ins, strict=True):
        # A sum of slice sums over the devices is the sum over the whole model (so is the psum
        # of a one-element leaf, which sits on one device); the psum of anything else is not
        # what the transformation computes on whole parameters.
        if mark[0] == _SUM or (mark[0] == _E and _size(var) <= 1):
            outs.append((_R, ""))
        elif mark[0] == _PART:
            cause = f"`psum` over {axis!r} of {mark[1]}: sum over the devices first"
            outs.append((_MIXED, cause))
        elif mark[0] == _R:
            outs.append((_MIXED, f"`psum` over {axis!r} of a value equal on every device"))
        else:
            outs.append(_worst([(_MIXED, f"`psum` over {axis!r} of whole arrays"), mark]))
    return outs


def _call(axis: Hashable, ew: Any, es: Any, ins: list[Mark]) -> list[Mark]:
    for key in ("jaxpr", "call_jaxpr"):
        body = ew.params.get(key)
        if body is not None and len(getattr(body, "jaxpr", body).invars) == len(ins):
            return _walk(axis, body, es.params[key], ins)
    return [(_UNKNOWN, f"`{ew.primitive.name}` (its body)")] * len(ew.outvars)


def _cond(axis: Hashable, ew: Any, es: Any, ins: list[Mark]) -> list[Mark]:
    pred, whole, sliced = ins[0], ew.params["branches"], es.params["branches"]
    if len(whole) != len(sliced):
        raise _DivergedError("`cond` on whole parameters, with other branches on slices")
    branches = zip(whole, sliced, strict=True)
    columns = zip(*(_walk(axis, w, s, ins[1:]) for w, s in branches), strict=True)
    if pred[0] == _SUM:
        pred = (_PART, f"{pred[1]}, then `cond`")
    elif pred[0] == _E and any(_size(v) > 1 for v in ew.outvars):
        pred = (_MIXED, "`cond` on one element of a parameter")
    return [_worst([pred, *column]) for column in columns]


def _fixpoint(step: Callable[[list[Mark]], list[Mark]], carry: list[Mark]) -> list[Mark]:
    """Loop-carried marks, joined with the body's until they no longer change."""
    while True:
        new = [_worst(pair) for pair in zip(carry, step(carry), strict=True)]
        if [m[0] for m in new] == [m[0] for m in carry]:
            return new
        carry = new


def _while(axis: Hashable, ew: Any, es: Any, ins: list[Mark]) -> list[Mark]:
    p, q = ew.params, es.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    body = lambda c: _walk(axis, p["body_jaxpr"], q["body_jaxpr"], [*ins[nc : nc + nb], *c])  # noqa: E731
    carry = _fixpoint(body, ins[nc + nb :])
    pred = _walk(axis, p["cond_jaxpr"], q["cond_jaxpr"], [*ins[:nc], *carry])[0]
    steps = (_MIXED, "a `while` loop whose steps depend on the parameters")
    return carry if pred[0] == _R else [_worst([pred, steps])] * len(carry)


def _scan(axis: Hashable, ew: Any, es: Any, ins: list[Mark]) -> list[Mark]:
    p, length = ew.params, ew.params["length"]
    nc, nk = p["num_consts"], p["num_carry"]
    if es.params["length"] != length or (length > 1 and _worst(ins[nc + nk :])[0] >= _E):
        cause = (_MIXED, f"`scan` along an axis of a parameter ({length} steps)")
        return [_worst([cause, *ins])] * len(ew.outvars)
    ys: list[Mark] = []

    def body(carry: list[Mark]) -> list[Mark]:
        outs = _walk(axis, p["jaxpr"], es.params["jaxpr"], [*ins[:nc], *carry, *ins[nc + nk :]])
        ys[:] = outs[nk:]
        return outs[:nk]

    carry = _fixpoint(body, ins[nc : nc + nk])
    body(carry)
    return [*carry, *ys]


_FOLLOWED = {"call": _call, "cond": _cond, "while": _while, "scan": _scan}
_FOLLOWED["collective"] = _collective
_VERDICTS = {_SUM: "sums", _PART: "sums", _UNKNOWN: "unknown", _MIXED: "mixes"}


def elementwise_problem(
    inner: GradientTransformation,
    updates: Any,
    params: Any,
    extra_args: dict,
    axis_name: Hashable,
    n: int,
) -> tuple[str, str] | None:
    """What would make ``inner`` compute something else on slices than on whole parameters:
    ``None``, or ``(problem, cause)`` with ``problem`` one of ``"sums"`` (over elements, not
    over devices), ``"mixes"`` (elements, or depends on positions), ``"unknown"`` (a primitive
    not on the list), ``"diverges"`` (other operations on slices), ``"fails"`` (on slices)."""
    has_params = params is not None

    def probe(updates, params):
        state = inner.init(params if has_params else updates)
        return inner.update(updates, state, params if has_params else None, **extra_args)

    def trace(shape: Callable[[tuple[int, ...]], tuple[int, ...]]) -> Any:
        like = lambda x: jax.ShapeDtypeStruct(shape(jnp.shape(x)), jnp.result_type(x))  # noqa: E731
        trees = (updates, params if has_params else updates)
        return jax.make_jaxpr(probe, axis_env=[(axis_name, n)])(*jax.tree.map(like, trees))

    whole, failure = trace(lambda shape: shape), None
    try:
        sliced = trace(lambda shape: slice_shape(shape, n))
    except Exception as error:  # reported after what the whole program alone tells
        sliced, failure = whole, f"{type(error).__name__}: {error}"
    try:
        level, cause = _worst(_walk(axis_name, whole, sliced, [(_E, "")] * len(whole.in_avals)))
    except _DivergedError as diverged:
        return ("diverges", str(diverged))
    if level in _VERDICTS:
        return (_VERDICTS[level], cause)
    return None if failure is None else ("fails", failure)
