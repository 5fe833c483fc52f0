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

from collections.abc import Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradxform import _checks, _validate
from gradxform._base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    as_transformation,
    expect_state,
    extra_args_filter,
)
from gradxform.wrappers.elementwise import elementwise_problem, slice_shape

__all__ = ["ShardedState", "cross_replica_mean", "shard_optimizer_state"]


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
    _validate.axis_name("cross_replica_mean", axis_name, optional=False)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_against_params("cross_replica_mean", updates, params)
        return lax.pmean(updates, axis_name), state

    return GradientTransformation(init_fn, update_fn)


class ShardedState(NamedTuple):
    """The state of :func:`shard_optimizer_state`.

    ``inner_state``: the wrapped transformation's state for this device's slice of every
    parameter. Every leaf carries a leading axis of length 1, the device axis, so that the
    states of all devices stack along it: ``out_specs=P(axis_name)`` under ``shard_map``
    (global leaves of shape ``(n, ...)``), and ``(n, 1, ...)`` leaves out of ``pmap``.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> opt = gx.shard_optimizer_state(gx.sgd(0.1, momentum=0.9), axis_name="i")
      >>> n = jax.local_device_count()
      >>> state = jax.pmap(opt.init, axis_name="i")(jnp.zeros((n, 2 * n)))  # N = 2n per param
      >>> type(state).__name__, state.inner_state[0].trace.shape[1:]  # (1, k), k = N / n
      ('ShardedState', (1, 2))
    """

    inner_state: Any


def _slice_length(size: int, n: int) -> int:
    return -(-size // n)


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
    inner: GradientTransformation, *, axis_name: Hashable, average_updates: bool = False
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

        opt = gx.shard_optimizer_state(gx.adam(1e-3), axis_name="data", average_updates=True)
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
    your own: the first ``update`` traces ``inner`` on the whole parameters and on one
    device's slices, and follows every value through both programs. It is an allow-list that
    fails closed (:mod:`gradxform.wrappers.elementwise`): element-wise primitives pass,
    reshapes and transposes only where they keep the elements in order, a full sum only
    through a ``psum`` over ``axis_name`` before anything non-linear, and only of a value that
    is 0 where the gradient, the params and the state are 0 (at the padding: ``g * g``, not
    ``exp(g)`` or ``g + 1``, nor a state that ``init`` fills with a non-zero value); anything
    that combines elements or depends on their positions, a primitive the check does not know
    (named in the error), or a program that changes with the shapes raises ``ValueError``.

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

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> n, opt = jax.local_device_count(), gx.shard_optimizer_state(gx.adam(0.1), axis_name="i")
      >>> def step(g, p):
      ...     return opt.update(g, opt.init(p), p)[0]
      >>> g = jnp.tile(jnp.array([0.5, -4.0, 2.0]), (n, 1))  # the same gradient on every device
      >>> u = jax.pmap(step, axis_name="i")(g, jnp.zeros_like(g))[0]
      >>> [round(x, 4) for x in u.tolist()]  # Adam's first step, -lr * sign(g)
      [-0.1, 0.1, -0.1]
    """
    who = "shard_optimizer_state"
    inner = as_transformation(inner, f"{who}: `inner`")
    _validate.axis_name(who, axis_name, optional=False)
    _validate.boolean(who, "average_updates", average_updates)
    keep_extra = extra_args_filter(inner.update)

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
            return piece.reshape(slice_shape(jnp.shape(x), n))

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
        expect_state(who, state, ShardedState)
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

    return GradientTransformationExtraArgs(init_fn, update_fn)


_APPLY_OUTSIDE = "apply it outside the wrapper, on the whole averaged gradient"


def _check_elementwise(
    inner: GradientTransformation,
    updates: Any,
    params: Any,
    extra_args: dict,
    axis_name: Hashable,
    n: int,
) -> None:
    """Raises ``ValueError`` saying why, if ``inner`` would compute something else on slices."""
    found = elementwise_problem(inner, updates, params, extra_args, axis_name, n)
    if found is None:
        return
    problem, cause = found
    start = "shard_optimizer_state: the wrapped transformation"
    messages = {
        "sums": (
            f"sums over the elements of the parameters ({cause}) without summing over the "
            f"devices, so on each device it would use the sum over its own 1/{n} slice only. "
            f"Give such transformations the axis (e.g. `clip_by_global_norm(max_norm, "
            f"axis_name={axis_name!r})`), or put them before the wrapper, on the whole averaged "
            f"gradient: `chain(cross_replica_mean({axis_name!r}), clip_by_global_norm(max_norm), "
            f"shard_optimizer_state(adam(...), axis_name={axis_name!r}))`."
        ),
        "padding": (
            f"sums values that are not known to be 0 at the padding of the slices ({cause}). "
            f"Each device pads its slice of every leaf with zeros to k = ceil(size / {n}) "
            f"elements, and a sum over the slice (or a `psum` of a one-element leaf, which the "
            f"other devices hold as padding) adds what the transformation computes there, so "
            f"it is right only where that is 0. Sum values that are 0 where the gradient, the "
            f"params and the state are 0 (`g * g`, `expm1(g)` rather than `exp(g)`, state that "
            f"`init` fills with zeros), or {_APPLY_OUTSIDE}."
        ),
        "mixes": (
            f"combines different elements of a parameter, or depends on their positions "
            f"({cause}), which it cannot do on the 1/{n} slices each device holds (per-row or "
            f"per-matrix statistics, sorting, matrix products, random noise, ...). Only "
            f"element-wise transformations (Adam, SGD, RMSProp, Lion, ...) can be wrapped: "
            f"{_APPLY_OUTSIDE}."
        ),
        "unknown": (
            f"uses {cause}, which the check does not know to be element-wise: it accepts only "
            f"the operations it knows (listed in gradxform/wrappers/elementwise.py), so that "
            f"nothing that mixes elements slips through. {_APPLY_OUTSIDE.capitalize()}; if "
            f"this operation is element-wise, please report it, so that it can be added."
        ),
        "diverges": (
            f"runs other operations on a device's 1/{n} slice of the parameters than on the "
            f"whole parameters ({cause}): they depend on the parameters' shapes, so what it "
            f"computes on slices cannot be checked; {_APPLY_OUTSIDE}."
        ),
        "fails": (
            f"runs on the whole parameters but fails on a device's slice of them (each leaf of "
            f"shape (1, ..., 1, k), k = ceil(size / {n})) with {cause}. It depends on the "
            f"parameters' shapes; {_APPLY_OUTSIDE}."
        ),
    }
    raise ValueError(f"{start} {messages[problem]}")
