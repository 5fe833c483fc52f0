"""Several devices (gradxform/wrappers/sharding.py and its check, wrappers/elementwise.py).

conftest.py gives 8 host CPU devices. Data-parallel runs are compared with one device doing the
same arithmetic on the whole batch, and the ZeRO wrapper with the plain optimizer fed the same
averaged gradients in the same mapped program, so that the only difference left is the one
under test. Tolerances are justified where they appear.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import Primitive, jaxprs_in_params
from jax.interpreters import mlir
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from references import require_optax

import gradxform as gx
from gradxform import _tree
from gradxform.wrappers.elementwise import primitive_kind

N = 8  # devices (tests/conftest.py)
AXIS = "i"
BATCH = 4  # examples per device and step


def _params(rng, dtype=np.float32):
    """A small model whose leaves are not multiples of N elements (35, 7 and 1), so every leaf
    is padded when sharded, and one leaf is a scalar."""
    return {
        "w": jnp.asarray(rng.normal(size=(5, 7)), dtype),
        "b": jnp.asarray(rng.normal(size=(7,)), dtype),
        "s": jnp.asarray(1.0 + 0.1 * rng.normal(), dtype),
    }


def _loss(params, x, y):
    """Least squares of ``s * x w + b`` against ``y``."""
    pred = params["s"] * (x @ params["w"]) + params["b"]
    return jnp.mean((pred - y) ** 2)


def _data(rng, steps):
    """Per-device batches: ``x`` ``(N, steps, BATCH, 5)`` and ``y`` ``(N, steps, BATCH, 7)``."""
    x = rng.normal(size=(N, steps, BATCH, 5)).astype(np.float32)
    y = rng.normal(size=(N, steps, BATCH, 7)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def _train_steps(opt, params, x, y, vary=False):
    """``init`` then one ``update`` per leading entry of ``x``/``y``, as a scan.

    ``vary``: in a shard_map body, take the gradient at params marked as varying over the axis,
    so that it is this device's own gradient (of replicated ``P()`` params, autodiff would
    return the sum over the devices already).
    """

    def step(carry, batch):
        params, state = carry
        at = jax.lax.pcast(params, AXIS, to="varying") if vary else params
        grads = jax.grad(_loss)(at, *batch)
        updates, state = opt.update(grads, state, params)
        return (gx.apply_updates(params, updates), state), None

    (params, state), _ = jax.lax.scan(step, (params, opt.init(params)), (x, y))
    return params, state


def _replicate(tree):
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (N, *jnp.shape(a))), tree)


def _pmap_train(opts, params, x, y):
    """Data-parallel training under pmap (device ``d`` sees ``x[d]``, ``y[d]``) with each
    optimizer, all in one program; returns each optimizer's ``(params, state)``."""
    run = lambda p, x, y: [_train_steps(opt, p, x, y) for opt in opts]  # noqa: E731
    return jax.pmap(run, axis_name=AXIS)(_replicate(params), x, y)


def _mesh(axis_types=AxisType.Explicit):
    return jax.make_mesh((N,), (AXIS,), axis_types=(axis_types,))


def _shard_map_train(opts, params, x, y, state_specs):
    """The same in a shard_map body: params replicated, batches split over the axis."""
    mesh = _mesh()

    def body(params, x, y):
        return [_train_steps(opt, params, x[0], y[0], vary=True) for opt in opts]

    out_specs = [(P(), spec) for spec in state_specs]
    run = jax.jit(
        jax.shard_map(body, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)), out_specs=out_specs)
    )
    params = jax.device_put(params, NamedSharding(mesh, P()))
    x, y = jax.device_put((x, y), NamedSharding(mesh, P(AXIS)))
    return run(params, x, y)


def _whole_batches(x, y):
    steps = x.shape[1]
    x_all = jnp.swapaxes(x, 0, 1).reshape(steps, N * BATCH, -1)
    y_all = jnp.swapaxes(y, 0, 1).reshape(steps, N * BATCH, -1)
    return x_all, y_all


def _single_device_train(opts, params, x, y):
    """The same training on one device with the whole batch of every step."""
    run = lambda p, x, y: [_train_steps(opt, p, x, y)[0] for opt in opts]  # noqa: E731
    return jax.jit(run)(params, *_whole_batches(x, y))


def _assert_close(got, expected, rtol, atol=0.0, what=""):
    assert jax.tree.structure(got) == jax.tree.structure(expected), what
    for path, g in jax.tree_util.tree_leaves_with_path(got):
        e = expected
        for key in path:
            e = e[key.key]
        np.testing.assert_allclose(
            np.asarray(g), np.asarray(e), rtol=rtol, atol=atol, err_msg=f"{what} {path}"
        )


def _unreplicate(tree):
    """Device 0's copy, after checking every device holds exactly the same values."""
    for leaf in jax.tree.leaves(tree):
        leaf = np.asarray(leaf)
        assert (leaf == leaf[:1]).all(), "devices ended with different values"
    return jax.tree.map(lambda a: np.asarray(a)[0], tree)


# A representative set: momentum, Adam's moments, decoupled decay with a rank mask, RMSProp's
# accumulator, and a chain whose clipping depends on the whole tree.
OPTIMIZERS = {
    "sgd_momentum": lambda: gx.sgd(0.05, momentum=0.9),
    "adam": lambda: gx.adam(0.01),
    "adamw": lambda: gx.adamw(0.01, weight_decay=0.1, mask=gx.decay_matrices_only),
    "rmsprop": lambda: gx.rmsprop(0.01, momentum=0.5),
    "clip_chain": lambda: gx.chain(gx.clip_by_global_norm(0.5), gx.adam(0.01)),
}

# --- optimizers inside pmap, shard_map, and jit with sharded params ------------------------


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_data_parallel_matches_single_device(mode):
    rng = np.random.default_rng(0)
    params = _params(rng)
    x, y = _data(rng, steps=5)
    names = sorted(OPTIMIZERS)
    opts = [gx.chain(gx.cross_replica_mean(AXIS), OPTIMIZERS[k]()) for k in names]
    if mode == "pmap":
        results = [_unreplicate(p) for p, _ in _pmap_train(opts, params, x, y)]
    else:
        results = [p for p, _ in _shard_map_train(opts, params, x, y, [P()] * len(opts))]
    expected = _single_device_train([OPTIMIZERS[k]() for k in names], params, x, y)
    for name, got, want in zip(names, results, expected, strict=True):
        # The mean of 8 per-device means and the mean of the whole batch round differently (a
        # few ulps of the gradient); 5 steps of these optimizers carry that to ~1e-6 relative.
        _assert_close(got, want, rtol=1e-5, atol=1e-6, what=f"{mode} {name}")
        # Training moved the params: the comparison is not of two copies of the start.
        assert not np.allclose(got["w"], np.asarray(params["w"]), atol=1e-3), name


def test_shard_map_gradient_of_mean_loss_needs_no_cross_replica_mean():
    # The other shard_map idiom (docs/scaling.md): differentiate the mean over the devices of
    # the loss at the replicated params; autodiff then returns the averaged gradient itself.
    rng = np.random.default_rng(10)
    params = _params(rng)
    x, y = _data(rng, steps=3)
    mesh = _mesh()
    opt = gx.sgd(0.05)  # plain SGD: a wrong scale of the gradient would show

    def body(params, x, y):
        def step(params, batch):
            mean_loss = lambda p: jax.lax.pmean(_loss(p, *batch), AXIS)  # noqa: E731
            updates, _ = opt.update(jax.grad(mean_loss)(params), opt.init(params), params)
            return gx.apply_updates(params, updates), None

        return jax.lax.scan(step, params, (x[0], y[0]))[0]

    run = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)), out_specs=P()))
    got = run(
        jax.device_put(params, NamedSharding(mesh, P())),
        *jax.device_put((x, y), NamedSharding(mesh, P(AXIS))),
    )
    expected = _single_device_train([opt], params, x, y)[0]
    _assert_close(got, expected, rtol=1e-5, atol=1e-6)


def _sharded_model(mesh, rng, dtype=jnp.float32):
    """Params with distinct shapes, each with its own PartitionSpec over a ('data', 'model')
    mesh, and the same values unsharded."""
    specs = {
        "w": ((8, 6), P("data", "model")),
        "v": ((6, 4), P("model", None)),
        "b": ((12,), P("data")),
        "r": ((3, 5), P()),
        "s": ((), P()),
    }
    values = {k: jnp.asarray(rng.normal(size=shape), dtype) for k, (shape, _) in specs.items()}
    sharded = {k: jax.device_put(v, NamedSharding(mesh, specs[k][1])) for k, v in values.items()}
    return values, sharded


def test_jit_with_sharded_params_matches_single_device():
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    rng = np.random.default_rng(1)
    params, sharded = _sharded_model(mesh, rng)
    grads = [_sharded_model(mesh, rng) for _ in range(3)]
    names = sorted(OPTIMIZERS)

    def run(params, grads_list):
        out = []
        for name in names:
            opt, p = OPTIMIZERS[name](), params
            state = opt.init(p)
            for g in grads_list:
                updates, state = opt.update(g, state, p)
                p = gx.apply_updates(p, updates)
            out.append(p)
        return out

    with jax.set_mesh(mesh):
        results = jax.jit(run)(sharded, [g[1] for g in grads])
    expected = jax.jit(run)(params, [g[0] for g in grads])
    for name, got, want in zip(names, results, expected, strict=True):
        for key in got:
            assert got[key].sharding.is_equivalent_to(sharded[key].sharding, got[key].ndim), key
        # Element-wise arithmetic is the same on shards; only the clip chain's norm sums the
        # shards in another order (a few ulps, below 1e-6 relative after 3 steps).
        _assert_close(got, want, rtol=1e-6, atol=1e-7, what=name)


# --- cross_replica_mean ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_cross_replica_mean_averages_over_the_axis(mode):
    rng = np.random.default_rng(2)
    per_device = {"a": rng.normal(size=(N, 3, 2)), "b": rng.normal(size=(N,))}
    mean = gx.cross_replica_mean(AXIS)

    def body(updates):
        return mean.update(updates, mean.init(updates))[0]

    inputs = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), per_device)
    if mode == "pmap":
        got = _unreplicate(jax.pmap(body, axis_name=AXIS)(inputs))
    else:
        mesh = _mesh()
        run = jax.shard_map(
            lambda u: body(jax.tree.map(lambda a: a[0], u)),
            mesh=mesh,
            in_specs=P(AXIS),
            out_specs=P(),
        )
        got = run(jax.device_put(inputs, NamedSharding(mesh, P(AXIS))))
    expected = jax.tree.map(lambda a: a.mean(axis=0), per_device)  # float64
    # A float32 sum of 8 values of order 1: within 1e-6 absolute of the float64 mean.
    _assert_close(got, expected, rtol=0, atol=1e-6, what=mode)


def test_cross_replica_mean_rejects_missing_axis_name():
    with pytest.raises(TypeError, match="axis_name"):
        gx.cross_replica_mean(None)


# --- clip_by_global_norm over params sharded along the axis -----------------------------


def test_clip_by_global_norm_with_axis_name_uses_the_whole_model_norm():
    rng = np.random.default_rng(3)
    updates = {"w": rng.normal(size=(16, 3)), "b": rng.normal(size=(8,))}
    max_norm = 0.7
    mesh = _mesh()
    inputs = jax.device_put(
        jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), updates),
        NamedSharding(mesh, P(AXIS)),
    )

    with_axis = gx.clip_by_global_norm(max_norm, axis_name=AXIS)
    per_shard = gx.clip_by_global_norm(max_norm)

    def body(u):
        return [clip.update(u, clip.init(u))[0] for clip in (with_axis, per_shard)]

    run = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P(AXIS), out_specs=P(AXIS)))
    clipped, clipped_per_shard = run(inputs)
    norm = np.sqrt(sum(np.sum(a**2) for a in updates.values()))
    assert norm > 3 * max_norm  # the clip is active
    expected = jax.tree.map(lambda a: a * max_norm / (norm + 1e-6), updates)
    # The float64 closed form of torch's clip_grad_norm_: float32 rounding is < 1e-6 relative.
    _assert_close(clipped, expected, rtol=1e-6)
    whole = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), updates)
    _assert_close(clipped, per_shard.update(whole, per_shard.init(whole))[0], rtol=1e-6)
    # Without the axis each shard is clipped by its own norm, which is not the same.
    assert not np.allclose(np.asarray(clipped_per_shard["w"]), expected["w"], rtol=1e-3)


# --- state sharding under jit (and the tree functions that build it) -----------------------

STATE_OPTIMIZERS = {
    "adam_bf16_mu": lambda: gx.adam(0.01, mu_dtype=jnp.bfloat16),
    "sgd_momentum": lambda: gx.sgd(0.05, momentum=0.9),
    "rmsprop_centered": lambda: gx.rmsprop(0.01, centered=True, momentum=0.9),
    "adagrad": lambda: gx.adagrad(0.1, initial_accumulator_value=0.1),
    "nadam": lambda: gx.nadam(0.01),
    "lion": lambda: gx.lion(0.001),
}


@pytest.mark.parametrize("axis_types", [AxisType.Explicit, AxisType.Auto])
def test_jitted_init_and_update_keep_state_sharded_like_params(axis_types):
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_types,) * 2)
    rng = np.random.default_rng(4)
    params, sharded = _sharded_model(mesh, rng)
    grads, sharded_grads = _sharded_model(mesh, rng)
    by_shape = {p.shape: p.sharding for p in sharded.values() if p.ndim}
    names = sorted(STATE_OPTIMIZERS)
    opts = [STATE_OPTIMIZERS[k]() for k in names]
    init = jax.jit(lambda p: [opt.init(p) for opt in opts])

    def update_twice(states, grads, params):
        for _ in range(2):
            states = [opt.update(grads, s, params)[1] for opt, s in zip(opts, states, strict=True)]
        return states

    def check(states, when):
        for path, leaf in jax.tree_util.tree_leaves_with_path(states):
            where = f"{when} {names[path[0].idx]} {jax.tree_util.keystr(path[1:])}"
            if leaf.ndim == 0:
                # Counters (and scalar params' moments) live on every device of the mesh.
                assert leaf.sharding.is_fully_replicated, where
                assert leaf.sharding.device_set == set(mesh.devices.flat), where
            else:
                assert leaf.sharding.is_equivalent_to(by_shape[leaf.shape], leaf.ndim), where

    with jax.set_mesh(mesh):
        states = init(sharded)
        check(states, "init")
        states = jax.jit(update_twice)(states, sharded_grads, sharded)
        check(states, "update")
    expected = jax.jit(update_twice)(init(params), grads, params)
    # The same element-wise arithmetic on shards as on whole arrays.
    for got, want in zip(jax.tree.leaves(states), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(
            np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=1e-6
        )


@pytest.mark.parametrize("jit", [False, True])
def test_tree_zeros_and_full_like_values_and_dtypes(jit):
    special = jnp.array([np.nan, np.inf, -np.inf, -2.0, -0.0, 3.0], jnp.float32)
    tree = {"f": special, "h": special.astype(jnp.bfloat16), "c": special.astype(jnp.complex64)}
    zeros, full = _tree.tree_zeros_like, _tree.tree_full_like
    if jit:
        zeros = jax.jit(zeros, static_argnums=1)
        full = jax.jit(full, static_argnums=(1, 2))
    for key, leaf in zeros(tree).items():
        assert leaf.dtype == tree[key].dtype
        # Exactly +0 everywhere, also where the input is NaN, infinite or -0.
        assert np.all(np.asarray(leaf) == 0) and not np.any(np.signbit(np.real(np.asarray(leaf))))
    for key, leaf in full(tree, -0.25).items():
        assert leaf.dtype == tree[key].dtype
        assert np.all(np.asarray(leaf) == -0.25), key
    assert zeros(tree, jnp.dtype(jnp.bfloat16))["f"].dtype == jnp.bfloat16
    assert full({"i": jnp.arange(3)}, 7)["i"].tolist() == [7, 7, 7]
    assert np.signbit(np.asarray(full(tree, -0.0)["f"])).all()


# --- ZeRO-1: shard_optimizer_state ---------------------------------------------------------


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
    makers = {
        "adam": lambda: optax.adam(0.01),
        "adamw": lambda: optax.adamw(0.01, weight_decay=0.1),
        "sgd_nesterov": lambda: optax.sgd(0.05, momentum=0.9, nesterov=True),
        "lion": lambda: optax.lion(0.003),
    }
    groups = [
        [Member(make()), Member(gx.shard_optimizer_state(make(), axis_name=AXIS))]
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


# The check's decision on every primitive that gradxform's optimizers produce (the table of
# tests/test_optimizers.py, and the clip with an axis). An optimizer that needs a primitive not
# listed here fails the test below: decide in gradxform/wrappers/elementwise.py whether the
# primitive moves elements, then list it here with that decision.
OPTIMIZER_PRIMITIVES = {
    "abs": "elementwise",
    "add": "elementwise",
    "broadcast_in_dim": "broadcast_in_dim",
    "convert_element_type": "elementwise",
    "div": "elementwise",
    "eq": "elementwise",
    "expm1": "elementwise",
    "is_finite": "elementwise",
    "jit": "call",
    "lt": "elementwise",
    "max": "elementwise",
    "min": "elementwise",
    "mul": "elementwise",
    "neg": "elementwise",
    "pow": "elementwise",
    "psum": "collective",
    "reduce_sum": "reduction",
    "rsqrt": "elementwise",
    "select_n": "elementwise",
    "sign": "elementwise",
    "sqrt": "elementwise",
    "sub": "elementwise",
}


def _primitive_names(jaxpr):
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jaxprs_in_params(eqn.params):
            names |= _primitive_names(sub)
    return names


def test_the_allow_list_decides_every_primitive_of_the_optimizers():
    from test_optimizers import OPTIMIZERS

    params = _params(np.random.default_rng(12))
    transforms = {entry.id: entry.values[0].make(0.01) for entry in OPTIMIZERS}
    transforms["clip_with_axis"] = SUPPORTED_INNER["clip_with_axis"](AXIS)
    first_seen = {}
    for name, opt in transforms.items():
        probe = lambda u, p, opt=opt: opt.update(u, opt.init(p), p)  # noqa: E731
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
