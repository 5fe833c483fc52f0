"""The data-flow pass of the element-wise check (:mod:`gradxform.wrappers.elementwise`): walks
the program of a transformation on whole parameters and its program on one device's slices side
by side, and marks every value with what it is on the slices
(:class:`gradxform.wrappers.marks.Mark`), by the rules below for each kind of primitive
(:mod:`gradxform.wrappers.primitive_table`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np
from jax.extend import core as jex_core

from gradxform.wrappers.marks import (
    MIXED,
    PADDED,
    PART,
    SUM,
    UNIFORM,
    UNKNOWN,
    E,
    Mark,
    Pad,
    R,
    describe,
    is_zero,
    join,
    same,
    value_set,
)
from gradxform.wrappers.primitive_table import padding_value, primitive_kind

_LINEAR_UNARY = ("neg", "convert_element_type", "copy", "real", "imag", "conj")


class DivergedError(Exception):
    """The two programs run different operations (they branch on shapes)."""


def _shape(var: Any) -> tuple[int, ...]:
    return tuple(getattr(var.aval, "shape", ()))


def _size(var: Any) -> int:
    return math.prod(_shape(var))


def _dtype(var: Any) -> Any:
    return var.aval.dtype


def _at_least_e(mark: Mark) -> Mark:
    return mark if mark.level >= E else mark._replace(level=E)


_FROM = "a value computed from "


def _e(name: str, pad: Pad, ins: list[Mark]) -> Mark:
    """An ``E`` value made by ``name`` that is ``pad`` at the padding, with its cause."""
    if is_zero(pad):
        return Mark(E, "", pad)
    cause = next((m.cause for m in ins if m.level == E and m.cause), "")
    if cause and not cause.startswith(_FROM):
        cause = _FROM + cause
    if isinstance(pad, tuple):
        cause = cause or f"`{name}`, which is {describe(pad)} at the padded positions"
    return Mark(E, cause or f"`{name}`, not known to be 0 at the padded positions", pad)


def _constant(whole: Any, sliced: Any, dtype: Any = None) -> Mark:
    """``R`` for a constant that is the same in both programs."""
    same_value = whole is sliced
    pad: Pad = UNIFORM
    try:
        a, b = np.asarray(whole, dtype), np.asarray(sliced, dtype)
        key = lambda x: (x.dtype, x.shape, x.tobytes())  # noqa: E731
        same_value = same_value or key(a) == key(b)
        pad = (value_set([a.reshape(())], a.dtype) if a.size == 1 else None) or UNIFORM
    except Exception:  # tracers, and other values that cannot be compared by value
        pass
    cause = f"a constant computed from the shapes: {whole} on whole parameters, {sliced} on slices"
    return Mark(R, "", pad) if same_value else Mark(MIXED, cause)


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
            raise DivergedError(f"{name(w)} on whole parameters, {name(s)} on slices")


def walk(axis: Hashable, whole: Any, sliced: Any, ins: list[Mark]) -> list[Mark]:
    """The marks of the outputs of jaxpr ``whole``, walked with ``sliced``, from the marks of
    their inputs."""
    unpack = lambda j: (j.jaxpr, j.consts) if isinstance(j, jex_core.ClosedJaxpr) else (j, ())  # noqa: E731
    (whole, consts), (sliced, sliced_consts) = unpack(whole), unpack(sliced)
    arity = lambda j, c: (len(j.invars), len(j.outvars), len(c))  # noqa: E731
    if arity(whole, consts) != arity(sliced, sliced_consts):
        raise DivergedError("other inputs or outputs on whole parameters than on slices")
    env = dict(zip(whole.invars, ins, strict=True))
    env.update(zip(whole.constvars, map(_constant, consts, sliced_consts), strict=True))

    def read(var: Any, other: Any) -> Mark:  # a literal on either side must be on both
        if not any(isinstance(v, jex_core.Literal) for v in (var, other)):
            return env.get(var, Mark(UNKNOWN, "a value the check could not follow"))
        literal = lambda v: getattr(v, "val", v)  # noqa: E731
        other = var if other is None else other
        return _constant(literal(var), literal(other), _dtype(var))

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
        return ins[:count] if len(ins) == count else [join(ins)] * count
    if kind == "unknown":
        return [join([Mark(UNKNOWN, f"`{name}`"), *ins])] * count
    if all(m.level == R for m in ins) and es is not None and _identical(ew, es):
        pad: Pad = UNIFORM
        if kind == "elementwise":
            pad = padding_value(name, ew.params, [m.pad for m in ins], _dtype(ew.outvars[0]))
        elif kind == "reshape" or name == "broadcast_in_dim":
            pad = ins[0].pad
        return [Mark(R, "", pad if isinstance(pad, tuple) else UNIFORM)] * count
    worst = join(ins)
    return [worst if worst.level >= PART else _RULES[kind](ew, es or ew, ins, worst)] * count


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
        return Mark(MIXED, "`bitcast_convert_type` to another bit width")
    for e in (ew, es):  # lax broadcasts axes of size 1: an operand may be spread over others
        out = e.outvars[0]
        for m, v in zip(ins, e.invars, strict=True):
            if m.level == E and _size(v) < _size(out):
                return Mark(MIXED, f"`{name}` of a {_shape(v)} operand into {_shape(out)}")
    if worst.level < SUM:
        pad = padding_value(name, ew.params, [m.pad for m in ins], _dtype(ew.outvars[0]))
        if pad is None and all(m.level == R or m.pad is UNIFORM for m in ins):
            pad = UNIFORM  # made from values equal everywhere only
        return _e(name, pad, ins)
    pairs = list(zip(ins, ew.invars, strict=True))
    sums = [m.level == SUM for m in ins]
    if name in ("add", "sub", "add_any"):
        # Operands: sums, zeros, and one-element leaves (their own sums, on the first device
        # only: the others hold padding there, which must be zero).
        for m, v in pairs:
            if m.level == E and _size(v) <= 1 and not is_zero(m.pad):
                return Mark(PADDED, f"`{name}` of a sum and {_ONE.format(_why(m))}")
        zero = lambda m, v: m.level == R and is_zero(m.pad)  # noqa: E731
        one = lambda m, v: m.level == E and _size(v) <= 1  # noqa: E731
        linear = all(m.level == SUM or zero(m, v) or one(m, v) for m, v in pairs)
    elif name == "mul":
        linear = sum(sums) == 1 and all(s or m.level == R for s, m in zip(sums, ins, strict=True))
    else:
        linear = name in _LINEAR_UNARY or (name == "div" and sums[0] and ins[1].level == R)
    return worst if linear else Mark(PART, f"{worst.cause}, then `{name}`")


def _broadcast(ew: Any, es: Any, ins: list[Mark], worst: Mark) -> Mark:
    grows = any(_size(e.invars[0]) != _size(e.outvars[0]) for e in (ew, es))
    if worst.level == R or (worst.level == E and not grows):
        return _e("broadcast_in_dim", worst.pad, ins)
    if worst.level == SUM:
        return worst  # copies of a slice sum: still linear in it
    return Mark(MIXED, f"`broadcast_in_dim` of {_shape(ew.invars[0])} to {_shape(ew.outvars[0])}")


def _moves_axes(ew: Any, es: Any, ins: list[Mark], worst: Mark) -> Mark:
    """``transpose`` and ``rev``: allowed where they move axes of size 1 only."""
    key = "permutation" if ew.primitive.name == "transpose" else "dimensions"

    def keeps_order(eqn: Any) -> bool:
        shape = _shape(eqn.invars[0])
        moved = [a for a in eqn.params[key] if shape[a] != 1]
        return moved == sorted(moved) and (key == "permutation" or not moved)

    if keeps_order(ew) and keeps_order(es):
        return _at_least_e(worst)
    return Mark(MIXED, f"`{ew.primitive.name}` {ew.params[key]} of a {_shape(ew.invars[0])} array")


def _reduction(ew: Any, es: Any, ins: list[Mark], worst: Mark) -> Mark:
    name, axes = ew.primitive.name, tuple(ew.params["axes"])
    if all(math.prod(_shape(e.invars[0])[a] for a in e.params["axes"]) <= 1 for e in (ew, es)):
        # A squeeze: the one element itself, but the index of the maximum, say, is not.
        return _at_least_e(worst if name.startswith("reduce") else _e(name, None, []))
    full = all(len(e.params["axes"]) == len(_shape(e.invars[0])) for e in (ew, es))
    if name == "reduce_sum" and full and worst.level <= E:
        return _full_sum(name, worst)
    return Mark(MIXED, f"`{name}` over axes {axes} of a {_shape(ew.invars[0])} array")


def _why(mark: Mark) -> str:
    """Why an ``R`` or ``E`` value is not known to be zero at the padding."""
    return mark.cause or f"a value that is {describe(mark.pad)} at the padded positions"


_ONE = "a one-element value ({}), which the devices but the first compute from padding"


def _full_sum(name: str, summand: Mark) -> Mark:
    """A sum over every element of slices of ``summand``: right over the devices only where
    the padding adds nothing."""
    if is_zero(summand.pad):
        return Mark(SUM, f"`{name}`")
    return Mark(PADDED, f"`{name}` of {_why(summand)}")


def _dot_general(ew: Any, es: Any, ins: list[Mark], worst: Mark) -> Mark:
    if any(_size(v) <= 1 for v in ew.invars):
        return _elementwise(ew, es, ins, worst, "mul")  # a product with a scalar

    def full(eqn: Any) -> bool:
        (lhs, rhs), (batch, _) = eqn.params["dimension_numbers"]
        return not batch and (len(lhs), len(rhs)) == tuple(len(_shape(v)) for v in eqn.invars)

    if full(ew) and full(es) and worst.level <= E:
        product = padding_value("mul", {}, [m.pad for m in ins], _dtype(ew.outvars[0]))
        return _full_sum("dot_general", _e("mul", product, ins))
    return Mark(MIXED, f"`dot_general` of {' and '.join(str(_shape(v)) for v in ew.invars)}")


def _moves(ew: Any, es: Any, ins: list[Mark], worst: Mark) -> Mark:
    """Operations that move elements, or make values from positions: allowed on one element."""
    if all(_size(v) <= 1 for e in (ew, es) for v in (*e.invars, *e.outvars)):
        return _e(ew.primitive.name, None, ins)
    return Mark(MIXED, f"`{ew.primitive.name}` giving a {_shape(ew.outvars[0])} array")


_RULES: dict[str, Callable[[Any, Any, list[Mark], Mark], Mark]]
_RULES = {"elementwise": _elementwise, "broadcast_in_dim": _broadcast, "reduction": _reduction}
_RULES |= {"dot_general": _dot_general, "transpose": _moves_axes, "rev": _moves_axes}
_RULES |= {"moves": _moves, "position": _moves, "reshape": lambda ew, es, i, w: _at_least_e(w)}


def _collective(axis: Hashable, eqn: Any, es: Any, ins: list[Mark]) -> list[Mark]:
    name, names = eqn.primitive.name, ()
    for value in (eqn.params.get("axes", ()), eqn.params.get("axis_name", ())):
        names += tuple(value) if isinstance(value, tuple | list) else (value,)
    if axis not in names:
        cause = f"`{name}` over {names} (the check follows collectives over {axis!r} only)"
        return [join([Mark(UNKNOWN, cause), *ins])] * len(eqn.outvars)
    if name not in ("psum", "psum_invariant"):
        return [join([Mark(MIXED, f"`{name}` over {axis!r}"), *ins])] * len(eqn.outvars)
    outs = []
    for var, mark in zip(eqn.invars, ins, strict=True):
        # A sum of slice sums over the devices is the sum over the whole model, and so is the
        # psum of one element of a parameter (on the first device; padding on the others); the
        # psum of anything else is not what the transformation computes on whole parameters.
        one = mark.level == E and _size(var) <= 1
        if mark.level == SUM or (one and is_zero(mark.pad)):
            outs.append(Mark(R, "", UNIFORM))
        elif one:
            outs.append(Mark(PADDED, f"`psum` over {axis!r} of {_ONE.format(_why(mark))}"))
        elif mark.level == PART:
            cause = f"`psum` over {axis!r} of {mark.cause}: sum over the devices first"
            outs.append(Mark(MIXED, cause))
        elif mark.level == R:
            outs.append(Mark(MIXED, f"`psum` over {axis!r} of a value equal on every device"))
        elif mark.level == PADDED:
            outs.append(mark)
        else:
            outs.append(join([Mark(MIXED, f"`psum` over {axis!r} of whole arrays"), mark]))
    return outs


def _call(axis: Hashable, ew: Any, es: Any, ins: list[Mark]) -> list[Mark]:
    for key in ("jaxpr", "call_jaxpr"):
        body = ew.params.get(key)
        if body is not None and len(getattr(body, "jaxpr", body).invars) == len(ins):
            return walk(axis, body, es.params[key], ins)
    return [Mark(UNKNOWN, f"`{ew.primitive.name}` (its body)")] * len(ew.outvars)


def _cond(axis: Hashable, ew: Any, es: Any, ins: list[Mark]) -> list[Mark]:
    pred, whole, sliced = ins[0], ew.params["branches"], es.params["branches"]
    if len(whole) != len(sliced):
        raise DivergedError("`cond` on whole parameters, with other branches on slices")
    branches = zip(whole, sliced, strict=True)
    columns = zip(*(walk(axis, w, s, ins[1:]) for w, s in branches), strict=True)
    if pred.level == SUM:
        pred = Mark(PART, f"{pred.cause}, then `cond`")
    elif pred.level == E and any(_size(v) > 1 for v in ew.outvars):
        pred = Mark(MIXED, "`cond` on one element of a parameter")
    outs = []
    for column in columns:  # the branch taken may differ at the padding: any branch's value
        out = join(column)
        if pred.level > out.level:
            out = _at_least_e(out) if pred.level == E else pred
        outs.append(out)
    return outs


def _fixpoint(step: Callable[[list[Mark]], list[Mark]], carry: list[Mark]) -> list[Mark]:
    """Loop-carried marks, joined with the body's until they no longer change."""
    while True:
        new = [join(pair) for pair in zip(carry, step(carry), strict=True)]
        if all(map(same, new, carry)):
            return new
        carry = new


def _while(axis: Hashable, ew: Any, es: Any, ins: list[Mark]) -> list[Mark]:
    p, q = ew.params, es.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    body = lambda c: walk(axis, p["body_jaxpr"], q["body_jaxpr"], [*ins[nc : nc + nb], *c])  # noqa: E731
    carry = _fixpoint(body, ins[nc + nb :])
    pred = walk(axis, p["cond_jaxpr"], q["cond_jaxpr"], [*ins[:nc], *carry])[0]
    steps = Mark(MIXED, "a `while` loop whose steps depend on the parameters")
    return carry if pred.level == R else [join([pred, steps])] * len(carry)


def _scan(axis: Hashable, ew: Any, es: Any, ins: list[Mark]) -> list[Mark]:
    p, length = ew.params, ew.params["length"]
    nc, nk = p["num_consts"], p["num_carry"]
    if es.params["length"] != length or (length > 1 and join(ins[nc + nk :]).level >= E):
        cause = Mark(MIXED, f"`scan` along an axis of a parameter ({length} steps)")
        return [join([cause, *ins])] * len(ew.outvars)
    ys: list[Mark] = []

    def body(carry: list[Mark]) -> list[Mark]:
        outs = walk(axis, p["jaxpr"], es.params["jaxpr"], [*ins[:nc], *carry, *ins[nc + nk :]])
        ys[:] = outs[nk:]
        return outs[:nk]

    carry = _fixpoint(body, ins[nc : nc + nk])
    body(carry)
    return [*carry, *ys]


_FOLLOWED: dict[str, Callable[[Hashable, Any, Any, list[Mark]], list[Mark]]]
_FOLLOWED = {"call": _call, "cond": _cond, "while": _while, "scan": _scan}
_FOLLOWED["collective"] = _collective
