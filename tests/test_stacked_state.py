"""``stack_by_shape=True``: the matrix optimizers' state kept in one stack per shape group.

The numbers of leaf by leaf, to float64 rounding (a ``vmap``-ped product or decomposition sums
in another order than one matrix alone: in float32 the two differ in the last bits, measured
at most 4.0e-6 relative after 5 steps at these shapes, so the comparison runs in float64); a
program whose
expensive part is one computation per distinct shape and whose per-leaf part is no larger than
an element-wise optimizer's; a state that checkpoints, and errors that say what is wrong.
GaLore's stacked state is tested in ``test_galore.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxpr_counts import count

import gradxform as gx
from benchmarks.matrix_compile import hlo_size
from gradxform._stacking import LeafLayout


def _params(layers=2, dtype=jnp.float32):
    """Per layer two 6 x 6 matrices and a 6 x 10 one, and a 10 x 4 head."""
    rng = np.random.default_rng(0)

    def matrix(*shape):
        return jnp.asarray(rng.standard_normal(shape) / np.sqrt(shape[-1]), dtype)

    tree = {
        f"layer{i}": {"q": matrix(6, 6), "k": matrix(6, 6), "up": matrix(6, 10)}
        for i in range(layers)
    }
    return {**tree, "head": matrix(10, 4)}


def _with_vectors(params):
    dtype = jax.tree.leaves(params)[0].dtype
    return {**params, **{f"norm{i}": jnp.linspace(0.5, 2.0, 4, dtype=dtype) for i in range(2)}}


def _grads(params, step):
    key = jax.random.fold_in(jax.random.key(1), step)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    )


# float64's rounding, magnified by 5 steps of eigenvectors, inverse roots and Newton-Schulz
# iterations (measured: at most 5.3e-15 of 1 + |value|, scale_by_muon's; SOAP's 1.9e-16).
TOLERANCE = 1e-13

# name -> (factory of an optimizer given stack_by_shape, whether vectors are allowed)
_OPTIMIZERS = {
    "soap": (lambda s: gx.soap(3e-2, precondition_frequency=2, stack_by_shape=s), True),
    "soap_merged_1d": (
        lambda s: gx.soap(
            3e-2, merge_dims=True, precondition_1d=True, normalize_grads=True, stack_by_shape=s
        ),
        True,
    ),
    # matrix_eps 0.1: a vector's factor (a sum of rank-one outer products) is rank-deficient
    # for several steps, and its inverse root magnifies rounding by matrix_eps^(-1/2), leaf by
    # leaf too (measured with the default 1e-6: jitted against eager, 1.8e-6).
    "shampoo": (
        lambda s: gx.shampoo(
            1e-2,
            momentum=0.5,
            weight_decay=1e-2,
            preconditioning_compute_steps=2,
            matrix_eps=0.1,
            stack_by_shape=s,
        ),
        True,
    ),
    # The iteration in the params' float64 (torch's bfloat16 would round float64's last-bit
    # differences to a bfloat16 step now and then).
    "muon": (lambda s: gx.muon(2e-2, ns_dtype=None, stack_by_shape=s), False),
    "muon_with_adamw": (
        lambda s: gx.muon_with_adamw(2e-2, ns_dtype=None, stack_by_shape=s),
        True,
    ),
    "scale_by_muon": (lambda s: gx.scale_by_muon(stack_by_shape=s), False),
}


@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
def test_stacked_gives_the_numbers_of_leaf_by_leaf(x64, name):
    make, vectors = _OPTIMIZERS[name]
    params = _params(dtype=jnp.float64)
    params = _with_vectors(params) if vectors else params

    def run(stacked):
        opt, p = make(stacked), params

        @jax.jit
        def step(p, state, grads):
            updates, state = opt.update(grads, state, p)
            return gx.apply_updates(p, updates), state, updates

        state = opt.init(p)
        for i in range(5):  # crosses SOAP's refresh and Shampoo's roots twice
            p, state, updates = step(p, state, _grads(p, i))
        return p, updates

    (stacked_params, stacked_updates), (leaf_params, leaf_updates) = run(True), run(False)
    for got, want in zip(
        jax.tree.leaves((stacked_params, stacked_updates)),
        jax.tree.leaves((leaf_params, leaf_updates)),
        strict=True,
    ):
        assert got.dtype == want.dtype == jnp.float64 and np.all(np.isfinite(want))
        np.testing.assert_allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.parametrize(
    ("make", "fields"),
    [
        (
            lambda s: gx.scale_by_soap(precondition_frequency=2, stack_by_shape=s),
            ("mu", "nu", "factors", "bases"),
        ),
        (
            lambda s: gx.scale_by_shampoo(preconditioning_compute_steps=2, stack_by_shape=s),
            ("momentum", "statistics", "roots"),
        ),
        (lambda s: gx.scale_by_muon(stack_by_shape=s), ("mu",)),
    ],
    ids=["soap", "shampoo", "muon"],
)
def test_the_state_is_one_stack_per_group_of_the_leaf_by_leaf_state(x64, make, fields):
    params = _params(dtype=jnp.float64)
    states = []
    for stacked in (True, False):
        opt = make(stacked)
        state = opt.init(params)
        for step in range(3):
            state = jax.jit(opt.update)(_grads(params, step), state)[1]
        states.append(state)
    stacked, leafwise = states
    layout = LeafLayout(params, stacked=True)
    # Groups in the order of their first leaf: "head" (10, 4) alone, then (6, 6) x 4 and
    # (6, 10) x 2 (the dict's keys sorted: head, layer0/k, layer0/q, layer0/up, ...).
    assert [len(g) for g in layout.groups] == [1, 4, 2]
    assert int(stacked.count) == int(leafwise.count) == 3
    for field in fields:
        got, want = getattr(stacked, field), layout.units(getattr(leafwise, field))
        assert isinstance(got, tuple) and len(got) == 3
        assert jax.tree.structure(got) == jax.tree.structure(tuple(want))
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g, w, rtol=TOLERANCE, atol=TOLERANCE)


def test_soap_state_shapes():
    state = jax.jit(gx.scale_by_soap(stack_by_shape=True).init)(_params())
    assert [m.shape for m in state.mu] == [(1, 10, 4), (4, 6, 6), (2, 6, 10)]
    assert [[f.shape for f in fs] for fs in state.factors] == [
        [(1, 10, 10), (1, 4, 4)],
        [(4, 6, 6), (4, 6, 6)],
        [(2, 6, 6), (2, 10, 10)],
    ]
    assert all(jnp.all(b == jnp.eye(b.shape[-1])) for b in jax.tree.leaves(state.bases))


def _hlo(opt, params):
    state = jax.eval_shape(opt.init, params)

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    lowered = jax.jit(step).trace(params, state, params)
    return lowered.jaxpr.jaxpr, hlo_size(lowered.lower().compile().as_text())["instructions"]


def test_compiled_program_grows_with_depth_no_faster_than_adams():
    """The expensive part is one computation per distinct shape at every depth; what grows
    with the number of layers is the per-leaf part (stacking, reading the updates out,
    applying them), measured in HLO instructions per added layer against AdamW's, the floor
    of any optimizer that returns one update per leaf. Leaf by leaf, SOAP adds about 8 times
    AdamW's instructions per layer (measured at these shapes: 1,119 against 144; stacked,
    127)."""
    shallow, deep = _params(1), _params(3)
    decompositions = {"eigh", "qr", "householder_product", "geqrf"}
    soap = gx.soap(3e-2, precondition_frequency=2, stack_by_shape=True)
    jaxprs, sizes = zip(*(_hlo(soap, p) for p in (shallow, deep)), strict=True)
    assert count(jaxprs[0], decompositions) == count(jaxprs[1], decompositions) > 0
    adamw = gx.adamw(3e-2)
    adam_sizes = [_hlo(adamw, p)[1] for p in (shallow, deep)]
    leafwise = [_hlo(gx.soap(3e-2, precondition_frequency=2), p)[1] for p in (shallow, deep)]
    per_layer = (sizes[1] - sizes[0]) / 2
    adam_per_layer = (adam_sizes[1] - adam_sizes[0]) / 2
    leafwise_per_layer = (leafwise[1] - leafwise[0]) / 2
    assert per_layer <= 1.5 * adam_per_layer, (per_layer, adam_per_layer)
    assert leafwise_per_layer > 5 * adam_per_layer, (leafwise_per_layer, adam_per_layer)


def test_a_stacked_state_round_trips_through_a_checkpoint(tmp_path):
    opt = gx.shampoo(1e-2, stack_by_shape=True)
    params = _params()
    state, update = opt.init(params), jax.jit(opt.update)
    for step in range(3):
        updates, state = update(_grads(params, step), state, params)
        params = gx.apply_updates(params, updates)
    gx.save_state(tmp_path / "state.npz", state)
    restored = gx.load_state(tmp_path / "state.npz", like=opt.init(_params()))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "make",
    [
        lambda s: gx.scale_by_soap(stack_by_shape=s),
        lambda s: gx.scale_by_shampoo(stack_by_shape=s),
        lambda s: gx.scale_by_muon(stack_by_shape=s),
    ],
    ids=["soap", "shampoo", "muon"],
)
def test_a_state_of_another_model_or_layout_is_refused(make):
    params = _params()
    other = _params(3)
    with pytest.raises(ValueError, match=r"stack_by_shape=True.*\(4, 6, 6\).*\(6, 6, 6\)"):
        make(True).update(params, make(True).init(other))
    # A leaf-by-leaf state given to the stacked optimizer, and the other way round.
    with pytest.raises(ValueError, match="stack_by_shape"):
        make(True).update(params, make(False).init(params))
    with pytest.raises(ValueError):
        make(False).update(params, make(True).init(params))


@pytest.mark.parametrize("name", ["soap", "shampoo", "muon"])
def test_stack_by_shape_must_be_a_bool(name):
    with pytest.raises(TypeError, match=f"{name}.*stack_by_shape"):
        getattr(gx, name)(1e-3, stack_by_shape=1)


def test_stacked_state_is_sharded_like_the_params_with_the_group_axis_whole():
    """Rows of every matrix sharded over 8 host devices (tests/conftest.py): ``init`` gives
    each moment's stack the params' sharding on its trailing axes, the group axis whole, and a
    step keeps it when the step pins the state's ``out_shardings`` to init's, with the numbers
    of the unsharded step."""
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py forces 8 host devices)")
    mesh = jax.make_mesh((8,), ("rows",), axis_types=(AxisType.Auto,))
    rng = np.random.default_rng(2)
    plain = {f"w{i}": jnp.asarray(rng.standard_normal((8, 8)), jnp.float32) for i in range(3)}
    sharded = jax.device_put(plain, NamedSharding(mesh, P("rows")))
    opt = gx.scale_by_muon(stack_by_shape=True)
    state = jax.jit(opt.init)(sharded)
    assert state.mu[0].shape == (3, 8, 8)
    assert state.mu[0].sharding.spec == P(None, "rows")
    update = jax.jit(
        opt.update,
        out_shardings=(
            jax.tree.map(lambda x: x.sharding, sharded),
            jax.tree.map(lambda x: x.sharding, state),
        ),
    )
    u, new_state = update(sharded, state)
    assert new_state.mu[0].sharding.spec == P(None, "rows")
    assert u["w0"].sharding.spec == P("rows")
    want, _ = opt.update(plain, opt.init(plain))
    for k in plain:
        np.testing.assert_allclose(u[k], want[k], rtol=1e-5, atol=1e-5)
