"""Schedules against torch.optim.lr_scheduler, Keras' formulas and Optax.

The convention checked throughout: ``schedule(k)`` is the value for update ``k + 1``, which is
torch's ``param_groups[0]["lr"]`` after ``k`` calls to ``scheduler.step()``.

Tolerances. Torch computes in float64 Python floats, some schedulers by recursion
(``lr <- lr * factor``); over 300 steps the recursion drifts from the closed form by about
1e-15 relative (measured for CosineAnnealingLR, which torch's docs call an approximation), so
the torch values are compared as stepped, not through torch's private ``_get_closed_form_lr``.
In float64 the schedules must agree to 1e-10 relative. In float32 they must agree to 1e-6:
every schedule keeps its relative precision near zero crossings (the cosine weight is
``sin^2``, rates are raised as ``exp(k * log(rate))`` with the log taken in float64), so the
error stays at a few float32 ulps (6e-8 each). An absolute ``1e-12 * lr`` only admits values
that are exactly 0 here and ~1e-18 after torch's recursion.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.references import require_optax, require_torch

STEPS = 300
LR = 0.1
RTOL = {"float32": 1e-6, "float64": 1e-10}


def _values(schedule: Callable, counts) -> np.ndarray:
    """The schedule on an array of counts, jitted (one compilation instead of many dispatches)."""
    return np.asarray(jax.jit(schedule)(jnp.asarray(counts, jnp.int32)), np.float64)


def _check(got, expected, dtype: str, scale: float = LR) -> None:
    np.testing.assert_allclose(got, expected, rtol=RTOL[dtype], atol=1e-12 * scale)


# ----------------------------------------------------------------------------------------------
# torch.optim.lr_scheduler


def _torch_lrs(make_scheduler: Callable, steps: int, lr: float = LR) -> np.ndarray:
    """``lr`` after 0, 1, ..., steps - 1 scheduler steps (optimizer step first, as in training)."""
    torch = require_torch()
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = make_scheduler(torch.optim.lr_scheduler, optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.asarray(lrs)


def _sequential(S, opt):
    return S.SequentialLR(
        opt,
        [S.LinearLR(opt, start_factor=0.1, total_iters=20), S.ExponentialLR(opt, gamma=0.99)],
        milestones=[20],
    )


def _sequential3(S, opt):
    return S.SequentialLR(
        opt,
        [
            S.ConstantLR(opt, factor=0.5, total_iters=15),
            S.CosineAnnealingLR(opt, T_max=100, eta_min=0.002),
            S.StepLR(opt, step_size=25, gamma=0.5),
        ],
        milestones=[30, 130],
    )


# (id, torch scheduler from (lr_scheduler module, optimizer), gradxform schedule, steps)
TORCH_CASES = [
    (
        "StepLR",
        lambda S, opt: S.StepLR(opt, step_size=30, gamma=0.5),
        gx.exponential_decay(LR, 30, 0.5, staircase=True),
        STEPS,
    ),
    (
        "ExponentialLR",
        lambda S, opt: S.ExponentialLR(opt, gamma=0.98),
        gx.exponential_decay(LR, 1, 0.98),
        STEPS,
    ),
    (
        "MultiStepLR",
        lambda S, opt: S.MultiStepLR(opt, milestones=[50, 120, 200], gamma=0.3),
        gx.piecewise_constant_schedule(LR, {50: 0.3, 120: 0.3, 200: 0.3}),
        STEPS,
    ),
    (
        "ConstantLR",
        lambda S, opt: S.ConstantLR(opt, factor=0.25, total_iters=40),
        gx.piecewise_constant_schedule(LR * 0.25, {40: 4.0}),
        STEPS,
    ),
    (
        "CosineAnnealingLR-eta_min0",
        lambda S, opt: S.CosineAnnealingLR(opt, T_max=STEPS),
        gx.cosine_decay_schedule(LR, STEPS),
        STEPS + 1,  # k = T_max included: the value there is 0
    ),
    (
        "CosineAnnealingLR-eta_min",
        lambda S, opt: S.CosineAnnealingLR(opt, T_max=STEPS - 20, eta_min=1e-3),
        gx.cosine_decay_schedule(LR, STEPS - 20, alpha=1e-3 / LR),
        STEPS - 19,  # torch's cosine climbs back after T_max; this one stays at eta_min
    ),
    (
        "LinearLR-warmup",
        lambda S, opt: S.LinearLR(opt, start_factor=0.25, end_factor=1.0, total_iters=40),
        gx.linear_schedule(LR * 0.25, LR, 40),
        STEPS,
    ),
    (
        "LinearLR-decay",
        lambda S, opt: S.LinearLR(opt, start_factor=1.0, end_factor=0.05, total_iters=200),
        gx.linear_schedule(LR, LR * 0.05, 200),
        STEPS,
    ),
    (
        "PolynomialLR-power2",
        lambda S, opt: S.PolynomialLR(opt, total_iters=250, power=2.0),
        gx.polynomial_schedule(LR, 0.0, 2.0, 250),
        STEPS,
    ),
    (
        "PolynomialLR-power0.9",
        lambda S, opt: S.PolynomialLR(opt, total_iters=STEPS, power=0.9),
        gx.polynomial_schedule(LR, 0.0, 0.9, STEPS),
        STEPS,
    ),
    (
        "OneCycleLR-cos",
        lambda S, opt: S.OneCycleLR(opt, max_lr=1.0, total_steps=STEPS, cycle_momentum=False),
        gx.cosine_onecycle_schedule(STEPS, 1.0),
        STEPS,
    ),
    (
        "OneCycleLR-linear",
        lambda S, opt: S.OneCycleLR(
            opt, max_lr=1.0, total_steps=STEPS, anneal_strategy="linear", cycle_momentum=False
        ),
        gx.linear_onecycle_schedule(STEPS, 1.0),
        STEPS,
    ),
    (
        # pct_start * total_steps - 1 = 74.25: a phase end between two steps
        "OneCycleLR-cos-fractional-end",
        lambda S, opt: S.OneCycleLR(
            opt,
            max_lr=2.0,
            total_steps=301,
            pct_start=0.25,
            div_factor=10.0,
            final_div_factor=100.0,
            cycle_momentum=False,
        ),
        gx.cosine_onecycle_schedule(301, 2.0, 0.25, 10.0, 100.0),
        301,
    ),
    (
        "OneCycleLR-cos-three-phase",
        lambda S, opt: S.OneCycleLR(
            opt, max_lr=1.0, total_steps=STEPS, three_phase=True, cycle_momentum=False
        ),
        gx.cosine_onecycle_schedule(STEPS, 1.0, three_phase=True),
        STEPS,
    ),
    (
        "OneCycleLR-linear-three-phase",
        lambda S, opt: S.OneCycleLR(
            opt,
            max_lr=1.0,
            total_steps=STEPS,
            pct_start=0.2,
            anneal_strategy="linear",
            three_phase=True,
            cycle_momentum=False,
        ),
        gx.linear_onecycle_schedule(STEPS, 1.0, 0.2, three_phase=True),
        STEPS,
    ),
    (
        "CosineAnnealingWarmRestarts-T_mult1",
        lambda S, opt: S.CosineAnnealingWarmRestarts(opt, T_0=25, eta_min=1e-3),
        gx.cosine_annealing_warm_restarts(LR, t_0=25, eta_min=1e-3),
        STEPS,
    ),
    (
        "CosineAnnealingWarmRestarts-T_mult2",
        lambda S, opt: S.CosineAnnealingWarmRestarts(opt, T_0=7, T_mult=2),
        gx.cosine_annealing_warm_restarts(LR, t_0=7, t_mult=2),
        STEPS,
    ),
    (
        "CosineAnnealingWarmRestarts-T_mult3",
        lambda S, opt: S.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=3, eta_min=0.01),
        gx.cosine_annealing_warm_restarts(LR, t_0=3, t_mult=3, eta_min=0.01),
        STEPS,
    ),
    (
        "CyclicLR-triangular",
        lambda S, opt: S.CyclicLR(
            opt, base_lr=0.01, max_lr=LR, step_size_up=20, cycle_momentum=False
        ),
        gx.cyclic_schedule(0.01, max_value=LR, step_size_up=20),
        STEPS,
    ),
    (
        "CyclicLR-triangular2",
        lambda S, opt: S.CyclicLR(
            opt,
            base_lr=0.01,
            max_lr=LR,
            step_size_up=20,
            step_size_down=13,
            mode="triangular2",
            cycle_momentum=False,
        ),
        gx.cyclic_schedule(
            0.01, max_value=LR, step_size_up=20, step_size_down=13, mode="triangular2"
        ),
        STEPS,
    ),
    (
        "CyclicLR-exp_range",
        lambda S, opt: S.CyclicLR(
            opt,
            base_lr=0.01,
            max_lr=LR,
            step_size_up=15,
            step_size_down=30,
            mode="exp_range",
            gamma=0.995,
            cycle_momentum=False,
        ),
        gx.cyclic_schedule(
            0.01, max_value=LR, step_size_up=15, step_size_down=30, mode="exp_range", gamma=0.995
        ),
        STEPS,
    ),
    (
        "SequentialLR-LinearLR-ExponentialLR",
        _sequential,
        gx.join_schedules(
            [gx.linear_schedule(0.1 * LR, LR, 20), gx.exponential_decay(LR, 1, 0.99)], [20]
        ),
        STEPS,
    ),
    (
        "SequentialLR-ConstantLR-CosineAnnealingLR-StepLR",
        _sequential3,
        gx.join_schedules(
            [
                gx.piecewise_constant_schedule(0.5 * LR, {15: 2.0}),
                gx.cosine_decay_schedule(LR, 100, alpha=0.002 / LR),
                gx.exponential_decay(LR, 25, 0.5, staircase=True),
            ],
            [30, 130],
        ),
        STEPS,
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("make_torch", "schedule", "steps"),
    [pytest.param(*case[1:], id=case[0]) for case in TORCH_CASES],
)
def test_matches_torch_scheduler(make_torch, schedule, steps, dtype):
    expected = _torch_lrs(make_torch, steps)
    with jax.enable_x64(dtype == "float64"):
        got = _values(schedule, np.arange(steps))
    _check(got, expected, dtype, scale=float(np.max(expected)))


def test_onecycle_holds_the_minimum_after_the_last_step():
    # torch raises past total_steps; here the value stays at peak / div / final_div.
    sched = gx.cosine_onecycle_schedule(100, 1.0, div_factor=20.0, final_div_factor=50.0)
    got = _values(sched, [99, 100, 101, 10_000])
    np.testing.assert_allclose(got, 1.0 / 20.0 / 50.0, rtol=1e-6)


def test_cosine_decay_stays_at_the_floor_after_decay_steps():
    sched = gx.cosine_decay_schedule(LR, 50, alpha=0.1)
    np.testing.assert_allclose(_values(sched, [50, 51, 99, 100_000]), 0.1 * LR, rtol=1e-6)


@pytest.mark.parametrize(("t_0", "t_mult"), [(1, 2), (1, 3), (10, 2), (7, 5), (3, 10)])
def test_warm_restarts_cycle_boundaries_exact_up_to_int32_max(t_0, t_mult):
    # Every restart step below 2**31 and its neighbours, against integer arithmetic. The
    # floating-point log formula for the cycle index misplaces some of these (e.g. 8191 for
    # t_0=1, t_mult=2 in float32), so this fails for a schedule that relies on it.
    starts, lengths = [0], [t_0]
    while starts[-1] + lengths[-1] <= np.iinfo(np.int32).max:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * t_mult)
    counts, expected = [], []
    for i, start in enumerate(starts):
        for k in (start - 1, start, start + 1):
            if 0 <= k <= np.iinfo(np.int32).max:
                cycle = i - (k < start) + (i + 1 < len(starts) and k >= starts[i + 1])
                since = k - starts[cycle]
                counts.append(k)
                expected.append(0.5 * (1 + math.cos(math.pi * since / lengths[cycle])))
    sched = jax.jit(gx.cosine_annealing_warm_restarts(1.0, t_0=t_0, t_mult=t_mult))
    got = _values(sched, counts)
    # 1e-5: float32 rounding of a cycle length above 2**24 changes the weight at that level.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Keras' formulas (the closed forms of its documentation, written here in float64).


@pytest.mark.parametrize("staircase", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inverse_time_decay_matches_keras(staircase, dtype):
    k = np.arange(STEPS, dtype=np.float64)
    p = np.floor(k / 7) if staircase else k / 7
    expected = 0.3 / (1 + 0.5 * p)
    with jax.enable_x64(dtype == "float64"):
        got = _values(
            gx.inverse_time_decay(0.3, decay_rate=0.5, decay_steps=7, staircase=staircase), k
        )
    _check(got, expected, dtype)


@pytest.mark.parametrize(
    ("kwargs", "end"),
    [
        (dict(transition_steps=10, decay_rate=0.9), None),
        (dict(transition_steps=10, decay_rate=0.9, staircase=True), None),
        (dict(transition_steps=7, decay_rate=0.8, transition_begin=30), None),
        (dict(transition_steps=7, decay_rate=0.8, staircase=True, end_value=0.02), 0.02),
        (dict(transition_steps=50, decay_rate=1.5, end_value=0.7), 0.7),  # growth, capped
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exponential_decay_matches_keras(kwargs, end, dtype):
    k = np.arange(STEPS, dtype=np.float64)
    t = np.maximum(k - kwargs.get("transition_begin", 0), 0) / kwargs["transition_steps"]
    p = np.floor(t) if kwargs.get("staircase") else t
    expected = LR * kwargs["decay_rate"] ** p
    if end is not None:
        expected = (
            np.clip(expected, end, None) if kwargs["decay_rate"] < 1 else np.minimum(expected, end)
        )
    with jax.enable_x64(dtype == "float64"):
        got = _values(gx.exponential_decay(LR, **kwargs), k)
    _check(got, expected, dtype)


def test_keras_piecewise_constant_decay_mapping():
    # Keras: values[0] while k <= b_0, values[i] while b_{i-1} < k <= b_i: a boundary b there is
    # a boundary b + 1 here. Both forms of the README table, the second also for zero values.
    boundaries, values = [40, 100], [1.0, 0.5, 0.1]
    k = np.arange(STEPS)
    expected = np.select([k <= boundaries[0], k <= boundaries[1]], values[:2], values[2])
    scales = {b + 1: values[i + 1] / values[i] for i, b in enumerate(boundaries)}
    by_scales = gx.piecewise_constant_schedule(values[0], scales)
    np.testing.assert_allclose(_values(by_scales, k), expected, rtol=1e-6)
    joined = gx.join_schedules(
        [gx.constant_schedule(v) for v in values], [b + 1 for b in boundaries]
    )
    np.testing.assert_array_equal(_values(joined, k), np.float32(expected))


def test_keras_polynomial_decay_mapping():
    k = np.arange(STEPS, dtype=np.float64)
    expected = (LR - 1e-4) * (1 - np.minimum(k, 200) / 200) ** 1.5 + 1e-4
    sched = gx.polynomial_schedule(LR, 1e-4, 1.5, 200)
    np.testing.assert_allclose(_values(sched, k), expected, rtol=1e-6)


def test_keras_cosine_decay_with_warmup_mapping():
    # CosineDecay(initial_learning_rate=0.01, decay_steps=200, alpha=0.1, warmup_target=0.1,
    # warmup_steps=30), per its documented warmup and decay formulas.
    init, target, warmup, decay, alpha = 0.01, 0.1, 30, 200, 0.1
    k = np.arange(STEPS, dtype=np.float64)
    warm = init + (k / warmup) * (target - init)
    step = np.minimum(k - warmup, decay)
    decayed = target * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * step / decay)) + alpha)
    expected = np.where(k < warmup, warm, decayed)
    sched = gx.warmup_cosine_decay_schedule(init, target, warmup, warmup + decay, alpha * target)
    np.testing.assert_allclose(_values(sched, k), expected, rtol=1e-6)


@pytest.mark.parametrize("t_mul", [1, 2])
def test_keras_cosine_decay_restarts_mapping(t_mul):
    # CosineDecayRestarts(initial_learning_rate=0.1, first_decay_steps=10, t_mul, m_mul=1.0,
    # alpha=0.05), per its documented formula (float64 logs, exact over this range).
    init, first, alpha = LR, 10, 0.05
    expected = []
    for k in range(STEPS):
        fraction = k / first
        if t_mul == 1:
            restarts = math.floor(fraction)
            fraction -= restarts
        else:
            restarts = math.floor(math.log(1 - fraction * (1 - t_mul)) / math.log(t_mul))
            fraction = (fraction - (1 - t_mul**restarts) / (1 - t_mul)) / t_mul**restarts
        cosine = 0.5 * (1 + math.cos(math.pi * fraction))
        expected.append(init * ((1 - alpha) * cosine + alpha))
    sched = gx.cosine_annealing_warm_restarts(init, t_0=first, t_mult=t_mul, eta_min=alpha * init)
    np.testing.assert_allclose(_values(sched, np.arange(STEPS)), expected, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Optax, where the semantics are the same.

OPTAX_CASES = [
    ("constant_schedule", (0.3,), {}),
    ("linear_schedule", (0.1, 0.01, 100), dict(transition_begin=20)),
    ("polynomial_schedule", (0.1, 0.01, 3.0, 150), dict(transition_begin=10)),
    ("exponential_decay", (0.1, 20, 0.7), dict(transition_begin=15, staircase=True)),
    ("exponential_decay", (0.1, 20, 0.7), dict(end_value=0.01)),
    ("piecewise_constant_schedule", (0.1, {30: 0.5, 0: 2.0, 200: 0.1}), {}),
    ("piecewise_interpolate_schedule", ("linear", 0.1, {0: 0.5, 40: 3.0, 150: 0.01}), {}),
    ("piecewise_interpolate_schedule", ("cosine", 0.1, {40: 3.0, 41: 0.5, 150: 0.01}), {}),
    ("cosine_decay_schedule", (0.1, 200), dict(alpha=0.05, exponent=2.0)),
    ("warmup_constant_schedule", (0.0, 0.1, 30), {}),
    ("warmup_cosine_decay_schedule", (0.0, 0.1, 30, 250), dict(end_value=1e-3, exponent=0.5)),
    ("warmup_exponential_decay_schedule", (0.0, 0.1, 30, 10, 0.9), dict(end_value=1e-2)),
]


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [pytest.param(*case, id=f"{case[0]}-{i}") for i, case in enumerate(OPTAX_CASES)],
)
def test_matches_optax(name, args, kwargs, x64):
    optax = require_optax()
    k = jnp.arange(STEPS)
    # vmap: some Optax schedules (piecewise_interpolate_schedule) take scalar counts only.
    expected = np.asarray(jax.jit(jax.vmap(getattr(optax, name)(*args, **kwargs)))(k))
    got = _values(getattr(gx, name)(*args, **kwargs), k)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15)


def test_sgdr_and_join_match_optax(x64):
    optax = require_optax()
    cycles = [
        dict(init_value=0.0, peak_value=0.1, warmup_steps=10, decay_steps=60),
        dict(init_value=0.01, peak_value=0.05, warmup_steps=0, decay_steps=90, end_value=1e-3),
        dict(init_value=0.0, peak_value=0.02, warmup_steps=20, decay_steps=100, exponent=2.0),
    ]
    k = jnp.arange(STEPS)
    np.testing.assert_allclose(
        _values(gx.sgdr_schedule(cycles), k),
        np.asarray(optax.sgdr_schedule(cycles)(k)),
        rtol=1e-10,
        atol=1e-15,
    )
    parts = [(0.1, 0.05, 30), (0.05, 0.0, 100), (0.02, 0.02, 1)]
    boundaries = [25, 140]
    ours = gx.join_schedules([gx.linear_schedule(*p) for p in parts], boundaries)
    theirs = optax.join_schedules([optax.linear_schedule(*p) for p in parts], boundaries)
    np.testing.assert_allclose(_values(ours, k), np.asarray(theirs(k)), rtol=1e-10, atol=1e-15)


def test_optax_linear_onecycle_recipe_from_the_docstring(x64):
    # linear_onecycle_schedule's docstring gives Optax's three-phase schedule in terms of
    # piecewise_interpolate_schedule; check that recipe.
    optax = require_optax()
    T, peak, pct_start, pct_final, div, final_div = 300, 1.0, 0.3, 0.85, 25.0, 1e4
    recipe = gx.piecewise_interpolate_schedule(
        "linear",
        peak / div,
        {int(pct_start * T): div, int(pct_final * T): 1 / div, T: 1 / final_div},
    )
    k = jnp.arange(STEPS + 5)
    theirs = optax.linear_onecycle_schedule(T, peak, pct_start, pct_final, div, final_div)
    expected = jax.jit(jax.vmap(theirs))(k)  # Optax's version takes scalar counts only
    np.testing.assert_allclose(_values(recipe, k), expected, rtol=1e-10, atol=1e-15)


# ----------------------------------------------------------------------------------------------
# jit, vmap, dtypes: every schedule, built from one value argument ``v``.

ALL_SCHEDULES = {
    "constant_schedule": lambda v: gx.constant_schedule(v),
    "linear_schedule": lambda v: gx.linear_schedule(v, 0.1 * v, 50, transition_begin=5),
    "polynomial_schedule": lambda v: gx.polynomial_schedule(v, 0.0, 2.0, 80),
    "exponential_decay": lambda v: gx.exponential_decay(v, 10, 0.9, end_value=0.2 * v),
    "piecewise_constant_schedule": lambda v: gx.piecewise_constant_schedule(v, {20: 0.5}),
    "piecewise_interpolate_schedule": lambda v: gx.piecewise_interpolate_schedule(
        "cosine", v, {20: 0.5, 60: 0.1}
    ),
    "inverse_time_decay": lambda v: gx.inverse_time_decay(
        v, decay_rate=0.5, decay_steps=10, staircase=True
    ),
    "cosine_decay_schedule": lambda v: gx.cosine_decay_schedule(v, 90, alpha=0.1),
    "warmup_constant_schedule": lambda v: gx.warmup_constant_schedule(0.1 * v, v, 20),
    "warmup_cosine_decay_schedule": lambda v: gx.warmup_cosine_decay_schedule(0.0, v, 10, 90),
    "warmup_exponential_decay_schedule": lambda v: gx.warmup_exponential_decay_schedule(
        0.0, v, 10, 5, 0.8
    ),
    "cosine_onecycle_schedule": lambda v: gx.cosine_onecycle_schedule(100, v),
    "linear_onecycle_schedule": lambda v: gx.linear_onecycle_schedule(100, v, three_phase=True),
    "cosine_annealing_warm_restarts": lambda v: gx.cosine_annealing_warm_restarts(
        v, t_0=5, t_mult=2
    ),
    "sgdr_schedule": lambda v: gx.sgdr_schedule(
        [dict(init_value=0.0, peak_value=v, warmup_steps=5, decay_steps=40)] * 3
    ),
    "cyclic_schedule": lambda v: gx.cyclic_schedule(
        0.1 * v, max_value=v, step_size_up=8, mode="exp_range", gamma=0.99
    ),
    "join_schedules": lambda v: gx.join_schedules(
        [gx.constant_schedule(0.5 * v), gx.cosine_decay_schedule(v, 50)], [30]
    ),
    "chained_schedule": lambda v: gx.chained_schedule(
        v, schedules=[gx.linear_schedule(0.2 * v, v, 20), gx.exponential_decay(v, 10, 0.9)]
    ),
    "multiplicative_schedule": lambda v: gx.multiplicative_schedule(
        v, factor_fn=lambda k: jnp.where(k % 10 == 0, 0.5, 1.0 - 1.0 / (k + 50))
    ),
    "cosine_annealing_schedule": lambda v: gx.cosine_annealing_schedule(
        v, t_max=30, eta_min=0.1 * v
    ),
    "swalr_schedule": lambda v: gx.swalr_schedule(v, swa_lr=0.2 * v, anneal_steps=40),
}
COUNTS = np.arange(130)  # covers every phase of the schedules above
SCALAR_COUNTS = [
    0,
    1,
    2,
    4,
    5,
    6,
    9,
    10,
    11,
    19,
    20,
    21,
    29,
    30,
    31,
    34,
    35,
    44,
    45,
    50,
    70,
    99,
    129,
]


def test_every_exported_schedule_is_in_the_table():
    exported = set(gx.schedules.__all__)
    assert exported == set(ALL_SCHEDULES)
    assert exported <= set(gx.__all__)


@pytest.mark.parametrize("make", ALL_SCHEDULES.values(), ids=ALL_SCHEDULES.keys())
def test_jit_vmap_and_scalar_calls_agree(make):
    # Eager calls on Python ints are the reference; jit on int32 scalars, vmap over counts and
    # a plain call on an array of counts must give the same numbers (to float32 rounding, as
    # XLA may fuse differently).
    sched = make(0.4)
    eager = np.asarray([float(sched(k)) for k in SCALAR_COUNTS])
    jitted = jax.jit(sched)
    np.testing.assert_allclose([jitted(jnp.int32(k)) for k in SCALAR_COUNTS], eager, rtol=1e-6)
    vmapped = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(COUNTS, jnp.int32)))
    np.testing.assert_allclose(vmapped[SCALAR_COUNTS], eager, rtol=1e-6)
    np.testing.assert_allclose(_values(sched, COUNTS), vmapped, rtol=1e-6)
    assert len(set(eager.tolist())) > 1 or make is ALL_SCHEDULES["constant_schedule"]


@pytest.mark.parametrize("make", ALL_SCHEDULES.values(), ids=ALL_SCHEDULES.keys())
def test_vmap_over_values(make):
    values = np.asarray([0.1, 0.4, 2.0])
    counts = jnp.asarray([0, 7, 33, 101], jnp.int32)

    @jax.jit
    def batched(v):
        return jax.vmap(lambda c: make(v)(c))(counts)

    got = np.asarray(jax.vmap(batched)(jnp.asarray(values, jnp.float32)))
    expected = np.asarray([[float(make(float(v))(int(c))) for c in counts] for v in values])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("make", ALL_SCHEDULES.values(), ids=ALL_SCHEDULES.keys())
def test_dtype_float32_by_default(make):
    sched = make(0.4)
    for count in (3, jnp.int32(3), jnp.arange(4, dtype=jnp.int32)):
        value = sched(count)
        assert value.dtype == jnp.float32
        assert not value.weak_type
        assert value.shape == jnp.shape(count)


@pytest.mark.parametrize("make", ALL_SCHEDULES.values(), ids=ALL_SCHEDULES.keys())
def test_dtype_float64_under_x64(make, x64):
    sched = make(0.4)
    value = jax.jit(sched)(jnp.int32(3))
    assert value.dtype == jnp.float64
    assert not value.weak_type


def test_schedule_drives_an_optimizer():
    # The value for update k + 1 is schedule(k): SGD on gradients of 1 moves by -schedule(k).
    sched = gx.cyclic_schedule(0.01, max_value=0.1, step_size_up=3)
    opt = gx.sgd(sched)
    params = {"w": jnp.zeros([])}
    state = opt.init(params)
    step = jax.jit(opt.update)
    moves = []
    for _ in range(8):
        updates, state = step({"w": jnp.ones([])}, state, params)
        moves.append(-float(updates["w"]))
    np.testing.assert_allclose(moves, _values(sched, np.arange(8)), rtol=1e-6)
