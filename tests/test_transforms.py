"""Each transformation against a float64 NumPy re-derivation written here, over several steps.

The re-derivations follow the formulas in the docstrings (and torch.optim's algorithms where a
transformation is documented to match one). They run in float64 under ``jax_enable_x64``, so
the library and the reference differ only in the order of a few roundings per step: a relative
tolerance of 1e-13 is several hundred float64 ulps and still catches any wrong coefficient,
missing bias correction or misplaced ``eps``. Gradients change scale by four orders of
magnitude and sign between steps, so running maxima, moving averages and momentum are all
exercised.
"""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from optimizer_table import (
    FACTORIES,
    assert_covers_every_optimizer,
    loss_update,
    skip_if_update_needs_the_loss,
    table,
)

import gradxform as gx

RTOL = 1e-13
STEPS = 6
# Per-step scales: large, tiny, huge, ... so that second moments rise and fall.
SCALES = (1.0, 0.01, 30.0, 0.5, 3.0, 1e-3)


def _gradients(seed, complex_=False, steps=STEPS):
    """A list of gradient trees {"w": (3, 4), "b": (5,)} in float64 (or complex128)."""
    rng = np.random.default_rng(seed)

    def leaf(shape, scale):
        g = rng.standard_normal(shape)
        if complex_:
            g = g + 1j * rng.standard_normal(shape)
        return g * scale

    return [{"w": leaf((3, 4), SCALES[t]), "b": leaf((5,), SCALES[t])} for t in range(steps)]


def _params(seed=100, complex_=False):
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    if complex_:
        params = {k: v + 1j * rng.standard_normal(v.shape) for k, v in params.items()}
    return params


def _run(transform, grads, params=None):
    """Runs ``transform`` over the gradient trees; returns the updates (NumPy) and the state."""
    params = _params() if params is None else params
    params = jax.tree.map(jnp.asarray, params)
    state = transform.init(params)
    # Eagerly: every primitive compiles once per shape and is reused by all the tests, where
    # jitting each transformation would compile ~150 programs. test_jit_matches_eager checks
    # that compiled updates agree.
    step = transform.update
    outputs = []
    for g in grads:
        updates, state = step(jax.tree.map(jnp.asarray, g), state, params)
        outputs.append(jax.tree.map(np.asarray, updates))
    return outputs, state


def _check_leafwise(outputs, grads, reference, rtol=RTOL, atol=0.0):
    """Compares every step of every leaf with ``reference(list of that leaf's gradients)``."""
    for key in grads[0]:
        expected = reference([g[key] for g in grads])
        assert len(expected) == len(outputs)
        for t, (got, want) in enumerate(zip(outputs, expected, strict=True)):
            assert got[key].dtype == np.asarray(grads[0][key]).dtype
            np.testing.assert_allclose(
                got[key], want, rtol=rtol, atol=atol, err_msg=f"leaf {key}, step {t + 1}"
            )


def _correction(decay, t):
    """1 - decay^t for the float64 ``decay``, correctly rounded (exact rational arithmetic).

    Evaluated as written, 1 - decay^t cancels: for decay = 0.999 an ulp of decay^t is 1e-13
    of the result, as large as the tolerance, so the reference must not do that.
    """
    return float(1 - Fraction(decay) ** t)


def _sq(g):
    return (g * np.conj(g)).real


def _safe_div(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0 (the library's eps = 0 rule)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator == 0, 0.0, numerator / denominator)


# --- NumPy re-derivations (one leaf, float64) ------------------------------------------


def ref_adam(grads, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, amsgrad=False, max_corrected=False):
    m = np.zeros_like(grads[0])
    v = np.zeros(np.shape(grads[0]))
    v_max = np.zeros_like(v)
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * _sq(g)
        if max_corrected:  # the wrong AMSGrad: maximum of the bias-corrected moment
            v_max = np.maximum(v_max, v / _correction(b2, t))
            v_hat = v_max
        elif amsgrad:  # torch's AMSGrad: maximum of the raw moment, then bias correction
            v_max = np.maximum(v_max, v)
            v_hat = v_max / _correction(b2, t)
        else:
            v_hat = v / _correction(b2, t)
        out.append(_safe_div(m / _correction(b1, t), np.sqrt(v_hat + eps_root) + eps))
    return out


def ref_adamax(grads, b1=0.9, b2=0.999, eps=1e-8):
    m = np.zeros_like(grads[0])
    u_inf = np.zeros(np.shape(grads[0]))
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        u_inf = np.maximum(b2 * u_inf, np.abs(g) + eps)
        out.append(_safe_div(m / _correction(b1, t), u_inf))
    return out


def ref_nadam(grads, b1=0.9, b2=0.999, eps=1e-8, momentum_decay=4e-3):
    m = np.zeros_like(grads[0])
    v = np.zeros(np.shape(grads[0]))
    product = 1.0
    out = []
    for t, g in enumerate(grads, start=1):
        mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        product *= mu
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * _sq(g)
        d = np.sqrt(v / _correction(b2, t)) + eps
        out.append(
            (1 - mu) / (1 - product) * _safe_div(g, d)
            + mu_next / (1 - product * mu_next) * _safe_div(m, d)
        )
    return out


def ref_rms(grads, decay=0.99, eps=1e-8, eps_in_sqrt=False, centered=False, initial_scale=0.0):
    v = np.full(np.shape(grads[0]), initial_scale, dtype=float)
    c = np.zeros_like(grads[0])
    out = []
    for g in grads:
        v = decay * v + (1 - decay) * _sq(g)
        spread = v
        if centered:
            c = decay * c + (1 - decay) * g
            spread = np.maximum(v - _sq(c), 0.0)
        denominator = np.sqrt(spread + eps) if eps_in_sqrt else np.sqrt(spread) + eps
        out.append(_safe_div(g, denominator))
    return out


def ref_rss(grads, initial_accumulator_value=0.0, eps=1e-10):
    s = np.full(np.shape(grads[0]), initial_accumulator_value, dtype=float)
    out = []
    for g in grads:
        s = s + _sq(g)
        out.append(_safe_div(g, np.sqrt(s) + eps))
    return out


def ref_lion(grads, b1=0.9, b2=0.99):
    m = np.zeros_like(grads[0])
    out = []
    for g in grads:
        out.append(np.sign(b1 * m + (1 - b1) * g))
        m = b2 * m + (1 - b2) * g
    return out


def ref_trace(grads, decay, nesterov=False, dampening=0.0):
    b = None
    out = []
    for g in grads:
        b = g.copy() if b is None else decay * b + (1 - dampening) * g
        out.append(g + decay * b if nesterov else b)
    return out


def ref_ema(grads, decay, debias=True):
    e = np.zeros_like(grads[0])
    out = []
    for t, g in enumerate(grads, start=1):
        e = decay * e + (1 - decay) * g
        out.append(e / _correction(decay, t) if debias else e)
    return out


@pytest.mark.parametrize(
    "make",
    [
        lambda: gx.scale_by_adam(amsgrad=True),
        lambda: gx.scale_by_rms(centered=True),
        lambda: gx.trace(0.9, dampening=0.1),
        lambda: gx.scale_by_nadam(),
    ],
)
def test_jit_matches_eager(x64, make):
    # The other tests run updates eagerly; compiled, the same float64 arithmetic may be fused
    # differently, which moves results by a few ulps at most.
    grads = _gradients(21)
    eager, _ = _run(make(), grads)
    transform = make()
    params = jax.tree.map(jnp.asarray, _params())
    state = transform.init(params)
    step = jax.jit(transform.update)
    for t, g in enumerate(grads):
        updates, state = step(jax.tree.map(jnp.asarray, g), state, params)
        for key in g:
            np.testing.assert_allclose(np.asarray(updates[key]), eager[t][key], rtol=RTOL)


# --- scaling ------------------------------------------------------------------------------


@pytest.mark.parametrize("step_size", [0.0, -0.5, 3.0, 1e-4])
def test_scale(x64, step_size):
    grads = _gradients(0)
    outputs, state = _run(gx.scale(step_size), grads)
    assert state == gx.EmptyState()
    _check_leafwise(outputs, grads, lambda gs: [step_size * g for g in gs])


@pytest.mark.parametrize("flip_sign", [True, False])
def test_scale_by_learning_rate_float(x64, flip_sign):
    grads = _gradients(1)
    outputs, _ = _run(gx.scale_by_learning_rate(0.03, flip_sign=flip_sign), grads)
    sign = -1 if flip_sign else 1
    _check_leafwise(outputs, grads, lambda gs: [sign * 0.03 * g for g in gs])


def _schedule(count):
    # 0.1 * 0.5^k: a decaying rate whose first value (k = 0) is 0.1.
    return 0.1 * 0.5**count


@pytest.mark.parametrize("flip_sign", [True, False])
def test_scale_by_learning_rate_schedule(x64, flip_sign):
    grads = _gradients(2)
    outputs, state = _run(gx.scale_by_learning_rate(_schedule, flip_sign=flip_sign), grads)
    sign = -1 if flip_sign else 1
    _check_leafwise(outputs, grads, lambda gs: [sign * 0.1 * 0.5**k * g for k, g in enumerate(gs)])
    assert int(state.count) == STEPS


def test_scale_by_schedule_counts_from_zero(x64):
    grads = _gradients(3)
    outputs, state = _run(gx.scale_by_schedule(lambda k: 2.0 + k), grads)
    _check_leafwise(outputs, grads, lambda gs: [(2.0 + k) * g for k, g in enumerate(gs)])
    assert isinstance(state, gx.ScaleByScheduleState)
    assert state.count.dtype == jnp.int32 and int(state.count) == STEPS


def test_sgd_step_on_parabola_closed_form():
    # f(w) = w^2 / 2 has gradient w: one step from 1 with lr 0.1 lands on 0.9.
    params = {"w": jnp.array(1.0)}
    opt = gx.sgd(0.1)
    grads = jax.grad(lambda p: 0.5 * p["w"] ** 2)(params)
    updates, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(float(gx.apply_updates(params, updates)["w"]), 0.9, rtol=1e-7)


# --- momentum -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "decay, nesterov, dampening",
    [(0.9, False, 0.0), (0.5, True, 0.0), (0.9, False, 0.3), (0.0, False, 0.0), (1.2, False, 0.0)],
)
def test_trace(x64, decay, nesterov, dampening):
    grads = _gradients(4)
    outputs, state = _run(gx.trace(decay, nesterov=nesterov, dampening=dampening), grads)
    _check_leafwise(outputs, grads, lambda gs: ref_trace(gs, decay, nesterov, dampening))
    assert isinstance(state, gx.TraceState) and int(state.count) == STEPS
    buffers = ref_trace([g["w"] for g in grads], decay, False, dampening)
    np.testing.assert_allclose(np.asarray(state.trace["w"]), buffers[-1], rtol=RTOL)


def test_trace_first_buffer_is_first_gradient_with_dampening(x64):
    # torch: the buffer starts as the gradient itself, not (1 - dampening) * gradient.
    g = {"w": np.array([1.0, -2.0])}
    outputs, state = _run(gx.trace(0.9, dampening=0.5), [g], params={"w": np.zeros(2)})
    np.testing.assert_array_equal(outputs[0]["w"], [1.0, -2.0])
    np.testing.assert_array_equal(np.asarray(state.trace["w"]), [1.0, -2.0])
    # Second step: 0.9 * 1 + 0.5 * 1 = 1.4 (dampening applies from now on).
    outputs, _ = _run(gx.trace(0.9, dampening=0.5), [g, g], params={"w": np.zeros(2)})
    np.testing.assert_allclose(outputs[1]["w"], [1.4, -2.8], rtol=1e-15)


def test_trace_constant_gradient_closed_form(x64):
    # b_t = g (1 - mu^t) / (1 - mu) for a constant gradient g.
    g = {"w": np.array([0.3, -4.0])}
    outputs, _ = _run(gx.trace(0.8), [g] * 5, params={"w": np.zeros(2)})
    for t, out in enumerate(outputs, start=1):
        np.testing.assert_allclose(out["w"], g["w"] * (1 - 0.8**t) / 0.2, rtol=RTOL)


def test_trace_accumulator_dtype(x64):
    grads = _gradients(5)
    outputs, state = _run(gx.trace(0.9, accumulator_dtype=jnp.float32), grads)
    assert state.trace["w"].dtype == jnp.float32
    # Computed in float64 from the float32-stored buffer, which is rounded after each step.
    b = None
    for t, g in enumerate(grads):
        b = g["w"] if b is None else 0.9 * np.float64(b) + g["w"]
        np.testing.assert_allclose(outputs[t]["w"], b, rtol=RTOL)
        b = np.float32(b)
    np.testing.assert_array_equal(np.asarray(state.trace["w"]), b)


@pytest.mark.parametrize("decay, debias", [(0.9, True), (0.9, False), (0.0, True), (1.0, False)])
def test_ema(x64, decay, debias):
    grads = _gradients(6)
    outputs, state = _run(gx.ema(decay, debias=debias), grads)
    _check_leafwise(outputs, grads, lambda gs: ref_ema(gs, decay, debias))
    assert isinstance(state, gx.EmaState) and int(state.count) == STEPS


def test_ema_debiased_constant_is_exact(x64):
    g = {"w": np.array([2.0, -0.7])}
    outputs, _ = _run(gx.ema(0.999), [g] * 4, params={"w": np.zeros(2)})
    for out in outputs:
        # 1 - 0.999^t loses 3 digits to cancellation: one ulp of 0.999^t is ~1e-13 of it.
        np.testing.assert_allclose(out["w"], g["w"], rtol=RTOL)


def test_ema_debiased_constant_float32():
    # In float32 the debiased average of a constant is that constant to a few float32 ulps:
    # (1 - d) g / (1 - d^1) = g, with ~4 roundings of 2^-24 each.
    g = jnp.array([2.0, -0.7], jnp.float32)
    transform = gx.ema(0.999)
    updates, _ = transform.update({"w": g}, transform.init({"w": g}))
    np.testing.assert_allclose(np.asarray(updates["w"]), np.asarray(g), rtol=1e-6)


# --- weight decay -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [gx.add_decayed_weights, gx.add_l2])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01, 2.5])
def test_add_decayed_weights(x64, make, weight_decay):
    grads = _gradients(7)
    params = _params()
    outputs, _ = _run(make(weight_decay), grads, params)
    for key in params:
        for out, g in zip(outputs, grads, strict=True):
            np.testing.assert_allclose(out[key], g[key] + weight_decay * params[key], rtol=RTOL)


@pytest.mark.parametrize(
    "mask",
    [{"w": True, "b": False}, lambda p: {"w": True, "b": False}, gx.decay_matrices_only],
)
@pytest.mark.parametrize("make", [gx.add_decayed_weights, gx.add_l2])
def test_add_decayed_weights_with_mask(x64, make, mask):
    grads = _gradients(8)
    params = _params()
    outputs, _ = _run(make(0.1, mask=mask), grads, params)
    for out, g in zip(outputs, grads, strict=True):
        np.testing.assert_allclose(out["w"], g["w"] + 0.1 * params["w"], rtol=RTOL)
        np.testing.assert_array_equal(out["b"], g["b"])  # not decayed: untouched


# --- Adam and AMSGrad -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"b1": 0.5, "b2": 0.9, "eps": 1e-3},
        {"b1": 0.0, "b2": 0.0},
        {"eps": 0.0},
        {"eps": 1e-8, "eps_root": 1e-6},
        {"eps": 0.0, "eps_root": 1e-4},
    ],
)
def test_scale_by_adam(x64, kwargs):
    grads = _gradients(9)
    outputs, state = _run(gx.scale_by_adam(**kwargs), grads)
    _check_leafwise(outputs, grads, lambda gs: ref_adam(gs, **kwargs))
    assert isinstance(state, gx.ScaleByAdamState)
    assert state.count.dtype == jnp.int32 and int(state.count) == STEPS


def test_scale_by_adam_first_step_is_sign(x64):
    g = {"w": np.array([2.0, -3.0, 1e-3, -1e5])}
    outputs, _ = _run(gx.scale_by_adam(eps=0.0), [g], params={"w": np.zeros(4)})
    np.testing.assert_allclose(outputs[0]["w"], np.sign(g["w"]), rtol=1e-15)
    # With eps: g / (|g| + eps).
    outputs, _ = _run(gx.scale_by_adam(eps=1e-3), [g], params={"w": np.zeros(4)})
    np.testing.assert_allclose(outputs[0]["w"], g["w"] / (np.abs(g["w"]) + 1e-3), rtol=1e-15)


def test_scale_by_adam_constant_gradient_closed_form(x64):
    # m_hat = g and v_hat = g^2 at every step for a constant gradient.
    g = {"w": np.array([0.25, -7.0])}
    outputs, _ = _run(gx.scale_by_adam(eps=1e-2), [g] * 5, params={"w": np.zeros(2)})
    for out in outputs:
        np.testing.assert_allclose(out["w"], g["w"] / (np.abs(g["w"]) + 1e-2), rtol=RTOL)


@pytest.mark.parametrize("b2", [0.999, 0.9999])
def test_scale_by_adam_first_step_float32(b2):
    # In float32 the first step is still sign(g) to a few float32 ulps (torch.optim.Adam is
    # within 2e-7 here). An error of order 1e-5 means the bias correction 1 - b2 was computed
    # by cancellation from float32(b2) instead of consistently with the moment's (1 - b2).
    g = jnp.array([2.0, -3.0, 1e-3], jnp.float32)
    transform = gx.scale_by_adam(b2=b2, eps=0.0)
    updates, _ = transform.update({"w": g}, transform.init({"w": g}))
    np.testing.assert_allclose(np.asarray(updates["w"]), np.sign(np.asarray(g)), rtol=1e-6)


def test_amsgrad_uses_raw_second_moment(x64):
    grads = _gradients(10)
    outputs, state = _run(gx.scale_by_adam(b2=0.9, amsgrad=True), grads)
    _check_leafwise(outputs, grads, lambda gs: ref_adam(gs, b2=0.9, amsgrad=True))
    assert isinstance(state, gx.ScaleByAmsgradState)
    # The state keeps the running maximum of the raw (uncorrected) moment.
    v = v_max = np.zeros(5)
    for g in grads:
        v = 0.9 * v + 0.1 * g["b"] ** 2
        v_max = np.maximum(v_max, v)
    np.testing.assert_allclose(np.asarray(state.nu_max["b"]), v_max, rtol=RTOL)
    np.testing.assert_allclose(np.asarray(state.nu["b"]), v, rtol=RTOL)
    # The test can tell: plain Adam and the maximum of the corrected moment both differ.
    plain = ref_adam([g["b"] for g in grads], b2=0.9)
    corrected = ref_adam([g["b"] for g in grads], b2=0.9, max_corrected=True)
    assert not np.allclose(outputs[-1]["b"], plain[-1], rtol=1e-3)
    assert not np.allclose(outputs[-1]["b"], corrected[-1], rtol=1e-3)


def test_scale_by_adam_mu_dtype(x64):
    grads = _gradients(11)
    b1, b2, eps = 0.9, 0.999, 1e-8
    outputs, state = _run(gx.scale_by_adam(b1, b2, eps, mu_dtype=jnp.float32), grads)
    assert state.mu["w"].dtype == jnp.float32 and state.nu["w"].dtype == jnp.float64
    # The update uses the new first moment before it is rounded to float32 for storage.
    m = np.zeros((3, 4), np.float32)
    v = np.zeros((3, 4))
    for t, g in enumerate(grads, start=1):
        new_m = b1 * np.float64(m) + (1 - b1) * g["w"]
        v = b2 * v + (1 - b2) * g["w"] ** 2
        expected = new_m / _correction(b1, t) / (np.sqrt(v / _correction(b2, t)) + eps)
        np.testing.assert_allclose(outputs[t - 1]["w"], expected, rtol=RTOL)
        m = new_m.astype(np.float32)
    np.testing.assert_array_equal(np.asarray(state.mu["w"]), m)


def test_scale_by_adam_bf16_mu_dtype():
    params = {"w": jnp.ones(8, jnp.float32)}
    transform = gx.scale_by_adam(mu_dtype=jnp.bfloat16)
    state = transform.init(params)
    assert state.mu["w"].dtype == jnp.bfloat16 and state.nu["w"].dtype == jnp.float32
    g = jnp.linspace(-1.0, 2.0, 8, dtype=jnp.float32)
    updates, new_state = jax.jit(transform.update)({"w": g}, state)
    assert updates["w"].dtype == jnp.float32
    assert new_state.mu["w"].dtype == jnp.bfloat16
    stored = np.asarray(0.1 * np.asarray(g, np.float64)).astype(ml_dtypes.bfloat16)
    # The stored moment is 0.1 g rounded once to bf16 (relative error <= 2^-9).
    np.testing.assert_allclose(
        np.asarray(new_state.mu["w"], np.float64), stored.astype(np.float64), rtol=2.0**-8
    )


# --- the other preconditioners ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs", [{}, {"b1": 0.5, "b2": 0.8, "eps": 0.1}, {"eps": 0.0}, {"b1": 0.0, "b2": 0.0}]
)
def test_scale_by_adamax(x64, kwargs):
    grads = _gradients(12)
    outputs, state = _run(gx.scale_by_adamax(**kwargs), grads)
    _check_leafwise(outputs, grads, lambda gs: ref_adamax(gs, **kwargs))
    assert isinstance(state, gx.ScaleByAdamaxState) and int(state.count) == STEPS


def test_scale_by_adamax_eps_inside_max(x64):
    # First step, g = 1e-3, eps = 0.1: m_hat = g, u_inf = |g| + eps, so g / (|g| + eps).
    # With eps outside the max (m_hat / (u_inf + eps)) it would be the same; the second step,
    # with g = 0, tells them apart: u_inf = max(b2 (|g| + eps), eps).
    g0, g1 = {"w": np.array([1e-3])}, {"w": np.array([0.0])}
    outputs, _ = _run(gx.scale_by_adamax(b1=0.5, b2=0.5, eps=0.1), [g0, g1], {"w": np.zeros(1)})
    np.testing.assert_allclose(outputs[0]["w"], [1e-3 / 0.101], rtol=1e-15)
    m_hat = 0.5 * 0.5 * 1e-3 / (1 - 0.25)
    np.testing.assert_allclose(outputs[1]["w"], [m_hat / max(0.5 * 0.101, 0.1)], rtol=1e-15)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"b1": 0.8, "b2": 0.9, "eps": 1e-3, "momentum_decay": 0.1}, {"momentum_decay": 0.0}],
)
def test_scale_by_nadam(x64, kwargs):
    grads = _gradients(13)
    outputs, state = _run(gx.scale_by_nadam(**kwargs), grads)
    _check_leafwise(outputs, grads, lambda gs: ref_nadam(gs, **kwargs))
    assert isinstance(state, gx.ScaleByNadamState) and int(state.count) == STEPS
    b1, psi = kwargs.get("b1", 0.9), kwargs.get("momentum_decay", 4e-3)
    product = math.prod(b1 * (1 - 0.5 * 0.96 ** (t * psi)) for t in range(1, STEPS + 1))
    np.testing.assert_allclose(float(state.mu_product), product, rtol=RTOL)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"decay": 0.9, "eps": 1e-3},
        {"eps_in_sqrt": True},
        {"decay": 0.9, "eps": 1e-3, "eps_in_sqrt": True},
        {"initial_scale": 0.5},
        {"eps": 0.0},
        {"centered": True},
        {"centered": True, "eps_in_sqrt": True, "decay": 0.8, "eps": 1e-2},
        {"centered": True, "initial_scale": 1.0},
    ],
)
def test_scale_by_rms(x64, kwargs):
    grads = _gradients(14)
    outputs, state = _run(gx.scale_by_rms(**kwargs), grads)
    _check_leafwise(outputs, grads, lambda gs: ref_rms(gs, **kwargs))
    expected_type = gx.ScaleByRStdDevState if kwargs.get("centered") else gx.ScaleByRmsState
    assert isinstance(state, expected_type)


def test_scale_by_rms_eps_placement_differs(x64):
    # Closed form, one step, decay 0.5, g = 2: v = 2, so 2 / (sqrt(2) + eps) or 2 / sqrt(2 + eps).
    g = [{"w": np.array([2.0])}]
    outside, _ = _run(gx.scale_by_rms(0.5, eps=0.25), g, {"w": np.zeros(1)})
    inside, _ = _run(gx.scale_by_rms(0.5, eps=0.25, eps_in_sqrt=True), g, {"w": np.zeros(1)})
    np.testing.assert_allclose(outside[0]["w"], [2 / (np.sqrt(2) + 0.25)], rtol=1e-15)
    np.testing.assert_allclose(inside[0]["w"], [2 / np.sqrt(2.25)], rtol=1e-15)


def test_scale_by_rms_initial_scale_closed_form(x64):
    # v_1 = 0.5 * 4 + 0.5 * 1^2 = 2.5 with initial_scale 4.
    g = [{"w": np.array([1.0])}]
    outputs, state = _run(gx.scale_by_rms(0.5, eps=0.0, initial_scale=4.0), g, {"w": np.zeros(1)})
    np.testing.assert_allclose(outputs[0]["w"], [1 / np.sqrt(2.5)], rtol=1e-15)
    np.testing.assert_allclose(np.asarray(state.nu["w"]), [2.5], rtol=1e-15)


@pytest.mark.parametrize("kwargs", [{}, {"decay": 0.7, "eps": 1e-3, "eps_in_sqrt": True}])
def test_scale_by_stddev(x64, kwargs):
    grads = _gradients(15)
    outputs, state = _run(gx.scale_by_stddev(**kwargs), grads)
    _check_leafwise(outputs, grads, lambda gs: ref_rms(gs, centered=True, **kwargs))
    assert isinstance(state, gx.ScaleByRStdDevState)


@pytest.mark.parametrize(
    "kwargs", [{}, {"initial_accumulator_value": 0.1}, {"eps": 0.1}, {"eps": 0.0}]
)
def test_scale_by_rss(x64, kwargs):
    grads = _gradients(16)
    outputs, state = _run(gx.scale_by_rss(**kwargs), grads)
    _check_leafwise(outputs, grads, lambda gs: ref_rss(gs, **kwargs))
    assert isinstance(state, gx.ScaleByRssState)
    s = kwargs.get("initial_accumulator_value", 0.0) + sum(g["b"] ** 2 for g in grads)
    np.testing.assert_allclose(np.asarray(state.sum_of_squares["b"]), s, rtol=RTOL)


def test_scale_by_rss_closed_form(x64):
    # s_t = s_0 + t g^2 for a constant g; eps outside the root.
    g = {"w": np.array([3.0])}
    transform = gx.scale_by_rss(initial_accumulator_value=7.0, eps=0.5)
    outputs, _ = _run(transform, [g] * 3, {"w": np.zeros(1)})
    for t, out in enumerate(outputs, start=1):
        np.testing.assert_allclose(out["w"], [3.0 / (np.sqrt(7.0 + 9.0 * t) + 0.5)], rtol=1e-15)


@pytest.mark.parametrize("kwargs", [{}, {"b1": 0.5, "b2": 0.7}, {"b1": 0.0, "b2": 0.0}])
def test_scale_by_lion(x64, kwargs):
    grads = _gradients(17)
    outputs, state = _run(gx.scale_by_lion(**kwargs), grads)
    _check_leafwise(outputs, grads, lambda gs: ref_lion(gs, **kwargs), rtol=0)
    assert isinstance(state, gx.ScaleByLionState)
    b2 = kwargs.get("b2", 0.99)
    m = np.zeros(5)
    for g in grads:
        m = b2 * m + (1 - b2) * g["b"]
    np.testing.assert_allclose(np.asarray(state.mu["b"]), m, rtol=RTOL)


def test_scale_by_lion_first_step_is_sign():
    g = jnp.array([0.5, -1e-3, 0.0, 40.0])
    transform = gx.scale_by_lion(mu_dtype=jnp.bfloat16)
    state = transform.init({"w": g})
    assert state.mu["w"].dtype == jnp.bfloat16
    updates, _ = transform.update({"w": g}, state)
    np.testing.assert_array_equal(np.asarray(updates["w"]), [1.0, -1.0, 0.0, 1.0])


# --- complex parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, reference",
    [
        (lambda: gx.scale_by_adam(), ref_adam),
        (lambda: gx.scale_by_adam(amsgrad=True), lambda gs: ref_adam(gs, amsgrad=True)),
        (lambda: gx.scale_by_adam(eps_root=1e-6), lambda gs: ref_adam(gs, eps_root=1e-6)),
        (lambda: gx.scale_by_adamax(), ref_adamax),
        (lambda: gx.scale_by_nadam(), ref_nadam),
        (lambda: gx.scale_by_rms(), ref_rms),
        (
            lambda: gx.scale_by_rms(eps_in_sqrt=True),
            lambda gs: ref_rms(gs, eps_in_sqrt=True),
        ),
        (lambda: gx.scale_by_stddev(), lambda gs: ref_rms(gs, centered=True)),
        (lambda: gx.scale_by_rss(0.1), lambda gs: ref_rss(gs, 0.1)),
        (lambda: gx.trace(0.9, nesterov=True), lambda gs: ref_trace(gs, 0.9, True)),
        (lambda: gx.ema(0.9), lambda gs: ref_ema(gs, 0.9)),
    ],
)
def test_complex_params(x64, make, reference):
    grads = _gradients(18, complex_=True)
    outputs, _ = _run(make(), grads, _params(complex_=True))
    for out in outputs:
        assert all(np.all(np.isfinite(leaf)) for leaf in out.values())
    _check_leafwise(outputs, grads, reference)


# Optimizers that refuse complex params, as their torch.optim class does: torch's Adafactor
# raises "Adafactor does not support complex parameters" (tests/test_adafactor.py checks both).
# Optax's scale_by_sm3 refuses complex params too (its error names scale_by_sm3). The authors'
# SophiaG squares complex gradients as complex numbers (g * g): scale_by_sophia refuses them.
# pytorch-optimizer's Shampoo raises NoComplexParameterError for a complex param.
REFUSE_COMPLEX = {"adafactor", "shampoo", "sm3", "sophia"}


@table
def test_complex64_updates_are_finite_and_complex(entry):
    if "value_and_grad_fn" in entry.update_args:
        skip_if_update_needs_the_loss(
            entry,
            "these gradients are given (in JAX's convention, which is not a descent direction "
            "for a complex L-BFGS); tests/test_lbfgs.py compares complex params with torch",
        )
    params = {"z": jnp.array([1 + 2j, -0.5j, 3.0], jnp.complex64)}
    opt = entry.make(entry.parabola_lr)
    # MoMo needs only the loss value: that of |z|^2 / 2, whose gradients are given below.
    update = loss_update(opt, entry.update_args, lambda p: jnp.sum(jnp.abs(p["z"]) ** 2) / 2)
    if entry.name in REFUSE_COMPLEX:
        with pytest.raises(TypeError, match=rf"{entry.name}: parameter \['z'\] is complex"):
            opt.init(params)
        return
    state = opt.init(params)
    for _ in range(3):
        grads = {"z": jnp.conj(params["z"])}  # the gradient of |z|^2 / 2 (JAX's convention)
        updates, state = update(grads, state, params)
        assert updates["z"].dtype == jnp.complex64
        assert np.all(np.isfinite(np.asarray(updates["z"])))
        params = gx.apply_updates(params, updates)


# --- clipping and NaNs -------------------------------------------------------------------------


@pytest.mark.parametrize("max_delta", [0.0, 0.05, 1.0, 100.0])
def test_clip(x64, max_delta):
    grads = _gradients(19)
    outputs, _ = _run(gx.clip(max_delta), grads)
    _check_leafwise(outputs, grads, lambda gs: [np.clip(g, -max_delta, max_delta) for g in gs])


@pytest.mark.parametrize("max_norm", [1e-3, 0.5, 10.0, 1e4])
def test_clip_by_global_norm(x64, max_norm):
    grads = _gradients(20)
    outputs, _ = _run(gx.clip_by_global_norm(max_norm), grads)
    clipped = 0
    for out, g in zip(outputs, grads, strict=True):
        norm = np.sqrt(sum(np.sum(leaf**2) for leaf in g.values()))
        factor = min(1.0, max_norm / (norm + 1e-6))
        clipped += factor < 1
        for key in g:
            np.testing.assert_allclose(out[key], g[key] * factor, rtol=RTOL)
    if max_norm == 0.5:  # the scales make this one clip on some steps and not others
        assert 0 < clipped < STEPS


def test_clip_by_global_norm_closed_form():
    # The norm of (3, 4) is 5; clipped to 1 it becomes (0.6, 0.8) up to torch's 1e-6.
    transform = gx.clip_by_global_norm(1.0)
    updates, _ = transform.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, None)
    np.testing.assert_allclose(float(updates["a"][0]), 3 / (5 + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(float(updates["b"][0]), 4 / (5 + 1e-6), rtol=1e-6)


def test_zero_nans(x64):
    params = {"a": np.zeros(3), "b": np.zeros(2)}
    grads = [
        {"a": np.array([1.0, np.nan, -2.0]), "b": np.array([3.0, 4.0])},
        {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([np.nan, np.nan])},
    ]
    transform = gx.zero_nans()
    state = transform.init(jax.tree.map(jnp.asarray, params))
    assert jax.tree.map(bool, state.found_nan) == {"a": False, "b": False}
    expected_flags = [{"a": True, "b": False}, {"a": False, "b": True}]
    for g, flags in zip(grads, expected_flags, strict=True):
        updates, state = transform.update(jax.tree.map(jnp.asarray, g), state)
        for key in g:
            np.testing.assert_array_equal(np.asarray(updates[key]), np.nan_to_num(g[key], nan=0.0))
        assert jax.tree.map(bool, state.found_nan) == flags
        assert state.found_nan["a"].dtype == jnp.bool_


# --- no NaN from finite input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: gx.scale_by_adam(eps=0.0),
        lambda: gx.scale_by_adam(eps=0.0, amsgrad=True),
        lambda: gx.scale_by_adamax(eps=0.0),
        lambda: gx.scale_by_nadam(eps=0.0),
        lambda: gx.scale_by_sparse_adam(eps=0.0),
        lambda: gx.scale_by_rms(eps=0.0),
        lambda: gx.scale_by_rms(eps=0.0, eps_in_sqrt=True),
        lambda: gx.scale_by_stddev(eps=0.0),
        lambda: gx.scale_by_rss(eps=0.0),
    ],
)
def test_zero_gradients_with_zero_eps_give_zero_updates(make):
    transform = make()
    params = {"w": jnp.ones(3), "b": jnp.ones(2, jnp.bfloat16)}
    state = transform.init(params)
    step = jax.jit(transform.update)
    zeros = jax.tree.map(jnp.zeros_like, params)
    for _ in range(2):
        updates, state = step(zeros, state, params)
        for leaf in jax.tree.leaves(updates):
            np.testing.assert_array_equal(np.asarray(leaf, np.float32), 0.0)
        assert all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in jax.tree.leaves(state))
    # Then a coordinate gets a gradient while the others stay at zero.
    updates, _ = step({"w": jnp.array([0.0, 2.0, 0.0]), "b": jnp.zeros(2, jnp.bfloat16)}, state)
    w = np.asarray(updates["w"])
    assert w[0] == 0.0 and w[2] == 0.0 and np.isfinite(w[1]) and w[1] > 0


def test_centered_rms_negative_spread_stays_finite():
    # A state in which v < c^2 (what rounding can produce after many steps). With decay 0.5
    # and g = c, the new v - c^2 is 0.5 (v - c^2) < 0; its root would be NaN.
    transform = gx.scale_by_stddev(decay=0.5, eps=1e-8)
    c = jnp.array([1.0, -3.0], jnp.float32)
    state = gx.ScaleByRStdDevState(mu={"w": c}, nu={"w": c * c * (1 - 1e-3)})
    updates, new_state = transform.update({"w": c}, state)
    u = np.asarray(updates["w"])
    assert np.all(np.isfinite(u))
    # The spread is clamped to 0, so the update is g / eps.
    np.testing.assert_allclose(u, np.asarray(c) / 1e-8, rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(new_state.nu["w"])))
    # With eps = 0 the clamped spread is a zero denominator: no NaN or inf either.
    transform = gx.scale_by_stddev(decay=0.5, eps=0.0)
    updates, _ = transform.update({"w": c}, state)
    assert np.all(np.isfinite(np.asarray(updates["w"])))


def test_centered_rms_long_constant_run_stays_finite():
    # A constant gradient drives v - c^2 = g^2 d^t (1 - d^t) towards 0, below float32's
    # resolution of v, so that rounding decides its sign.
    transform = gx.scale_by_stddev(decay=0.5, eps=1e-8)
    g = {"w": jnp.array([0.1, 3.0, -7.3, 1e-3], jnp.float32)}
    state = transform.init(g)
    step = jax.jit(transform.update)
    for _ in range(60):
        updates, state = step(g, state)
        assert np.all(np.isfinite(np.asarray(updates["w"])))


# --- hyperparameter validation ------------------------------------------------------------

TRANSFORM_CASES = [
    (gx.scale_by_learning_rate, {"learning_rate": -0.1}, "learning_rate"),
    (gx.scale_by_learning_rate, {"learning_rate": float("nan")}, "learning_rate"),
    (gx.scale_by_adam, {"b1": 1.0}, "b1"),
    (gx.scale_by_adam, {"b1": -0.1}, "b1"),
    (gx.scale_by_adam, {"b2": 1.0}, "b2"),
    (gx.scale_by_adam, {"b2": 1.5}, "b2"),
    (gx.scale_by_adam, {"b2": float("nan")}, "b2"),
    (gx.scale_by_adam, {"eps": -1e-8}, "eps"),
    (gx.scale_by_adam, {"eps_root": -1e-8}, "eps_root"),
    (gx.scale_by_adamax, {"b1": 1.0}, "b1"),
    (gx.scale_by_adamax, {"b2": -0.5}, "b2"),
    (gx.scale_by_adamax, {"eps": -1.0}, "eps"),
    (gx.scale_by_nadam, {"b1": 2.0}, "b1"),
    (gx.scale_by_nadam, {"b2": 1.0}, "b2"),
    (gx.scale_by_nadam, {"eps": -1e-3}, "eps"),
    (gx.scale_by_nadam, {"momentum_decay": -4e-3}, "momentum_decay"),
    (gx.scale_by_sparse_adam, {"b1": 1.0}, "b1"),
    (gx.scale_by_sparse_adam, {"b2": -0.1}, "b2"),
    (gx.scale_by_sparse_adam, {"eps": -1e-8}, "eps"),
    (gx.scale_by_rms, {"decay": 1.0}, "decay"),
    (gx.scale_by_rms, {"decay": -0.1}, "decay"),
    (gx.scale_by_rms, {"eps": -1e-8}, "eps"),
    (gx.scale_by_rms, {"initial_scale": -1.0}, "initial_scale"),
    (gx.scale_by_stddev, {"decay": 1.0}, "decay"),
    (gx.scale_by_stddev, {"eps": -1.0}, "eps"),
    (gx.scale_by_rss, {"initial_accumulator_value": -0.1}, "initial_accumulator_value"),
    (gx.scale_by_rss, {"eps": -1e-10}, "eps"),
    (gx.scale_by_lion, {"b1": 1.0}, "b1"),
    (gx.scale_by_lion, {"b2": -0.01}, "b2"),
    (gx.scale_by_sophia, {"b1": 1.0}, "b1"),
    (gx.scale_by_sophia, {"rho": -1.0}, "rho"),
    (gx.scale_by_sophia, {"eps": -1e-15}, "eps"),
    (gx.trace, {"decay": -0.9}, "decay"),
    (gx.trace, {"decay": 0.9, "dampening": -0.1}, "dampening"),
    (gx.trace, {"decay": 0.0, "nesterov": True}, "decay"),
    (gx.trace, {"decay": 0.9, "nesterov": True, "dampening": 0.1}, "dampening"),
    (gx.ema, {"decay": 1.0}, "decay"),
    (gx.ema, {"decay": 1.5, "debias": False}, "decay"),
    (gx.ema, {"decay": -0.1}, "decay"),
    (gx.add_decayed_weights, {"weight_decay": -1e-4}, "weight_decay"),
    (gx.add_l2, {"weight_decay": -1e-4}, "weight_decay"),
    (gx.clip, {"max_delta": -1.0}, "max_delta"),
    (gx.clip_by_global_norm, {"max_norm": -1.0}, "max_norm"),
    (gx.clip_by_global_norm, {"max_norm": 0.0}, "max_norm"),
    (gx.scale_by_radam, {"b2": 1.0}, "b2"),
    (gx.scale_by_radam, {"threshold": 3.0}, "threshold"),
    (gx.scale_by_radam, {"numerics": "jax"}, "numerics"),
    (gx.scale_by_adadelta, {"rho": 1.5}, "rho"),
    (gx.scale_by_adadelta, {"eps": -1e-6}, "eps"),
    (gx.scale_by_rprop, {"learning_rate": -0.1}, "learning_rate"),
    (gx.scale_by_rprop, {"learning_rate": 0.1, "eta_minus": 1.0}, "eta_minus"),
    (gx.scale_by_rprop, {"learning_rate": 0.1, "eta_plus": 1.0}, "eta_plus"),
    (gx.scale_by_rprop, {"learning_rate": 0.1, "min_step_size": -1e-6}, "min_step_size"),
    (gx.scale_by_rprop, {"learning_rate": 0.1, "max_step_size": 1e-7}, "max_step_size"),
    (gx.scale_by_rprop, {"learning_rate": 0.1, "numerics": "jax"}, "numerics"),
    (gx.scale_by_asgd, {"lambd": -1e-4}, "lambd"),
    (gx.scale_by_asgd, {"alpha": -0.75}, "alpha"),
    (gx.scale_by_asgd, {"t0": -1.0}, "t0"),
    (gx.scale_by_adafactor, {"beta2_decay": 0.5}, "beta2_decay"),
    (gx.scale_by_adafactor, {"eps1": -1e-30}, "eps1"),
    (gx.scale_by_factored_rms, {"decay_rate": -0.8}, "decay_rate"),
    (gx.scale_by_factored_rms, {"step_offset": -1}, "step_offset"),
    (gx.scale_by_factored_rms, {"min_dim_size_to_factor": -1}, "min_dim_size_to_factor"),
    (gx.scale_by_factored_rms, {"epsilon": -1e-30}, "epsilon"),
    (gx.scale_by_param_block_rms, {"min_scale": -1e-3}, "min_scale"),
]

# Per optimizer of the table (tests/optimizer_table.py), by name: (arguments, the invalid one).
INVALID_OPTIMIZER_ARGUMENTS = {
    "sgd": [
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"learning_rate": 0.1, "momentum": -0.9}, "momentum"),
        ({"learning_rate": 0.1, "momentum": 0.9, "dampening": -0.1}, "dampening"),
        ({"learning_rate": 0.1, "weight_decay": -1e-4}, "weight_decay"),
        ({"learning_rate": 0.1, "momentum": 0.0, "nesterov": True}, "momentum"),
        ({"learning_rate": 0.1, "momentum": 0.9, "nesterov": True, "dampening": 0.5}, "dampening"),
    ],
    "adagrad": [
        ({"learning_rate": -0.01}, "learning_rate"),
        ({"lr_decay": -0.1}, "lr_decay"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"initial_accumulator_value": -0.1}, "initial_accumulator_value"),
        ({"eps": -1e-10}, "eps"),
    ],
    "rmsprop": [
        ({"learning_rate": -0.01}, "learning_rate"),
        ({"decay": 1.0}, "decay"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"momentum": -0.9}, "momentum"),
    ],
    "adam": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"b1": 1.0}, "b1"),
        ({"b2": -0.1}, "b2"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"eps_root": -1.0}, "eps_root"),
    ],
    "amsgrad": [
        ({"b2": 1.0}, "b2"),
        ({"learning_rate": -1.0}, "learning_rate"),
    ],
    "adamw": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"b1": 1.1}, "b1"),
        ({"b2": 1.0}, "b2"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.01}, "weight_decay"),
    ],
    "adamax": [
        ({"learning_rate": -2e-3}, "learning_rate"),
        ({"b1": -0.1}, "b1"),
        ({"b2": 1.0}, "b2"),
        ({"eps": -1.0}, "eps"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
    "nadam": [
        ({"learning_rate": -2e-3}, "learning_rate"),
        ({"b1": 1.0}, "b1"),
        ({"b2": 1.0}, "b2"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"momentum_decay": -1.0}, "momentum_decay"),
    ],
    "sparse_adam": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"b1": 1.0}, "b1"),
        ({"b2": 1.5}, "b2"),
        ({"eps": -1e-8}, "eps"),
    ],
    "lion": [
        ({"learning_rate": -1e-4}, "learning_rate"),
        ({"b1": 1.0}, "b1"),
        ({"b2": -0.5}, "b2"),
        ({"weight_decay": -1e-3}, "weight_decay"),
    ],
    "nadamw": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"b1": 1.0}, "b1"),
        ({"b2": -0.1}, "b2"),
        ({"eps": -1e-8}, "eps"),
        ({"eps_root": -1.0}, "eps_root"),
        ({"weight_decay": -1e-4}, "weight_decay"),
    ],
    "adamaxw": [
        ({"learning_rate": -2e-3}, "learning_rate"),
        ({"b1": -0.1}, "b1"),
        ({"b2": 1.0}, "b2"),
        ({"eps": -1.0}, "eps"),
        ({"weight_decay": -1e-4}, "weight_decay"),
    ],
    "radam": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"b1": 1.0}, "b1"),
        ({"b2": -0.1}, "b2"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
    "adadelta": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"rho": 1.5}, "rho"),
        ({"eps": -1e-6}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
    "rprop": [
        ({"learning_rate": -1e-2}, "learning_rate"),
        ({"etas": (1.5, 1.2)}, "etas"),
        ({"etas": (0.5, 1.0)}, "etas"),
        ({"step_sizes": (-1e-6, 50.0)}, "step_sizes"),
        ({"step_sizes": (1.0, 0.5)}, "step_sizes"),
    ],
    "asgd": [
        ({"learning_rate": -1e-2}, "learning_rate"),
        ({"lambd": -1e-4}, "lambd"),
        ({"alpha": -0.75}, "alpha"),
        ({"t0": -1.0}, "t0"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
    "adafactor": [
        ({"learning_rate": -1e-2}, "learning_rate"),
        ({"beta2_decay": 0.8}, "beta2_decay"),
        ({"eps": (None, -1e-3)}, "eps"),
        ({"eps": (-1e-30, 1e-3)}, "eps"),
        ({"d": 0.5}, "d"),
        ({"weight_decay": -1e-2}, "weight_decay"),
    ],
    "shampoo": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"preconditioning_compute_steps": 0}, "preconditioning_compute_steps"),
        ({"matrix_eps": -1e-6}, "matrix_eps"),
    ],
    "muon_with_adamw": [
        ({"learning_rate": -0.02}, "learning_rate"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"momentum": 1.0}, "momentum"),
        ({"eps": -1e-7}, "eps"),
        ({"ns_steps": 100}, "ns_steps"),
        ({"ns_coefficients": (3.0, float("inf"), 1.0)}, "ns_coefficients"),
        ({"adjust_lr_fn": "rms"}, "adjust_lr_fn"),
        ({"adamw_learning_rate": -1e-3}, "adamw_learning_rate"),
        ({"adamw_b1": 1.0}, "adamw_b1"),
        ({"adamw_b2": -0.1}, "adamw_b2"),
        ({"adamw_eps": -1e-8}, "adamw_eps"),
        ({"adamw_weight_decay": -0.01}, "adamw_weight_decay"),
    ],
    "soap": [
        ({"learning_rate": -3e-3}, "learning_rate"),
        ({"b1": 1.0}, "b1"),
        ({"b2": -0.1}, "b2"),
        ({"shampoo_beta": 1.0}, "shampoo_beta"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.01}, "weight_decay"),
        ({"precondition_frequency": 0}, "precondition_frequency"),
        ({"max_precond_dim": 0}, "max_precond_dim"),
    ],
    "lbfgs": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_eval": 0}, "max_eval"),
        ({"tolerance_grad": -1e-7}, "tolerance_grad"),
        ({"tolerance_change": -1e-9}, "tolerance_change"),
        ({"history_size": 0}, "history_size"),
        ({"line_search_fn": "wolfe"}, "line_search_fn"),
    ],
    "galore_adamw": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": 0.1, "rank": 0}, "rank"),
        ({"learning_rate": 0.1, "update_proj_gap": 0}, "update_proj_gap"),
        ({"learning_rate": 0.1, "scale": float("nan")}, "scale"),
        ({"learning_rate": 0.1, "proj_type": "diagonal"}, "proj_type"),
        ({"learning_rate": 0.1, "b1": 1.0}, "b1"),
        ({"learning_rate": 0.1, "b2": -0.1}, "b2"),
        ({"learning_rate": 0.1, "eps": -1e-6}, "eps"),
        ({"learning_rate": 0.1, "weight_decay": -1e-2}, "weight_decay"),
    ],
    "galore": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": 0.1, "rank": 0}, "rank"),
        ({"learning_rate": 0.1, "update_proj_gap": 0}, "update_proj_gap"),
        ({"learning_rate": 0.1, "weight_decay": -1e-2}, "weight_decay"),
    ],
    "dog": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -1e-2}, "weight_decay"),
        ({"init_step": ("radius", 1e-6)}, "init_step"),
        ({"init_step": ("heuristic", -1e-6)}, "init_step"),
    ],
    "prodigy": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"b1": 1.0}, "b1"),
        ({"b2": -0.1}, "b2"),
        ({"beta3": 1.0}, "beta3"),
        ({"d0": 0.0}, "d0"),
        ({"d_coef": -1.0}, "d_coef"),
        ({"growth_rate": 0.5}, "growth_rate"),
        ({"weight_decay": -1e-2}, "weight_decay"),
        ({"eps": -1e-8}, "eps"),
    ],
    "dadapt_adamw": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"b1": 1.0}, "b1"),
        ({"b2": 1.5}, "b2"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -1e-2}, "weight_decay"),
        ({"d0": -1e-6}, "d0"),
        ({"growth_rate": float("nan")}, "growth_rate"),
    ],
    "dowg": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"init_estim_sq_dist": -1.0}, "init_estim_sq_dist"),
        ({"eps": -1e-4}, "eps"),
        ({"weight_decay": -1e-2}, "weight_decay"),
    ],
    "schedule_free_sgd": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": 0.1, "warmup_steps": -1}, "warmup_steps"),
        ({"learning_rate": 0.1, "momentum": 0.0}, "momentum"),
        ({"learning_rate": 0.1, "momentum": 1.0}, "momentum"),
        ({"learning_rate": 0.1, "weight_decay": -1e-2}, "weight_decay"),
    ],
    "schedule_free_adamw": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": 0.1, "warmup_steps": -1}, "warmup_steps"),
        ({"learning_rate": 0.1, "b1": 0.0}, "b1"),
        ({"learning_rate": 0.1, "b2": 1.0}, "b2"),
        ({"learning_rate": 0.1, "eps": -1e-8}, "eps"),
        ({"learning_rate": 0.1, "weight_decay": -1e-2}, "weight_decay"),
        ({"learning_rate": 0.1, "weight_lr_power": -1.0}, "weight_lr_power"),
        ({"learning_rate": 0.1, "r": -0.5}, "r"),
    ],
    "cocob": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"alpha": 0.0}, "alpha"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -1e-2}, "weight_decay"),
    ],
    "ademamix": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": 1e-3, "b1": 1.0}, "b1"),
        ({"learning_rate": 1e-3, "b2": -0.1}, "b2"),
        ({"learning_rate": 1e-3, "b3": 1.5}, "b3"),
        ({"learning_rate": 1e-3, "alpha": float("nan")}, "alpha"),
        ({"learning_rate": 1e-3, "eps": -1e-8}, "eps"),
        ({"learning_rate": 1e-3, "eps_root": -1e-8}, "eps_root"),
        ({"learning_rate": 1e-3, "weight_decay": -1e-2}, "weight_decay"),
    ],
    "simplified_ademamix": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": 1e-3, "b1": 1.0}, "b1"),
        ({"learning_rate": 1e-3, "b2": 1.0}, "b2"),
        ({"learning_rate": 1e-3, "alpha": float("inf")}, "alpha"),
        ({"learning_rate": 1e-3, "eps": -1e-8}, "eps"),
        ({"learning_rate": 1e-3, "weight_decay": -1e-2}, "weight_decay"),
    ],
    "adopt": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": 1e-3, "b1": 1.0}, "b1"),
        ({"learning_rate": 1e-3, "b2": -0.5}, "b2"),
        ({"learning_rate": 1e-3, "eps": -1e-6}, "eps"),
    ],
    "acprop": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": 1e-3, "b1": 1.0}, "b1"),
        ({"learning_rate": 1e-3, "b2": 1.0}, "b2"),
        ({"learning_rate": 1e-3, "eps": -1e-16}, "eps"),
        ({"learning_rate": 1e-3, "eps_root": -1e-16}, "eps_root"),
        ({"learning_rate": 1e-3, "weight_decay": -1e-2}, "weight_decay"),
    ],
    "madgrad": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": 1e-3, "momentum": 1.5}, "momentum"),
        ({"learning_rate": 1e-3, "weight_decay": -1e-2}, "weight_decay"),
        ({"learning_rate": 1e-3, "eps": -1e-6}, "eps"),
    ],
    "sophia": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": 1e-3, "b1": 1.0}, "b1"),
        ({"learning_rate": 1e-3, "b2": -0.1}, "b2"),
        ({"learning_rate": 1e-3, "rho": -0.04}, "rho"),
        ({"learning_rate": 1e-3, "weight_decay": -0.1}, "weight_decay"),
        ({"learning_rate": 1e-3, "hessian_update_interval": 0}, "hessian_update_interval"),
    ],
    "momo": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"beta": 1.0}, "beta"),
        ({"lower_bound": float("nan")}, "lower_bound"),
        ({"weight_decay": -1e-2}, "weight_decay"),
    ],
    "momo_adam": [
        ({"learning_rate": -1e-2}, "learning_rate"),
        ({"b1": 1.0}, "b1"),
        ({"b2": -0.1}, "b2"),
        ({"eps": -1e-8}, "eps"),
        ({"lower_bound": float("inf")}, "lower_bound"),
        ({"weight_decay": -1e-2}, "weight_decay"),
    ],
    "adabelief": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": 1e-3, "b1": 1.0}, "b1"),
        ({"learning_rate": 1e-3, "eps_root": -1e-16}, "eps_root"),
    ],
    "adan": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": 1e-3, "b3": 1.0}, "b3"),
        ({"learning_rate": 1e-3, "weight_decay": -0.1}, "weight_decay"),
        ({"learning_rate": 1e-3, "numerics": "paper"}, "numerics"),
    ],
    "yogi": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": 1e-3, "b2": 1.0}, "b2"),
        ({"learning_rate": 1e-3, "eps": -1e-3}, "eps"),
    ],
    "optimistic_adam": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": 1e-3, "optimism": float("nan")}, "optimism"),
        ({"learning_rate": 1e-3, "b1": 1.0}, "b1"),
    ],
    "optimistic_adam_v2": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": 1e-3, "alpha": float("inf")}, "alpha"),
        ({"learning_rate": 1e-3, "nesterov": False, "b2": 1.0}, "b2"),
    ],
    "optimistic_gradient_descent": [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": 1e-3, "beta": float("nan")}, "beta"),
    ],
    "polyak_sgd": [
        ({"max_learning_rate": -1.0}, "max_learning_rate"),
        ({"scaling": -1.0}, "scaling"),
        ({"eps": -1e-3}, "eps"),
        ({"variant": "sps-"}, "variant"),
    ],
    "sm3": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": 1.0, "momentum": 1.0}, "momentum"),
    ],
    "noisy_sgd": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": 1.0, "eta": -0.01}, "eta"),
        ({"learning_rate": 1.0, "gamma": float("inf")}, "gamma"),
    ],
    "sign_sgd": [({"learning_rate": -1.0}, "learning_rate")],
    "signum": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": 1.0, "beta": 1.5}, "beta"),
    ],
    "novograd": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": 1.0, "b2": 1.0}, "b2"),
        ({"learning_rate": 1.0, "weight_decay": -0.1}, "weight_decay"),
    ],
    "lamb": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": 1.0, "b1": 1.0}, "b1"),
        ({"learning_rate": 1.0, "weight_decay": -0.1}, "weight_decay"),
    ],
    "lars": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": 1.0, "trust_coefficient": float("nan")}, "trust_coefficient"),
        ({"learning_rate": 1.0, "momentum": -0.9}, "momentum"),
    ],
    "fromage": [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": 1.0, "min_norm": -1e-6}, "min_norm"),
    ],
}
OPTIMIZER_CASES = [
    (FACTORIES[name], kwargs, argument)
    for name in sorted(FACTORIES)
    for kwargs, argument in INVALID_OPTIMIZER_ARGUMENTS.get(name, [])
]


def test_invalid_arguments_are_given_for_every_optimizer_of_the_table():
    assert_covers_every_optimizer(INVALID_OPTIMIZER_ARGUMENTS, "INVALID_OPTIMIZER_ARGUMENTS")


def _case_id(case):
    factory, kwargs, _ = case
    return factory.__name__ + "-" + "-".join(f"{k}={v}" for k, v in kwargs.items())


@pytest.mark.parametrize(
    "factory, kwargs, argument",
    TRANSFORM_CASES + OPTIMIZER_CASES,
    ids=map(_case_id, TRANSFORM_CASES + OPTIMIZER_CASES),
)
def test_invalid_hyperparameters_raise_at_construction(factory, kwargs, argument):
    with pytest.raises(ValueError) as info:
        factory(**kwargs)
    message = str(info.value)
    assert f"`{argument}`" in message or f"{argument}=" in message, message
    assert repr(kwargs[argument]) in message, message


@pytest.mark.parametrize(
    "factory, kwargs",
    [
        (gx.scale_by_learning_rate, {"learning_rate": "0.1"}),
        (gx.scale_by_learning_rate, {"learning_rate": None}),
        (gx.sgd, {"learning_rate": None}),
        (gx.adam, {"learning_rate": "1e-3"}),
        (gx.scale, {"step_size": "2"}),
        (gx.scale_by_schedule, {"step_size_fn": 0.1}),
    ],
)
def test_wrong_hyperparameter_types_raise_type_error(factory, kwargs):
    (argument,) = kwargs
    with pytest.raises(TypeError, match=argument):
        factory(**kwargs)


@pytest.mark.parametrize(
    "factory, kwargs",
    [
        (gx.scale_by_adam, {"b1": 0.0, "b2": 0.0, "eps": 0.0, "eps_root": 0.0}),
        (gx.ema, {"decay": 1.0, "debias": False}),
        (gx.trace, {"decay": 0.0}),
        (gx.clip, {"max_delta": 0.0}),
        (gx.sgd, {"learning_rate": 0.0}),
        (gx.scale_by_adam, {"b1": np.float32(0.5), "b2": np.float64(0.9)}),
    ],
)
def test_boundary_hyperparameters_are_accepted(factory, kwargs):
    transform = factory(**kwargs)
    assert callable(transform.init) and callable(transform.update)


def test_numpy_scalar_hyperparameters_are_validated():
    with pytest.raises(ValueError, match="b1"):
        gx.scale_by_adam(b1=np.float32(1.0))
