"""Schedules at step counts beyond int32: step arguments up to 2**53, counts up to 2**62.

Every schedule (but ``multiplicative_schedule``, a product of ``k`` factors computed one by one,
which refuses counts beyond its integer dtype) is built with step arguments beyond int32 and
evaluated at counts on both sides of the int32 limit, given in every form a count takes: the
optimizer's int32 counter, int64 arrays under x64, Python ints (exact at any size below
2**63), NumPy int64 arrays, and floats.
The references are independent of the code under test: Optax in float64 on int64 counts (where
Optax's schedule has the same semantics), torch's ``OneCycleLR.get_lr`` (a float64 closed form
of ``last_epoch``), and float64 closed forms written here with exact integer arithmetic for the
integer parts (Keras' ``InverseTimeDecay``, torch's ``CyclicLR``,
``CosineAnnealingWarmRestarts``, ``CosineAnnealingLR`` and ``SWALR``); a chain of two schedules
is checked against the product of Optax's.

Tolerances (``_tolerance``). A schedule computes the integer parts of its formula exactly and
rounds them once to its float dtype (2**-24 relative in float32, 2**-53 in float64); the ratios,
sines and products after that add a few ulps. So a value is within 1e-6 relative (17 float32
ulps) of the float64 reference in float32, and within 1e-12 relative in float64, except where
it is ``rate ** p``: a few ulps of error in ``p * log(rate)`` are that many ulps of
``|p * log(rate)| = |log(s / s_0)|`` in the value, so the tolerance grows with that logarithm.
The float64 references themselves are exact only to a few ulps of the schedule's largest value
in absolute terms (Optax writes its linear pieces as ``(init - end) * (1 - t / T) + end``, torch
its anneals as ``end + (start - end) * (1 + cos(pi * f)) / 2``: 2.8e-8 relative error at 1e-9
in a warmup from 0, 2.5e-11 at the minimum ``peak / 2.5e5`` of a one-cycle), so the float64
comparison also admits 4 ulps (2**-50) of the largest value.
"""

from __future__ import annotations

import math
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.references import require_optax, require_torch

INT32_MAX = 2**31 - 1
INT32_COUNTS = [
    0,
    1,
    2**24 + 1,
    10**9 - 1,
    10**9,
    10**9 + 1,
    INT32_MAX - 2,
    INT32_MAX - 1,
    INT32_MAX,
]
BEYOND_INT32 = [
    2**31,
    2**31 + 3,
    2**32 + 3,
    5 * 10**9,
    5 * 10**9 + 3,
    10**10 - 1,
    10**10,
    10**10 + 1,
    2**40 - 1,
    2**40,
    2**40 + 7,
    2**53 - 1,
    2**53,
    2**62,
]
COUNTS = INT32_COUNTS + BEYOND_INT32
# Counts a float32 holds exactly (a float count is only as exact as its dtype).
FLOAT32_COUNTS = [0, 1, 2**24, 10**9, 2**31, 5 * 10**9, 2**40, 2**62]


# ----------------------------------------------------------------------------------------------
# References.


def _optax_reference(name, args, kwargs):
    """Optax's schedule in float64, on int64 counts."""

    def reference(counts):
        optax = require_optax()
        with jax.enable_x64(True):
            sched = getattr(optax, name)(*args, **kwargs)
            return np.asarray(jax.vmap(sched)(jnp.asarray(counts, jnp.int64)), np.float64)

    return reference


def _optax_join_reference(counts):
    optax = require_optax()
    with jax.enable_x64(True):
        sched = optax.join_schedules(
            [
                optax.linear_schedule(1.0, 0.5, 2**31),
                optax.constant_schedule(0.25),
                optax.cosine_decay_schedule(0.5, 10**10, alpha=1e-3),
            ],
            [INT32_MAX, 5 * 10**9],
        )
        return np.asarray(jax.vmap(sched)(jnp.asarray(counts, jnp.int64)), np.float64)


def _closed_form(function):
    return lambda counts: np.asarray([function(k) for k in counts], np.float64)


def _inverse_time(init, rate, steps, staircase):
    # Keras' InverseTimeDecay: init / (1 + rate * p), p = k / steps (floored with staircase).
    return _closed_form(lambda k: init / (1 + rate * (k // steps if staircase else k / steps)))


def _cyclic(base, top, up, down, mode, gamma=1.0):
    # torch's CyclicLR with the cycle position taken exactly: x = c / up rising, then
    # (period - c) / down falling; scale 1, 2 ** -(cycle - 1), or gamma ** k.
    def value(k):
        period = up + down
        c, cycle = k % period, k // period + 1
        x = c / up if c <= up else (period - c) / down
        if mode == "triangular":
            scale = 1.0
        elif mode == "triangular2":
            scale = 0.5 ** (cycle - 1)
        else:
            scale = gamma**k
        return base + (top - base) * x * scale

    return _closed_form(value)


def _warm_restarts(init, t_0, t_mult, eta_min):
    # torch's CosineAnnealingWarmRestarts with the cycle found by integer arithmetic.
    def value(k):
        start, length = 0, t_0
        if t_mult == 1:
            start = k - k % t_0
        while k >= start + length:
            start, length = start + length, length * t_mult
        return eta_min + (init - eta_min) * (1 + math.cos(math.pi * (k - start) / length)) / 2

    return _closed_form(value)


def _cosine_annealing(init, t_max, eta_min):
    # torch's CosineAnnealingLR (its closed form), periodic: the position k mod 2 t_max exactly.
    def value(k):
        return eta_min + (init - eta_min) * (1 + math.cos(math.pi * (k % (2 * t_max)) / t_max)) / 2

    return _closed_form(value)


def _swalr(init, swa_lr, anneal_steps):
    # torch's SWALR ("cos") in closed form: a = (1 - cos(pi t)) / 2, t = min(k, A) / A, written
    # as sin^2 and cos^2 of pi t / 2 so that neither weight cancels.
    def value(k):
        half_angle = math.pi / 2 * min(k, anneal_steps) / anneal_steps
        return swa_lr * math.sin(half_angle) ** 2 + init * math.cos(half_angle) ** 2

    return _closed_form(value)


def _chained_reference(counts):
    # Optax's two schedules in float64, multiplied (relative to the common init value 1).
    linear = _optax_reference("linear_schedule", (1.0, 0.5, 2**31), {})
    cosine = _optax_reference("cosine_decay_schedule", (1.0, 10**10), dict(alpha=1e-3))
    return linear(counts) * cosine(counts)


def _torch_onecycle(total, peak, pct_start, anneal, three_phase):
    # torch's own closed form: get_lr() reads last_epoch; it holds the minimum from total - 1.
    def reference(counts):
        torch = require_torch()
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=peak,
            total_steps=total,
            pct_start=pct_start,
            anneal_strategy=anneal,
            three_phase=three_phase,
            cycle_momentum=False,
        )
        values = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # get_lr() called outside step()
            for k in counts:
                sched.last_epoch = min(k, total - 1)
                values.append(sched.get_lr()[0])
        return np.asarray(values, np.float64)

    return reference


CYCLES = [
    dict(init_value=0.0, peak_value=1.0, warmup_steps=10**9, decay_steps=3 * 10**9),
    dict(init_value=1e-3, peak_value=0.5, warmup_steps=0, decay_steps=2**31 + 1, end_value=1e-4),
    dict(init_value=0.0, peak_value=0.1, warmup_steps=10**9, decay_steps=2**40, end_value=1e-5),
]

# (id, gradxform schedule, reference on a list of counts, init value for the log tolerance)
CASES = [
    (
        "linear",
        gx.linear_schedule(1.0, 1e-3, 3 * 10**9, transition_begin=10**9),
        _optax_reference("linear_schedule", (1.0, 1e-3, 3 * 10**9), dict(transition_begin=10**9)),
    ),
    (
        "linear-2**53",
        gx.linear_schedule(1.0, 0.5, 2**53),
        _optax_reference("linear_schedule", (1.0, 0.5, 2**53), {}),
    ),
    (
        "polynomial",
        gx.polynomial_schedule(1.0, 1e-3, 2.0, 10**10, transition_begin=2**31),
        _optax_reference(
            "polynomial_schedule", (1.0, 1e-3, 2.0, 10**10), dict(transition_begin=2**31)
        ),
    ),
    (
        "exponential",
        gx.exponential_decay(1.0, 10**9, 0.5, transition_begin=10**9),
        _optax_reference("exponential_decay", (1.0, 10**9, 0.5), dict(transition_begin=10**9)),
    ),
    (
        "exponential-staircase",
        gx.exponential_decay(1.0, 10**9, 0.5, staircase=True, end_value=1e-3),
        _optax_reference(
            "exponential_decay", (1.0, 10**9, 0.5), dict(staircase=True, end_value=1e-3)
        ),
    ),
    (
        "piecewise_constant",
        gx.piecewise_constant_schedule(
            1.0, {INT32_MAX: 0.5, 2**31: 0.5, 5 * 10**9 + 3: 0.1, 2**53: 0.1}
        ),
        _optax_reference(
            "piecewise_constant_schedule",
            (1.0, {INT32_MAX: 0.5, 2**31: 0.5, 5 * 10**9 + 3: 0.1, 2**53: 0.1}),
            {},
        ),
    ),
    *[
        (
            f"piecewise_interpolate-{kind}",
            gx.piecewise_interpolate_schedule(kind, 1.0, {10**9: 0.5, 2**31 + 5: 0.1, 2**40: 0.01}),
            _optax_reference(
                "piecewise_interpolate_schedule",
                (kind, 1.0, {10**9: 0.5, 2**31 + 5: 0.1, 2**40: 0.01}),
                {},
            ),
        )
        for kind in ("linear", "cosine")
    ],
    (
        "cosine_decay",
        gx.cosine_decay_schedule(1.0, 10**10, alpha=1e-3),
        _optax_reference("cosine_decay_schedule", (1.0, 10**10), dict(alpha=1e-3)),
    ),
    (
        "cosine_decay-2**53",
        gx.cosine_decay_schedule(1.0, 2**53, alpha=1e-3, exponent=2.0),
        _optax_reference("cosine_decay_schedule", (1.0, 2**53), dict(alpha=1e-3, exponent=2.0)),
    ),
    (
        "warmup_cosine_decay",
        gx.warmup_cosine_decay_schedule(0.0, 1.0, 10**9, 10**10, end_value=1e-4),
        _optax_reference(
            "warmup_cosine_decay_schedule", (0.0, 1.0, 10**9, 10**10), dict(end_value=1e-4)
        ),
    ),
    (
        "warmup_exponential_decay",
        gx.warmup_exponential_decay_schedule(
            0.0, 1.0, 2**31, 10**9, 0.5, transition_begin=10**9, end_value=1e-6
        ),
        _optax_reference(
            "warmup_exponential_decay_schedule",
            (0.0, 1.0, 2**31, 10**9, 0.5),
            dict(transition_begin=10**9, end_value=1e-6),
        ),
    ),
    ("sgdr", gx.sgdr_schedule(CYCLES), _optax_reference("sgdr_schedule", (CYCLES,), {})),
    (
        "join",
        gx.join_schedules(
            [
                gx.linear_schedule(1.0, 0.5, 2**31),
                gx.constant_schedule(0.25),
                gx.cosine_decay_schedule(0.5, 10**10, alpha=1e-3),
            ],
            [INT32_MAX, 5 * 10**9],
        ),
        _optax_join_reference,
    ),
    *[
        (
            f"inverse_time_decay-staircase{staircase}",
            gx.inverse_time_decay(1.0, decay_rate=0.5, decay_steps=10**9, staircase=staircase),
            _inverse_time(1.0, 0.5, 10**9, staircase),
        )
        for staircase in (False, True)
    ],
    (
        "warm_restarts-t_mult1",
        gx.cosine_annealing_warm_restarts(1.0, t_0=10**9 + 7, eta_min=1e-3),
        _warm_restarts(1.0, 10**9 + 7, 1, 1e-3),
    ),
    (
        "warm_restarts-t_mult1-short",
        gx.cosine_annealing_warm_restarts(1.0, t_0=7, eta_min=1e-3),
        _warm_restarts(1.0, 7, 1, 1e-3),
    ),
    (
        "warm_restarts-t_mult2",
        gx.cosine_annealing_warm_restarts(1.0, t_0=3, t_mult=2, eta_min=1e-3),
        _warm_restarts(1.0, 3, 2, 1e-3),
    ),
    (
        "cyclic-triangular",
        gx.cyclic_schedule(0.1, max_value=1.0, step_size_up=10**9, step_size_down=2**31 + 3),
        _cyclic(0.1, 1.0, 10**9, 2**31 + 3, "triangular"),
    ),
    (
        "cyclic-triangular2",
        gx.cyclic_schedule(
            0.1, max_value=1.0, step_size_up=7, step_size_down=4, mode="triangular2"
        ),
        _cyclic(0.1, 1.0, 7, 4, "triangular2"),
    ),
    (
        "cyclic-exp_range",
        gx.cyclic_schedule(
            0.1, max_value=1.0, step_size_up=3, step_size_down=5, mode="exp_range", gamma=1 - 1e-10
        ),
        _cyclic(0.1, 1.0, 3, 5, "exp_range", 1 - 1e-10),
    ),
    (
        "cosine_annealing",
        gx.cosine_annealing_schedule(1.0, t_max=10**9 + 7, eta_min=1e-3),
        _cosine_annealing(1.0, 10**9 + 7, 1e-3),
    ),
    (
        "cosine_annealing-short",
        gx.cosine_annealing_schedule(1.0, t_max=7, eta_min=1e-3),
        _cosine_annealing(1.0, 7, 1e-3),
    ),
    (
        "swalr",
        gx.swalr_schedule(1.0, swa_lr=1e-3, anneal_steps=2**31 + 3),
        _swalr(1.0, 1e-3, 2**31 + 3),
    ),
    (
        "chained",
        gx.chained_schedule(
            1.0,
            schedules=[
                gx.linear_schedule(1.0, 0.5, 2**31),
                gx.cosine_decay_schedule(1.0, 10**10, alpha=1e-3),
            ],
        ),
        _chained_reference,
    ),
    *[
        (
            f"onecycle-{anneal}-{total}-three_phase{three}",
            (gx.cosine_onecycle_schedule if anneal == "cos" else gx.linear_onecycle_schedule)(
                total, 1.0, 0.3, three_phase=three
            ),
            _torch_onecycle(total, 1.0, 0.3, anneal, three),
        )
        for anneal in ("cos", "linear")
        for total, three in ((10**10 + 7, False), (2**53, True))
    ],
]


def _tolerance(expected: np.ndarray, dtype: str) -> np.ndarray:
    """The admitted absolute error per value (see the module docstring)."""
    scale = np.max(np.abs(expected))
    with np.errstate(divide="ignore"):
        log = np.abs(np.log(np.abs(expected) / scale))
    rtol = {"float32": 1e-6, "float64": 1e-12}[dtype] * (1 + np.where(np.isfinite(log), log, 0))
    atol = {"float32": 0.0, "float64": 2.0**-50 * scale}[dtype]
    return rtol * np.abs(expected) + atol


def _check(got, expected: np.ndarray, counts: list, dtype: str, what: str) -> None:
    got = np.asarray(got)
    assert got.dtype == np.dtype(dtype), (what, got.dtype)
    assert got.shape == expected.shape, (what, got.shape)
    error = np.abs(got.astype(np.float64) - expected)
    bad = error > _tolerance(expected, dtype)
    assert not bad.any(), (
        f"{what}: at counts {np.asarray(counts, object)[bad]} got {got[bad]}, "
        f"expected {expected[bad]} (absolute error {error[bad]})"
    )


# A float count is exact, but the position within a cycle, k mod period, is computed with the
# period rounded to the float dtype: exact only for periods the dtype holds. These three have
# periods float32 does not hold (10**9 + 7, 10**9 + 2**31 + 3, 2 * (10**9 + 7)), so they are
# checked on integer counts only in float32.
PERIODS_FLOAT32_ROUNDS = {"warm_restarts-t_mult1", "cyclic-triangular", "cosine_annealing"}
PARAMS = [
    pytest.param(schedule, reference, name in PERIODS_FLOAT32_ROUNDS, id=name)
    for name, schedule, reference in CASES
]


@pytest.mark.parametrize(("schedule", "reference", "rounded_period"), PARAMS)
def test_float32_at_counts_beyond_int32(schedule, reference, rounded_period):
    expected = reference(COUNTS)
    n = len(INT32_COUNTS)
    int32 = jax.jit(schedule)(jnp.asarray(INT32_COUNTS, jnp.int32))
    _check(int32, expected[:n], INT32_COUNTS, "float32", "int32 counter")
    python = np.asarray([schedule(k) for k in COUNTS])
    _check(python, expected, COUNTS, "float32", "Python ints")
    _check(schedule(np.asarray(COUNTS, np.int64)), expected, COUNTS, "float32", "NumPy int64")
    if not rounded_period:
        floats = schedule(jnp.asarray(FLOAT32_COUNTS, jnp.float32))
        _check(floats, reference(FLOAT32_COUNTS), FLOAT32_COUNTS, "float32", "float32 counts")


@pytest.mark.parametrize(("schedule", "reference", "rounded_period"), PARAMS)
def test_float64_at_counts_beyond_int32(schedule, reference, rounded_period, x64):
    del rounded_period  # float64 holds every period here
    expected = reference(COUNTS)
    n = len(INT32_COUNTS)
    int64 = jax.jit(schedule)(jnp.asarray(COUNTS, jnp.int64))
    _check(int64, expected, COUNTS, "float64", "int64 counts")
    int32 = jax.jit(schedule)(jnp.asarray(INT32_COUNTS, jnp.int32))
    _check(int32, expected[:n], INT32_COUNTS, "float64", "int32 counter")
    python = np.asarray([schedule(k) for k in COUNTS])
    _check(python, expected, COUNTS, "float64", "Python ints")
    floats = schedule(jnp.asarray(COUNTS, jnp.float64))  # all exact in float64
    _check(floats, expected, COUNTS, "float64", "float64 counts")


@pytest.mark.parametrize(("schedule", "reference", "rounded_period"), PARAMS)
def test_traces_once_under_jit_and_maps_under_vmap(schedule, reference, rounded_period):
    del rounded_period
    expected = reference(INT32_COUNTS)
    chex.clear_trace_counter()  # schedules from one factory share their code, which chex counts
    jitted = jax.jit(chex.assert_max_traces(schedule, n=1))
    scalars = np.asarray([jitted(jnp.int32(k)) for k in INT32_COUNTS])
    _check(scalars, expected, INT32_COUNTS, "float32", "jit on int32 scalars")
    mapped = jax.vmap(schedule)(jnp.asarray(INT32_COUNTS, jnp.int32))
    _check(mapped, expected, INT32_COUNTS, "float32", "vmap over int32 counts")


@pytest.mark.parametrize(("schedule", "reference", "rounded_period"), PARAMS)
def test_negative_counts_give_the_value_at_0(schedule, reference, rounded_period):
    del rounded_period
    at_0 = reference([0])[0]
    for count in (-1, -(2**40), jnp.int32(-5), jnp.asarray([-3, -1], jnp.int32), -2.5):
        np.testing.assert_allclose(schedule(count), at_0, rtol=1e-6)


def test_cosine_decay_over_1e10_steps_matches_optax():
    # The case that overflowed int32: 1000 * (1 + cos(pi / 10)) / 2 = 975.528258...
    optax = require_optax()
    closed_form = 1000.0 * (1 + math.cos(math.pi * 1e9 / 1e10)) / 2
    ours = gx.cosine_decay_schedule(1000.0, decay_steps=int(1e10))
    theirs = optax.cosine_decay_schedule(1000.0, decay_steps=int(1e10))
    np.testing.assert_allclose(float(theirs(int(1e9))), closed_form, rtol=1e-6)
    for count in (int(1e9), np.int64(1e9), jnp.int32(1e9), jnp.float32(1e9)):
        # float32: the fraction 9e9 / 1e10 is rounded twice, cos(.) once: a few ulps.
        np.testing.assert_allclose(float(ours(count)), closed_form, rtol=1e-6)
    np.testing.assert_allclose(float(ours(int(1e9))), float(theirs(int(1e9))), rtol=1e-6)


def test_optimizer_int32_counter_near_its_limit():
    # The optimizer's counter is int32 and saturates at 2**31 - 1; a schedule over 1e10 steps
    # must take it there, under jit, without overflow.
    schedule = gx.cosine_decay_schedule(1.0, decay_steps=10**10, alpha=1e-3)
    opt = gx.sgd(schedule)
    params = {"w": jnp.zeros([])}
    start = INT32_MAX - 2
    state = jax.tree.map(
        lambda x: jnp.full_like(x, start) if x.dtype == jnp.int32 else x, opt.init(params)
    )
    step = jax.jit(opt.update)
    moves = []
    for _ in range(4):
        updates, state = step({"w": jnp.ones([])}, state, params)
        moves.append(-float(updates["w"]))
    counts = [start, start + 1, INT32_MAX, INT32_MAX]
    expected = [1e-3 + (1 - 1e-3) * (1 + math.cos(math.pi * k / 1e10)) / 2 for k in counts]
    np.testing.assert_allclose(moves, expected, rtol=1e-6)


def test_counts_that_cannot_be_handled_raise():
    schedule = gx.linear_schedule(1.0, 0.0, 10)
    with pytest.raises(OverflowError, match=r"count must be below 2\*\*63"):
        schedule(2**63)
    # multiplicative_schedule multiplies k factors one block at a time, in the default integer
    # dtype: a static count beyond it is refused rather than wrapped (not in CASES for that).
    product = gx.multiplicative_schedule(1.0, factor_fn=lambda j: 1.0)
    for count in (2**31, np.asarray([0, 2**40])):
        with pytest.raises(OverflowError, match=r"multiplicative_schedule: .* up to 2147483647"):
            product(count)
    for count in (True, jnp.asarray([True, False]), 1j, "3"):
        with pytest.raises(TypeError, match="count must be"):
            schedule(count)
