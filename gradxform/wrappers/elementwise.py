"""Does a transformation treat the elements of a parameter independently? A data-flow pass over
its jaxprs, with which :func:`gradxform.shard_optimizer_state` refuses transformations that would
compute something else on a device's slice of a parameter than on the whole parameter.

An allow-list that fails closed: a primitive passes only where the check knows how it moves
elements; any other, or a program that changes with the shapes, is refused and named.
``inner.init`` and ``inner.update`` are traced on the whole parameters and on one device's
slices (shape ``(1, ..., 1, k)``, a contiguous chunk of the row-major flattening, padded with
zeros), and each pair of programs is walked side by side (:mod:`gradxform.wrappers.jaxpr_walk`,
with the marks of :mod:`gradxform.wrappers.marks`): the whole one tells what is combined, the
sliced one what runs (its shapes, and constants that must agree). Allowed, with sizes checked in
both programs:

- element-wise primitives, where an operand of one element spread over many is ``R``; on
  ``SUM``, ``add``/``sub`` of sums, zeros and one-element values (their own sums),
  ``mul``/``div`` by ``R``, ``neg`` and conversions keep ``SUM``;
- ``reshape``/``squeeze`` (they keep the row-major order); ``broadcast_in_dim`` of ``R``, or of
  anything when the size does not change; ``transpose``/``rev`` moving only axes of size 1;
- reductions over one element; ``reduce_sum``/``dot_general`` over all elements (``SUM``);
  ``psum`` over the axis of ``SUM`` and of one-element values (giving ``R``);
- calls, ``cond``, ``while`` and ``scan`` (not along a parameter's axis), followed inside;
- any listed primitive on ``R`` operands with the same results in both programs.

**The padding.** A sum over all the elements of a slice also runs over its padded positions, and
the ``psum`` of a one-element value (a one-element leaf is padded to one element per device)
adds what every device but the first computes from padding. Both are right only where that
value is zero, so each ``R`` and ``E`` value carries what it is at the padded positions
(:mod:`gradxform.wrappers.marks`): the update and param slices are zero there (also with
``average_updates``, which reduce-scatters the zero-padded gradients); an element-wise primitive
maps what its operands are there through an exact rule of
:mod:`gradxform.wrappers.primitive_table`, or the value is not known; a sum or ``psum`` as above
of a value not known to be zero there is refused (``PADDED``). The state is an input of
``update``, and what it is at the padding an invariant: what ``init`` makes it, joined with what
``update`` makes of it until that no longer changes, so that it holds after any number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform._base import GradientTransformation
from gradxform.wrappers.jaxpr_walk import DivergedError, walk
from gradxform.wrappers.marks import (
    MIXED,
    PADDED,
    PART,
    SUM,
    UNKNOWN,
    E,
    Mark,
    describe,
    is_zero,
    join,
    same,
)


def slice_shape(shape: Sequence[int], n: int) -> tuple[int, ...]:
    """One device's slice of a leaf of ``shape`` over ``n`` devices: ``(1, ..., 1, k)`` with
    ``k = ceil(size / n)``, keeping the rank (so rank-based masks select the same leaves)."""
    return (1,) * (len(shape) - 1) + (-(-math.prod(shape) // n),) if shape else ()


_VERDICTS = {SUM: "sums", PART: "sums", PADDED: "padding", UNKNOWN: "unknown", MIXED: "mixes"}


def _zeros(jaxpr: Any) -> list[Mark]:
    """Inputs that are zero at the padding: slices of the updates and params."""
    return [Mark(E, "", (np.zeros((), aval.dtype),)) for aval in jaxpr.in_avals]


def _state(marks: list[Mark], init: list[Mark], paths: list[str]) -> list[Mark]:
    """The marks of the state leaves, with causes that name them (``init``: as it makes them)."""
    out = []
    for mark, first, path in zip(marks, init, paths, strict=True):
        if mark.level == E and not is_zero(mark.pad):
            if is_zero(first.pad):
                why = "which `update` does not keep at 0"
            elif isinstance(first.pad, tuple):
                why = f"which `init` makes {describe(first.pad)}"
            else:
                why = "which `init` does not make 0"
            mark = mark._replace(cause=f"the state leaf `{path}`, {why} at the padded positions")
        out.append(mark)
    return out


def _outputs(axis: Hashable, whole: tuple, sliced: tuple, layout: tuple) -> list[Mark]:
    """The marks of everything ``init`` and ``update`` return, with the state's invariant."""
    (init_whole, update_whole), (init_sliced, update_sliced) = whole, sliced
    n_updates, paths = layout
    init = walk(axis, init_whole, init_sliced, _zeros(init_whole))
    inputs, n_state = _zeros(update_whole), len(paths)
    state = _state(init, init, paths)
    while True:
        ins = [*inputs[:n_updates], *state, *inputs[n_updates + n_state :]]
        outs = walk(axis, update_whole, update_sliced, ins)
        new_state = outs[len(outs) - n_state :]
        new = [join(pair) for pair in zip(state, new_state, strict=True)]
        new = _state(new, init, paths)
        if all(map(same, new, state)):
            return [*init, *outs]
        state = new


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
    over devices), ``"padding"`` (sums values that are not zero at the padding), ``"mixes"``
    (elements, or depends on positions), ``"unknown"`` (a primitive not on the list),
    ``"diverges"`` (other operations on slices), ``"fails"`` (on slices)."""
    has_params = params is not None
    env = [(axis_name, n)]

    def update(updates, state, params):
        return inner.update(updates, state, params if has_params else None, **extra_args)

    def trace(shape: Callable[[tuple[int, ...]], tuple[int, ...]]) -> tuple[tuple, tuple]:
        like = lambda x: jax.ShapeDtypeStruct(shape(jnp.shape(x)), jnp.result_type(x))  # noqa: E731
        u, p = jax.tree.map(like, updates), jax.tree.map(like, params) if has_params else None
        init, state = jax.make_jaxpr(inner.init, axis_env=env, return_shape=True)(
            p if has_params else u
        )
        step, (_, new_state) = jax.make_jaxpr(update, axis_env=env, return_shape=True)(u, state, p)
        paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(state)]
        same_tree = jax.tree.structure(new_state) == jax.tree.structure(state)
        return (init, step), (len(jax.tree.leaves(u)), paths if same_tree else None)

    (whole, layout), failure = trace(lambda shape: shape), None
    if layout[1] is None:  # the invariant pairs each state leaf with its new value
        return ("unknown", "a state that `update` returns in another tree structure than `init`")
    try:
        sliced, _ = trace(lambda shape: slice_shape(shape, n))
    except Exception as error:  # reported after what the whole program alone tells
        sliced, failure = whole, f"{type(error).__name__}: {error}"
    try:
        level, cause, _ = join(_outputs(axis_name, whole, sliced, layout))
    except DivergedError as diverged:
        return ("diverges", str(diverged))
    if level in _VERDICTS:
        return (_VERDICTS[level], cause)
    return None if failure is None else ("fails", failure)
