"""GaLore against its authors' ``galore-torch`` (``GaLoreAdamW``) and against
``optax.contrib.galore``; the program's shape (one SVD per distinct shape, under one ``cond``).

The reference runs float64 params with its SVD in float32 (``get_orthogonal_matrix`` casts
the gradient). Two things make its numbers depend on the LAPACK it runs on, and the tests
separate them:

- the signs of singular vectors: torch's (MKL's) and JAX's gesdd disagree on the sign of
  about 7% of them (measured: 146 of 2,200 vectors of random float32 matrices of four shapes).
  Within one projection period a sign cancels (``R = G B^T`` and ``N B``), but the moments
  carry over when the projector is recomputed, so over several periods a flipped sign changes
  the trajectory (measured: 1.9e-2 apart after 100 steps with ``update_proj_gap=10``).
  ``test_equals_the_reference_given_the_same_svd`` therefore gives gradxform torch's
  float32 SVD (``jnp.linalg.svd`` replaced by a host callback to ``torch.linalg.svd``) and asks
  for the harness's float64 tolerance (rtol 1e-12, atol 1e-14; measured: at most 6e-15 apart),
  10 projections in 100 steps.
- the last bits of the float32 SVD: ``test_equals_the_reference_with_its_own_svd`` runs both
  with their own SVDs (MKL's, JAX's LAPACK) over one projection period (``update_proj_gap=200``
  > 100 steps), where signs cancel. The tolerance comes from the reference's own sensitivity:
  its SVD's float32 input perturbed by one ulp (``np.nextafter``, both directions) moves its
  params by up to 3.1e-8 (maxabs over the 100 steps); gradxform is 2.0e-8 from it.
  ``atol=2e-7`` is about 6x the reference's own spread; perturbing the float64 gradient by one
  float64 ulp moves it by only 4e-16 (float32 rounding absorbs it), which is why the float32
  input is perturbed.

Leaves: a tall (6, 4) and a wide (3, 7) matrix projected at rank 2 (< min(shape)), a (5,)
bias in a param group without ``rank`` (plain Adam of the same form). Gradients ``g = a * p +
noise_t`` are computed on each side from its own params, so differences feed back.
"""

import importlib.util
import itertools
import sys
import types
from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxpr_counts import count, count_in_conds
from torch_harness import ATOL64, RTOL64

import gradxform as gx

STEPS = 100
SHAPES = {"tall": (6, 4), "wide": (3, 7), "bias": (5,)}
LR = 0.01
# The reference's own spread under a one-ulp change of its SVD's float32 input: 3.1e-8.
ATOL_OWN_SVD = 2e-7


def _load_reference():
    """``galore_torch.adamw.AdamW`` without running the package's ``__init__``, which imports
    bitsandbytes and transformers for its other optimizers; ``adamw.py`` needs only
    transformers' ``require_version`` (a version check of torch), stubbed when transformers is
    absent. ``sys.modules`` is restored afterwards."""
    pytest.importorskip("torch", reason="torch is not installed: install gradxform[compare]")
    spec = importlib.util.find_spec("galore_torch")
    if spec is None:
        pytest.skip("galore-torch is not installed: pip install --no-deps galore-torch")
    stubs = {"galore_torch": importlib.util.module_from_spec(spec)}
    if importlib.util.find_spec("transformers") is None:
        versions = types.ModuleType("transformers.utils.versions")
        versions.require_version = lambda requirement: None
        stubs["transformers"] = types.ModuleType("transformers")
        stubs["transformers.utils"] = types.ModuleType("transformers.utils")
        stubs["transformers.utils.versions"] = versions
    with mock.patch.dict(sys.modules, stubs):
        for name in ("galore_projector", "adamw"):
            location = f"{spec.submodule_search_locations[0]}/{name}.py"
            module_spec = importlib.util.spec_from_file_location(f"galore_torch.{name}", location)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
    return module.AdamW


def _problem():
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    a = {k: rng.uniform(0.5, 1.5, size=s) for k, s in SHAPES.items()}
    noise = {k: rng.normal(size=(STEPS, *s)) for k, s in SHAPES.items()}
    return params, a, noise


def _torch_history(torch, settings):
    AdamW = _load_reference()
    params, a, noise = _problem()
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    matrices = {"params": [tensors["tall"], tensors["wide"]]}
    projection = {k: settings[k] for k in ("rank", "update_proj_gap", "scale", "proj_type")}
    optimizer = AdamW(
        [{**matrices, **projection}, {"params": [tensors["bias"]]}],
        lr=LR,
        weight_decay=settings["weight_decay"],
        no_deprecation_warning=True,
    )
    history = []
    for t in range(STEPS):
        for k, v in tensors.items():
            v.grad = torch.tensor(a[k] * v.detach().numpy() + noise[k][t])
        optimizer.step()
        history.append({k: v.detach().numpy().copy() for k, v in tensors.items()})
    return {k: np.stack([h[k] for h in history]) for k in SHAPES}


def _history(opt):
    """gradxform's params after every step, the 100 steps in one jitted ``scan``."""
    params, a, noise = _problem()

    @jax.jit
    def run(params, a, noise):
        def step(carry, noise_t):
            p, state = carry
            grads = jax.tree.map(lambda ak, pk, nk: ak * pk + nk, a, p, noise_t)
            updates, state = opt.update(grads, state, p)
            p = gx.apply_updates(p, updates)
            return (p, state), p

        return jax.lax.scan(step, (params, opt.init(params)), noise)[1]

    return jax.tree.map(np.asarray, run(params, a, noise))


def _torch_svd(torch):
    """``jnp.linalg.svd`` computed by torch (a host callback), for gradxform to see the
    reference's singular vectors, signs and last bits included."""

    def host(matrix):
        factors = torch.linalg.svd(torch.from_numpy(np.array(matrix)), full_matrices=False)
        return tuple(x.numpy() for x in factors)

    def svd(matrix, full_matrices=True):
        assert not full_matrices
        m, n = matrix.shape
        k = min(m, n)
        shapes = tuple(
            jax.ShapeDtypeStruct(shape, matrix.dtype) for shape in ((m, k), (k,), (k, n))
        )
        return jax.pure_callback(host, shapes, matrix, vmap_method="sequential")

    return svd


def _settings(**overrides):
    base = {"rank": 2, "update_proj_gap": 10, "scale": 0.25, "proj_type": "std"}
    return {**base, "weight_decay": 0.1, **overrides}


def _assert_moved(history):
    params, _, _ = _problem()
    assert all(not np.allclose(history[k][-1], params[k], rtol=1e-2) for k in SHAPES)


# "std" projects the tall matrix on the right and the wide one on the left ("reverse_std",
# "left" and "right" run the same two projections on other matrices); "full" both sides, here
# without weight decay (the chain without its decay link).
@pytest.mark.parametrize(
    ("settings", "atol"),
    [
        (_settings(), ATOL64),
        # Two products each way: measured 1.07e-14 apart at an element of size 3e-4.
        (_settings(proj_type="full", scale=1.0, weight_decay=0.0), 3 * ATOL64),
    ],
    ids=["std", "full_no_decay"],
)
def test_equals_the_reference_given_the_same_svd(torch64, monkeypatch, settings, atol):
    want = _torch_history(torch64, settings)
    monkeypatch.setattr(jnp.linalg, "svd", _torch_svd(torch64))
    got = _history(gx.galore_adamw(LR, **settings))
    chex.assert_trees_all_close(got, want, rtol=RTOL64, atol=atol)
    _assert_moved(want)


def test_equals_the_reference_with_its_own_svd(torch64):
    """One projection period (``update_proj_gap`` > 100 steps): gradxform's float32 SVD (JAX's
    LAPACK) against the reference's (MKL's)."""
    settings = _settings(update_proj_gap=200)
    want = _torch_history(torch64, settings)
    got = _history(gx.galore_adamw(LR, **settings))
    chex.assert_trees_all_close(got, want, rtol=0, atol=ATOL_OWN_SVD)
    _assert_moved(want)


def test_galore_equals_optax_contrib(x64):
    """Optax's form: the other side, Optax's Adam, decay before the learning rate. Both run
    the same float32 SVD in JAX, so the float64 tolerance holds."""
    optax = pytest.importorskip("optax", reason="optax is not installed: gradxform[compare]")
    got = _history(gx.galore(LR, rank=2, update_proj_gap=10, weight_decay=0.1))
    want = _history(optax.contrib.galore(LR, rank=2, update_proj_gap=10, weight_decay=0.1))
    chex.assert_trees_all_close(got, want, rtol=RTOL64, atol=ATOL64)
    _assert_moved(want)


# ----------------------------------------------------------------------------------------------
# The program: one SVD per distinct shape, in one cond, compiled once.


def _update_jaxpr(params, stack_by_shape=False):
    opt = gx.galore_adamw(1e-3, rank=8, update_proj_gap=10, stack_by_shape=stack_by_shape)
    state = opt.init(params)
    return jax.make_jaxpr(lambda g, s, p: opt.update(g, s, p))(params, state, params).jaxpr


@pytest.mark.parametrize(("layers", "shapes"), [(48, 1), (1, 1), (24, 2)])
def test_one_svd_per_distinct_shape_inside_one_cond(layers, shapes):
    params = {
        f"layer{i}_{j}": jnp.ones((32 + 16 * j, 32)) for i in range(layers) for j in range(shapes)
    }
    params["bias"] = jnp.ones(32)
    # Leaf by leaf (the default) one SVD per matrix, stacked one per shape; either way all
    # inside the one cond.
    per_leaf = _update_jaxpr(params)
    assert count(per_leaf, "svd") == layers * shapes
    assert count_in_conds(per_leaf, "svd") == layers * shapes
    jaxpr = _update_jaxpr(params, stack_by_shape=True)
    assert count(jaxpr, "svd") == shapes
    # Every SVD is inside the one cond: none runs on the steps that keep the projectors (a
    # cond under vmap would have become a select of both branches, its SVD outside any cond).
    assert count_in_conds(jaxpr, "svd") == shapes
    assert count(jaxpr, "cond") == 1


# Two groups of projected matrices (three (6, 4), one (3, 7)) and a vector that is not projected.
STACKED_SHAPES = {"a0": (6, 4), "b": (3, 7), "a1": (6, 4), "v": (5,), "a2": (6, 4)}


def _stacked_run(stack_by_shape, proj_type):
    """galore_adamw's updates and params over 5 steps (projectors computed at steps 0, 2, 4),
    float32, and the GaLore state after each step."""
    rng = np.random.default_rng(3)
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in STACKED_SHAPES.items()}
    opt = gx.galore_adamw(
        1e-2,
        rank=2,
        update_proj_gap=2,
        proj_type=proj_type,
        weight_decay=0.1,
        stack_by_shape=stack_by_shape,
    )
    step = jax.jit(opt.update)
    state, states, updates = opt.init(params), [], None
    for _ in range(5):
        grads = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in STACKED_SHAPES.items()}
        updates, state = step(grads, state, params)
        params = gx.apply_updates(params, updates)
        states.append(state[0])
    return updates, params, states


@pytest.mark.parametrize(
    ("proj_type", "stacks"),
    [
        ("std", ((3, 2, 4), (1, 3, 2))),
        ("full", (((3, 6, 2), (3, 2, 4)), ((1, 3, 2), (1, 2, 7)))),
    ],
)
def test_stacked_equals_leaf_by_leaf_bit_for_bit(proj_type, stacks):
    """``stack_by_shape=True`` (one vmapped SVD, projection and projection back per group) gives
    the numbers of the default bit for bit, across projector refreshes."""
    u_want, p_want, per_leaf = _stacked_run(False, proj_type)
    u_got, p_got, stacked = _stacked_run(True, proj_type)
    jax.tree.map(np.testing.assert_array_equal, (u_got, p_got), (u_want, p_want))
    # The projectors: a tuple of stacks, the group of three in the order of its first leaf.
    assert jax.tree.map(jnp.shape, stacked[-1].projector) == stacks
    for a, b in ((per_leaf[-1], stacked[-1]), (per_leaf[1], stacked[1])):
        groups = [["a0", "a1", "a2"], ["b"]]
        for names, stack in zip(groups, b.projector, strict=True):
            want = jax.tree.map(lambda *x: jnp.stack(x), *(a.projector[k] for k in names))
            jax.tree.map(np.testing.assert_array_equal, stack, want)
    # The run crossed a refresh: the projectors of step 2 are not those of steps 0 and 1.
    changed = jax.tree.leaves(stacked[2].projector)[0] != jax.tree.leaves(stacked[1].projector)[0]
    assert bool(jnp.any(changed))
    chex.assert_trees_all_equal(per_leaf[-1].base_optimizer_state, stacked[-1].base_optimizer_state)


def test_stacked_state_of_another_model_raises():
    opt = gx.galore_adamw(1e-2, rank=2, stack_by_shape=True)
    params = {"a0": jnp.ones((6, 4)), "a1": jnp.ones((6, 4)), "b": jnp.ones((3, 7))}
    state = opt.init(params)
    other = {"a0": jnp.ones((6, 4)), "b": jnp.ones((3, 7))}
    message = (
        r"galore_adamw: the state's projector .* stacks of shapes \[\(1, 2, 4\), \(1, 3, 2\)\] "
        r"\(group size first\), the state has \(\(2, 2, 4\), \(1, 3, 2\)\)"
    )
    with pytest.raises(ValueError, match=message):
        opt.update(other, state, other)
    # A leaf-by-leaf state, shown by its shapes.
    leaf_by_leaf = gx.galore_adamw(1e-2, rank=2).init(params)
    with pytest.raises(ValueError, match=r"the state has \{'a0': \(2, 4\), 'a1'"):
        opt.update(params, leaf_by_leaf, params)


def test_stacked_state_survives_a_checkpoint(tmp_path):
    opt = gx.scale_by_galore(rank=1, update_proj_gap=2, stack_by_shape=True)
    params = {"a": jnp.ones((3, 2)), "b": jnp.ones((3, 2)), "v": jnp.ones(2)}
    grads = {"a": jnp.eye(3, 2), "b": jnp.eye(3, 2)[::-1], "v": jnp.ones(2)}
    step = jax.jit(opt.update)  # one compile: the loaded state has the state's types
    _, state = step(grads, opt.init(params))
    gx.save_state(tmp_path / "galore.npz", state)
    loaded = gx.load_state(tmp_path / "galore.npz", like=opt.init(params))
    assert isinstance(loaded.projector, tuple) and loaded.projector[0].shape == (2, 3, 1)
    chex.assert_trees_all_equal(loaded, state)
    chex.assert_trees_all_equal(step(grads, loaded), step(grads, state))


def test_compiles_once_over_two_periods():
    opt = gx.galore_adamw(1e-2, rank=2, update_proj_gap=3)
    params = {"w": jnp.ones((6, 4)), "b": jnp.ones(4)}
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(None)
        updates, state = opt.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    state = opt.init(params)
    rng = np.random.default_rng(0)
    projectors = []
    for _ in range(6):
        grads = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
        params, state = step(params, state, grads)
        projectors.append(np.asarray(state[0].projector["w"]))
    assert len(traces) == 1
    # Recomputed at steps 0 and 3 only.
    changed = [not np.array_equal(a, b) for a, b in itertools.pairwise(projectors)]
    assert changed == [False, False, True, False, False]


def test_low_precision_params_keep_float32_projectors():
    opt = gx.galore_adamw(1e-2, rank=2, update_proj_gap=2)
    params = {"w": jnp.ones((6, 4), jnp.bfloat16), "b": jnp.ones(4, jnp.bfloat16)}
    state = opt.init(params)
    grads = {"w": jnp.eye(6, 4, dtype=jnp.bfloat16), "b": jnp.ones(4, jnp.bfloat16)}
    updates, new_state = jax.jit(opt.update)(grads, state, params)
    galore_state = new_state[0]
    assert galore_state.projector["w"].dtype == jnp.float32
    assert galore_state.base_optimizer_state.mu["w"].shape == (6, 2)
    assert galore_state.base_optimizer_state.mu["w"].dtype == jnp.bfloat16
    assert updates["w"].dtype == jnp.float32
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new_state)


def test_projected_selects_the_leaves():
    params = {"w": jnp.ones((6, 4)), "v": jnp.ones((4, 4))}
    opt = gx.galore_adamw(1e-2, rank=2, projected={"w": True, "v": False})
    assert opt.init(params)[0].projector["v"] is None
    with pytest.raises(ValueError, match=r"galore_adamw: .*\['b'\] selected for projection"):
        gx.galore_adamw(1e-2, projected={"b": True}).init({"b": jnp.ones(3)})


def test_state_is_sharded_as_the_module_states():
    """Rows of a matrix and a vector sharded over 8 host devices (tests/conftest.py): ``init``
    replicates the projector and the low-rank moments (``gradxform/transforms/galore.py``'s
    docstring) and shards an unprojected leaf's moments like it; an update whose state
    shardings are pinned to init's keeps them, over projector refreshes, with the numbers of
    the unsharded update."""
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py forces 8 host devices)")
    mesh = jax.make_mesh((8,), ("rows",), axis_types=(AxisType.Auto,))
    rng = np.random.default_rng(1)
    plain = {"w": jnp.asarray(rng.standard_normal((16, 8)), jnp.float32), "b": jnp.ones(8)}
    rows = NamedSharding(mesh, P("rows"))
    sharded = jax.device_put(plain, rows)
    optimizer = gx.galore_adamw(1e-2, rank=4, update_proj_gap=2)
    state = jax.jit(optimizer.init)(sharded)
    specs = jax.tree.map(lambda x: x.sharding.spec, state)
    (galore_state, _) = specs
    assert galore_state.projector["w"] == P()
    moments = galore_state.base_optimizer_state
    assert moments.mu == moments.nu == {"w": P(), "b": P("rows")}, moments
    update = jax.jit(
        optimizer.update,
        out_shardings=(
            jax.tree.map(lambda x: x.sharding, sharded),
            jax.tree.map(lambda x: x.sharding, state),
        ),
    )
    want, got = optimizer.init(plain), state
    for _ in range(4):  # projectors computed at steps 0 and 2
        grads = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), plain)
        u_want, want = optimizer.update(grads, want, plain)
        u_got, got = update(jax.device_put(grads, rows), got, sharded)
        assert jax.tree.map(lambda x: x.sharding.spec, got) == specs
        # float32 on one device and on row blocks: the projections' sums run in another order
        # (measured: at most 3.6e-8 of 1 + |value| over the four steps).
        chex.assert_trees_all_close((u_got, got), (u_want, want), rtol=1e-5, atol=1e-5)
