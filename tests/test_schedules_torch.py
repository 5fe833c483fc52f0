"""The schedules of torch's recursive schedulers: ``chained_schedule`` (``ChainedScheduler``),
``multiplicative_schedule`` (``MultiplicativeLR``), ``cosine_annealing_schedule``
(``CosineAnnealingLR`` past ``T_max``) and ``swalr_schedule`` (``swa_utils.SWALR``).

The convention and tolerances are those of ``tests/test_schedules.py``: ``schedule(k)`` is
torch's ``param_groups[0]["lr"]`` after ``k`` calls to ``scheduler.step()`` (an optimizer step
before each), compared over 300 steps to ``rtol=1e-10`` in float64 and ``1e-6`` in float32, with
an absolute ``1e-12 * lr`` for values that are 0 here and ~1e-18 after torch's recursion. torch
steps these schedulers by recursion (each ``step()`` changes the current learning rate), whose
rounding drifts from the closed forms by ~1e-15 relative over 300 steps. Each schedule is
evaluated twice, jitted on the array of counts and ``vmap``-ped over int32 counts, and both must
agree with torch.

The one exception is ``multiplicative_schedule`` in float32: its value is a product of ``k``
factors that ``factor_fn`` computes in float32, each rounded (2^-24 = 6e-8 relative) before the
product rounds again, so after ``k = 299`` steps the error is bounded by ``2 * 299 * 6e-8 =
3.6e-5``, and ``4e-5`` is the tolerance (measured: 7e-6 for a constant 0.98, whose float32
rounding errs the same way at every step). A closed form has no such growth; a wrong count
(``f(k)`` for ``f(k + 1)``) or a missing factor is off by ~1e-3 at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.references import require_torch
from tests.test_schedules import LR, RTOL, STEPS, _check, _torch_lrs, _values

torch = require_torch()


def _vmapped(schedule, counts) -> np.ndarray:
    """The schedule mapped over int32 counts one at a time, jitted."""
    mapped = jax.jit(jax.vmap(schedule))(jnp.asarray(counts, jnp.int32))
    return np.asarray(mapped, np.float64)


def _compare(make_torch, make_schedule, dtype, steps=STEPS, rtol=None):
    """torch's learning rates against the schedule, jitted and vmapped, in ``dtype``."""
    expected = _torch_lrs(make_torch, steps)
    with jax.enable_x64(dtype == "float64"):
        schedule = make_schedule()
        got = _values(schedule, np.arange(steps))
        mapped = _vmapped(schedule, np.arange(steps))
    scale = float(np.max(np.abs(expected)))
    for values in (got, mapped):
        if rtol is None:
            _check(values, expected, dtype, scale=scale)
        else:
            np.testing.assert_allclose(values, expected, rtol=rtol, atol=1e-12 * scale)
    return expected


DTYPES = ["float32", "float64"]


# ----------------------------------------------------------------------------------------------
# ChainedScheduler: each scheduler alone, as a schedule, multiplied relative to the base lr.

CHAINED = {
    # A LinearLR warm-up times an ExponentialLR decay.
    "LinearLR-ExponentialLR": (
        lambda S, opt: S.ChainedScheduler(
            [S.LinearLR(opt, start_factor=0.1, total_iters=20), S.ExponentialLR(opt, gamma=0.99)]
        ),
        lambda: [gx.linear_schedule(0.1 * LR, LR, 20), gx.exponential_decay(LR, 1, 0.99)],
    ),
    # torch's docstring example, with a slower decay (0.9^300 would be below the atol).
    "ConstantLR-ExponentialLR": (
        lambda S, opt: S.ChainedScheduler(
            [S.ConstantLR(opt, factor=0.1, total_iters=20), S.ExponentialLR(opt, gamma=0.98)]
        ),
        lambda: [
            gx.piecewise_constant_schedule(0.1 * LR, {20: 10.0}),
            gx.exponential_decay(LR, 1, 0.98),
        ],
    ),
    "LinearLR-StepLR-MultiStepLR": (
        lambda S, opt: S.ChainedScheduler(
            [
                S.LinearLR(opt, start_factor=1.0, end_factor=0.05, total_iters=200),
                S.StepLR(opt, step_size=30, gamma=0.7),
                S.MultiStepLR(opt, milestones=[50, 120, 200], gamma=0.3),
            ]
        ),
        lambda: [
            gx.linear_schedule(LR, 0.05 * LR, 200),
            gx.exponential_decay(LR, 30, 0.7, staircase=True),
            gx.piecewise_constant_schedule(LR, {50: 0.3, 120: 0.3, 200: 0.3}),
        ],
    ),
    # CosineAnnealingLR multiplies too while eta_min = 0 and k <= T_max; PolynomialLR; and a
    # MultiplicativeLR inside the chain.
    "ConstantLR-CosineAnnealingLR-PolynomialLR-MultiplicativeLR": (
        lambda S, opt: S.ChainedScheduler(
            [
                S.ConstantLR(opt, factor=0.5, total_iters=40),
                S.CosineAnnealingLR(opt, T_max=STEPS),
                S.PolynomialLR(opt, total_iters=350, power=0.9),
                S.MultiplicativeLR(opt, lambda k: 1.0 - 1.0 / (k + 100)),
            ]
        ),
        lambda: [
            gx.piecewise_constant_schedule(0.5 * LR, {40: 2.0}),
            gx.cosine_annealing_schedule(LR, t_max=STEPS),
            gx.polynomial_schedule(LR, 0.0, 0.9, 350),
            gx.multiplicative_schedule(LR, factor_fn=lambda k: 1.0 - 1.0 / (k + 100)),
        ],
    ),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CHAINED)
def test_chained_schedule_matches_chained_scheduler(name, dtype):
    make_torch, parts = CHAINED[name]
    # The product's own rounding is a few ulps; the MultiplicativeLR part brings its own bound.
    rtol = 4e-5 if dtype == "float32" and "Multiplicative" in name else None
    expected = _compare(
        make_torch, lambda: gx.chained_schedule(LR, schedules=parts()), dtype, rtol=rtol
    )
    assert len(set(np.round(expected / LR, 12))) > 30  # the chain really varies


def test_chained_schedule_is_not_a_sum_or_the_last_schedule(x64):
    """The comparison above tells the product from the other ways to combine: the last
    scheduler alone, or each scheduler's change added up."""
    make_torch, parts = CHAINED["LinearLR-ExponentialLR"]
    expected = _torch_lrs(make_torch, STEPS)
    warmup, decay = parts()
    counts = np.arange(STEPS)
    last = _values(decay, counts)
    summed = _values(warmup, counts) + _values(decay, counts) - LR
    for wrong in (last, summed):
        assert not np.allclose(wrong, expected, rtol=1e-3)


def test_chained_schedule_of_a_zero_init_value_is_zero(x64):
    # torch's chain multiplies a learning rate of 0: it stays 0. Here 0 * prod, never 0 / 0.
    sched = gx.chained_schedule(
        0.0, schedules=[gx.linear_schedule(0.0, 0.0, 10), gx.exponential_decay(0.0, 1, 0.5)]
    )
    np.testing.assert_array_equal(_values(sched, np.arange(20)), 0.0)
    traced = jax.jit(lambda v: gx.chained_schedule(v, schedules=[gx.constant_schedule(v)])(3))
    assert float(traced(0.0)) == 0.0 and float(traced(0.5)) == 0.5


# ----------------------------------------------------------------------------------------------
# MultiplicativeLR: the same factor written for torch (Python) and in jax.numpy.

MULTIPLICATIVE = {
    "inverse": (lambda k: 1 - 0.5 / (k + 20), lambda k: 1 - 0.5 / (k + 20)),
    "piecewise": (
        lambda k: 0.5 if k % 50 == 0 else 0.999,
        lambda k: jnp.where(k % 50 == 0, 0.5, 0.999),
    ),
    "constant": (lambda k: 0.98, lambda k: 0.98),
    "growing-then-shrinking": (
        lambda k: 1.02 if k <= 60 else (k / (k + 1)) ** 0.5,
        lambda k: jnp.where(k <= 60, 1.02, jnp.sqrt(k / (k + 1))),
    ),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", MULTIPLICATIVE)
def test_multiplicative_schedule_matches_multiplicative_lr(name, dtype):
    torch_factor, jax_factor = MULTIPLICATIVE[name]
    rtol = 4e-5 if dtype == "float32" else RTOL["float64"]
    expected = _compare(
        lambda S, opt: S.MultiplicativeLR(opt, torch_factor),
        lambda: gx.multiplicative_schedule(LR, factor_fn=jax_factor),
        dtype,
        rtol=rtol,
    )
    assert len(set(expected.tolist())) > 100


def test_multiplicative_schedule_constant_factor_is_exponential_decay(x64):
    # The docstring's closed form for a constant factor, to float64 rounding.
    k = np.arange(STEPS)
    loop = _values(gx.multiplicative_schedule(LR, factor_fn=lambda j: 0.98), k)
    closed = _values(gx.exponential_decay(LR, 1, 0.98), k)
    np.testing.assert_allclose(loop, closed, rtol=1e-13)


def test_multiplicative_schedule_is_not_off_by_one(x64):
    # f(k) enters at count k (the value after k steps), not at count k - 1 or k + 1.
    factor = lambda j: 1.0 + j  # noqa: E731
    sched = gx.multiplicative_schedule(1.0, factor_fn=factor)
    np.testing.assert_array_equal(_values(sched, np.arange(6)), [1, 2, 6, 24, 120, 720])


def test_multiplicative_schedule_runs_its_loop_past_one_block_and_for_any_shape():
    # Counts on either side of the 128-factor blocks, as a 2-d array, a scalar, jitted, and
    # traced inside an optimizer's update (a count that grows).
    sched = gx.multiplicative_schedule(2.0, factor_fn=lambda j: jnp.where(j % 64 == 0, 0.5, 1.0))
    counts = np.asarray([[0, 63, 64, 127], [128, 129, 256, 1000]])
    expected = 2.0 * 0.5 ** (counts // 64)
    np.testing.assert_array_equal(np.asarray(sched(counts)), expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(sched)(jnp.asarray(counts))), expected)
    assert float(sched(1000)) == 2.0 * 0.5**15
    opt = gx.sgd(sched)
    state = opt.init({"w": jnp.zeros([])})
    step = jax.jit(opt.update)
    moves = []
    for _ in range(130):
        updates, state = step({"w": jnp.ones([])}, state)
        moves.append(-float(updates["w"]))
    np.testing.assert_array_equal(moves, 2.0 * 0.5 ** (np.arange(130) // 64))


# ----------------------------------------------------------------------------------------------
# CosineAnnealingLR, climbing back after T_max.

COSINE = [
    (50, 0.0),
    (50, 1e-3),
    (7, 0.02),
    (1, 0.01),  # the period is 2: lr, eta_min, lr, ...
    (STEPS, 0.0),  # never past T_max (the existing cosine_decay_schedule's range)
    (120, 0.5),  # eta_min above the base lr: a cosine that rises first
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("t_max", "eta_min"), COSINE, ids=[f"T{t}-eta{e}" for t, e in COSINE])
def test_cosine_annealing_schedule_matches_cosine_annealing_lr(t_max, eta_min, dtype):
    expected = _compare(
        lambda S, opt: S.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min),
        lambda: gx.cosine_annealing_schedule(LR, t_max=t_max, eta_min=eta_min),
        dtype,
        steps=STEPS + 1,
    )
    if t_max < STEPS:  # it came back up: the part Optax's cosine_decay_schedule does not do
        assert np.isclose(expected[2 * t_max], LR)


def test_cosine_annealing_schedule_differs_from_cosine_decay_after_t_max(x64):
    k = np.arange(200)
    torch_like = _values(gx.cosine_annealing_schedule(LR, t_max=50), k)
    optax_like = _values(gx.cosine_decay_schedule(LR, 50), k)
    np.testing.assert_allclose(torch_like[:51], optax_like[:51], rtol=1e-12, atol=1e-18)
    assert np.all(optax_like[51:] == 0) and np.all(torch_like[51:100] > 0)


# ----------------------------------------------------------------------------------------------
# swa_utils.SWALR.

SWALR = [
    dict(swa_lr=0.02, anneal_epochs=10, anneal_strategy="cos"),  # torch's defaults but swa_lr
    dict(swa_lr=0.005, anneal_epochs=37, anneal_strategy="linear"),
    dict(swa_lr=0.3, anneal_epochs=25, anneal_strategy="cos"),  # annealing up
    dict(swa_lr=0.05, anneal_epochs=1, anneal_strategy="cos"),
    dict(swa_lr=0.05, anneal_epochs=0, anneal_strategy="linear"),  # swa_lr from the start
    dict(swa_lr=0.01, anneal_epochs=250, anneal_strategy="cos"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kwargs", SWALR, ids=[f"{s['anneal_strategy']}-{s['anneal_epochs']}" for s in SWALR]
)
def test_swalr_schedule_matches_swalr(kwargs, dtype):
    expected = _compare(
        lambda S, opt: torch.optim.swa_utils.SWALR(opt, **kwargs),
        lambda: gx.swalr_schedule(
            LR,
            swa_lr=kwargs["swa_lr"],
            anneal_steps=kwargs["anneal_epochs"],
            anneal_strategy=kwargs["anneal_strategy"],
        ),
        dtype,
    )
    assert expected[-1] == kwargs["swa_lr"]


def test_swa_recipe_is_join_schedules(x64):
    """torch's recipe: one scheduler until ``swa_start``, then SWALR (built at the start) from
    the learning rate that scheduler left: ``join_schedules([s, swalr_schedule(s(swa_start),
    ...)], [swa_start])``, as ``swalr_schedule``'s docstring says."""
    swa_start, steps = 120, STEPS
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=LR)
    before = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=200)
    swa = torch.optim.swa_utils.SWALR(optimizer, swa_lr=0.01, anneal_epochs=30)
    expected = []
    for i in range(steps):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        (swa if i >= swa_start else before).step()
    first = gx.cosine_annealing_schedule(LR, t_max=200)
    then = gx.swalr_schedule(first(swa_start), swa_lr=0.01, anneal_steps=30)
    got = _values(gx.join_schedules([first, then], [swa_start]), np.arange(steps))
    _check(got, expected, "float64")
