"""Optax's wrappers and remaining transformations: the same numbers as Optax 0.2.8.

Every case runs 100 steps in float64 on both sides, each library's steps inside one jitted
``lax.scan``, fed the same gradients, and compares the updates, the params (and, where a
training loop reads it, a part of the state) at every step with ``rtol=1e-12``. The rules
evaluate the same operations, mostly in the same order; where the order differs (gradxform's
accumulator sums then divides by ``k``, Optax's keeps a running mean; norms reduce in another
order) the difference is a few ulps per step. ``atol=1e-14`` (~45 ulps of 1.0) covers elements
near zero, whose rounding error is at the scale of their O(1) operands.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.references import require_optax

optax = require_optax()

STEPS = 100
RTOL = 1e-12
ATOL = 1e-14
SHAPES = {"w": (3, 4), "b": (4,)}


def _params(positive=False):
    rng = np.random.default_rng(0)
    p = {k: jnp.asarray(rng.normal(size=s)) for k, s in SHAPES.items()}
    return jax.tree.map(jnp.abs, p) if positive else p


def _grads(batch=None, nan_steps=(), scale=1.0):
    """Stacked gradients ``(STEPS, [batch,] *shape)``; NaN in ``w[0, 0]`` at ``nan_steps``."""
    rng = np.random.default_rng(1)
    lead = (STEPS,) if batch is None else (STEPS, batch)
    g = {k: scale * rng.normal(size=lead + s) for k, s in SHAPES.items()}
    for t in nan_steps:
        g["w"][(t,) + (0,) * (g["w"].ndim - 1)] = np.nan
    return jax.tree.map(jnp.asarray, g)


def _history(tx, params, grads, apply, state_part=lambda s: (), loop=False):
    """``(updates, params, state_part(state))`` after each of the steps, stacked."""

    def step(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p)
        p = apply(p, u)
        return (p, s), (u, p, state_part(s))

    if loop:
        jitted, carry, out = jax.jit(step), (params, tx.init(params)), []
        for t in range(STEPS):
            carry, record = jitted(carry, jax.tree.map(lambda g, t=t: g[t], grads))
            out.append(record)
        return jax.tree.map(lambda *xs: np.stack(xs), *out)
    run = jax.jit(lambda p, gs: jax.lax.scan(step, (p, tx.init(p)), gs)[1])
    return jax.tree.map(np.asarray, run(params, grads))


def _compare(ours, theirs):
    chex.assert_trees_all_close(ours, theirs, rtol=RTOL, atol=ATOL)


def _norm_sq(u):
    return sum(jnp.sum(x**2) for x in jax.tree.leaves(u))


# (gradxform transformation, Optax's, keyword arguments of the case): built inside x64.
CASES = {
    # The mean of the micro-batches, micro-batches with a NaN skipped.
    "MultiSteps-mean-skip_not_finite": lambda: (
        gx.MultiSteps(gx.adam(1e-2), 3, True, gx.skip_not_finite),
        optax.MultiSteps(
            optax.adam(1e-2), 3, True, optax.skip_not_finite, accumulator_dtype=jnp.float64
        ),
        {"nan_steps": (4, 10, 11, 50), "state_part": lambda s: s.skip_state},
    ),
    # Their sum, large micro-batches skipped (about a third of them).
    "MultiSteps-sum-skip_large_updates": lambda: (
        gx.MultiSteps(
            gx.adam(1e-2),
            2,
            False,
            functools.partial(gx.skip_large_updates, max_squared_norm=20.0),
        ),
        optax.MultiSteps(
            optax.adam(1e-2),
            2,
            False,
            functools.partial(optax.skip_large_updates, max_squared_norm=20.0),
            accumulator_dtype=jnp.float64,
        ),
        {"state_part": lambda s: s.skip_state},
    ),
    # Stateless and counting transformations, one after the other.
    "zero_nans-centralize-agc-apply_every-nonnegative": lambda: (
        gx.chain(
            gx.zero_nans(),
            gx.centralize(),
            gx.adaptive_grad_clip(0.05, 1e-3, 0),
            gx.apply_every(3),
            gx.scale(-0.3),
            gx.keep_params_nonnegative(),
        ),
        optax.chain(
            optax.zero_nans(),
            optax.centralize(),
            optax.adaptive_grad_clip(0.05, 1e-3, 0),
            optax.apply_every(3),
            optax.scale(-0.3),
            optax.keep_params_nonnegative(),
        ),
        {"positive": True, "nan_steps": (3, 7), "state_part": lambda s: s[0].found_nan},
    ),
    # The DP aggregate of per-example gradients, Nesterov momentum, then annealed noise.
    "dpsgd-add_noise": lambda: (
        gx.chain(gx.dpsgd(0.1, 1.0, 0.5, 5, 0.9, True), gx.add_noise(0.01, 0.55, 3)),
        optax.chain(
            optax.contrib.dpsgd(0.1, 1.0, 0.5, 5, 0.9, True), optax.add_noise(0.01, 0.55, 3)
        ),
        {"batch": 4},
    ),
    "conditionally_transform-conditionally_mask": lambda: (
        gx.chain(
            gx.conditionally_transform(gx.adam(1e-2), lambda step: step % 3 != 1),
            gx.conditionally_mask(gx.ema(0.5), lambda step: step % 4 != 0),
        ),
        optax.chain(
            optax.conditionally_transform(optax.adam(1e-2), lambda step: step % 3 != 1),
            optax.conditionally_mask(optax.ema(0.5), lambda step: step % 4 != 0),
        ),
        {},
    ),
    # A group without leaves ("x") is allowed, as in Optax; "a" runs on one flat vector.
    "partition-flatten": lambda: (
        gx.partition(
            {"a": gx.flatten(gx.adam(1e-2)), "s": gx.sgd(0.1), "x": gx.sgd(1.0)},
            {"w": "a", "b": "s"},
        ),
        optax.partition(
            {"a": optax.flatten(optax.adam(1e-2)), "s": optax.sgd(0.1), "x": optax.sgd(1.0)},
            {"w": "a", "b": "s"},
        ),
        {},
    ),
    "selective_transform": lambda: (
        gx.selective_transform(gx.adam(1e-2), freeze_mask={"w": False, "b": True}),
        optax.selective_transform(optax.adam(1e-2), freeze_mask={"w": False, "b": True}),
        {},
    ),
    # Optax's monitor starts from empty measurements, so its state changes structure at the
    # first update: it runs in a Python loop of a jitted step instead of a scan.
    "monitor-snapshot-measure_with_ema": lambda: (
        gx.chain(
            gx.monitor({"norm": _norm_sq, "ema": gx.measure_with_ema(_norm_sq, 0.9)}),
            gx.snapshot("sq", _norm_sq),
            gx.scale(-0.1),
        ),
        optax.chain(
            optax.monitor({"norm": _norm_sq, "ema": optax.measure_with_ema(_norm_sq, 0.9)}),
            optax.snapshot("sq", _norm_sq),
            optax.scale(-0.1),
        ),
        {"state_part": lambda s: (s[0].measurements, s[1].measurement), "loop": True},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_optax_float64(x64, case):
    ours, theirs, options = CASES[case]()
    params = _params(options.get("positive", False))
    grads = _grads(options.get("batch"), options.get("nan_steps", ()))
    part = options.get("state_part", lambda s: ())
    got = _history(ours, params, grads, gx.apply_updates, part)
    want = _history(theirs, params, grads, optax.apply_updates, part, options.get("loop", False))
    _compare(got, want)
    assert np.all(np.isfinite(got[1]["w"])) and np.any(got[0]["w"] != 0)


def test_lookahead_pairs_match_optax(x64):
    params = _params()
    grads = _grads()
    ours = gx.lookahead(gx.adam(1e-2), 4, 0.3)
    theirs = optax.lookahead(optax.adam(1e-2), 4, 0.3)
    got = _history(ours, gx.LookaheadParams.init_synced(params), grads, gx.apply_updates)
    want = _history(theirs, optax.LookaheadParams.init_synced(params), grads, optax.apply_updates)
    # (updates, params), each a (fast, slow) pair of the two libraries' own pair classes.
    _compare([tuple(x) for x in got[:2]], [tuple(x) for x in want[:2]])


def test_lookahead_plain_params_with_reset_follow_optax_fast_params(x64):
    # gradxform's plain params are Optax's fast params (after a synchronisation both are the
    # slow weights); the rounding of `theta + (phi - theta)` differs by an ulp or so.
    params = _params()
    grads = _grads()
    got = _history(gx.lookahead(gx.adam(1e-2), 4, 0.3, True), params, grads, gx.apply_updates)
    want = _history(
        optax.lookahead(optax.adam(1e-2), 4, 0.3, True),
        optax.LookaheadParams.init_synced(params),
        grads,
        optax.apply_updates,
    )
    _compare(got[1], want[1].fast)


def test_linear_onecycle_schedule_with_pct_final_is_optax(x64):
    ours = gx.linear_onecycle_schedule(100, 0.5, 0.25, 0.8, div_factor=10.0, final_div_factor=50.0)
    theirs = optax.linear_onecycle_schedule(100, 0.5, 0.25, 0.8, 10.0, 50.0)
    steps = jnp.arange(110)
    np.testing.assert_allclose(jax.vmap(ours)(steps), jax.vmap(theirs)(steps), rtol=RTOL)


UNITS = [
    *(((5,), None), ((1, 5), None), ((3, 4), None), ((2, 3, 4), None)),
    *(((2, 2, 3, 4), None), ((2, 2, 2, 3, 4), None), ((3, 4), 1), ((2, 3, 4), (0, 2))),
]


def test_unitwise_norm_and_clip_are_optax(x64):
    rng = np.random.default_rng(2)
    for shape, axis in UNITS:
        x, g = (jnp.asarray(rng.normal(size=shape)) for _ in range(2))
        norm = gx.unitwise_norm(x, axis)
        np.testing.assert_allclose(norm, optax.transforms.unitwise_norm(x, axis), rtol=RTOL)
        bound = 0.5 * norm
        g_norm = gx.unitwise_norm(g, axis)
        np.testing.assert_allclose(
            gx.unitwise_clip(g_norm, bound, g),
            optax.transforms.unitwise_clip(g_norm, bound, g),
            rtol=RTOL,
        )


@pytest.mark.parametrize("uniform", [True, False])
def test_per_example_clips_are_optax(x64, uniform):
    grads = jax.tree.map(lambda g: g[0], _grads(batch=6, scale=0.7))
    got = gx.per_example_global_norm_clip(grads, 3.0)
    want = optax.per_example_global_norm_clip(grads, 3.0)
    _compare(got, want)
    assert 0 < int(got[1]) < 6  # some examples clipped, some not
    _compare(
        gx.per_example_layer_norm_clip(grads, 3.0, uniform),
        optax.per_example_layer_norm_clip(grads, 3.0, uniform),
    )


def test_incremental_and_periodic_updates_are_optax(x64):
    new, old = _params(), _params(positive=True)
    _compare(gx.incremental_update(new, old, 0.1), optax.incremental_update(new, old, 0.1))
    for steps in (0, 3, 5):
        _compare(gx.periodic_update(new, old, steps, 5), optax.periodic_update(new, old, steps, 5))


@pytest.mark.parametrize("batch_axis", [0, 1])
def test_microbatch_equals_one_step_on_the_whole_batch(x64, batch_axis):
    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.normal(size=3))}
    xs = jnp.asarray(rng.normal(size=(12, 3)))
    xs = xs if batch_axis == 0 else xs.T

    def loss(p, x):
        x = x if batch_axis == 0 else x.T
        return jnp.mean(jnp.tanh(x @ p["w"]) ** 2)

    whole = jax.value_and_grad(loss)(params, xs)
    micro = gx.microbatch(jax.value_and_grad(loss), 1, 3, "mean", in_axes=batch_axis)
    got = jax.jit(micro)(params, xs)
    _compare(got, whole)
    want = optax.microbatch(
        jax.value_and_grad(loss),
        1,
        3,
        optax.microbatching.AccumulationType.MEAN,
        in_axes=batch_axis,
    )(params, xs)
    _compare(got, want)
    opt = gx.adam(1e-2)
    state = opt.init(params)
    _compare(opt.update(got[1], state, params), opt.update(whole[1], state, params))


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (gx.MultiStepsState, optax.MultiStepsState),
        (gx.ApplyEvery, optax.ApplyEvery),
        (gx.ReduceLROnPlateauState, optax.contrib.ReduceLROnPlateauState),
        (gx.AddNoiseState, optax.AddNoiseState),
        (gx.ZeroNansState, optax.ZeroNansState),
        (gx.ConditionallyMaskState, optax.transforms.ConditionallyMaskState),
        (gx.ConditionallyTransformState, optax.transforms.ConditionallyTransformState),
        (gx.PartitionState, optax.transforms.PartitionState),
        (gx.MonitorState, optax.transforms.MonitorState),
        (gx.SnapshotState, optax.transforms.SnapshotState),
        (gx.DifferentiallyPrivateAggregateState, optax.contrib.DifferentiallyPrivateAggregateState),
        (gx.LookaheadParams, optax.LookaheadParams),
    ],
)
def test_state_field_names_are_optax(ours, theirs):
    assert ours._fields == theirs._fields


def test_multisteps_skip_state_and_old_name():
    opt = gx.MultiSteps(gx.sgd(1.0), 2, should_skip_update_fn=gx.skip_not_finite)
    params = {"w": jnp.zeros(2)}
    state = opt.init(params)
    assert state.inner_state is state.inner_opt_state
    u, state = opt.update({"w": jnp.array([jnp.nan, 1.0])}, state, params)
    assert int(state.mini_step) == 0 and int(state.skip_state["num_not_finite"]) == 1
    assert u["w"].tolist() == [0.0, 0.0]
