"""ZeRO-1: shard_optimizer_state (gradxform/wrappers/sharding.py) and its check that the wrapped
transformation computes on slices what it computes on whole parameters
(gradxform/wrappers/elementwise.py, with jaxpr_walk.py, marks.py and primitive_table.py).

conftest.py gives 8 host CPU devices. The wrapper is compared with the plain optimizer fed the
same averaged gradients in the same mapped program, so that the only difference left is the
sharding. Tolerances are justified where they appear.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import Primitive, jaxprs_in_params
from jax.interpreters import mlir
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from references import require_optax
from test_parallel import (
    AXIS,
    N,
    _assert_close,
    _data,
    _loss,
    _mesh,
    _params,
    _pmap_train,
    _replicate,
    _unreplicate,
)

import gradxform as gx
from gradxform.wrappers.elementwise import elementwise_problem
from gradxform.wrappers.primitive_table import primitive_kind


class Member(NamedTuple):
    """An optimizer in a :func:`_lockstep` group."""

    opt: Any
    local: bool = False  # gets this device's own gradient rather than the average
    sharded: bool = False  # its state is per device (shard_optimizer_state)


def _lockstep(groups, params, x, y, mode):
    """Trains groups of optimizers side by side, each group on the gradients of its first.

    Every step, the gradient is taken at the params of the group's first member on each
    device's batch; every member gets its average over the devices, or (``local``) this
    device's own gradient. As all members see the same gradients, a rounding difference between
    them is not fed back through the loss (where Adam's normalisation would blow an ulp up
    wherever a moment nearly cancels). Returns each member's final ``(params, state)``, by group.
    """

    def body(params, x, y):
        if mode == "shard_map":
            x, y = x[0], y[0]

        def step(carry, batch):
            new_carry = []
            for group, members in zip(groups, carry, strict=True):
                at = members[0][0]
                if mode == "shard_map":
                    at = jax.lax.pcast(at, AXIS, to="varying")
                local = jax.grad(_loss)(at, *batch)
                mean = jax.lax.pmean(local, AXIS)
                new_members = []
                for member, (p, s) in zip(group, members, strict=True):
                    updates, s = member.opt.update(local if member.local else mean, s, p)
                    new_members.append((gx.apply_updates(p, updates), s))
                new_carry.append(new_members)
            return new_carry, None

        start = [[(params, m.opt.init(params)) for m in group] for group in groups]
        return jax.lax.scan(step, start, (x, y))[0]

    if mode == "pmap":
        out = jax.pmap(body, axis_name=AXIS)(_replicate(params), x, y)
        return [[(_unreplicate(p), s) for p, s in members] for members in out]
    mesh = _mesh()
    out_specs = [[(P(), P(AXIS) if m.sharded else P()) for m in group] for group in groups]
    run = jax.jit(
        jax.shard_map(body, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)), out_specs=out_specs)
    )
    params = jax.device_put(params, NamedSharding(mesh, P()))
    return run(params, *jax.device_put((x, y), NamedSharding(mesh, P(AXIS))))


# Two ulps of a float32 param of magnitude 1 to 2 (the params here start as standard normals).
ATOL = 2.5e-7

ZERO_OPTIMIZERS = {
    "adam": lambda: gx.adam(0.01),
    "sgd_momentum": lambda: gx.sgd(0.05, momentum=0.9),
}


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_sharded_state_matches_unsharded_over_50_steps(mode):
    rng = np.random.default_rng(5)
    params = _params(rng)
    x, y = _data(rng, steps=50)
    names = sorted(ZERO_OPTIMIZERS)
    groups = [
        [
            Member(ZERO_OPTIMIZERS[k]()),
            Member(gx.shard_optimizer_state(ZERO_OPTIMIZERS[k](), axis_name=AXIS), sharded=True),
            Member(
                gx.shard_optimizer_state(
                    ZERO_OPTIMIZERS[k](), axis_name=AXIS, average_updates=True
                ),
                local=True,
                sharded=True,
            ),
        ]
        for k in names
    ]
    for name, members in zip(names, _lockstep(groups, params, x, y, mode), strict=True):
        (want, _), (got, state), (got_reduce_scatter, _) = members
        # The device axis leads every state leaf: (N, 1, ...) out of pmap, (N, ...) here.
        lead = (N, 1) if mode == "pmap" else (N,)
        assert all(leaf.shape[: len(lead)] == lead for leaf in jax.tree.leaves(state)), name
        # The same float32 arithmetic on the same averaged gradients; XLA may fuse slices and
        # whole arrays differently, and psum_scatter may add the 8 gradients in another order
        # than psum: an ulp of an update, which can flip the rounding of ``p + u`` by an ulp
        # of p (params are of order 1-2 here, so up to 2.4e-7: ATOL).
        _assert_close(got, want, rtol=1e-6, atol=ATOL, what=f"{mode} {name}")
        _assert_close(got_reduce_scatter, want, rtol=1e-6, atol=ATOL, what=f"{mode} {name} rs")
        assert not np.allclose(got["w"], np.asarray(params["w"]), atol=1e-2), name


def _row_normalize():
    """A transformation that divides each row by its norm: it combines elements of a row.

    The norm sits inside a nested ``jit``, which the check must look into.
    """

    @jax.jit
    def leaf(x):
        return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1.0) if x.ndim else x

    return gx.stateless(lambda u, p: jax.tree.map(leaf, u))


def _add_noise():
    """Adds fixed-key Gaussian noise: on slices, every device would draw the same numbers."""
    noise = lambda x: x + 0.01 * jax.random.normal(jax.random.key(0), x.shape)  # noqa: E731
    return gx.stateless(lambda u, p: jax.tree.map(noise, u))


def _global_rms(initial_scale, axis):
    """RMSProp with one denominator for the whole model: the second moment ``v`` of
    ``scale_by_rms`` (which starts at ``initial_scale``), and ``u = g / sqrt(sum v + 1e-8)`` with
    the sum over every element of every leaf, and over the devices where ``axis`` is given."""
    rms = gx.scale_by_rms(initial_scale=initial_scale)

    def update_fn(updates, state, params=None, **extra_args):
        _, state = rms.update(updates, state, params, **extra_args)
        total = sum(jnp.sum(v) for v in jax.tree.leaves(state.nu))
        total = total if axis is None else jax.lax.psum(total, axis)
        return jax.tree.map(lambda g: g / jnp.sqrt(total + 1e-8), updates), state

    return gx.GradientTransformation(rms.init, update_fn)


# Transformations the wrapper supports, as functions of the axis to sum a norm over: the
# wrapped clip needs the axis (each device holds slices), the unsharded reference must not have
# it (each device holds the whole gradient, and summing over devices would count it 8 times).
SUPPORTED_INNER = {
    "sgd": lambda axis: gx.sgd(0.05),
    "sgd_nesterov": lambda axis: gx.sgd(0.05, momentum=0.9, nesterov=True),
    "sgd_dampening_decay": lambda axis: gx.sgd(
        0.05, momentum=0.9, dampening=0.5, weight_decay=0.01
    ),
    "adam_amsgrad_schedule": lambda axis: gx.adam(
        gx.warmup_cosine_decay_schedule(0.0, 0.01, warmup_steps=2, decay_steps=5), amsgrad=True
    ),
    "rmsprop": lambda axis: gx.rmsprop(0.01),
    "clip_elementwise": lambda axis: gx.chain(gx.clip(0.05), gx.sgd(0.05, momentum=0.9)),
    "adamw_masked": lambda axis: gx.adamw(0.01, weight_decay=0.1, mask=gx.decay_matrices_only),
    "amsgrad": lambda axis: gx.amsgrad(0.01),
    "rmsprop_centered": lambda axis: gx.rmsprop(0.01, centered=True, momentum=0.9),
    "adagrad": lambda axis: gx.adagrad(0.1, lr_decay=0.01),
    "adamax": lambda axis: gx.adamax(0.01),
    "nadam": lambda axis: gx.nadam(0.01, weight_decay=0.01),
    "lion": lambda axis: gx.lion(0.003, weight_decay=0.1),
    "trace_ema_schedule": lambda axis: gx.chain(
        gx.trace(0.9, nesterov=True),
        gx.ema(0.5),
        gx.scale_by_learning_rate(lambda count: 0.01 / (1.0 + count)),
    ),
    # Momentum SGD after the clip, not Adam: Adam would hide a wrong norm (it is invariant to
    # the gradient's scale), and would amplify the ulp by which the norm summed in another
    # order differs wherever a moment nearly cancels.
    "clip_with_axis": lambda axis: gx.chain(
        gx.clip_by_global_norm(0.5, axis_name=axis), gx.sgd(0.05, momentum=0.9)
    ),
    # The sum of squares of Adam's update, which is 0 at the padding: a zero moment over a
    # bias correction (equal on every device), over sqrt(0) + eps.
    "adam_then_clip_with_axis": lambda axis: gx.chain(
        gx.adam(0.01), gx.clip_by_global_norm(0.02, axis_name=axis)
    ),
    # A sum over a state leaf that init and every update keep at 0 at the padding.
    "global_rms": lambda axis: gx.chain(_global_rms(0.0, axis), gx.sgd(0.05, momentum=0.9)),
    # State that is not 0 at the padding, and never summed.
    "adagrad_initial_accumulator": lambda axis: gx.adagrad(0.1, initial_accumulator_value=0.1),
}


def test_sharded_state_supports_elementwise_transformations():
    rng = np.random.default_rng(7)
    params = _params(rng)
    x, y = _data(rng, steps=5)
    names = sorted(SUPPORTED_INNER)
    groups = [
        [
            Member(SUPPORTED_INNER[k](None)),
            Member(
                gx.shard_optimizer_state(SUPPORTED_INNER[k](AXIS), axis_name=AXIS), sharded=True
            ),
        ]
        for k in names
    ]
    # One pmap for all of them: one compilation instead of fifteen.
    results = _lockstep(groups, params, x, y, "pmap")
    for name, ((want, _), (got, _)) in zip(names, results, strict=True):
        # Same arithmetic on the same gradients; the clip's norm is summed over slices and
        # devices rather than over whole leaves (an ulp of the norm; see ATOL).
        _assert_close(got, want, rtol=1e-6, atol=ATOL, what=name)


def test_sharded_state_accepts_optax_transformations():
    optax = require_optax()
    rng = np.random.default_rng(8)
    params = _params(rng)
    x, y = _data(rng, steps=5)
    makers = {  # as functions of the axis, as SUPPORTED_INNER
        "adam": lambda axis: optax.adam(0.01),
        "adamw": lambda axis: optax.adamw(0.01, weight_decay=0.1),
        "sgd_nesterov": lambda axis: optax.sgd(0.05, momentum=0.9, nesterov=True),
        "lion": lambda axis: optax.lion(0.003),
        # Its accumulator starts at 0.1, and the sum of squares of its update is 0 at the
        # padding: 0 * rsqrt(0.1 + eps), finite.
        "adagrad_then_clip_with_axis": lambda axis: optax.chain(
            optax.adagrad(0.1), gx.clip_by_global_norm(0.05, axis_name=axis)
        ),
    }
    groups = [
        [Member(make(None)), Member(gx.shard_optimizer_state(make(AXIS), axis_name=AXIS))]
        for make in makers.values()
    ]
    results = _lockstep(groups, params, x, y, "pmap")
    for name, [(want, _), (got, _)] in zip(makers, results, strict=True):
        _assert_close(got, want, rtol=1e-6, atol=ATOL, what=name)
    with pytest.raises(ValueError, match="sums over the elements"):
        _pmap_train(
            [gx.shard_optimizer_state(optax.clip_by_global_norm(1.0), axis_name=AXIS)], params, x, y
        )


@pytest.mark.parametrize(
    "make, message",
    [
        # A global norm summed over this device's slice only: fixable with the axis name.
        (lambda: gx.chain(gx.clip_by_global_norm(1.0), gx.adam(0.01)), "sums over the elements"),
        # Per-row statistics: no axis name can fix them on flat slices.
        (lambda: gx.chain(_row_normalize(), gx.sgd(0.1)), "combines different elements"),
        # A psum of whole arrays over the axis adds up unrelated slices.
        (
            lambda: gx.stateless(lambda u, p: jax.lax.psum(u, AXIS)),
            "combines different elements",
        ),
        # Values made from positions differ between a slice and its param.
        (lambda: gx.chain(_add_noise(), gx.sgd(0.1)), "depends on their positions"),
    ],
    ids=["global_norm", "row_norm", "psum_of_arrays", "noise"],
)
def test_sharded_state_rejects_transformations_that_combine_elements(make, message):
    rng = np.random.default_rng(9)
    params = _params(rng)
    x, y = _data(rng, steps=1)
    with pytest.raises(ValueError, match=message):
        _pmap_train([gx.shard_optimizer_state(make(), axis_name=AXIS)], params, x, y)


def _sharded_update(inner, shapes):
    """One ``update`` of ``shard_optimizer_state(inner)`` under pmap, on params of ``shapes``
    (standard normals) given as their own gradients."""
    rng = np.random.default_rng(11)
    params = {k: jnp.asarray(rng.normal(size=shape), jnp.float32) for k, shape in shapes.items()}
    opt = gx.shard_optimizer_state(inner, axis_name=AXIS)
    step = lambda p: opt.update(p, opt.init(p), p)[0]  # noqa: E731
    return jax.pmap(step, axis_name=AXIS)(_replicate(params))


def _running_sum():
    """A primitive the check cannot know: the running sum of a leaf in row-major order."""
    primitive = Primitive("running_sum")
    impl = lambda x: jnp.cumsum(jnp.ravel(x)).reshape(jnp.shape(x))  # noqa: E731
    primitive.def_impl(impl)
    primitive.def_abstract_eval(lambda aval: aval)
    mlir.register_lowering(primitive, mlir.lower_fun(impl, multiple_results=False))
    return primitive


RUNNING_SUM = _running_sum()
SQUARE = {"w": (7, 7), "b": (7,), "s": ()}  # a 7 x 7 slice is one row on each of 8 devices
COLUMNS = {"c": (35, 1), "v": (35,)}  # slices (1, 5) and (5,)


def _each_leaf(fn):
    return gx.stateless(lambda u, p: jax.tree.map(fn, u))


def _rows_shifted(x):
    """Row i of ``x`` becomes row i + 1 (the first row zeros): ``pad`` with negative padding."""
    config = [(1, -1, 0)] + [(0, 0, 0)] * (x.ndim - 1)
    return jax.lax.pad(x, jnp.zeros((), x.dtype), config) if x.ndim == 2 else x


def _plus_column_sums(x):
    """Adds to each row the sum of the rows before it, with a ``scan`` over the rows."""
    if x.ndim != 2:
        return x
    step = lambda total, row: (total + row, total)  # noqa: E731
    return x + jax.lax.scan(step, jnp.zeros(x.shape[1:], x.dtype), x)[1]


# Transformations the old deny-list accepted although they combine elements, and what the
# error must name. Each runs on the params of its shapes (the leaves are given as gradients).
MISSED_BY_A_DENY_LIST = {
    # Symmetrizing a matrix moves elements across rows: on a device's row, off by ~1.
    "transpose": (_each_leaf(lambda x: (x + x.T) / 2), SQUARE, r"`transpose` \(1, 0\)"),
    # The bias gradient added to every row of the matrix: lax broadcasts the size-1 axis.
    "bias_into_rows": (
        gx.stateless(lambda u, p: {**u, "w": u["w"] + u["b"]}),
        SQUARE,
        r"`add` of a \(1, 7\) operand into \(7, 7\)",
    ),
    "broadcast_to": (
        gx.stateless(lambda u, p: {**u, "w": u["w"] * jnp.broadcast_to(u["b"], (7, 7))}),
        SQUARE,
        r"`broadcast_in_dim` of \(7,\) to \(7, 7\)",
    ),
    "outer": (
        gx.stateless(lambda u, p: {**u, "w": u["w"] + jnp.outer(u["b"], u["b"])}),
        SQUARE,
        r"`mul` of a \(7, 1\) operand into \(7, 7\)",
    ),
    "concatenate": (
        gx.stateless(lambda u, p: {**u, "w": u["w"] + jnp.concatenate([u["b"][None]] * 7)}),
        SQUARE,
        "`concatenate` giving a \\(7, 7\\) array",
    ),
    "pad": (_each_leaf(_rows_shifted), SQUARE, "`pad` giving"),
    "scan_over_rows": (_each_leaf(_plus_column_sums), SQUARE, "`scan` along an axis"),
    # A scalar parameter scaling every leaf: on a slice it is padding (zero) on 7 devices of 8.
    "scalar_param": (
        gx.stateless(lambda u, p: jax.tree.map(lambda x: x * p["s"], u)),
        SQUARE,
        r"`mul` of a \(\) operand into \(7,\)",
    ),
    # A number computed from a leaf's shape, its size: for the vector, 7 on the whole and 1 on
    # a slice.
    "size_from_shape": (
        _each_leaf(lambda x: x / x.size),
        SQUARE,
        "a constant computed from the shapes: 7.0 on whole parameters, 1.0 on slices",
    ),
    # The psum of each slice's norm, not the norm of the psum of squares.
    "psum_of_norms": (
        _each_leaf(lambda x: x / (jax.lax.psum(jnp.sqrt(jnp.sum(x * x)), AXIS) + 1.0)),
        SQUARE,
        r"`psum` over 'i' of `reduce_sum`, then `sqrt`: sum over the devices first",
    ),
    # A per-row sum over an axis of size 1 on the whole (35, 1) leaf, but 5 on its slices.
    "row_sum_of_a_column": (
        _each_leaf(lambda x: x / (jnp.sum(x, axis=-1, keepdims=True) + 1.0) if x.ndim == 2 else x),
        COLUMNS,
        r"`reduce_sum` over axes \(1,\) of a \(35, 1\) array",
    ),
    # Element-wise on the whole leaves ((35, 1) + (35, 1)), broadcast on slices ((1, 5) + (5, 1)).
    "broadcast_only_on_slices": (
        gx.stateless(lambda u, p: {**u, "c": u["c"] + u["v"][:, None]}),
        COLUMNS,
        r"`add` of a \(1, 5\) operand into \(5, 5\)",
    ),
    # Doubles a leaf only if it has more than one row: the whole matrix, never its slices.
    "branch_on_shape": (
        _each_leaf(lambda x: 2 * x if x.ndim == 2 and x.shape[0] > 1 else x),
        SQUARE,
        "runs other operations on a device's 1/8 slice .* \\(`mul` on whole parameters, "
        "nothing on slices\\)",
    ),
    # Unknown primitives are refused, whatever they do.
    "unknown_primitive": (
        _each_leaf(RUNNING_SUM.bind),
        SQUARE,
        "uses `running_sum`, which the check does not know",
    ),
}


@pytest.mark.parametrize("name", sorted(MISSED_BY_A_DENY_LIST))
def test_sharded_state_rejects_what_a_deny_list_misses(name):
    inner, shapes, message = MISSED_BY_A_DENY_LIST[name]
    with pytest.raises(ValueError, match=message):
        _sharded_update(inner, shapes)


def _softmax_denominator(x):
    """``x / sum exp(x)``, the sum over the whole leaf (over the devices too)."""
    return x / jax.lax.psum(jnp.sum(jnp.exp(x)), AXIS)


# Sums whose summand is not 0 where the gradient is 0: every padded element of a slice adds to
# them, which the old check did not see. What the error must name; the leaves of the shapes are
# given as gradients, as above.
NOT_ZERO_AT_THE_PADDING = {
    "exp": (_each_leaf(_softmax_denominator), SQUARE, r"`reduce_sum` of `exp`, which is 1\.0"),
    "x_plus_one": (
        _each_leaf(lambda x: x / jax.lax.psum(jnp.sum(x + 1), AXIS)),
        SQUARE,
        r"`reduce_sum` of `add`, which is 1\.0 at the padded positions",
    ),
    "cos": (
        _each_leaf(lambda x: x * jax.lax.psum(jnp.sum(jnp.cos(x)), AXIS)),
        SQUARE,
        r"`reduce_sum` of `cos`, which is 1\.0 at the padded positions",
    ),
    # scale_by_rms's second moment starts at 1 also at the padding, and decays from there.
    "state_initialised_non_zero": (
        _global_rms(1.0, AXIS),
        SQUARE,
        r"`reduce_sum` of a value computed from the state leaf `\.nu\['b'\]`, which `init` "
        r"makes 1\.0",
    ),
    # A one-element leaf is padded to one element per device: the psum adds exp(0) = 1 from
    # each of the 7 devices that hold only padding.
    "one_element_leaf": (
        _each_leaf(_softmax_denominator),
        {"s": (), "t": (1,)},
        r"`psum` over 'i' of a one-element value \(`exp`, which is 1\.0 at the padded "
        r"positions\), which the devices but the first compute from padding",
    ),
    # The same, added to a sum (of squares, zero at the padding) before the psum.
    "one_element_leaf_added_to_a_sum": (
        gx.stateless(
            lambda u, p: {
                **u,
                "w": u["w"] / jax.lax.psum(jnp.sum(u["w"] ** 2) + jnp.exp(u["s"]), AXIS),
            }
        ),
        SQUARE,
        r"`add` of a sum and a one-element value \(`exp`, which is 1\.0",
    ),
}


@pytest.mark.parametrize("name", sorted(NOT_ZERO_AT_THE_PADDING))
def test_sharded_state_rejects_sums_over_the_padding(name):
    inner, shapes, message = NOT_ZERO_AT_THE_PADDING[name]
    with pytest.raises(ValueError, match=message) as error:
        _sharded_update(inner, shapes)
    assert "sums values that are not known to be 0 at the padding" in str(error.value)


def test_sharded_state_rejects_nan_at_the_padding():
    # Optax's Adam with eps=0 divides 0 by sqrt(0) at the padding: NaN, which the clip's sum of
    # squares would spread over the whole model.
    optax = require_optax()
    inner = gx.chain(optax.adam(0.01, eps=0.0), gx.clip_by_global_norm(1.0, axis_name=AXIS))
    with pytest.raises(ValueError, match=r"of a value computed from `div`, which is nan at the"):
        _sharded_update(inner, SQUARE)


# Sums of functions of the gradient, and whether the check accepts them: only where the function
# is exactly 0 at 0 (the padding), which it computes by exact rules only.
SUMMANDS = {
    "exp_minus_one": (lambda x: jnp.exp(x) - 1, None),
    "relu": (lambda x: jnp.where(x > 0, x, 0), None),
    "normalized_with_eps": (lambda x: x / (jnp.sqrt(x * x) + 1e-8), None),
    "sign_as_a_ratio": (lambda x: x / jnp.sqrt(x * x), "padding"),  # 0 / 0 = NaN
    "exp": (jnp.exp, "padding"),
    "rsqrt_times_x": (lambda x: x * jax.lax.rsqrt(x * x), "padding"),  # 0 * inf = NaN
}


@pytest.mark.parametrize("name", sorted(SUMMANDS))
def test_sums_are_accepted_only_of_values_zero_at_the_padding(name):
    f, expected = SUMMANDS[name]
    inner = _each_leaf(lambda x: x / (1 + jax.lax.psum(jnp.sum(f(x)), AXIS)))
    params = {"w": jnp.ones((5, 7)), "s": jnp.ones(())}
    found = elementwise_problem(inner, params, params, {}, AXIS, N)
    assert (found and found[0]) == expected, found


# The check's decision on every primitive that gradxform's optimizers produce (the table of
# tests/test_optimizers.py, and the clip with an axis). An optimizer that needs a primitive not
# listed here fails the test below: decide in gradxform/wrappers/primitive_table.py whether
# the primitive moves elements, then list it here with that decision.
OPTIMIZER_PRIMITIVES = {
    "abs": "elementwise",
    "add": "elementwise",
    "add_any": "elementwise",
    "and": "elementwise",
    "bitcast_convert_type": "elementwise",
    "broadcast_in_dim": "broadcast_in_dim",
    "concatenate": "moves",
    "cond": "cond",
    "convert_element_type": "elementwise",
    "copy": "elementwise",
    "div": "elementwise",
    "dot_general": "dot_general",
    "dynamic_slice": "moves",
    "eq": "elementwise",
    "erf_inv": "elementwise",
    "exp": "elementwise",
    "expm1": "elementwise",
    "ge": "elementwise",
    "gt": "elementwise",
    "integer_pow": "elementwise",
    "iota": "position",
    "is_finite": "elementwise",
    "jit": "call",
    "le": "elementwise",
    "lt": "elementwise",
    "max": "elementwise",
    "min": "elementwise",
    "mul": "elementwise",
    "ne": "elementwise",
    "neg": "elementwise",
    "not": "elementwise",
    "or": "elementwise",
    "pow": "elementwise",
    "psum": "collective",
    "random_bits": "position",
    "random_split": "position",
    "random_unwrap": "position",
    "random_wrap": "position",
    "reduce_max": "reduction",
    "reduce_sum": "reduction",
    "rem": "elementwise",
    "reshape": "reshape",
    "rsqrt": "elementwise",
    "scan": "scan",
    "scatter": "moves",
    "select_n": "elementwise",
    "shift_right_logical": "elementwise",
    "sign": "elementwise",
    "slice": "moves",
    "sqrt": "elementwise",
    "squeeze": "reshape",
    "stack": "moves",
    "sub": "elementwise",
    "svd": "moves",
    "transpose": "transpose",
    "while": "while",
}


def _primitive_names(jaxpr):
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jaxprs_in_params(eqn.params):
            names |= _primitive_names(sub)
    return names


def _probe_loss(params):
    """A loss for the optimizers whose update evaluates one (L-BFGS): half the squared norm."""
    return sum(jnp.sum(x * x) for x in jax.tree.leaves(params)) / 2


def test_the_allow_list_decides_every_primitive_of_the_optimizers():
    from optimizer_table import OPTIMIZERS, loss_update

    params = _params(np.random.default_rng(12))
    transforms = {entry.id: (entry.make(0.01), entry.update_args) for entry in OPTIMIZERS}
    transforms["clip_with_axis"] = (SUPPORTED_INNER["clip_with_axis"](AXIS), ())
    first_seen = {}
    for name, (opt, update_args) in transforms.items():
        update = loss_update(opt, update_args, _probe_loss)
        probe = lambda u, p, opt=opt, update=update: update(u, opt.init(p), p)  # noqa: E731
        jaxpr = jax.make_jaxpr(probe, axis_env=[(AXIS, N)])(params, params).jaxpr
        for primitive in _primitive_names(jaxpr):
            first_seen.setdefault(primitive, name)
    new = {p: first_seen[p] for p in first_seen.keys() - OPTIMIZER_PRIMITIVES.keys()}
    assert not new, f"primitives (and the optimizer using each) not in OPTIMIZER_PRIMITIVES: {new}"
    assert first_seen.keys() == OPTIMIZER_PRIMITIVES.keys(), "listed but no longer produced"
    assert {p: primitive_kind(p) for p in OPTIMIZER_PRIMITIVES} == OPTIMIZER_PRIMITIVES
    assert primitive_kind("running_sum") == "unknown"


def test_sharded_state_bytes_per_device():
    # Leaves of 2,112 (not a multiple of 8), 33 and 1 elements.
    params = {"w": jnp.ones((64, 33)), "b": jnp.ones(33), "s": jnp.ones(())}
    opt = gx.shard_optimizer_state(gx.adam(0.01), axis_name=AXIS)
    mesh = _mesh()
    state = jax.jit(jax.shard_map(opt.init, mesh=mesh, in_specs=P(), out_specs=P(AXIS)))(
        jax.device_put(params, NamedSharding(mesh, P()))
    )
    for leaf in jax.tree.leaves(state):
        assert leaf.shape[0] == N and len(leaf.addressable_shards) == N
    per_device = [
        sum(leaf.addressable_shards[d].data.nbytes for leaf in jax.tree.leaves(state))
        for d in range(N)
    ]
    # Adam keeps two float32 moments per element and an int32 counter; a slice holds
    # ceil(size / 8) elements of every leaf: 264 + 5 + 1.
    sizes = [64 * 33, 33, 1]
    expected = 4 + 2 * 4 * sum(-(-s // N) for s in sizes)
    assert per_device == [expected] * N
    unsharded = 4 + 2 * 4 * sum(sizes)
    padding_bound = 2 * 4 * len(sizes) * (N - 1) / N
    assert expected <= (unsharded - 4) / N + 4 + padding_bound


def test_sharded_state_needs_the_mapped_axis():
    opt = gx.shard_optimizer_state(gx.adam(), axis_name=AXIS)
    with pytest.raises(NameError, match="inside the function mapped over it"):
        opt.init({"w": jnp.ones(3)})


def test_sharded_state_rejects_a_foreign_state():
    opt = gx.shard_optimizer_state(gx.adam(), axis_name=AXIS)
    grads = {"w": jnp.ones((N, 3))}
    with pytest.raises(TypeError, match="ShardedState"):
        jax.pmap(lambda g: opt.update(g, gx.adam().init(g)), axis_name=AXIS)(grads)


def test_sharded_state_validates_arguments():
    with pytest.raises(TypeError, match="axis_name"):
        gx.shard_optimizer_state(gx.adam(), axis_name=None)
    with pytest.raises(TypeError, match="positional"):  # the axis is keyword-only
        gx.shard_optimizer_state(gx.adam(), AXIS)
    with pytest.raises(TypeError, match="average_updates"):
        gx.shard_optimizer_state(gx.adam(), axis_name=AXIS, average_updates="yes")
    with pytest.raises(TypeError, match="inner"):
        gx.shard_optimizer_state(gx.adam, axis_name=AXIS)
