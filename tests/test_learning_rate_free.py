"""Prodigy and D-Adaptation's AdamW against their authors' code (``prodigyopt.Prodigy``,
``dadaptation.DAdaptAdam(decouple=True)``) and against Optax's contrib versions.

One problem for every case: three leaves of different shapes, float64, the gradient
``c * (x - target) + noise_t`` (a function of the params, computed with the same float64
operations on both sides), 100 steps, the params compared after every step. Each configuration
of static options is one jitted ``scan``, vmapped over the cases' numeric hyperparameters
(injected as arrays, so the general program runs), so the file compiles a handful of programs.
The learning rate is ``lr0 + (1 - lr0) t / warmup`` for ``t < warmup``, then 1 (``warmup = 0``:
constant 1); torch gets the same number in ``group["lr"]`` before each step.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import require_optax

import gradxform as gx

STEPS = 100
SHAPES = {"b": (3,), "s": (), "w": (4, 3)}  # sorted: JAX's leaf order, and torch's param order
_RNG = np.random.default_rng(0)
START = {k: _RNG.normal(size=s) for k, s in SHAPES.items()}
TARGET = {k: _RNG.normal(size=s) for k, s in SHAPES.items()}
CURVATURE = {k: _RNG.uniform(0.5, 2.0, size=s) for k, s in SHAPES.items()}
NOISE = {k: 0.1 * _RNG.normal(size=(STEPS, *s)) for k, s in SHAPES.items()}

SCHEDULE = {"lr0": 0.0, "warmup": 0.0}
PRODIGY = {
    "b1": 0.9,
    "b2": 0.999,
    "beta3": math.sqrt(0.999),  # the reference's None
    "d0": 1e-6,
    "d_coef": 1.0,
    "growth_rate": math.inf,
    "weight_decay": 0.0,
    "eps": 1e-8,
}
DADAPT = {
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "d0": 1e-6,
    "growth_rate": math.inf,
}


def _learning_rate(numbers, t):
    lr0, warmup = numbers["lr0"], numbers["warmup"]
    return jnp.where(t < warmup, lr0 + (1 - lr0) * t / warmup, 1.0)


def _torch_learning_rate(numbers, t):
    lr0, warmup = numbers["lr0"], numbers["warmup"]
    return lr0 + (1 - lr0) * t / warmup if t < warmup else 1.0


def _run_jax(make, cases):
    """Params after each step, ``{leaf: [case, step, ...]}``: ``make(schedule, numbers)`` builds
    the optimizer from one case's numbers (arrays, inside the vmapped scan)."""
    batch = {k: jnp.asarray([c[k] for c in cases]) for k in cases[0]}

    def run(numbers):
        opt = make(lambda t: _learning_rate(numbers, t), numbers)

        def step(carry, noise):
            x, state = carry
            g = {k: CURVATURE[k] * (x[k] - TARGET[k]) + noise[k] for k in SHAPES}
            updates, state = opt.update(g, state, x)
            x = gx.apply_updates(x, updates)
            return (x, state), x

        x0 = {k: jnp.asarray(v) for k, v in START.items()}
        return jax.lax.scan(step, (x0, opt.init(x0)), NOISE)[1]

    return jax.device_get(jax.jit(jax.vmap(run))(batch))


def _run_torch(torch, make, numbers):
    params = [torch.tensor(START[k], requires_grad=True) for k in SHAPES]
    opt = make(params)
    history = {k: [] for k in SHAPES}
    for t in range(STEPS):
        for k, p in zip(SHAPES, params, strict=True):
            with torch.no_grad():
                p.grad = torch.tensor(CURVATURE[k]) * (p - torch.tensor(TARGET[k]))
                p.grad += torch.tensor(NOISE[k][t])
        opt.param_groups[0]["lr"] = _torch_learning_rate(numbers, t)
        opt.step()
        for k, p in zip(SHAPES, params, strict=True):
            history[k].append(p.detach().numpy().copy())
    return {k: np.stack(v) for k, v in history.items()}


def deviation(ours, reference):
    """The largest ``|ours - reference|`` over the steps, each relative to the reference leaf's
    largest magnitude at that step (a param crossing 0 has no relative error of its own)."""
    worst = 0.0
    for k in SHAPES:
        scale = np.max(np.abs(reference[k]).reshape(STEPS, -1), axis=1)
        error = np.max(np.abs(ours[k] - reference[k]).reshape(STEPS, -1), axis=1)
        worst = max(worst, float(np.max(error / scale)))
    return worst


def _assert_every_step_close(ours, reference, rtol, what):
    error = deviation(ours, reference)
    assert error <= rtol, f"{what}: differs from the reference by {error:.3g} > {rtol:g}"
    moved = max(float(np.max(np.abs(reference[k][-1] - START[k]))) for k in SHAPES)
    assert moved > 0.5, f"{what}: the params barely moved ({moved}); the comparison is empty"


# (id, static options, numbers that differ from the defaults, rtol against the reference[, rtol
# against Optax's contrib version]), each rtol relative to the leaf's largest magnitude at each
# step (see ``deviation``). Measured by rerunning the references (float64, these
# 100 steps): gradxform differs from them by at most 3.1e-13 (Prodigy, growth_rate) and 1.9e-14
# (D-Adaptation), and from Optax by at most 6.3e-15, where the order of the tree's sums of dot
# products and norms differs. The references themselves, rerun from params moved by one ulp,
# move by up to 1.3e-12 (Prodigy, growth_rate) and 5.7e-14 (D-Adaptation); Optax's up to
# 3.2e-15. Hence rtol 1e-12 everywhere but Prodigy with weight decay: the reference rounds x
# twice per step (decay, then the step) where gradxform adds one update, and Prodigy's estimate
# <g, x_0 - x> subtracts params that differ by ~d0 in its first steps, which amplifies a
# last-bit difference in the params ~1e6-fold. Measured: gradxform 1.6e-10 and 2.0e-11 from the
# reference (weight_decay, bias_correction_safeguard_decay); the reference itself, with each
# param moved by a random ulp after every step, 1.3e-10 and 6.7e-11 (7.2e-8 for growth_rate).
# rtol 1e-9 for those two.
# Optax's versions never skip a step: a learning rate of 0 gives them d = 0 / 0 = NaN.
DECAY_FROM_TENTH = {"lr0": 0.1, "warmup": 10.0, "weight_decay": 0.1}
BOTH = {"use_bias_correction": True, "safeguard_warmup": True}
PRODIGY_CASES = [
    ("defaults", {}, {}, 1e-12),
    ("weight_decay", {}, {"weight_decay": 0.1}, 1e-9),
    ("growth_rate", {}, {"growth_rate": 1.5}, 1e-12),  # limits d for the first ~30 steps
    ("beta3", {}, {"beta3": 0.9}, 1e-12),
    ("d_coef", {}, {"d_coef": 0.5}, 1e-12),
    ("b1_zero", {}, {"b1": 0.0}, 1e-12),  # no first moment: the step takes the new d
    ("warmup", {}, {"warmup": 10.0}, 1e-12),  # lr = 0 at step 0: the reference skips it
    # The two options together (one program fewer to compile); the warm-up's skipped step
    # must not count in the bias correction's k.
    ("bias_correction_safeguard", BOTH, {}, 1e-12, 1e-12),
    ("bias_correction_safeguard_warmup", BOTH, {"warmup": 10.0}, 1e-12),
    ("bias_correction_safeguard_decay", BOTH, DECAY_FROM_TENTH, 1e-9, 1e-12),
]
DADAPT_CASES = [
    ("defaults", {}, {}, 1e-12),
    ("weight_decay", {}, {"weight_decay": 0.1}, 1e-12),
    ("growth_rate", {}, {"growth_rate": 1.5}, 1e-12),
    ("warmup", {}, {"warmup": 10.0}, 1e-12),
    ("bias_correction", {"use_bias_correction": True}, {}, 1e-12, 1e-12),
    ("bias_correction_warmup", {"use_bias_correction": True}, {"warmup": 10.0}, 1e-12),
    ("bias_correction_decay", {"use_bias_correction": True}, DECAY_FROM_TENTH, 1e-12, 1e-12),
]


def _torch_prodigy(prodigyopt, flags, n):
    def make(params):
        return prodigyopt.Prodigy(
            params,
            lr=1.0,
            betas=(n["b1"], n["b2"]),
            beta3=n["beta3"],
            d0=n["d0"],
            d_coef=n["d_coef"],
            growth_rate=n["growth_rate"],
            weight_decay=n["weight_decay"],
            eps=n["eps"],
            **flags,
        )

    return make


def _torch_dadapt(dadaptation, flags, n):
    def make(params):
        return dadaptation.DAdaptAdam(
            params,
            lr=1.0,
            betas=(n["b1"], n["b2"]),
            eps=n["eps"],
            weight_decay=n["weight_decay"],
            d0=n["d0"],
            growth_rate=n["growth_rate"],
            decouple=True,
            **flags,
        )

    return make


def _optax_prodigy(optax, flags, n):
    return lambda lr: optax.contrib.prodigy(
        lr,
        betas=(n["b1"], n["b2"]),
        beta3=n["beta3"],
        eps=n["eps"],
        estim_lr0=n["d0"],
        estim_lr_coef=n["d_coef"],
        weight_decay=n["weight_decay"],
        safeguard_warmup=flags["safeguard_warmup"],
    )


def _optax_dadapt(optax, flags, n):
    del flags
    return lambda lr: optax.contrib.dadapt_adamw(
        lr,
        betas=(n["b1"], n["b2"]),
        eps=n["eps"],
        estim_lr0=n["d0"],
        weight_decay=n["weight_decay"],
    )


OPTIMIZERS = {
    "prodigy": (gx.prodigy, PRODIGY_CASES, PRODIGY),
    "dadapt_adamw": (gx.dadapt_adamw, DADAPT_CASES, DADAPT),
}


def _groups(name):
    """``{static options: [(id, numbers, rtols)]}``, numbers completed with the defaults."""
    _, cases, defaults = OPTIMIZERS[name]
    groups = {}
    for case, flags, numbers, *rtols in cases:
        full = {**defaults, **SCHEDULE, **numbers}
        groups.setdefault(tuple(sorted(flags.items())), []).append((case, full, rtols))
    return groups


def _hyperparameters(numbers):
    return {k: v for k, v in numbers.items() if k not in SCHEDULE}


@functools.cache
def _ours(name, flags):
    """gradxform's params after each step for every case of ``name`` with these options, from
    one compiled program: ``{case: {leaf: [step, ...]}}``."""
    factory = OPTIMIZERS[name][0]
    group = _groups(name)[flags]
    history = _run_jax(
        lambda lr, n: factory(lr, **_hyperparameters(n), **dict(flags)), [n for _, n, _ in group]
    )
    return {case: {k: v[i] for k, v in history.items()} for i, (case, _, _) in enumerate(group)}


@pytest.mark.parametrize(
    ("name", "module"), [("prodigy", "prodigyopt"), ("dadapt_adamw", "dadaptation")]
)
def test_equals_the_authors_code(name, module, torch64, capsys):
    reference = pytest.importorskip(module, reason=f"{module} is in the `compare` extra")
    make_torch = {"prodigy": _torch_prodigy, "dadapt_adamw": _torch_dadapt}[name]
    for flags, group in _groups(name).items():
        ours = _ours(name, flags)
        for case, numbers, rtols in group:
            expected = _run_torch(torch64, make_torch(reference, dict(flags), numbers), numbers)
            _assert_every_step_close(ours[case], expected, rtols[0], f"{name} {case}")


@pytest.mark.parametrize("name", ["prodigy", "dadapt_adamw"])
def test_bias_correction_gives_optax_contrib(name, x64):
    optax = require_optax()
    make_optax = {"prodigy": _optax_prodigy, "dadapt_adamw": _optax_dadapt}[name]
    compared = 0
    for flags, group in _groups(name).items():
        group = [(case, n, rtols) for case, n, rtols in group if len(rtols) > 1]
        if not group:
            continue
        options = dict(flags)
        theirs = _run_jax(
            lambda lr, n, options=options: make_optax(optax, options, n)(lr),
            [n for _, n, _ in group],
        )
        ours = _ours(name, flags)
        for i, (case, _, rtols) in enumerate(group):
            mine = ours[case]
            _assert_every_step_close(mine, {k: v[i] for k, v in theirs.items()}, rtols[1], case)
            compared += 1
    assert compared >= 2


@pytest.mark.parametrize("name", ["prodigy", "dadapt_adamw"])
def test_state_can_be_donated(name):
    # Prodigy's init once put one array in both `d` and `d_max`, and a jitted step that donates
    # the state then failed ("donate the same buffer twice").
    optimizer = getattr(gx, name)(1.0)
    params = {"w": jnp.ones(3)}
    state = optimizer.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state):
        updates, state = optimizer.update(jax.tree.map(jnp.ones_like, params), state, params)
        return gx.apply_updates(params, updates), state

    for _ in range(2):
        params, state = step(params, state)
    assert np.all(np.isfinite(params["w"]))
