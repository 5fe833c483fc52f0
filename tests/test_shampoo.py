"""Shampoo (gradxform/transforms/shampoo_precondition.py, gradxform/optimizers/kronecker.py)
against ``pytorch_optimizer.Shampoo`` (pytorch-optimizer 4.1.0), and its engineering: one SVD
per distinct factor shape, the periodic root inside one ``lax.cond``, dtypes and sharding.

Tolerances. Both libraries run in float64, but the inverse roots come from an SVD (torch's
LAPACK and XLA's CPU one), whose rounding differs, and the roots of ``eps I + sum G G^T`` spread
it (a vector's factor has near-null directions of size ``matrix_eps`` until it has seen as many
gradients as it has elements). The reference's own sensitivity was measured by rerunning it 12
times, with every gradient element moved one ulp up, then down, then by a random -1, 0 or +1
ulp (and in half of those runs the initial params too), 100 steps, all leaves: the largest
``|params - params'|`` was

    momentum 0.9, coupled decay 0.1:                   7.2e-12
    decoupled decay 0.1:                               3.1e-14
    momentum 0.3, fixed decay, k = 3, matrix_eps 0.1:  1.1e-15

Each case's ``atol`` is about 3 times that (``ATOL`` below), with ``rtol = 1e-12`` (params are
of order 1). gradxform against the reference, measured with this test's runner: 4.5e-12,
2.5e-14 and 1.1e-15, within the reference's own spread.

The reference mutates the gradient it is given (``grad.lerp_``, ``grad.add_``) and keeps it as
its momentum: each step gets fresh gradient tensors. The gradients are precomputed (random),
so that both runners see the same ones whatever the params; weight decay still reads the
params. The runner compiles init and the 100 steps as one ``lax.scan`` per case (the step is
traced once, with the count traced: the ``k = 3`` case's periodic root does not recompile).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxpr_counts import count

import gradxform as gx

STEPS = 100
# Tall, wide, vector, scalar and a 3-D tensor; the factors are 4x4 and 2x2 only, so the
# program holds two batched SVDs (for orders 1, 2 and 3 together).
SHAPES = {"tall": (4, 2), "wide": (2, 4), "vector": (4,), "scalar": (), "tensor": (2, 4, 2)}
LR = 0.05

CASES = {
    "momentum_coupled_decay": dict(momentum=0.9, weight_decay=0.1),
    "decoupled_decay": dict(weight_decay=0.1, weight_decouple=True),
    "fixed_decay_every_3_steps": dict(
        momentum=0.3,
        weight_decay=0.01,
        weight_decouple=True,
        fixed_decay=True,
        preconditioning_compute_steps=3,
        matrix_eps=0.1,
    ),
}
ATOL = {
    "momentum_coupled_decay": 2e-11,
    "decoupled_decay": 1e-13,
    "fixed_decay_every_3_steps": 5e-15,
}
RTOL = 1e-12


def _data():
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    grads = [{k: rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(STEPS)]
    return params, grads


def _reference(kwargs, params0, grads):
    torch = pytest.importorskip("torch", reason="torch is needed for the reference")
    optimizer_module = pytest.importorskip(
        "pytorch_optimizer", reason="pytorch-optimizer is the reference: gradxform[compare]"
    )
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
    opt = optimizer_module.Shampoo(list(tensors.values()), lr=LR, **kwargs)
    history = []
    for g in grads:
        for k, v in tensors.items():
            v.grad = torch.tensor(g[k])
        opt.step()
        history.append({k: v.detach().numpy().copy() for k, v in tensors.items()})
    return history


@pytest.mark.parametrize("case", list(CASES))
def test_equals_pytorch_optimizer_shampoo(x64, case):
    kwargs = CASES[case]
    params0, grads = _data()
    want = _reference(kwargs, params0, grads)
    opt = gx.shampoo(LR, **kwargs)

    @chex.assert_max_traces(n=1)
    def step(carry, g):
        params, state = carry
        updates, state = opt.update(g, state, params)
        params = gx.apply_updates(params, updates)
        return (params, state), params

    @jax.jit
    def run(params, grads):
        # init and the 100 steps in one program: one compilation per case. The step count is
        # the scan's carry, traced: the k = 3 case's periodic root cannot depend on its value.
        return jax.lax.scan(step, (params, opt.init(params)), grads)[1]

    stack = lambda history: {k: np.stack([h[k] for h in history]) for k in SHAPES}  # noqa: E731
    got = run({k: jnp.asarray(v) for k, v in params0.items()}, stack(grads))
    # Every step's params compared (the leading axis of each leaf is the step).
    chex.assert_trees_all_close(
        jax.device_get(got), stack(want), rtol=RTOL, atol=ATOL[case], strict=True
    )
    # Every leaf moved, the scalar (which is not preconditioned) included.
    assert all(np.abs(want[-1][k] - params0[k]).max() > 1e-2 for k in SHAPES)


def test_injected_compute_steps_runs_the_general_program():
    # An injected preconditioning_compute_steps is a float array in the state: the same cond,
    # on count % k with k traced, gives the plain optimizer's params (roots zero, so no
    # movement, until step k = 3).
    rng = np.random.default_rng(5)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
    grads = {"w": jnp.asarray(rng.normal(size=(7, 4, 3)), jnp.float32)}
    kwargs = dict(momentum=0.5, preconditioning_compute_steps=3)

    def run(opt):
        def body(carry, g):
            p, s = carry
            u, s = opt.update(g, s, p)
            p = gx.apply_updates(p, u)
            return (p, s), p

        return jax.jit(lambda p, g: jax.lax.scan(body, (p, opt.init(p)), g)[1])(params, grads)

    plain = run(gx.shampoo(0.1, **kwargs))
    injected = run(gx.inject_hyperparams(gx.shampoo)(0.1, **kwargs))
    chex.assert_trees_all_equal(injected, plain)
    moved = np.abs(plain["w"] - params["w"]).max(axis=(1, 2))
    assert np.all(moved[:2] == 0) and np.all(moved[2:] > 0), moved


def _update_jaxpr(opt, params):
    # Shapes only: nothing is computed or compiled, the update is traced once.
    params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    state = jax.eval_shape(opt.init, params)
    return jax.make_jaxpr(lambda g, s, p: opt.update(g, s, p))(params, state, params).jaxpr


def test_one_svd_per_distinct_factor_shape_not_per_layer():
    def tree(layers, shapes):
        return {
            f"layer{i}": [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
            for i in range(layers)
        }

    stacked = gx.shampoo(0.1, stack_by_shape=True)
    # Stacked: one batched SVD per axis of each distinct shape (an 8 x 8 leaf has two factors);
    # leaf by leaf (the default) one per factor of every leaf.
    one = count(_update_jaxpr(stacked, tree(1, [(8, 8)])), "svd")
    assert one == 2
    assert count(_update_jaxpr(stacked, tree(48, [(8, 8)])), "svd") == one
    assert count(_update_jaxpr(stacked, tree(48, [(8, 8), (16, 16)])), "svd") == 2 * one
    assert count(_update_jaxpr(gx.shampoo(0.1), tree(48, [(8, 8)])), "svd") == 48 * 2


def test_periodic_root_is_one_cond_around_the_svd():
    params = {f"w{i}": jax.ShapeDtypeStruct((4, 3), jnp.float32) for i in range(3)}
    jaxpr = _update_jaxpr(gx.shampoo(0.1, preconditioning_compute_steps=2), params)
    conds = [e for e in jaxpr.eqns if e.primitive.name == "cond"]
    # Leaf by leaf (the default): one SVD per factor, 3 leaves x 2 axes.
    assert len(conds) == 1 and count(jaxpr, "svd") == 6
    (cond,) = conds
    assert sum(count(b.jaxpr, "svd") for b in cond.params["branches"]) == 6
    # The branches compute or keep the roots and nothing else: no select between them, and
    # nothing outside selects over the cond's results.
    assert all(count(b.jaxpr, "select_n") == 0 for b in cond.params["branches"])
    outputs = set(cond.outvars)
    assert not any(e.primitive.name == "select_n" and outputs & set(e.invars) for e in jaxpr.eqns)


def test_statistics_float32_for_bfloat16_params():
    dtype = jnp.bfloat16
    params = {"w": jnp.ones((4, 3), dtype), "b": jnp.ones(3, dtype), "s": jnp.ones((), dtype)}
    opt = gx.scale_by_shampoo(momentum=0.5)
    # Types only (what jit would cache on), so nothing is compiled.
    state = jax.eval_shape(opt.init, params)
    updates, new_state = jax.eval_shape(opt.update, params, state)
    chex.assert_trees_all_equal_dtypes(state, new_state)
    for factor in jax.tree.leaves((state.statistics, state.roots)):
        assert factor.dtype == jnp.float32
    assert state.momentum["w"].dtype == dtype
    assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("stacked", [False, True], ids=["leaf_by_leaf", "stacked"])
def test_sharded_momentum_and_update_stay_sharded_and_factors_replicated(stacked):
    # Explicit mesh axes (the module docstring states the placement; with Auto axes it is XLA's).
    # Stacked (stack_by_shape=True), a group's momentum is sharded like the param on its
    # trailing axes, the group axis whole.
    mesh = jax.make_mesh((8,), ("rows",), axis_types=(AxisType.Explicit,))
    by_rows = NamedSharding(mesh, P("rows", None))
    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)}
    grads = {"w": jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)}
    opt = gx.shampoo(0.1, momentum=0.5, stack_by_shape=stacked)
    init, step = jax.jit(opt.init), jax.jit(lambda g, s, p: opt.update(g, s, p))
    key = 0 if stacked else "w"
    by_rows_stacked = NamedSharding(mesh, P(None, "rows", None)) if stacked else by_rows
    # Two steps on one device first: each of init and step compiles once per placement.
    want = step(grads, init(params), params)
    want = step(grads, want[1], params)
    with jax.set_mesh(mesh):
        params, grads = jax.device_put((params, grads), by_rows)
        state = init(params)
        (init_state, *_) = state
        got = step(grads, state, params)
        got = step(grads, got[1], params)
    updates, (shampoo_state, *_) = got
    for what, leaf, sharding in [
        ("initial momentum", init_state.momentum[key], by_rows_stacked),
        ("momentum", shampoo_state.momentum[key], by_rows_stacked),
        ("update", updates["w"], by_rows),
    ]:
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (what, leaf.sharding)
    for factor in jax.tree.leaves((shampoo_state.statistics, shampoo_state.roots)):
        assert factor.sharding.is_fully_replicated
    # float32 products summed in another order on 8 devices: measured 2e-7 of the largest element.
    np.testing.assert_allclose(
        updates["w"], want[0]["w"], rtol=0, atol=1e-5 * np.abs(want[0]["w"]).max()
    )
