"""Tests of gradxform.accumulation: MultiSteps and gradient_accumulation.

The reference for accumulation is the definition: with a loss that is a mean over examples
and micro-batches of equal size, ``k`` accumulated micro-batches must give the params of one
step of the inner optimizer on the concatenated batch. In float64 the two differ only by the
rounding of the gradient sum (the mean of ``k`` micro-batch means against one mean over all
examples, ~1e-16 relative), hence ``rtol=1e-12``; an update made one micro-batch early, a sum
in place of the mean or an inner state advanced on a skipped step are all visible at 1e-3.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from optimizer_table import every_optimizer, representatives, skip_if_update_needs_the_loss

import gradxform as gx

RTOL64 = 1e-12
DIM, MICRO = 3, 4  # features, examples per micro-batch


def _loss(params, x, y):
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


_grad = jax.jit(jax.grad(_loss))


def _params(dtype=np.float64):
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.normal(size=DIM), dtype), "b": jnp.asarray(0.5, dtype)}


def _batches(sizes, seed=1):
    """One (x, y) batch of ``k * MICRO`` examples per entry ``k`` of ``sizes``."""
    rng = np.random.default_rng(seed)
    out = []
    for k in sizes:
        x = rng.normal(size=(k * MICRO, DIM))
        out.append((x, x @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=k * MICRO)))
    return out


def _state_bytes(tree) -> int:
    """Bytes of a tree's leaves: arrays, or the shapes ``jax.eval_shape`` gives (no compute)."""
    return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _init_bytes(opt, params) -> int:
    return _state_bytes(jax.eval_shape(opt.init, params))


def _signature(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype, jax.typeof(x).weak_type), tree)


@every_optimizer
def test_multisteps_equals_one_step_on_the_concatenated_batch(x64, entry):
    # k per round from a schedule: rounds of 2, then 4 micro-batches.
    _check_multisteps(entry, lambda step: jnp.where(step < 1, 2, 4), [2, 4, 4])


@pytest.mark.parametrize(("every_k", "sizes"), [(3, [3, 3, 3]), (1, [1, 1])], ids=["k=3", "k=1"])
@representatives
def test_multisteps_with_a_fixed_k_equals_one_step_on_the_concatenated_batch(
    x64, entry, every_k, sizes
):
    _check_multisteps(entry, every_k, sizes)


def _check_multisteps(entry, every_k, sizes):
    skip_if_update_needs_the_loss(
        entry,
        "MultiSteps has no loss of the concatenated batch to give it (and L-BFGS evaluates the "
        "whole loss itself, so accumulating micro-batch gradients for it means nothing)",
    )
    opt = gx.MultiSteps(entry.make(entry.parabola_lr), every_k)
    reference = entry.make(entry.parabola_lr)
    update = jax.jit(opt.update)
    params = ref_params = _params()
    state, ref_state = opt.init(params), reference.init(ref_params)
    for k, (x, y) in zip(sizes, _batches(sizes), strict=True):
        # The reference: one step on the whole batch.
        ref_updates, ref_state = reference.update(_grad(ref_params, x, y), ref_state, ref_params)
        ref_params = gx.apply_updates(ref_params, ref_updates)
        # The same examples as k micro-batches.
        for i in range(k):
            rows = slice(i * MICRO, (i + 1) * MICRO)
            updates, state = update(_grad(params, x[rows], y[rows]), state, params)
            last = i == k - 1
            assert bool(gx.MultiSteps.has_updated(state)) == last
            if not last:
                assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates))
            params = gx.apply_updates(params, updates)
        chex.assert_trees_all_close(params, ref_params, rtol=RTOL64, atol=0)
    # The inner state is the reference's (it advanced once per round, not once per call).
    chex.assert_trees_all_close(state.inner_state, ref_state, rtol=RTOL64, atol=0)
    assert int(state.gradient_step) == len(sizes) and int(state.mini_step) == 0


def test_gradient_accumulation_is_multisteps_as_a_function(x64):
    params = _params()
    grads = [_grad(params, x[:MICRO], y[:MICRO]) for x, y in _batches([1, 1, 1, 1])]
    a = gx.gradient_accumulation(gx.adam(0.1), k=2)
    b = gx.MultiSteps(gx.adam(0.1), every_k_schedule=2)
    assert isinstance(a, gx.GradientTransformation)
    state_a, state_b = a.init(params), b.init(params)
    for g in grads:
        ua, state_a = a.update(g, state_a, params)
        ub, state_b = b.update(g, state_b, params)
        chex.assert_trees_all_equal(ua, ub, strict=True)
    assert int(state_a.gradient_step) == 2


def test_multisteps_state_is_the_inner_state_plus_one_gradient_tree():
    params = {"w": jnp.ones((16, 8)), "b": jnp.ones(8)}
    inner_bytes = _init_bytes(gx.adam(1e-3), params)
    params_bytes = _state_bytes(params)
    counters = 2 * 4  # two int32
    assert _init_bytes(gx.MultiSteps(gx.adam(1e-3), 4), params) == (
        inner_bytes + params_bytes + counters
    )
    # A float32 accumulator for bfloat16 gradients doubles the accumulator only.
    bf16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    opt = gx.MultiSteps(gx.sgd(0.1), 4, accumulator_dtype=jnp.float32)
    assert _init_bytes(opt, bf16) == 2 * _state_bytes(bf16) + counters


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("every_k", [3, lambda step: 2 + step % 2], ids=["int", "schedule"])
def test_multisteps_under_jit_traces_once_with_stable_state(dtype, every_k):
    opt = gx.MultiSteps(gx.adamw(1e-2), every_k)
    params = jax.tree.map(lambda p: p.astype(dtype), _params(np.float32))
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = opt.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    state = opt.init(params)
    expected = _signature(state)
    for _ in range(7):  # crosses several accumulation rounds
        params, state = step(params, state)
    assert _signature(state) == expected
    assert int(state.gradient_step) in (2, 3)  # 7 calls: rounds of 3 (2), or 2, 3, 2 (3)


def test_multisteps_in_a_chain_and_has_updated_finds_its_state():
    opt = gx.chain(gx.clip_by_global_norm(1.0), gx.MultiSteps(gx.sgd(1.0), 2))
    params = {"w": jnp.zeros(2)}
    update = jax.jit(opt.update)
    state = opt.init(params)
    flags = []
    for _ in range(4):
        updates, state = update({"w": jnp.array([3.0, 4.0])}, state, params)
        flags.append(bool(gx.MultiSteps.has_updated(state)))
    assert flags == [False, True, False, True]
    np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)  # the clipped gradient
    with pytest.raises(ValueError, match="exactly one MultiStepsState"):
        gx.MultiSteps.has_updated(gx.adam().init(params))


@pytest.mark.parametrize(
    ("every_k", "error", "match"),
    [
        (0, ValueError, r"MultiSteps: `every_k_schedule` must be a whole number in \[1, .*got 0"),
        (True, TypeError, "MultiSteps: `every_k_schedule` must be a whole number.*bool"),
        (2.0, TypeError, "MultiSteps: `every_k_schedule` must be a whole number.*2.0"),
    ],
)
def test_multisteps_validates_k(every_k, error, match):
    with pytest.raises(error, match=match):
        gx.MultiSteps(gx.sgd(0.1), every_k)


def test_multisteps_rejects_a_factory():
    with pytest.raises(TypeError, match="Did you pass an optimizer factory"):
        gx.gradient_accumulation(gx.adam, k=2)
