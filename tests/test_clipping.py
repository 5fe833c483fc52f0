"""Clipping transformations against independent references.

``clip_by_global_norm`` is checked against ``torch.nn.utils.clip_grad_norm_`` followed by a
``torch.optim.SGD`` step; ``clip_by_block_rms`` and ``adaptive_grad_clip`` against float64
NumPy re-derivations that loop over leaves and units explicitly (and AGC against Optax's
``adaptive_grad_clip`` for the ranks where the two agree on what a unit is); ``clip`` against
its closed form. Float64 comparisons use ``rtol=1e-13``: the reference and the library differ
only in the order of a handful of roundings (a sum of squares, a square root, one division),
each within an ulp (1.1e-16), so any wrong axis or factor is caught by many orders of
magnitude.
"""

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from references import require_optax, require_torch

import gradxform as gx

RTOL64 = 1e-13


# --- clip_by_global_norm vs torch ----------------------------------------------------------------


def _quadratic_gradient(params, t):
    """The gradient of ``sum_k a_k |p_k - c_k|^2 / 2`` plus a step-dependent push, so that the
    gradient depends on the trajectory (a mistake at one step shows at every later step)."""
    return {
        "w": 3.0 * (params["w"] - 1.0) + 0.5 * np.cos(t),
        "b": 0.5 * (params["b"] + 2.0),
        "s": 2.0 * params["s"] + 1.0,
    }


@pytest.mark.parametrize(
    ("max_norm", "regime"), [(0.5, "always"), (3.0, "sometimes"), (1e3, "never")]
)
def test_clip_by_global_norm_then_sgd_matches_torch(x64, max_norm, regime):
    torch = require_torch()
    rng = np.random.default_rng(0)
    params0 = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(5), "s": np.array(0.7)}
    lr, momentum, steps = 0.1, 0.9, 8

    opt = gx.chain(gx.clip_by_global_norm(max_norm), gx.sgd(lr, momentum=momentum))
    params = jax.tree.map(jnp.asarray, params0)
    state = opt.init(params)
    step = jax.jit(opt.update)
    ours, clipped = [], []
    for t in range(steps):
        grads = _quadratic_gradient(jax.tree.map(np.asarray, params), t)
        clipped.append(np.sqrt(sum(np.sum(g**2) for g in grads.values())) > max_norm)
        updates, state = step(jax.tree.map(jnp.asarray, grads), state, params)
        params = gx.apply_updates(params, updates)
        ours.append(jax.tree.map(np.asarray, params))

    tensors = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params0.items()
    }
    optimizer = torch.optim.SGD(list(tensors.values()), lr=lr, momentum=momentum)
    for t in range(steps):
        grads = _quadratic_gradient({k: v.detach().numpy() for k, v in tensors.items()}, t)
        for k, v in tensors.items():
            v.grad = torch.tensor(grads[k], dtype=torch.float64)
        torch.nn.utils.clip_grad_norm_(list(tensors.values()), max_norm)
        optimizer.step()
        theirs = {k: v.detach().numpy() for k, v in tensors.items()}
        # Eight float64 steps of the same arithmetic in a different order: ~1e-15 relative.
        # Shapes as well as values (chex's strict mode would compare dtypes too, and some of
        # this file's references are float64 against float32 results).
        chex.assert_trees_all_equal_shapes(ours[t], theirs)
        chex.assert_trees_all_close(ours[t], theirs, rtol=1e-12, atol=1e-14)

    # The regime is the intended one (norms recomputed here from our trajectory).
    expected = {"always": all(clipped), "never": not any(clipped)}
    expected["sometimes"] = any(clipped) and not all(clipped)
    assert expected[regime], clipped


# --- clip_by_block_rms ---------------------------------------------------------------------------


def _block_rms_reference(leaf, threshold):
    leaf = np.asarray(leaf)
    if leaf.size == 0:
        return leaf
    rms = np.sqrt(np.mean(np.abs(leaf) ** 2))
    return leaf if rms <= threshold else leaf * (threshold / rms)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 1.0, 10.0])
def test_clip_by_block_rms_matches_numpy(x64, threshold):
    rng = np.random.default_rng(1)
    updates = {
        "big": 5.0 * rng.standard_normal((4, 3)),  # rms ~ 5
        "mid": 0.8 * rng.standard_normal(6),  # rms ~ 0.8
        "small": 1e-3 * rng.standard_normal((2, 2, 2)),
        "scalar": np.array(-2.5),
        "zeros": np.zeros(3),
        "empty": np.zeros((0, 4)),
        "complex": rng.standard_normal(4) + 1j * rng.standard_normal(4),
    }
    transform = gx.clip_by_block_rms(threshold)
    got, _ = jax.jit(transform.update)(jax.tree.map(jnp.asarray, updates), transform.init(None))
    expected = {k: _block_rms_reference(v, threshold) for k, v in updates.items()}
    chex.assert_trees_all_equal_shapes(got, expected)
    chex.assert_trees_all_close(got, expected, rtol=RTOL64)
    for key, value in got.items():
        assert value.dtype == jnp.asarray(updates[key]).dtype, key
    if threshold == 1.0:  # some leaves are clipped, some are not
        assert not np.array_equal(got["big"], updates["big"])
        np.testing.assert_array_equal(got["mid"], updates["mid"])


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_clip_by_block_rms_low_precision(dtype):
    # RMS of (3, -3, 3, -3) is 3; clipped to 1.5 it is (1.5, -1.5, ...), exact in every dtype.
    u = jnp.array([3.0, -3.0, 3.0, -3.0], dtype)
    out, _ = gx.clip_by_block_rms(1.5).update({"u": u}, None)
    assert out["u"].dtype == dtype
    np.testing.assert_array_equal(np.asarray(out["u"], np.float32), [1.5, -1.5, 1.5, -1.5])


# --- adaptive_grad_clip --------------------------------------------------------------------------


def _agc_reference(g, p, clipping, eps):
    """AGC unit by unit: one unit per index of the last axis for ndim >= 2, else the leaf."""
    g, p = np.asarray(g), np.asarray(p)
    if g.ndim <= 1:
        bound = clipping * max(np.linalg.norm(p.ravel()), eps)
        norm = np.linalg.norm(g.ravel())
        return g if norm <= bound else g * (bound / norm)
    out = np.empty_like(g)
    for j in range(g.shape[-1]):
        g_unit, p_unit = g[..., j].ravel(), p[..., j].ravel()
        bound = clipping * max(np.linalg.norm(p_unit), eps)
        norm = np.linalg.norm(g_unit)
        out[..., j] = g[..., j] if norm <= bound else g[..., j] * (bound / norm)
    return out


def _agc_inputs(rng):
    shapes = {
        "scalar": (),
        "bias": (5,),
        "dense": (6, 4),
        "heads": (3, 2, 4),
        "conv": (3, 3, 2, 4),
        "conv3d": (2, 2, 2, 2, 3),
        "row": (1, 5),
    }
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    # Half the units get gradients far above 0.1 * |w|, half far below: both branches run.
    grads = {
        k: rng.standard_normal(s) * np.where(np.arange(s[-1] if s else 1) % 2 == 0, 1.0, 1e-3)
        for k, s in shapes.items()
    }
    grads["scalar"] = np.array(rng.standard_normal() * 10.0)
    return params, grads


@pytest.mark.parametrize(("clipping", "eps"), [(0.1, 1e-3), (0.01, 1e-3), (1.0, 0.0)])
def test_adaptive_grad_clip_matches_numpy(x64, clipping, eps):
    params, grads = _agc_inputs(np.random.default_rng(2))
    agc = gx.adaptive_grad_clip(clipping, eps)
    jparams = jax.tree.map(jnp.asarray, params)
    got, _ = jax.jit(agc.update)(jax.tree.map(jnp.asarray, grads), agc.init(jparams), jparams)
    expected = {k: _agc_reference(grads[k], params[k], clipping, eps) for k in grads}
    chex.assert_trees_all_equal_shapes(got, expected)
    chex.assert_trees_all_close(got, expected, rtol=RTOL64)
    if clipping == 0.1:  # both regimes occur in the big kernels
        for key in ("dense", "conv"):
            reduced = tuple(range(grads[key].ndim - 1))
            changed = np.any(np.asarray(got[key]) != grads[key], axis=reduced)
            assert changed.any() and not changed.all(), (key, changed)


def test_adaptive_grad_clip_zero_params_and_zero_gradients():
    # Zero params: the floor eps lets each unit move by clipping * eps; zero gradients stay
    # zero (no 0/0), also with eps = 0 and clipping = 0, where the bound itself is 0.
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    grads = {"w": jnp.array([[3.0, 0.0], [4.0, 0.0], [0.0, 0.0]]), "b": jnp.zeros(2)}
    out, _ = jax.jit(gx.adaptive_grad_clip(0.5, eps=0.1).update)(grads, None, params)
    # Unit 0 has norm 5 and bound 0.5 * 0.1 = 0.05: scaled by 0.01. Unit 1 is zero.
    np.testing.assert_allclose(out["w"], [[0.03, 0.0], [0.04, 0.0], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(out["b"], [0.0, 0.0])
    for clipping, eps in [(0.0, 0.0), (0.5, 0.0), (0.0, 1e-3)]:
        out, _ = gx.adaptive_grad_clip(clipping, eps).update(
            jax.tree.map(jnp.zeros_like, grads), None, params
        )
        for leaf in jax.tree.leaves(out):
            np.testing.assert_array_equal(leaf, np.zeros_like(leaf))


def test_adaptive_grad_clip_matches_optax():
    """Optax reduces over every axis but the last for ranks 2, 4 and 5 (its documented IO,
    HWIO and DHWIO kernels) and over everything for rank <= 1, as we do; it differs for rank 3
    (axis 0 only) and when a size-1 axis squeezes a leaf to rank <= 1, so those are left out."""
    optax = require_optax()
    params, grads = _agc_inputs(np.random.default_rng(3))
    keep = ("scalar", "bias", "dense", "conv", "conv3d")
    params = {k: jnp.asarray(params[k], jnp.float32) for k in keep}
    grads = {k: jnp.asarray(grads[k], jnp.float32) for k in keep}
    for clipping in (0.01, 0.1, 1.0):
        ours, _ = gx.adaptive_grad_clip(clipping).update(grads, None, params)
        theirs, _ = optax.adaptive_grad_clip(clipping).update(grads, None, params)
        # float32: the two sum squares in different orders; a few ulps (1.2e-7 each).
        chex.assert_trees_all_equal_shapes(ours, theirs)
        chex.assert_trees_all_close(ours, theirs, rtol=1e-6)


def test_adaptive_grad_clip_with_axis_name_uses_whole_unit_norms():
    # Kernels sharded over their input axis and vectors over their only axis, on 8 devices:
    # with the axis name each unit's norm is summed over the shards and the result equals the
    # unsharded AGC; without it each shard is clipped by its own part of the norm.
    axis = "data"
    mesh = jax.make_mesh((8,), (axis,), axis_types=(jax.sharding.AxisType.Explicit,))
    rng = np.random.default_rng(4)
    params = {"w": rng.standard_normal((16, 3)), "b": rng.standard_normal(8)}
    grads = {"w": rng.standard_normal((16, 3)), "b": 3 * rng.standard_normal(8)}
    params, grads = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), (params, grads))
    with_axis = gx.adaptive_grad_clip(0.2, axis_name=axis)
    per_shard = gx.adaptive_grad_clip(0.2)

    def body(g, p):
        return [agc.update(g, None, p)[0] for agc in (with_axis, per_shard)]

    run = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P(axis), out_specs=P(axis)))
    sharded = jax.device_put((grads, params), NamedSharding(mesh, P(axis)))
    got, got_per_shard = run(*sharded)
    expected = {k: _agc_reference(grads[k], params[k], 0.2, 1e-3) for k in grads}
    # float32 sums of 16 squares in a different order than the float64 reference.
    chex.assert_trees_all_equal_shapes(got, expected)
    chex.assert_trees_all_close(got, expected, rtol=1e-6)
    assert not np.allclose(np.asarray(got_per_shard["w"]), expected["w"], rtol=1e-3)


def test_adaptive_grad_clip_needs_params():
    agc = gx.adaptive_grad_clip(0.1)
    with pytest.raises(ValueError, match="adaptive_grad_clip needs `params`"):
        agc.update({"w": jnp.ones(2)}, agc.init(None))
    with pytest.raises(ValueError, match="does not match"):
        agc.update({"w": jnp.ones(2)}, None, {"v": jnp.ones(2)})


def test_adaptive_grad_clip_keeps_dtypes():
    params = {"w": jnp.ones((4, 2), jnp.float16), "b": jnp.ones(2, jnp.bfloat16)}
    grads = {"w": jnp.full((4, 2), 100.0, jnp.float16), "b": jnp.full(2, 100.0, jnp.bfloat16)}
    out, _ = gx.adaptive_grad_clip(0.5).update(grads, None, params)
    assert out["w"].dtype == jnp.float16 and out["b"].dtype == jnp.bfloat16
    # Unit norms: grads 200 (w) and 141.4 (b), params 2 and 1.414: every unit clipped to
    # 0.5 * |w|, i.e. each element to 0.5 (w: 100 * 1/200) and 0.5 (b: 100 * 0.707/141.4).
    np.testing.assert_allclose(np.asarray(out["w"], np.float32), 0.5, rtol=2**-10)
    np.testing.assert_allclose(np.asarray(out["b"], np.float32), 0.5, rtol=2**-7)


# --- clip ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float16])
def test_clip_closed_form(dtype):
    u = np.array([-3.0, -0.25, 0.0, 0.5, 2.0], dtype)
    out, _ = jax.jit(gx.clip(1.0).update)({"u": jnp.asarray(u)}, None)
    assert out["u"].dtype == dtype
    np.testing.assert_array_equal(np.asarray(out["u"], np.float32), [-1.0, -0.25, 0.0, 0.5, 1.0])


# --- no NaN from zero input, and jit -------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: gx.clip(0.0),
        lambda: gx.clip_by_global_norm(1.0),
        lambda: gx.clip_by_block_rms(0.0),
        lambda: gx.clip_by_block_rms(1.0),
        lambda: gx.adaptive_grad_clip(0.0, eps=0.0),
        lambda: gx.adaptive_grad_clip(0.1),
    ],
)
def test_zero_updates_and_params_give_zero_updates(make):
    transform = make()
    zeros = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2, jnp.bfloat16), "s": jnp.zeros([])}
    out, _ = jax.jit(transform.update)(zeros, transform.init(zeros), zeros)
    for leaf, zero in zip(jax.tree.leaves(out), jax.tree.leaves(zeros), strict=True):
        assert leaf.dtype == zero.dtype
        np.testing.assert_array_equal(np.asarray(leaf, np.float32), 0.0)


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: gx.clip(-1.0), "max_delta"),
        (lambda: gx.clip_by_global_norm(0.0), "max_norm"),
        (lambda: gx.clip_by_global_norm(-1.0), "max_norm"),
        (lambda: gx.clip_by_block_rms(-0.1), "threshold"),
        (lambda: gx.clip_by_block_rms(float("nan")), "threshold"),
        (lambda: gx.adaptive_grad_clip(-0.1), "clipping"),
        (lambda: gx.adaptive_grad_clip(0.1, eps=-1e-3), "eps"),
    ],
)
def test_invalid_hyperparameters_raise(make, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()


def test_array_hyperparameters_are_not_validated_and_work_under_jit():
    # Arrays (e.g. injected hyperparameters) are only known at run time: accepted as they are.
    @jax.jit
    def run(threshold, clipping, u, p):
        a, _ = gx.clip_by_block_rms(threshold).update(u, None)
        b, _ = gx.adaptive_grad_clip(clipping).update(u, None, p)
        return a, b

    u = {"w": jnp.array([[3.0, 4.0]])}  # one row, two units of norm 3 and 4
    a, b = run(jnp.float32(1.0), jnp.float32(0.5), u, {"w": jnp.array([[2.0, 2.0]])})
    np.testing.assert_allclose(a["w"], [[3.0 / np.sqrt(12.5), 4.0 / np.sqrt(12.5)]], rtol=1e-6)
    np.testing.assert_allclose(b["w"], [[1.0, 1.0]], rtol=1e-6)
