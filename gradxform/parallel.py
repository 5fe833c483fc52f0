"""Several devices: averaging updates over a mapped axis, and sharding optimizer state (ZeRO-1).

Every transformation in gradxform is a pure function of arrays, so it runs unchanged inside
``jax.pmap`` and ``jax.shard_map`` bodies and under ``jax.jit`` with sharded parameters. This
module adds the two pieces data-parallel training needs on top of that:

- :func:`cross_replica_mean`, the gradient all-reduce, written as a transformation to put at
  the head of a chain;
- :func:`shard_optimizer_state`, which makes each of ``n`` data-parallel devices keep and update
  only ``1/n`` of another transformation's state (ZeRO stage 1, Rajbhandari et al., 2020).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jex_core

from gradxform._base import (
    EmptyState,
    GradientTransformation,
    _as_transformation,
    _extra_args_filter,
)

__all__ = ["ShardedState", "cross_replica_mean", "shard_optimizer_state"]


def _check_axis_name(who: str, axis_name: Any) -> None:
    if axis_name is None or not isinstance(axis_name, Hashable):
        raise TypeError(
            f"{who}: `axis_name` must be the name of a mapped axis (the `axis_name` of "
            f"`jax.pmap`, or a mesh axis of `jax.shard_map`), got {axis_name!r}"
        )


def _axis_position(who: str, axis_name: Hashable) -> tuple[int, jax.Array]:
    """The size of the mapped axis and this device's index along it, or a clear error."""
    try:
        return lax.axis_size(axis_name), lax.axis_index(axis_name)
    except NameError as error:
        raise NameError(
            f"{who}: axis {axis_name!r} is not bound here. Call `init` and `update` inside the "
            f"function mapped over it, e.g. `jax.pmap(opt.init, axis_name={axis_name!r})"
            f"(replicated_params)` or `jax.shard_map(opt.init, mesh=mesh, in_specs=P(), "
            f"out_specs=P({axis_name!r}))(params)`."
        ) from error


def cross_replica_mean(axis_name: Hashable) -> GradientTransformation:
    """Averages updates over a mapped axis: ``u <- (1/n) sum_d u_d``, with ``lax.pmean``.

    Data-parallel training computes a gradient per device from its share of the batch; put
    this first in the chain so every device continues with the gradient of the whole batch
    (an all-reduce), and every device's optimizer then makes the same step::

        opt = gx.chain(gx.cross_replica_mean("data"), gx.adam(1e-3))

    Args:
      axis_name: the mapped axis to average over (``pmap``'s ``axis_name`` or a mesh axis of
        ``shard_map``).

    Returns:
      A stateless transformation; ``update`` must run inside the mapped function.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> mean = gx.cross_replica_mean("i")
      >>> step = jax.pmap(lambda g: mean.update(g, mean.init(g))[0], axis_name="i")
      >>> grads = jnp.arange(jax.local_device_count(), dtype=jnp.float32)  # device d has d
      >>> bool(jnp.all(step(grads) == grads.mean()))
      True
    """
    _check_axis_name("cross_replica_mean", axis_name)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return lax.pmean(updates, axis_name), state

    return GradientTransformation(init_fn, update_fn)


class ShardedState(NamedTuple):
    """The state of :func:`shard_optimizer_state`.

    ``inner_state``: the wrapped transformation's state for this device's slice of every
    parameter. Every leaf carries a leading axis of length 1, the device axis, so that the
    states of all devices stack along it: ``out_specs=P(axis_name)`` under ``shard_map``
    (global leaves of shape ``(n, ...)``), and ``(n, 1, ...)`` leaves out of ``pmap``.
    """

    inner_state: Any


def _slice_length(size: int, n: int) -> int:
    return -(-size // n)


def _slice_shape(ndim: int, length: int) -> tuple[int, ...]:
    # A slice keeps its parameter's rank, so masks that select leaves by rank (such as
    # `decay_matrices_only`) select the same leaves on slices as on whole parameters.
    return (1,) * (ndim - 1) + (length,) if ndim else ()


def _padded_flat(x: jax.Array, n: int) -> tuple[jax.Array, int]:
    x = jnp.asarray(x)
    length = _slice_length(x.size, n)
    flat = jnp.ravel(x)
    return jnp.pad(flat, (0, n * length - x.size)), length


def _as_varying(x: jax.Array, axis_name: Hashable) -> jax.Array:
    """Marks ``x`` as varying over the axis where ``shard_map`` tracks that (no data moves).

    ``psum_scatter`` and the invariant ``all_gather`` take varying operands; a replicated
    gradient, or an update computed from replicated values only, is first marked as such.
    """
    vma = getattr(jax.typeof(x), "vma", None)
    if vma is None or axis_name in vma:  # pmap and check_vma=False track nothing
        return x
    return lax.pcast(x, axis_name, to="varying")


def shard_optimizer_state(
    inner: GradientTransformation, axis_name: Hashable, *, average_updates: bool = False
) -> GradientTransformation:
    """Each of ``n`` data-parallel devices keeps and updates ``1/n`` of ``inner``'s state.

    ZeRO stage 1 (Rajbhandari et al., 2020, "ZeRO: Memory Optimizations Toward Training
    Trillion Parameter Models"). With ``d`` this device's index along ``axis_name``, every leaf
    ``x`` of size ``N`` is flattened, padded with zeros to ``n * k`` elements
    (``k = ceil(N / n)``), and cut into ``n`` slices; then::

        s_d = x_flat[d*k : (d+1)*k]                       (slice d of each update and param)
        u_d, state_d <- inner.update(s_d(u), state_d, s_d(p))
        u <- reshape(all_gather_d(u_d)[:N])              (every device gets the whole update)

    so each device stores the state of ``k`` elements per leaf instead of ``N``, and the
    update equals ``inner``'s on the whole tree, provided ``inner`` treats elements
    independently (see below). Slices keep their parameter's rank (shape ``(1, ..., 1, k)``),
    so rank-based masks such as :func:`gradxform.decay_matrices_only` select the same leaves.

    **Calling it.** Both ``init`` and ``update`` run inside the function mapped over
    ``axis_name`` (``jax.pmap`` or ``jax.shard_map``), on parameters replicated on every
    device: ``init`` builds this device's slice of the state, and the state leaves carry a
    leading device axis of length 1 (:class:`ShardedState`). Under ``shard_map`` give the
    state ``P(axis_name)`` in ``in_specs`` and ``out_specs``; under ``pmap`` map it over axis 0
    as usual (called outside a mapped function, both raise ``NameError`` saying so)::

        opt = gx.shard_optimizer_state(gx.adam(1e-3), "data", average_updates=True)
        state = jax.pmap(opt.init, axis_name="data")(replicated_params)

    **Which transformations.** ``inner`` must compute each element of the update and of its
    state from the same element of the gradient, the params and the state, plus scalars such
    as the step count: :func:`gradxform.sgd`, :func:`gradxform.adam`, :func:`gradxform.adamw`
    (also with a mask), :func:`gradxform.amsgrad`, :func:`gradxform.rmsprop`,
    :func:`gradxform.adagrad`, :func:`gradxform.adamax`, :func:`gradxform.nadam`,
    :func:`gradxform.lion`, and the transformations they are made of (``scale_by_*``,
    :func:`gradxform.trace`, :func:`gradxform.ema`, :func:`gradxform.scale`, schedules, weight
    decay, :func:`gradxform.clip`), in any chain. Transformations that sum over the elements of
    the whole model work if the sum also runs over the devices: use
    ``clip_by_global_norm(max_norm, axis_name=axis_name)`` inside the wrapper (zero padding
    adds nothing to the norm), or put ``clip_by_global_norm(max_norm)`` before it, on the
    whole averaged gradient. Anything else that combines elements (norms without the axis,
    per-row statistics, sorting, matrix products) would see only a slice and is rejected.

    The check is made on the computation itself, so it also covers Optax transformations and
    your own: the first ``update`` traces ``inner`` on the whole parameters' shapes and
    follows every value that combines several elements of a parameter (reductions, products,
    cumulative ops, sorts, indexing). A full sum may reach the outputs only through a
    ``psum`` over ``axis_name``; any other combination raises ``ValueError``.

    Args:
      inner: the transformation whose state is sharded; it sees only the slices.
      axis_name: the data-parallel axis (``pmap``'s ``axis_name`` or a ``shard_map`` mesh axis).
      average_updates: the incoming updates are each device's own gradient: average them over
        the axis with a reduce-scatter, each device receiving only the mean of its slice. This
        replaces a :func:`cross_replica_mean` in front, and with the all-gather of the update
        moves the bytes of one all-reduce in all. By default the incoming updates must already
        be equal on every device.

    Returns:
      A transformation whose state is :class:`ShardedState`.
    """
    who = "shard_optimizer_state"
    inner = _as_transformation(inner, f"{who}: `inner`")
    _check_axis_name(who, axis_name)
    if not isinstance(average_updates, bool):
        raise TypeError(f"{who}: `average_updates` must be a bool, got {average_updates!r}")
    keep_extra = _extra_args_filter(inner.update)

    def take_slices(tree, n, index, average):
        def leaf(x):
            flat, length = _padded_flat(x, n)
            if average:
                piece = lax.psum_scatter(
                    _as_varying(flat, axis_name), axis_name, scatter_dimension=0, tiled=True
                )
                piece = (piece / n).astype(flat.dtype)
            else:
                piece = lax.dynamic_slice_in_dim(flat, index * length, length)
            return piece.reshape(_slice_shape(jnp.ndim(x), length))

        return jax.tree.map(leaf, tree)

    def gather(pieces, like):
        def leaf(piece, x):
            flat = _as_varying(jnp.ravel(piece), axis_name)
            whole = lax.all_gather(flat, axis_name, tiled=True, to="invarying")
            return whole[: jnp.size(x)].reshape(jnp.shape(x))

        return jax.tree.map(leaf, pieces, like)

    def init_fn(params):
        n, index = _axis_position(who, axis_name)
        inner_state = inner.init(take_slices(params, n, index, average=False))
        return ShardedState(jax.tree.map(lambda s: jnp.asarray(s)[None], inner_state))

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, ShardedState):
            raise TypeError(
                f"{who}: expected the state made by this transformation's `init` (a "
                f"ShardedState), got {type(state).__name__}"
            )
        n, index = _axis_position(who, axis_name)
        extra_args = keep_extra(extra_args)
        _check_elementwise(inner, updates, params, extra_args, axis_name, n)
        inner_state = jax.tree.map(lambda s: s[0], state.inner_state)
        update_slices = take_slices(updates, n, index, average_updates)
        param_slices = None if params is None else take_slices(params, n, index, False)
        new_slices, inner_state = inner.update(
            update_slices, inner_state, param_slices, **extra_args
        )
        new_state = ShardedState(jax.tree.map(lambda s: jnp.asarray(s)[None], inner_state))
        return gather(new_slices, updates), new_state

    return GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# Does a transformation treat elements independently? A data-flow pass over its jaxpr.
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


def _check_elementwise(
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
