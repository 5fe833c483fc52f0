"""SOAP (gradxform/transforms/soap_precondition.py, gradxform/transforms/stepped_decay.py,
gradxform/optimizers/eigenbasis.py) against ``pytorch_optimizer.SOAP``, the authors' rule as
pytorch-optimizer implements it; the switch, the stacking and the dtypes.

The reference runs in float64 on float64 params, 100 steps, ``precondition_frequency=3`` (the
bases are refreshed 33 times), every step compared. Two things are given to both sides alike:

- The first step's eigenbases. After one gradient, a tall or wide matrix's larger factor is
  rank-deficient, and the basis of its null space is any orthonormal one: LAPACK builds pick
  different ones, and the update depends on it (at step 2 it is ``Q sign(Q^T G Q_R) Q_R^T``).
  The reference's ``get_orthogonal_matrix`` is replaced by one that calls ``jnp.linalg.eigh``
  (the reference's rule otherwise: ``+ 1e-30 I``, columns by decreasing eigenvalue), and the
  first gradients are small integers, so that the factors entering it are the same bits in
  both libraries (exact products and sums; ``0 + 0.05 x`` rounds once).
- Only in :func:`test_equals_reference_with_its_qr_in_float64`: the reference's QR in float64.
  The reference rounds the power-iteration matrix to float32 for its QR even for float64
  params; gradxform runs it in the factors' dtype. Patching the module's ``torch.float32`` to
  ``float64`` gives the reference's own code with a float64 QR.

Tolerances, measured (the params of every step, all cases):

- gradxform against the reference with a float64 QR: largest relative difference 8.3e-13,
  largest absolute 3.3e-15. The reference's own sensitivity (every gradient after the first
  moved by one ulp, ``np.nextafter``): 6.0e-12 relative, 5.3e-15 absolute. ``RTOL64 = 1e-11``,
  ``ATOL64 = 1e-14``: the reference's sensitivity, rounded up.
- gradxform against the unmodified reference (float32 QR): the difference is the float32
  rounding of the bases, the same as between the reference with a float32 QR and with a
  float64 one: up to 3.7e-7 absolute on params of order 1 (the reference's sensitivity to a
  last-bit change of its float64 gradients stays 6e-12: the float32 rounding absorbs it).
  ``ATOL32 = 2e-6``, about five times that, with ``rtol = 0``: a float32 basis error moves a
  param by an absolute amount, whatever its size.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxpr_counts import count

import gradxform as gx

torch = pytest.importorskip("torch")
soap_module = pytest.importorskip("pytorch_optimizer.optimizer.soap")


# The reference's small matrices run fastest on one thread (measured: 0.2 s a run against
# 2.7 s with torch's default threads on a loaded 2-core machine).
@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


RTOL64, ATOL64 = 1e-11, 1e-14
ATOL32 = 2e-6
STEPS = 100
SHAPES = {"tall": (5, 3), "wide": (3, 5), "vector": (4,), "scalar": (), "cube": (2, 3, 2)}
# Longer than max_precond_dim = 8 on its first axis: no factor on that side (and with
# merge_dims its shape merges to (1, 10, 3)).
SHAPES["long"] = (10, 3)

# Each case switches on what changes the code path. In "options", merge_dims merges every
# leaf but the vector: the reference fails to merge a vector (it reshapes it to (1,)), and in
# gradxform a vector is never merged, so the reference gets it in a group of its own.
CASES = {
    "decay_bias": dict(
        lr=3e-2, betas=(0.9, 0.95), weight_decay=0.1, precondition_frequency=3,
        max_precondition_dim=8,
    ),
    "options": dict(
        lr=3e-2, betas=(0.95, 0.9), shampoo_beta=0.8, weight_decay=0.0,
        precondition_frequency=3, max_precondition_dim=8, precondition_1d=True,
        normalize_gradient=True, correct_bias=False, merge_dims=True,
    ),
}  # fmt: skip


def _gradxform_kwargs(kw):
    return dict(
        learning_rate=kw["lr"],
        b1=kw["betas"][0],
        b2=kw["betas"][1],
        shampoo_beta=kw.get("shampoo_beta", -1),
        weight_decay=kw["weight_decay"],
        precondition_frequency=kw["precondition_frequency"],
        max_precond_dim=kw["max_precondition_dim"],
        merge_dims=kw.get("merge_dims", False),
        precondition_1d=kw.get("precondition_1d", False),
        normalize_grads=kw.get("normalize_gradient", False),
        correct_bias=kw.get("correct_bias", True),
    )


@functools.cache
def _data():
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = {k: rng.standard_normal((STEPS, *s)) for k, s in SHAPES.items()}
    for k, s in SHAPES.items():
        grads[k][0] = rng.integers(-3, 4, size=s)
    return params, grads


def _eigenbases_by_jax(factors):
    """The reference's ``get_orthogonal_matrix`` with ``jnp.linalg.eigh`` (see the module)."""
    bases = []
    for m in factors:
        if len(m) == 0:
            bases.append([])
            continue
        with jax.enable_x64(True):
            vectors = jnp.linalg.eigh(jnp.asarray(m.numpy() + 1e-30 * np.eye(m.shape[0])))[1]
        bases.append(torch.from_numpy(np.flip(np.asarray(vectors), 1).copy()))
    return bases


class _TorchWithFloat64QR:
    """``torch`` as the reference module sees it, with ``float32`` (used only for its QR)
    meaning float64."""

    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


def _reference(case, qr_in_float64, monkeypatch):
    kw = CASES[case]
    params, grads = _data()
    with monkeypatch.context() as patch:
        patch.setattr(soap_module.SOAP, "get_orthogonal_matrix", staticmethod(_eigenbases_by_jax))
        if qr_in_float64:
            patch.setattr(soap_module, "torch", _TorchWithFloat64QR())
        tensors = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
        groups = [{"params": [p for k, p in tensors.items() if k != "vector"]}]
        groups.append({"params": [tensors["vector"]], "merge_dims": False})
        optimizer = soap_module.SOAP(groups, **kw)
        history = {k: [] for k in tensors}
        for t in range(STEPS):
            for k, p in tensors.items():
                p.grad = torch.tensor(grads[k][t])
            optimizer.step()
            for k, p in tensors.items():
                history[k].append(p.detach().numpy().copy())
    return {k: np.stack(v) for k, v in history.items()}


@functools.cache
def _gradxform(case):
    params, grads = _data()
    optimizer = gx.soap(**_gradxform_kwargs(CASES[case]))

    def step(carry, g):
        p, state = carry
        u, state = optimizer.update(g, state, p)
        p = gx.apply_updates(p, u)
        return (p, state), p

    def run(p, g):
        return jax.lax.scan(step, (p, optimizer.init(p)), g)[1]

    with jax.enable_x64(True):
        history = jax.jit(run)(jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, grads))
        return jax.tree.map(np.asarray, history)


@pytest.mark.parametrize("case", CASES)
def test_equals_reference_with_its_qr_in_float64(case, monkeypatch):
    got, want = _gradxform(case), _reference(case, True, monkeypatch)
    params, _ = _data()
    for k in SHAPES:
        np.testing.assert_array_equal(got[k][0], params[k], err_msg=f"{k}: the first step moved")
        np.testing.assert_allclose(got[k], want[k], rtol=RTOL64, atol=ATOL64, err_msg=k)


@pytest.mark.parametrize("case", CASES)
def test_equals_reference_with_its_float32_qr(case, monkeypatch):
    got, want = _gradxform(case), _reference(case, False, monkeypatch)
    for k in SHAPES:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=ATOL32, err_msg=k)


def _update_jaxpr(optimizer, params):
    state = optimizer.init(params)
    return jax.make_jaxpr(optimizer.update)(params, state, params).jaxpr


def test_one_decomposition_per_distinct_shape_inside_the_switch():
    decompositions = {"eigh", "qr", "householder_product", "geqrf"}
    one = {"w0": jnp.ones((4, 3))}
    many = {f"w{i}": jnp.ones((4, 3)) for i in range(48)}
    two_shapes = {**many, "v": jnp.ones((2, 5))}
    optimizer = gx.soap(precondition_frequency=2, stack_by_shape=True)
    # Stacked: one batched decomposition per shape; leaf by leaf (the default) one per leaf.
    counts = [count(_update_jaxpr(optimizer, t), decompositions) for t in (one, many, two_shapes)]
    assert counts[0] > 0 and counts[1] == counts[0] and counts[2] == 2 * counts[0], counts
    per_leaf = _update_jaxpr(gx.soap(precondition_frequency=2), many)
    assert count(per_leaf, decompositions) == 48 * counts[0]
    # Every decomposition is inside the cond, and nothing selects between its results and
    # others (a cond under vmap would have become a select computing both branches).
    jaxpr = _update_jaxpr(optimizer, two_shapes)
    assert count(jaxpr, decompositions, into_cond=False) == 0
    assert count(jaxpr, {"cond"}) == 1
    cond = next(e for e in jaxpr.eqns if e.primitive.name == "cond")
    results = set(cond.outvars)
    selects = [e for e in jaxpr.eqns if e.primitive.name == "select_n"]
    assert not any(
        results & {v for v in e.invars if not isinstance(v, jax.extend.core.Literal)}
        for e in selects
    )


def test_refreshing_the_bases_does_not_recompile():
    optimizer = gx.soap(precondition_frequency=2)
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(p, state, g):
        u, state = optimizer.update(g, state, p)
        return gx.apply_updates(p, u), state

    state = optimizer.init(params)
    for i in range(4):  # 2 * precondition_frequency: the first step's eigh, then a QR
        g = jax.tree.map(lambda x, i=i: x * (i + 1) + jnp.arange(x.size).reshape(x.shape), params)
        params, state = step(params, state, g)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_factors_are_float32_and_moments_the_params_dtype(dtype):
    params = {"w": jnp.ones((3, 2), dtype)}
    optimizer = gx.scale_by_soap()
    state = optimizer.init(params)
    _, state = jax.eval_shape(optimizer.update, params, state)  # the types jit would cache on
    assert state.mu["w"].dtype == state.nu["w"].dtype == dtype
    for f in (*state.factors["w"], *state.bases["w"]):
        assert f.dtype == jnp.float32


def test_long_axes_and_unflagged_vectors_have_no_factor():
    params = {"w": jnp.ones((12, 3)), "v": jnp.ones(3), "s": jnp.ones(())}
    state = gx.scale_by_soap(max_precond_dim=8).init(params)
    assert [None if f is None else f.shape for f in state.factors["w"]] == [None, (3, 3)]
    assert state.factors["v"] == (None,) and state.factors["s"] == ()
    state = gx.scale_by_soap(max_precond_dim=8, precondition_1d=True, merge_dims=True).init(params)
    assert [f.shape for f in state.factors["v"]] == [(3, 3)]
    assert [f.shape for f in state.factors["s"]] == [(1, 1)]


@pytest.mark.parametrize("stacked", [False, True], ids=["leaf_by_leaf", "stacked"])
def test_state_is_sharded_as_the_module_states(stacked):
    """Rows of a matrix sharded over 8 host devices (tests/conftest.py): ``init`` gives the
    moments the param's sharding and replicates the factors and bases; an update whose state
    shardings are pinned to init's (a training loop's ``out_shardings``) keeps them and gives
    the numbers of the unsharded update. Stacked (``stack_by_shape=True``), each moment's
    stack is sharded like its leaves on the trailing axes, the group axis whole."""
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py forces 8 host devices)")
    mesh = jax.make_mesh((8,), ("rows",), axis_types=(AxisType.Auto,))
    # Square and random: a single gradient's factors have full rank, so their eigenbases are
    # unique (a rank-deficient factor's null-space basis is any orthonormal one).
    rng = np.random.default_rng(1)
    plain = {"w": jnp.asarray(rng.standard_normal((8, 8)), jnp.float32), "b": jnp.ones(8)}
    sharded = jax.device_put(plain, NamedSharding(mesh, P("rows")))
    optimizer = gx.scale_by_soap(precondition_frequency=1, stack_by_shape=stacked)
    state = jax.jit(optimizer.init)(sharded)
    specs = jax.tree.map(lambda x: x.sharding.spec, state)
    # Stacked: groups in the order of their first leaf, "b" (8,) then "w" (8, 8).
    moments = (P(None, "rows"),) * 2 if stacked else {"w": P("rows"), "b": P("rows")}
    assert specs.mu == specs.nu == moments, specs
    assert jax.tree.leaves((specs.factors, specs.bases, specs.count)) == [P()] * 5, specs
    update = jax.jit(
        optimizer.update,
        out_shardings=(
            jax.tree.map(lambda x: x.sharding, sharded),
            jax.tree.map(lambda x: x.sharding, state),
        ),
    )
    want = (plain, optimizer.init(plain))
    got = (sharded, state)
    for _ in range(3):  # step 1: eigh; then a refresh (QR, nu reordered) every step
        grads = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), plain)
        u_want, s_want = optimizer.update(grads, want[1])
        u_got, s_got = update(jax.device_put(grads, NamedSharding(mesh, P("rows"))), got[1])
        assert jax.tree.map(lambda x: x.sharding.spec, s_got) == specs
        # float32 on one device and on row blocks: the factors' and projections' sums run in
        # another order, and the eigenvectors and the Adam ratios magnify that (measured: at
        # most 3.8e-6 of 1 + |value| over the three steps; 1e-5 leaves a factor of 2.6).
        chex.assert_trees_all_close((u_got, s_got), (u_want, s_want), rtol=1e-5, atol=1e-5)
        want, got = (u_want, s_want), (u_got, s_got)
