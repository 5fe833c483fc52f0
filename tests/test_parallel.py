"""Several devices: optimizers under pmap, shard_map and sharded jit, and cross_replica_mean
(gradxform/wrappers/sharding.py; shard_optimizer_state has tests/test_sharding.py).

conftest.py gives 8 host CPU devices. Data-parallel runs are compared with one device doing the
same arithmetic on the whole batch, so that the only difference left is the one under test.
Tolerances are justified where they appear. The helpers here are shared with
tests/test_sharding.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gradxform as gx
from gradxform import _tree

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
