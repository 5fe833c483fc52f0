"""RAdam, Adadelta, Rprop and ASGD reproduce ``torch.optim`` step for step, and their building
blocks in Optax's arithmetic reproduce ``optax.scale_by_*``.

The torch comparisons use the harness of ``tests/torch_harness.py``: float64 on both sides, a
tree of a (3, 4) matrix and a (4,) vector, 100 steps, the params compared after every step, for
random gradients and for ``g = a * w + b`` evaluated at each side's own params. The tolerance is
``rtol=1e-12, atol=1e-14`` (``RTOL64``, ``ATOL64``), justified in
``tests/test_torch_reference.py``: the two libraries evaluate the same formulas in another order
(here, for instance, ``p - lr * (wd * p + u)`` versus ``p * (1 - lr * wd) - lr * u``, and ASGD's
``p + (-(eta g + lambd eta p))`` versus ``p * (1 - lambd eta) - eta g``), a few ulps per step,
and 100 steps of that stay far below 1e-12 relative. A wrong formula (eps inside the root,
``>=`` for ``>``, a step count off by one, a missing clamp) is many orders of magnitude larger,
and each grid below makes sure its option is exercised (rectified and unrectified RAdam steps,
clipped Rprop steps, ASGD averaging that starts within the 100 steps).

The Optax comparisons feed both transformations the same gradients for 100 steps and compare
the updates (not only the params, which would dilute an error in the update by ``lr``) at every
step, with the same tolerance.
"""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import require_optax, require_torch
from torch_harness import (
    ATOL64,
    GRADIENTS,
    RTOL64,
    STEPS,
    assert_matches_torch,
    gradxform_runner,
    initial_params,
    torch_history,
)

import gradxform as gx

torch = require_torch()


# ----------------------------------------------------------------------------------------------
# gradxform's arguments -> torch's.


def _torch_optimizer(name, kwargs):
    """``params -> torch.optim`` optimizer with gradxform's hyperparameters ``kwargs``."""
    cls = {"radam": "RAdam", "adadelta": "Adadelta", "rprop": "Rprop", "asgd": "ASGD"}[name]
    torch_kwargs = {
        ("lr" if k == "learning_rate" else k): v for k, v in kwargs.items() if k not in ("b1", "b2")
    }
    if "b1" in kwargs or "b2" in kwargs:
        torch_kwargs["betas"] = (kwargs.get("b1", 0.9), kwargs.get("b2", 0.999))
    return lambda params: getattr(torch.optim, cls)(params, **torch_kwargs)


def _grid(name, fixed, **options):
    """One case per combination of ``options``; a dict value sets several arguments together."""
    cases = []
    for values in itertools.product(*options.values()):
        kwargs = dict(fixed)
        for key, value in zip(options, values, strict=True):
            kwargs.update(value if isinstance(value, dict) else {key: value})
        label = ",".join(f"{k}={v}" for k, v in kwargs.items())
        cases.append(pytest.param(name, kwargs, id=f"{name}[{label}]"))
    return cases


_BETAS = [{"b1": 0.9, "b2": 0.999, "eps": 1e-8}, {"b1": 0.8, "b2": 0.95, "eps": 1e-3}]

CASES = [
    # RAdam: both betas (b2 = 0.999 rectifies from step 6, b2 = 0.95 from step 6 too but with
    # a factor that saturates early), eps outside the root of the raw moment (1e-3 makes the
    # placement matter), coupled and decoupled decay.
    *_grid("radam", {"learning_rate": 0.01}, betas=_BETAS, weight_decay=[0.0, 0.1]),
    *_grid(
        "radam",
        {"learning_rate": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        betas=_BETAS,
    ),
    # Adadelta: lr multiplies the step; rho and eps change both averages.
    *_grid(
        "adadelta",
        {},
        averaging=[
            {"learning_rate": 1.0, "rho": 0.9, "eps": 1e-6},
            {"learning_rate": 0.5, "rho": 0.5, "eps": 1e-3},
        ],
        weight_decay=[0.0, 0.1],
    ),
    # Rprop: (0.3, 1.5) shrink and grow faster; step sizes (1e-3, 0.02) clip the initial 0.05
    # at the first step and bound every step from below (a run of flips reaches 1e-3 fast).
    *_grid(
        "rprop",
        {},
        learning_rate=[0.01, 0.05],
        etas=[(0.5, 1.2), (0.3, 1.5)],
        step_sizes=[(1e-6, 50.0), (1e-3, 0.02)],
    ),
    # ASGD: t0 = 10 starts the average at step 12, lambd = 0.05 makes the decay of the params
    # and of eta visible (eta_100 = 0.05 / 1.25^0.5), weight decay adds to the gradient.
    *_grid(
        "asgd",
        {},
        schedule=[
            {"learning_rate": 0.01, "lambd": 1e-4, "alpha": 0.75, "t0": 1e6},
            {"learning_rate": 0.05, "lambd": 0.05, "alpha": 0.5, "t0": 10.0},
        ],
        weight_decay=[0.0, 0.1],
    ),
    # maximize negates the gradient first, before the weight decay.
    *[
        pytest.param(name, {**kwargs, "maximize": True}, id=f"{name}[maximize]")
        for name, kwargs in [
            ("radam", {"learning_rate": 0.01, "weight_decay": 0.1}),
            ("radam", {"learning_rate": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
            ("adadelta", {"weight_decay": 0.1}),
            ("rprop", {"learning_rate": 0.05, "step_sizes": (1e-3, 0.02)}),
            ("asgd", {"learning_rate": 0.05, "lambd": 0.05, "t0": 10.0, "weight_decay": 0.1}),
        ]
    ],
    # Every default agrees with torch's, the learning rate included.
    *[pytest.param(name, {}, id=f"{name}[defaults]") for name in ("radam", "adadelta", "rprop")],
    pytest.param("asgd", {}, id="asgd[defaults]"),
]


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_matches_torch_float64(torch64, name, kwargs):
    assert_matches_torch(
        getattr(gx, name)(**kwargs), _torch_optimizer(name, kwargs), f"{name}({kwargs})"
    )


# ----------------------------------------------------------------------------------------------
# The grids exercise what they claim.


def _rho(b2, t):
    """RAdam's ``rho_t``, in NumPy float64, as torch computes it."""
    rho_inf = 2 / (1 - b2) - 1
    return rho_inf - 2 * t * b2**t / (1 - b2**t)


@pytest.mark.parametrize("b2", [0.999, 0.95])
def test_radam_cases_take_both_branches(b2):
    rho = np.array([_rho(b2, t) for t in range(1, STEPS + 1)])
    assert (rho <= 5).any() and (rho > 5).any()
    # No step sits at the threshold, where the order of operations could decide the branch:
    # the nearest, rho_5 = 4.996 for b2 = 0.999, is 4e-3 away, rounding errors ~1e-13.
    assert np.min(np.abs(rho - 5)) > 1e-3


def test_rprop_cases_clip_and_skip(torch64):
    """Rprop with step sizes (1e-3, 0.02) clamps steps at both ends, and skips steps."""
    params0 = initial_params()
    gradient = GRADIENTS["random"]()
    tensors = [torch.tensor(v, requires_grad=True) for v in params0.values()]
    opt = torch.optim.Rprop(tensors, lr=0.05, step_sizes=(1e-3, 0.02))
    seen = set()
    for t in range(STEPS):
        current = {k: v.detach().numpy().copy() for k, v in zip(params0, tensors, strict=True)}
        for v, g in zip(tensors, gradient(t, current).values(), strict=True):
            v.grad = torch.tensor(g)
        opt.step()
        for v in tensors:
            step = opt.state[v]["step_size"].numpy()
            seen |= {"max"} if np.any(step == 0.02) else set()
            seen |= {"min"} if np.any(step == 1e-3) else set()
            seen |= {"skip"} if np.any(opt.state[v]["prev"].numpy() == 0) else set()
    assert seen == {"max", "min", "skip"}


@pytest.fixture
def torch32():
    """float32 on both sides (JAX's default, and torch's default dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def test_radam_float32_follows_torch(torch32):
    """float32 params, 100 steps: within ``atol=1e-5`` of torch (params below 4.5).

    torch keeps RAdam's schedule (``rho_t``, ``r_t``, the bias corrections) in Python's
    float64 whatever the params' dtype; gradxform computes it in float32, with
    ``1 - b2^t = -expm1(t log b2)``, which keeps ``r_t`` within 6e-5 of its float64 value
    at t = 7 and closer later. Measured drift: 2.4e-7 (random gradients), 1.7e-6 (affine).
    ``1 - b2^t`` by subtraction in float32 (Optax's form) measured 5.0e-5 here.
    """
    kwargs = {"learning_rate": 0.01, "weight_decay": 0.1}
    run = gradxform_runner(gx.radam(**kwargs))
    params0 = initial_params(np.float32)
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient(np.float32)
        got = run(params0, gradient)
        want = torch_history(_torch_optimizer("radam", kwargs), params0, gradient)
        assert got[-1]["w"].dtype == np.float32
        chex.assert_trees_all_close(
            got, want, rtol=0.0, atol=1e-5, strict=True, custom_message=variant
        )


# ----------------------------------------------------------------------------------------------
# ASGD's averaged params against torch's state["ax"], at every step.


def _torch_asgd_averages(kwargs, params0, gradient):
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
    opt = _torch_optimizer("asgd", kwargs)(list(tensors.values()))
    averages = []
    for t in range(STEPS):
        current = {k: v.detach().numpy().copy() for k, v in tensors.items()}
        for k, g in gradient(t, current).items():
            tensors[k].grad = torch.tensor(g)
        opt.step()
        averages.append({k: opt.state[v]["ax"].numpy().copy() for k, v in tensors.items()})
    return averages


@pytest.mark.parametrize(
    "kwargs",
    [
        {"learning_rate": 0.05, "lambd": 0.05, "alpha": 0.5, "t0": 10.0, "weight_decay": 0.1},
        {"learning_rate": 0.02, "t0": 0.0, "maximize": True},
        {"learning_rate": 0.02, "t0": 2.5},  # a fractional t0: weights 1 / (t - 2.5)
    ],
    ids=["t0=10", "t0=0,maximize", "t0=2.5"],
)
def test_asgd_averaged_params_match_torch_ax(torch64, kwargs):
    opt = gx.asgd(**kwargs)
    step = jax.jit(lambda p, s, g: opt.update(g, s, p))
    params0 = initial_params()
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient()
        params = {k: jnp.asarray(v) for k, v in params0.items()}
        state = opt.init(params)
        got = []
        for t in range(STEPS):
            updates, state = step(params, state, gradient(t, jax.tree.map(np.asarray, params)))
            params = gx.apply_updates(params, updates)
            got.append(jax.tree.map(np.asarray, gx.asgd_averaged_params(state)))
        want = _torch_asgd_averages(kwargs, params0, gradient)
        chex.assert_trees_all_close(
            got, want, rtol=RTOL64, atol=ATOL64, strict=True, custom_message=variant
        )
        # The average is not the params: it lags them once averaging has started.
        assert not np.allclose(want[-1]["w"], np.asarray(params["w"]), rtol=1e-3)


# ----------------------------------------------------------------------------------------------
# Complex params: torch sees each as two independent reals (view_as_real).

_COMPLEX_CASES = [
    ("radam", {"learning_rate": 0.01, "weight_decay": 0.1}),
    ("radam", {"learning_rate": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("adadelta", {"learning_rate": 1.0, "weight_decay": 0.1}),
    ("rprop", {"learning_rate": 0.05, "step_sizes": (1e-3, 0.02)}),
    ("asgd", {"learning_rate": 0.05, "lambd": 0.05, "t0": 5.0, "weight_decay": 0.1}),
]


@pytest.mark.parametrize(
    ("name", "kwargs"), _COMPLEX_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(_COMPLEX_CASES)]
)
def test_complex_params_follow_torch(torch64, name, kwargs):
    rng = np.random.default_rng(9)

    def cplx(*shape):
        return rng.normal(size=shape) + 1j * rng.normal(size=shape)

    steps = 30
    params0 = {"z": cplx(3, 2), "r": rng.normal(size=3)}  # a complex and a real leaf
    grads = [{"z": cplx(3, 2), "r": rng.normal(size=3)} for _ in range(steps)]
    opt = getattr(gx, name)(**kwargs)
    got = gradxform_runner(opt)(params0, lambda t, p: grads[t], steps=steps)
    make_torch = _torch_optimizer(name, kwargs)
    want = torch_history(make_torch, params0, lambda t, p: grads[t], steps=steps)
    chex.assert_trees_all_close(got, want, rtol=RTOL64, atol=ATOL64, strict=True)
    assert got[-1]["z"].dtype == np.complex128
    if name == "asgd":  # and the average comes back complex, as torch's ax
        state = opt.init({k: jnp.asarray(v) for k, v in params0.items()})
        for t in range(steps):
            params = {k: jnp.asarray(v) for k, v in (got[t - 1] if t else params0).items()}
            _, state = opt.update(jax.tree.map(jnp.asarray, grads[t]), state, params)
        tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
        torch_opt = make_torch(list(tensors.values()))
        for t in range(steps):
            for k, g in grads[t].items():
                tensors[k].grad = torch.tensor(g)
            torch_opt.step()
        ax = gx.asgd_averaged_params(state)
        assert ax["z"].dtype == jnp.complex128
        for k, v in tensors.items():
            np.testing.assert_allclose(ax[k], torch_opt.state[v]["ax"].numpy(), RTOL64, ATOL64)


# ----------------------------------------------------------------------------------------------
# The building blocks in Optax's arithmetic against Optax.


def _update_histories(ours, theirs, gradient, lr=0.01):
    """Both transformations on the same gradients for ``STEPS`` steps, each side descending
    with ``p <- p - lr * u`` on its own params (so the affine gradients feed back); returns
    each side's updates at every step and Optax's states."""
    params0 = initial_params()
    histories = []
    for opt in (ours, theirs):
        update = jax.jit(opt.update)
        params = {k: jnp.asarray(v) for k, v in params0.items()}
        state = opt.init(params)
        updates_seen, states_seen = [], []
        for t in range(STEPS):
            grads = gradient(t, jax.tree.map(np.asarray, params))
            updates, state = update(jax.tree.map(jnp.asarray, grads), state, params)
            params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
            updates_seen.append(jax.tree.map(np.asarray, updates))
            states_seen.append(jax.tree.map(np.asarray, state))
        histories.append((updates_seen, states_seen))
    return histories


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"b1": 0.8, "b2": 0.95, "eps": 1e-3, "eps_root": 1e-4, "threshold": 6.0},
        {"b1": 0.8, "b2": 0.95, "eps": 1e-3, "nesterov": True},
    ],
    ids=["defaults", "eps_root,threshold", "nesterov"],
)
def test_scale_by_radam_optax_numerics_match_optax(x64, kwargs):
    """``rtol=1e-11``, not 1e-12: Optax computes ``1 - b2^t`` by subtraction, whose rounding of
    ``b2^t`` (1.1e-16) is 1.6e-14 of ``1 - b2^t = 0.007`` at ``t = 7`` (b2 = 0.999), where
    gradxform takes ``-expm1(t log b2)`` (accurate, which float32 needs: see
    ``test_radam_float32_follows_torch``). ``rho_t = 1999 - 1992`` multiplies that by ~300,
    and ``r_t`` moves by 0.29 of ``rho_t``'s relative change there: ~1e-12 of the update.
    Measured at most 2.9e-12 relative (step 7 of the defaults; 4e-14 for b2 = 0.95, where
    rho_inf is 39); a misplaced eps or a wrong threshold moves the update by 1e-3 or more.
    """
    optax = require_optax()
    ours = gx.scale_by_radam(**kwargs, numerics="optax")
    theirs = optax.scale_by_radam(**kwargs)
    for variant, make_gradient in GRADIENTS.items():
        (got, _), (want, _) = _update_histories(ours, theirs, make_gradient())
        chex.assert_trees_all_close(
            got, want, rtol=1e-11, atol=ATOL64, strict=True, custom_message=variant
        )
    # torch's arithmetic is another: eps on the raw moment, rho_t > threshold.
    if kwargs.get("eps"):
        (torch_form, _), _ = _update_histories(
            gx.scale_by_radam(**kwargs), theirs, GRADIENTS["random"]()
        )
        assert not np.allclose(torch_form[-1]["w"], want[-1]["w"], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{}, {"rho": 0.5, "eps": 1e-3}, {"rho": 1.0}], ids=["defaults", "rho,eps", "rho=1"]
)
def test_scale_by_adadelta_matches_optax(x64, kwargs):
    optax = require_optax()
    for variant, make_gradient in GRADIENTS.items():
        (got, _), (want, _) = _update_histories(
            gx.scale_by_adadelta(**kwargs), optax.scale_by_adadelta(**kwargs), make_gradient()
        )
        chex.assert_trees_all_close(
            got, want, rtol=RTOL64, atol=ATOL64, strict=True, custom_message=variant
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"learning_rate": 0.01},
        # An initial step above max_step_size: Optax keeps it until the first sign product is
        # non-zero, torch clips it at once.
        {"learning_rate": 0.1, "eta_minus": 0.3, "eta_plus": 1.5, "max_step_size": 0.05},
        {"learning_rate": 0.05, "min_step_size": 1e-3, "max_step_size": 0.02},
    ],
    ids=["defaults", "lr>max", "clipped"],
)
def test_scale_by_rprop_optax_numerics_match_optax(x64, kwargs):
    """Our update is the one Optax's state holds (``prev_updates``), with the same step sizes;
    Optax 0.2.8 returns it one step late, masked where the next sign flips."""
    optax = require_optax()
    ours = gx.scale_by_rprop(**kwargs, numerics="optax")
    theirs = optax.scale_by_rprop(**kwargs)
    params0 = initial_params()
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient()
        # lr = 0 in the descent: both sides see the same gradients, at params0, so that Optax's
        # late updates do not make the affine gradients drift apart.
        (got, our_states), (emitted, states) = _update_histories(ours, theirs, gradient, lr=0.0)
        chex.assert_trees_all_equal([s.prev_updates for s in states], got, strict=True)
        chex.assert_trees_all_close(
            [s.step_sizes for s in our_states],
            [s.step_sizes for s in states],
            rtol=RTOL64,
            atol=0,
            strict=True,
            custom_message=variant,
        )
        # Optax's emitted update: the previous one, 0 where this gradient's sign flips against
        # it (and all 0 at the first step).
        late = [jax.tree.map(np.zeros_like, got[0])]
        for t in range(1, STEPS):
            g = gradient(t, params0)
            late.append(jax.tree.map(lambda u, g: np.where(g * u < 0, 0.0, u), got[t - 1], g))
        chex.assert_trees_all_equal(emitted, late, custom_message=variant)
    # torch's arithmetic is another where the initial step is outside the clipping range.
    if kwargs["learning_rate"] > kwargs.get("max_step_size", 50.0):
        (torch_form, _), (optax_form, _) = _update_histories(
            gx.scale_by_rprop(**kwargs), ours, GRADIENTS["random"](), lr=0.0
        )
        assert not np.allclose(torch_form[0]["w"], optax_form[0]["w"])
