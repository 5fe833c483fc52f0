"""Non-finite step guards and dynamic loss scaling.

``apply_if_finite`` must be invisible on finite steps (bitwise the inner optimizer), and on a
non-finite step must return zero updates and leave the inner state bitwise as it was. The
loss-scale arithmetic is checked against a re-derivation written here in plain Python, and a
float16 linear regression shows the point of it all: with the scale it trains to float16's
rounding floor, without it the gradients underflow and training stalls far above.
"""

import importlib
import sys
from pathlib import Path

import chex
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import gradxform as gx

FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


def _params():
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(2), jnp.float32),
    }


def _grads(step):
    rng = np.random.default_rng(100 + step)
    return {
        "w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(2), jnp.float32),
    }


def _poison(grads, value):
    """``grads`` with one element of ``w`` replaced by ``value`` (NaN or +-inf)."""
    return {**grads, "w": grads["w"].at[1, 0].set(value)}


def _signature(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype, x.weak_type), tree)


# --- apply_if_finite ------------------------------------------------------------------------------


def test_finite_steps_equal_the_inner_optimizer_exactly():
    # Eagerly, so that both run the very same primitives one by one: two different compiled
    # programs may fuse, and so round, the same arithmetic differently.
    params = _params()
    guarded = gx.apply_if_finite(gx.adam(0.1), max_consecutive_errors=2)
    plain = gx.adam(0.1)
    g_state, p_state = guarded.init(params), plain.init(params)
    g_step, p_step = guarded.update, plain.update
    g_params = p_params = params
    for t in range(4):
        g_updates, g_state = g_step(_grads(t), g_state, g_params)
        p_updates, p_state = p_step(_grads(t), p_state, p_params)
        chex.assert_trees_all_equal(g_updates, p_updates, strict=True)
        chex.assert_trees_all_equal(g_state.inner_state, p_state, strict=True)
        g_params = gx.apply_updates(g_params, g_updates)
        p_params = gx.apply_updates(p_params, p_updates)
        assert int(g_state.notfinite_count) == 0 and bool(g_state.last_finite)
    assert int(g_state.total_notfinite) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_step_changes_nothing_and_is_counted(bad):
    params = _params()
    opt = gx.apply_if_finite(gx.adam(0.1), max_consecutive_errors=3)
    step = jax.jit(opt.update)
    state = opt.init(params)
    updates, state = step(_grads(0), state, params)
    params = gx.apply_updates(params, updates)

    before_params, before_inner = params, state.inner_state
    for k in (1, 2):  # two bad steps in a row
        updates, state = step(_poison(_grads(k), bad), state, params)
        for u in jax.tree.leaves(updates):
            np.testing.assert_array_equal(np.asarray(u), 0.0)
        params = gx.apply_updates(params, updates)
        chex.assert_trees_all_equal(params, before_params, strict=True)
        chex.assert_trees_all_equal(state.inner_state, before_inner, strict=True)
        assert int(state.notfinite_count) == k
        assert int(state.total_notfinite) == k
        assert not bool(state.last_finite)

    # A finite step resets the run of errors (not the total) and equals the inner optimizer
    # applied to the state from before the bad steps (both eager, as above).
    updates, state = opt.update(_grads(3), state, params)
    expected_updates, expected_inner = gx.adam(0.1).update(_grads(3), before_inner, params)
    chex.assert_trees_all_equal(updates, expected_updates, strict=True)
    chex.assert_trees_all_equal(state.inner_state, expected_inner, strict=True)
    assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 2
    assert bool(state.last_finite)


@pytest.mark.parametrize("max_errors", [0, 1, 3])
def test_non_finite_update_is_let_through_after_too_many_in_a_row(max_errors):
    params = _params()
    opt = gx.apply_if_finite(gx.sgd(0.1, momentum=0.9), max_consecutive_errors=max_errors)
    step = jax.jit(opt.update)
    state = opt.init(params)
    for k in range(1, max_errors + 2):
        updates, state = step(_poison(_grads(k), np.nan), state, params)
        let_through = k > max_errors
        assert bool(np.isnan(np.asarray(updates["w"])).any()) == let_through, k
        # The momentum buffer is NaN exactly when the update was let through.
        trace_state = state.inner_state[0]
        assert bool(np.isnan(np.asarray(trace_state.trace["w"])).any()) == let_through, k
        assert int(state.notfinite_count) == k


def test_inner_updates_that_are_not_finite_are_skipped_too():
    # Finite gradients, but the inner transformation produces -inf (log 0): skipped as well.
    log = gx.stateless(lambda u, p: jax.tree.map(jnp.log, u))
    opt = gx.apply_if_finite(gx.chain(log, gx.sgd(1.0, momentum=0.5)), max_consecutive_errors=1)
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    updates, new_state = opt.update({"w": jnp.array([1.0, 0.0])}, state, params)
    np.testing.assert_array_equal(np.asarray(updates["w"]), [0.0, 0.0])
    chex.assert_trees_all_equal(new_state.inner_state, state.inner_state, strict=True)
    assert int(new_state.notfinite_count) == 1


def test_apply_if_finite_compiles_once_and_keeps_state_types():
    params = _params()
    opt = gx.apply_if_finite(gx.adam(0.1), max_consecutive_errors=1)
    step = jax.jit(chex.assert_max_traces(opt.update, n=1))
    state = opt.init(params)
    signature = _signature(state)
    for t, bad in enumerate([None, np.nan, np.inf, None, np.nan]):
        grads = _grads(t) if bad is None else _poison(_grads(t), bad)
        _, state = step(grads, state, params)
        assert _signature(state) == signature
    # One trace (chex, above), and one executable: no recompilation from one trace either.
    assert step._cache_size() == 1


def _primitive_names(jaxpr):
    """Every primitive in a closed jaxpr, including those of nested jaxprs (pjit, scan...)."""
    names = set()
    for eqn in jaxpr.jaxpr.eqns:
        names.add(eqn.primitive.name)
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else [param]:
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    names |= _primitive_names(sub)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    names |= _primitive_names(jax.extend.core.ClosedJaxpr(sub, []))
    return names


def test_primitive_names_finds_cond():
    # The check below would pass vacuously if nested conds were not found.
    def with_cond(x):
        return jax.jit(lambda y: jax.lax.cond(y.sum() > 0, jnp.sin, jnp.cos, y))(x)

    assert "cond" in _primitive_names(jax.make_jaxpr(with_cond)(jnp.ones(2)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: gx.apply_if_finite(gx.adam(0.1), max_consecutive_errors=2),
        lambda: gx.dynamic_loss_scale(gx.adam(0.1), period=3),
    ],
)
def test_update_has_no_cond(make):
    opt = make()
    params = _params()
    jaxpr = jax.make_jaxpr(jax.jit(opt.update))(_grads(0), opt.init(params), params)
    names = _primitive_names(jaxpr)
    assert "select_n" in names  # the skip is a select, and the walk does reach it
    assert "cond" not in names and "while" not in names, names


def test_apply_if_finite_with_axis_name_decides_the_same_on_every_device():
    # Each of 8 devices holds a shard of the gradients and only device 3's shard has a NaN:
    # with the axis name every device skips; without it the other seven apply their shard.
    axis = "data"
    mesh = jax.make_mesh((8,), (axis,), axis_types=(jax.sharding.AxisType.Explicit,))
    grads = np.ones((8, 2), np.float32)
    grads[3, 1] = np.nan
    params = np.zeros((8, 2), np.float32)

    def body(g, p):
        outs = []
        for axis_name in (axis, None):
            opt = gx.apply_if_finite(gx.sgd(1.0), 1, axis_name=axis_name)
            outs.append(opt.update({"w": g}, opt.init({"w": p}), {"w": p})[0]["w"])
        return outs

    run = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P(axis), out_specs=P(axis)))
    sharded = jax.device_put((grads, params), NamedSharding(mesh, P(axis)))
    together, alone = (np.asarray(a) for a in run(*sharded))
    np.testing.assert_array_equal(together, np.zeros((8, 2)))
    expected_alone = -grads.copy()
    expected_alone[3] = 0.0
    np.testing.assert_array_equal(alone, expected_alone)


def test_apply_if_finite_validation():
    with pytest.raises(ValueError, match="`max_consecutive_errors`"):
        gx.apply_if_finite(gx.sgd(0.1), -1)
    with pytest.raises(TypeError, match="`max_consecutive_errors`"):
        gx.apply_if_finite(gx.sgd(0.1), 1.5)
    with pytest.raises(TypeError, match="gradient transformation"):
        gx.apply_if_finite(gx.sgd, 1)


# --- DynamicLossScale -----------------------------------------------------------------------------


def _reference_adjust(scale, clean, ok, period, factor=2.0, min_scale=1.0):
    """The rule in words: shrink on every overflow (not below the floor), grow after
    ``period`` clean steps in a row. Returns the new ``(scale, clean steps)``."""
    if not ok:
        return max(min_scale, scale / factor), 0
    if clean + 1 == period:
        return scale * factor, 0
    return scale, clean + 1


def _reference_scales(initial, finite, period, factor=2.0, min_scale=1.0):
    """The scale before each step, and after the last."""
    scale, clean, scales = float(initial), 0, [float(initial)]
    for ok in finite:
        scale, clean = _reference_adjust(scale, clean, ok, period, factor, min_scale)
        scales.append(scale)
    return scales


def test_dynamic_loss_scale_adjust_matches_reference():
    rng = np.random.default_rng(5)
    # Long clean runs (growth), bursts of overflow (shrinking down to the floor).
    finite = [True] * 7 + [False] * 6 + list(rng.random(60) < 0.85) + [True] * 9
    scaler = gx.DynamicLossScale(8.0, period=3, factor=2.0, min_loss_scale=1.0)
    adjust = jax.jit(chex.assert_max_traces(lambda s, ok: s.adjust(ok), n=1))
    got = [float(scaler.loss_scale)]
    for ok in finite:
        scaler = adjust(scaler, jnp.asarray(ok))
        got.append(float(scaler.loss_scale))
        assert scaler.loss_scale.dtype == jnp.float32 and scaler.good_steps.dtype == jnp.int32
    expected = _reference_scales(8.0, finite, 3, 2.0, 1.0)
    assert got == expected
    assert min(got) == 1.0 and max(got) > 8.0  # the floor and growth both happened
    assert adjust._cache_size() == 1


def test_dynamic_loss_scale_growth_never_overflows_float32():
    big = float(np.finfo(np.float32).max) / 1.5
    scaler = gx.DynamicLossScale(big, period=1, factor=2.0)
    assert float(scaler.adjust(jnp.array(True)).loss_scale) == np.float32(big)


def test_dynamic_loss_scale_scale_and_unscale():
    scaler = gx.DynamicLossScale(1024.0)
    loss = jnp.float16(3.0)
    scaled = scaler.scale(loss)
    # 3072 in float32; in float16 arithmetic 30000 * 1024 would have overflowed.
    assert scaled.dtype == jnp.float32 and float(scaled) == 3072.0
    assert float(scaler.scale(jnp.float16(30000.0))) == 30000.0 * 1024
    grads = scaler.unscale({"w": jnp.array([2048.0, -512.0], jnp.float16)})
    assert grads["w"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(grads["w"]), [2.0, -0.5])


@pytest.mark.parametrize(
    ("kwargs", "name", "error"),
    [
        ({"period": 0}, "period", ValueError),
        ({"period": 2.5}, "period", TypeError),  # a fraction where a whole number is expected
        ({"factor": 1.0}, "factor", ValueError),
        ({"min_loss_scale": 0.0}, "min_loss_scale", ValueError),
    ],
)
def test_dynamic_loss_scale_validation(kwargs, name, error):
    with pytest.raises(error, match=f"DynamicLossScale: `{name}`"):
        gx.DynamicLossScale(1.0, **kwargs)


# --- dynamic_loss_scale (the transformation) -----------------------------------------------------


def test_dynamic_loss_scale_transformation_sequence():
    """Overflow at chosen steps: the step is skipped (zero updates, inner state untouched), the
    scale follows the reference, and finite steps equal the inner optimizer on ``g / S``."""
    params = _params()
    period = 3
    opt = gx.dynamic_loss_scale(gx.adam(0.1), initial_scale=2.0**10, period=period)
    plain = gx.adam(0.1)
    # Eager, for bitwise comparisons with the plain optimizer (see the first test).
    step, p_step = opt.update, plain.update
    state, p_state = opt.init(params), plain.init(params)
    overflow_at = {2, 6, 7}
    finite = [t not in overflow_at for t in range(14)]
    expected_scales = _reference_scales(2.0**10, finite, period, 2.0, 1.0)
    skipped = 0
    for t, ok in enumerate(finite):
        scale = float(gx.current_loss_scale(state))
        assert scale == expected_scales[t]
        true_grads = _grads(t)
        scaled = jax.tree.map(lambda g, s=scale: g * s, true_grads)
        if not ok:
            scaled = _poison(scaled, np.inf)
        updates, new_state = step(scaled, state, params)
        if ok:
            # Scales are powers of two, so g * S / S is g exactly: bitwise the plain optimizer.
            p_updates, p_state = p_step(true_grads, p_state, params)
            chex.assert_trees_all_equal(updates, p_updates, strict=True)
            chex.assert_trees_all_equal(new_state.inner_state, p_state, strict=True)
        else:
            skipped += 1
            for u in jax.tree.leaves(updates):
                np.testing.assert_array_equal(np.asarray(u), 0.0)
            chex.assert_trees_all_equal(new_state.inner_state, state.inner_state, strict=True)
        assert bool(new_state.last_finite) == ok
        assert int(new_state.total_notfinite) == skipped
        state = new_state
        params = gx.apply_updates(params, updates)
    assert float(gx.current_loss_scale(state)) == expected_scales[-1]


def test_dynamic_loss_scale_skips_non_finite_inner_updates_without_shrinking():
    # Finite gradients, but the inner transformation produces -inf (log 0): the step is
    # skipped, yet the scale did not overflow anything, so it is not shrunk.
    log = gx.stateless(lambda u, p: jax.tree.map(jnp.log, u))
    opt = gx.dynamic_loss_scale(gx.chain(log, gx.sgd(1.0, momentum=0.5)), initial_scale=8.0)
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    updates, new_state = opt.update({"w": jnp.array([8.0, 0.0])}, state, params)
    np.testing.assert_array_equal(np.asarray(updates["w"]), [0.0, 0.0])
    chex.assert_trees_all_equal(new_state.inner_state, state.inner_state, strict=True)
    assert float(new_state.loss_scale) == 8.0 and bool(new_state.last_finite)
    assert int(new_state.total_notfinite) == 1


def test_dynamic_loss_scale_keeps_float32_inner_state_for_float16_params():
    params = {"w": jnp.ones((2, 2), jnp.float16), "b": jnp.ones(2, jnp.bfloat16)}
    opt = gx.dynamic_loss_scale(gx.adam(0.1))
    state = opt.init(params)
    for moments in (state.inner_state[0].mu, state.inner_state[0].nu):
        assert all(m.dtype == jnp.float32 for m in jax.tree.leaves(moments))
    signature = _signature(state)
    step = jax.jit(chex.assert_max_traces(opt.update, n=1))
    for value in (3.0, np.inf, 3.0):
        grads = jax.tree.map(lambda p, v=value: jnp.full_like(p, v), params)
        updates, state = step(grads, state, params)
        assert _signature(state) == signature
    assert step._cache_size() == 1
    assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))
    assert gx.apply_updates(params, updates)["w"].dtype == jnp.float16
    # state_dtype=None keeps the params' dtypes.
    low = gx.dynamic_loss_scale(gx.adam(0.1), state_dtype=None).init(params)
    assert low.inner_state[0].nu["w"].dtype == jnp.float16


def test_current_loss_scale_finds_the_state_in_a_chain():
    opt = gx.chain(gx.clip(1.0), gx.dynamic_loss_scale(gx.sgd(0.1), initial_scale=512.0))
    state = opt.init(_params())
    assert float(gx.current_loss_scale(state)) == 512.0
    with pytest.raises(ValueError, match="DynamicLossScaleState"):
        gx.current_loss_scale(gx.sgd(0.1).init(_params()))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"initial_scale": 0.0}, "initial_scale"),
        ({"initial_scale": -2.0}, "initial_scale"),
        ({"period": 0}, "period"),
        ({"factor": 0.5}, "factor"),
        ({"min_scale": -1.0}, "min_scale"),
    ],
)
def test_dynamic_loss_scale_transformation_validation(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        gx.dynamic_loss_scale(gx.sgd(0.1), **kwargs)


# --- float16 training ----------------------------------------------------------------------------

# Linear regression on 512 examples with targets of size ~4e-3 (a model fitting small
# residuals). In float16 the backward pass multiplies each residual r by 1/512: once |r|
# falls below ~3e-5 that product is below float16's smallest subnormal (6e-8) and flushes to
# zero, so without a loss scale the gradient vanishes while the fit is still poor. With the
# scale S = 2^15 the same products are ~1e-3, far from underflow.
N_EXAMPLES, N_FEATURES, STEPS = 512, 16, 200


def _regression(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_EXAMPLES, N_FEATURES))
    y = x @ (1e-3 * rng.standard_normal(N_FEATURES))
    return x, y


def _mse(w, x, y):
    r = x @ w - y
    return 0.5 * jnp.mean(r * r)


def _train(dtype, opt, x, y, scaled):
    """Full-batch training under one jit; returns the float32 loss and the loss scale used at
    each step, and the final state."""
    x16, y16 = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)

    def step(carry, _):
        w, state = carry
        scale = gx.current_loss_scale(state) if scaled else jnp.float32(1.0)
        # The loss is computed in `dtype`; only the final product with the scale is float32,
        # so its gradient enters the float16 model as S rounded to float16.
        grads = jax.grad(lambda w: _mse(w, x16, y16).astype(jnp.float32) * scale)(w)
        updates, state = opt.update(grads, state, w)
        w = gx.apply_updates(w, updates)
        return (w, state), (_mse(w.astype(jnp.float32), x32, y32), scale)

    w0 = jnp.zeros(N_FEATURES, dtype)
    run = jax.jit(lambda w, s: jax.lax.scan(step, (w, s), None, length=STEPS))
    (w, state), (losses, scales) = run(w0, opt.init(w0))
    assert w.dtype == dtype
    return np.asarray(losses), np.asarray(scales), state


def test_float16_training_with_dynamic_loss_scale_converges():
    x, y = _regression()
    initial_loss = 0.5 * np.mean(y**2)  # the loss at w = 0

    def adam():
        return gx.adam(gx.cosine_decay_schedule(1e-3, STEPS))

    period = 40
    reference, _, _ = _train(jnp.float32, adam(), x, y, scaled=False)
    # Starting at 2^20, far above float16's range: the first steps overflow and are skipped.
    scaled_opt = gx.dynamic_loss_scale(adam(), initial_scale=2.0**20, period=period)
    losses, scales, state = _train(jnp.float16, scaled_opt, x, y, scaled=True)
    # The same float16 model and float32 optimizer state, with the scale pinned at 1.
    unscaled_opt = gx.dynamic_loss_scale(adam(), initial_scale=1.0, period=10**9)
    unscaled, _, _ = _train(jnp.float16, unscaled_opt, x, y, scaled=True)

    # float32 shows that the optimizer itself gets far below every threshold used here.
    assert reference[-1] < 1e-8 * initial_loss
    # float16 params carry 11 significant bits: rounding w alone costs a relative loss of
    # ~(2^-11)^2 = 2.4e-7. Scaled training must reach that order (1e-6, leaving room for
    # Adam's noise); unscaled training stalls above it where its gradients underflow.
    assert losses[-1] < 1e-6 * initial_loss
    assert unscaled[-1] > 1e-6 * initial_loss
    assert unscaled[-1] > 20 * losses[-1]

    # Overflow happens exactly when S exceeds float16's largest value (the seed of the
    # backward pass is S rounded to float16); every other intermediate is <= ~S / 512.
    # The scale sequence must follow the reference rule with that overflow test.
    expected, scale, clean = [], 2.0**20, 0
    for _ in range(STEPS):
        expected.append(scale)
        scale, clean = _reference_adjust(scale, clean, scale <= FLOAT16_MAX, period)
    np.testing.assert_array_equal(scales, expected)
    skipped = sum(s > FLOAT16_MAX for s in expected)
    assert int(state.total_notfinite) == skipped
    assert skipped >= 5  # 2^20 -> 2^15 takes five overflows, then each growth to 2^16 one more


def test_float16_example_runs():
    examples = Path(__file__).resolve().parent.parent / "examples"
    if str(examples) not in sys.path:
        sys.path.insert(0, str(examples))
    example = importlib.import_module("float16_loss_scale")
    assert example.main(["--steps", "200"]) == 0
