"""Does a transformation treat the elements of a parameter independently? A data-flow pass over
its jaxpr, used by :func:`gradxform.shard_optimizer_state` to refuse transformations that would
compute something else on each device's slice of a parameter than on the whole parameter.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from gradxform._base import GradientTransformation

#
# Every value gets one of three marks: _ELEMENTWISE (each element comes from the same element
# of the inputs, or a scalar from scalars), _SLICE_SUM (a sum over all elements of a slice:
# right once summed over the devices with psum, since the slices partition the model and the
# padding is zero), _MIXED (anything else that combines elements; wrong on slices whatever
# follows). An operation's result takes the worst mark of its operands, or worse.

_ELEMENTWISE, _SLICE_SUM, _MIXED = 0, 1, 2
_REDUCTIONS = {
    "reduce_sum",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "reduce_and",
    "reduce_or",
    "reduce_xor",
    "argmax",
    "argmin",
}
# Operations whose result at one position reads other positions of their first operand.
_POSITIONAL = {
    "sort",
    "top_k",
    "gather",
    "slice",
    "dynamic_slice",
    "dynamic_update_slice",
    "rev",
    "conv_general_dilated",
    "fft",
    "select_and_scatter_add",
    "select_and_gather_add",
}
_POSITIONAL_PREFIXES = ("cum", "scatter", "reduce_window")
# Operations that make values from positions: on a slice, the positions are not the param's.
_POSITION_SOURCES = {"iota", "random_bits"}
_SUMS = {"psum", "psum_invariant"}
# Only change how shard_map types a value (varying or not over an axis); no data moves.
_TYPE_ONLY = {"pvary", "pcast"}
_LOOPS = {"while", "scan"}


def _size(var: Any) -> int:
    return math.prod(getattr(var.aval, "shape", ()))


def _names_axis(eqn: Any, axis_name: Hashable) -> bool:
    """Whether a collective ``eqn`` runs over ``axis_name``."""
    for key in ("axes", "axis_name"):
        value = eqn.params.get(key)
        names = value if isinstance(value, tuple | list) else (value,)
        if axis_name in names:
            return True
    return False


def _mixing_mark(eqn: Any) -> int:
    """The mark an operation gives by itself: does it combine elements, and how."""
    name = eqn.primitive.name
    if name in _POSITION_SOURCES:
        return _MIXED if any(_size(v) > 1 for v in eqn.outvars) else _ELEMENTWISE
    if not eqn.invars:
        return _ELEMENTWISE
    shape = getattr(eqn.invars[0].aval, "shape", ())
    if name in _REDUCTIONS:
        axes = tuple(eqn.params.get("axes", ()))
        if math.prod(shape[a] for a in axes) <= 1:
            return _ELEMENTWISE
        if name == "reduce_sum" and set(axes) == set(range(len(shape))):
            return _SLICE_SUM
        return _MIXED
    if name == "dot_general":
        (lhs_contract, rhs_contract), (lhs_batch, _) = eqn.params["dimension_numbers"]
        lhs, rhs = eqn.invars
        if _size(lhs) <= 1 or _size(rhs) <= 1:
            return _ELEMENTWISE
        rhs_shape = rhs.aval.shape
        full = (
            not lhs_batch
            and len(lhs_contract) == len(shape)
            and len(rhs_contract) == len(rhs_shape)
        )
        return _SLICE_SUM if full else _MIXED
    if name in _POSITIONAL or name.startswith(_POSITIONAL_PREFIXES):
        return _MIXED if math.prod(shape) > 1 else _ELEMENTWISE
    return _ELEMENTWISE


def _jaxpr_marks(
    jaxpr: Any, in_marks: list[tuple[int, str]], axis_name: Hashable
) -> list[tuple[int, str]]:
    """The mark (and the operation that caused it) of each output of ``jaxpr``."""
    marks: dict[Any, tuple[int, str]] = {}

    def read(var):
        if isinstance(var, jex_core.Literal):
            return (_ELEMENTWISE, "")
        return marks.get(var, (_ELEMENTWISE, ""))

    def worst(pairs: Iterable[tuple[int, str]]) -> tuple[int, str]:
        return max(pairs, key=lambda pair: pair[0], default=(_ELEMENTWISE, ""))

    for var, mark in zip(jaxpr.invars, in_marks, strict=True):
        marks[var] = mark
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        ins = [read(v) for v in eqn.invars]
        inputs = worst(ins)
        subs = list(jex_core.jaxprs_in_params(eqn.params))
        if name in _SUMS and _names_axis(eqn, axis_name):
            outs = []
            for var, mark in zip(eqn.invars, ins, strict=True):
                # A sum of slice sums over the devices is the sum over the whole model; a sum of
                # the elements themselves would add up unrelated parameters.
                if mark[0] == _SLICE_SUM or (mark[0] == _ELEMENTWISE and _size(var) <= 1):
                    outs.append((_ELEMENTWISE, ""))
                else:
                    outs.append((_MIXED, f"psum over {axis_name!r} of whole arrays"))
        elif name in _TYPE_ONLY:
            outs = ins if len(ins) == len(eqn.outvars) else [inputs] * len(eqn.outvars)
        elif _names_axis(eqn, axis_name):
            out = (_MIXED, f"{name} over {axis_name!r}")
            outs = [out] * len(eqn.outvars)
        elif subs and name == "cond":
            branch_marks = [_jaxpr_marks(sub, ins[1:], axis_name) for sub in subs]
            outs = [worst([ins[0], *column]) for column in zip(*branch_marks, strict=True)]
        elif (
            len(subs) == 1
            and name not in _LOOPS
            and len(subs[0].invars) == len(eqn.invars)
            and len(subs[0].outvars) == len(eqn.outvars)
        ):
            outs = _jaxpr_marks(subs[0], ins, axis_name)
        elif subs:
            # Loops and other higher-order operations: every output gets the worst mark of any
            # input or of anything computed inside.
            inner = [
                worst(_jaxpr_marks(sub, [inputs] * len(sub.invars), axis_name)) for sub in subs
            ]
            outs = [worst([inputs, *inner])] * len(eqn.outvars)
        else:
            own = _mixing_mark(eqn)
            out = inputs if own <= inputs[0] else (own, name)
            outs = [out] * len(eqn.outvars)
        for var, mark in zip(eqn.outvars, outs, strict=True):
            marks[var] = mark
    return [read(v) for v in jaxpr.outvars]


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


def check_elementwise(
    inner: GradientTransformation,
    updates: Any,
    params: Any,
    extra_args: dict,
    axis_name: Hashable,
    n: int,
) -> None:
    """Raises ``ValueError`` if ``inner`` would compute something else on slices than on wholes.

    ``inner``'s ``init`` and ``update`` are traced on the whole parameters' shapes (not the
    slices', whose length-1 axes would hide reductions along them).
    """
    has_params = params is not None

    def probe(updates, params):
        state = inner.init(params if has_params else updates)
        return inner.update(updates, state, params if has_params else None, **extra_args)

    closed = jax.make_jaxpr(probe, axis_env=[(axis_name, n)])(
        _abstract(updates), _abstract(params if has_params else updates)
    )
    jaxpr = closed.jaxpr
    in_marks = [(_ELEMENTWISE, "")] * len(jaxpr.invars)
    out_marks = _jaxpr_marks(jaxpr, in_marks, axis_name)
    mark, cause = max(out_marks, key=lambda pair: pair[0], default=(_ELEMENTWISE, ""))
    if mark == _SLICE_SUM:
        raise ValueError(
            f"shard_optimizer_state: the wrapped transformation sums over the elements of the "
            f"parameters (`{cause}`) without summing over the devices, so on each device it "
            f"would use the sum over its own 1/{n} slice only. Give such transformations the "
            f"axis (e.g. `clip_by_global_norm(max_norm, axis_name={axis_name!r})`), or put "
            f"them before the wrapper, on the whole averaged gradient: "
            f"`chain(cross_replica_mean({axis_name!r}), clip_by_global_norm(max_norm), "
            f"shard_optimizer_state(adam(...), {axis_name!r}))`."
        )
    if mark == _MIXED:
        raise ValueError(
            f"shard_optimizer_state: the wrapped transformation combines different elements "
            f"of a parameter, or depends on their positions (`{cause}`), which it cannot do on "
            f"the 1/{n} slices each device holds (per-row or per-matrix statistics, sorting, "
            f"matrix products, random noise, ...). Only "
            f"element-wise transformations (Adam, SGD, RMSProp, Lion, ...) can be wrapped: "
            f"apply this one outside the wrapper, on the whole averaged gradient."
        )
