"""Every optimizer reproduces ``torch.optim`` step for step.

Both libraries are fed the same gradients, over a tree with several leaves (a (3, 4) matrix and
a (4,) vector), and the parameters are compared after every one of 100 steps. Two gradient
sequences are used: random gradients drawn once with NumPy, and ``g = a * w + b`` computed in
NumPy from each side's own current parameters (so errors would feed back into the trajectory).

Tolerance in float64: ``rtol=1e-12`` and ``atol=1e-14``. The two libraries evaluate the same
formulas in a different order (``lerp`` versus ``b * m + (1 - b) * g``, ``sqrt(v) / sqrt(c)``
versus ``sqrt(v / c)``, ``p - lr * wd * p - lr * u`` versus ``p - lr * (u + wd * p)``, ...),
which costs a few ulps per step; 100 steps of that stay far below 1e-12 relative. The ``atol``
is for elements that pass near zero: ``p + u`` with O(0.1) operands has an absolute rounding
error at the operands' scale (~1e-17), which is a large *relative* error of a result of, say,
4.5e-5 (this happens, e.g. for Nesterov SGD). 1e-14 is ~45 ulps of 1.0, 20x the largest such
excess measured over all cases, and it only matters for elements below 1e-2 in magnitude. Any
real difference of formula (a missing bias correction, an off-by-one step count, eps inside
the root instead of outside) is many orders of magnitude larger than either.
"""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.references import require_torch

torch = require_torch()

STEPS = 100
SHAPES = {"w": (3, 4), "b": (4,)}
RTOL64 = 1e-12
ATOL64 = 1e-14


@pytest.fixture
def torch32():
    """float32 on both sides (JAX's default, and torch's default dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


# ----------------------------------------------------------------------------------------------
# The two runners and the comparison.


def _initial_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}


def _random_gradient(dtype=np.float64, seed=1, steps=STEPS):
    """The same precomputed gradients, whatever the params."""
    rng = np.random.default_rng(seed)
    grads = [{k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()} for _ in range(steps)]
    return lambda t, params: grads[t]


def _affine_gradient(dtype=np.float64, seed=2):
    """``g = a * w + b`` (a > 0: the gradient of a convex quadratic), evaluated in NumPy."""
    rng = np.random.default_rng(seed)
    a = {k: rng.uniform(0.5, 1.5, size=s).astype(dtype) for k, s in SHAPES.items()}
    b = {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
    return lambda t, params: {k: a[k] * params[k] + b[k] for k in SHAPES}


GRADIENTS = {"random": _random_gradient, "affine": _affine_gradient}


def _gradxform_runner(opt):
    """A function ``(params0, gradient, steps) -> params after every step``, jitted once."""

    @jax.jit
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    def run(params0, gradient, steps=STEPS):
        params = {k: jnp.asarray(v) for k, v in params0.items()}
        state = opt.init(params)
        history = []
        for t in range(steps):
            current = {k: np.asarray(v) for k, v in params.items()}
            params, state = step(params, state, gradient(t, current))
            history.append({k: np.asarray(v) for k, v in params.items()})
        return history

    return run


def _torch_history(
    make_optimizer, params0, gradient, steps=STEPS, make_scheduler=None, clip_norm=None
):
    """Runs a torch optimizer on the same gradients; returns the params after every step."""
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
    optimizer = make_optimizer(list(tensors.values()))
    scheduler = None if make_scheduler is None else make_scheduler(optimizer)
    history = []
    for t in range(steps):
        current = {k: v.detach().numpy().copy() for k, v in tensors.items()}
        grads = gradient(t, current)
        for k, v in tensors.items():
            v.grad = torch.tensor(grads[k])
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(tensors.values()), clip_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        history.append({k: v.detach().numpy().copy() for k, v in tensors.items()})
    return history


# ----------------------------------------------------------------------------------------------
# The mapping table: gradxform's names -> torch's.

_TORCH_CLASS = {
    "sgd": "SGD",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
    "amsgrad": "Adam",
    "adamax": "Adamax",
    "nadam": "NAdam",
}
_TORCH_NAME = {"learning_rate": "lr", "decay": "alpha"}


def _torch_optimizer(name, kwargs):
    """``params -> torch.optim`` optimizer with the hyperparameters ``kwargs`` of gradxform's."""
    torch_kwargs = {_TORCH_NAME.get(k, k): v for k, v in kwargs.items() if k not in ("b1", "b2")}
    if "b1" in kwargs or "b2" in kwargs:
        torch_kwargs["betas"] = (kwargs["b1"], kwargs["b2"])
    if name == "amsgrad":
        torch_kwargs["amsgrad"] = True
    cls = getattr(torch.optim, _TORCH_CLASS[name])
    return lambda params: cls(params, **torch_kwargs)


def _grid(name, fixed, valid=lambda kw: True, **options):
    """Cases for every combination of ``options`` (plus ``fixed``) that ``valid`` accepts."""
    cases = []
    for values in itertools.product(*options.values()):
        kwargs = dict(fixed)
        for key, value in zip(options, values, strict=True):
            kwargs.update(value if isinstance(value, dict) else {key: value})
        if valid(kwargs):
            label = ",".join(f"{k}={v}" for k, v in kwargs.items())
            cases.append(pytest.param(name, kwargs, id=f"{name}[{label}]"))
    return cases


# Betas paired with eps: torch's defaults, and non-default ones.
_BETAS = [
    {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
    {"b1": 0.8, "b2": 0.95, "eps": 1e-3},
]

# Every option of every optimizer takes a non-default value somewhere, and the interactions
# that matter are crossed: momentum x nesterov x dampening x weight decay (SGD), momentum x
# centered x weight decay (RMSprop), amsgrad x weight decay (Adam, AdamW), coupled x decoupled
# weight decay x momentum_decay (NAdam). Options that only change a constant are paired up to
# keep the number of compilations (the file's cost) down.
CASES = [
    *_grid(
        "sgd",
        {"learning_rate": 0.05},
        lambda kw: not kw["nesterov"] or (kw["momentum"] > 0 and kw["dampening"] == 0),
        momentum=[0.0, 0.9],
        nesterov=[False, True],
        dampening=[0.0, 0.3],
        weight_decay=[0.0, 0.1],
    ),
    *_grid(
        "adagrad",
        {"learning_rate": 0.1},
        lr_decay=[0.0, 0.05],
        weight_decay=[0.0, 0.1],
        start=[
            {"initial_accumulator_value": 0.0, "eps": 1e-10},
            {"initial_accumulator_value": 0.5, "eps": 1e-2},
        ],
    ),
    *_grid(
        "rmsprop",
        {"learning_rate": 0.01},
        averaging=[
            {"decay": 0.99, "eps": 1e-8, "weight_decay": 0.0},
            {"decay": 0.9, "eps": 1e-3, "weight_decay": 0.1},
        ],
        momentum=[0.0, 0.9],
        centered=[False, True],
    ),
    *_grid(
        "adam",
        {"learning_rate": 0.01},
        betas=_BETAS,
        weight_decay=[0.0, 0.1],
        amsgrad=[False, True],
    ),
    # b1 = 0: no averaging of the first moment, and a bias correction of 1 - 0^t = 1.
    *_grid("adam", {"learning_rate": 0.01, "b1": 0.0, "b2": 0.99}),
    *_grid(
        "adamw",
        {"learning_rate": 0.01, "weight_decay": 0.1},
        betas=_BETAS,
        amsgrad=[False, True],
    ),
    *_grid("adamw", {"learning_rate": 0.01, "weight_decay": 0.0}),
    *_grid("amsgrad", {"learning_rate": 0.01, **_BETAS[1], "weight_decay": 0.1}),
    *_grid("adamax", {"learning_rate": 0.02}, betas=_BETAS, weight_decay=[0.0, 0.1]),
    *_grid(
        "nadam",
        {"learning_rate": 0.02, **_BETAS[1]},
        momentum_decay=[4e-3, 0.05],
        decay=[
            {"weight_decay": 0.0},
            {"weight_decay": 0.1, "decoupled_weight_decay": False},
            {"weight_decay": 0.1, "decoupled_weight_decay": True},
        ],
    ),
    # Every default agrees with torch's (the learning rate included).
    *[
        pytest.param(name, {}, id=f"{name}[defaults]")
        for name in ["adagrad", "rmsprop", "adam", "adamw", "amsgrad", "adamax", "nadam"]
    ],
]


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_matches_torch_float64(torch64, name, kwargs):
    run = _gradxform_runner(getattr(gx, name)(**kwargs))
    make_torch = _torch_optimizer(name, kwargs)
    params0 = _initial_params()
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient()
        got = run(params0, gradient)
        want = _torch_history(make_torch, params0, gradient)
        chex.assert_trees_all_close(
            got,
            want,
            rtol=RTOL64,
            atol=ATOL64,
            strict=True,
            custom_message=f"{name}({kwargs}), {variant} gradients",
        )
        # The params really moved: a comparison of two unchanged trees would prove nothing.
        assert all(not np.allclose(want[-1][k], params0[k], rtol=1e-3) for k in SHAPES)


# ----------------------------------------------------------------------------------------------
# Learning-rate schedules.


def _inverse_time(k):
    """A factor of the step count that works for Python ints and traced int32 alike."""
    return 1.0 / (1.0 + 0.05 * k)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("sgd", {"learning_rate": 0.05, "momentum": 0.9}),
        ("adam", {"learning_rate": 0.01, "b1": 0.8, "b2": 0.95}),
        # Adagrad's own lr_decay composes with the schedule: lr(k) / (1 + k * lr_decay).
        ("adagrad", {"learning_rate": 0.1, "lr_decay": 0.05}),
    ],
)
def test_schedule_matches_lambda_lr(torch64, name, kwargs):
    """A schedule ``k -> lr * f(k)`` equals LambdaLR(f): both use f(0) for the first update.

    LambdaLR sets ``lr = base_lr * f(0)`` when constructed and moves to ``f(1)`` on the first
    ``scheduler.step()`` after ``optimizer.step()``; gradxform calls the schedule with the
    count of updates made so far, 0 for the first.
    """
    base = kwargs["learning_rate"]
    scheduled = dict(kwargs, learning_rate=lambda k: base * _inverse_time(k))
    run = _gradxform_runner(getattr(gx, name)(**scheduled))
    params0 = _initial_params()
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient()
        got = run(params0, gradient)
        want = _torch_history(
            _torch_optimizer(name, kwargs),
            params0,
            gradient,
            make_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, _inverse_time),
        )
        chex.assert_trees_all_close(
            got,
            want,
            rtol=RTOL64,
            atol=ATOL64,
            strict=True,
            custom_message=f"scheduled {name}, {variant}",
        )


def test_schedule_is_not_off_by_one(torch64):
    """The comparison above can tell ``f(k)`` from ``f(k + 1)``: shifting the schedule fails."""
    shifted = gx.sgd(lambda k: 0.05 * _inverse_time(k + 1), momentum=0.9)
    gradient = _random_gradient()
    params0 = _initial_params()
    got = _gradxform_runner(shifted)(params0, gradient, steps=3)
    want = _torch_history(
        _torch_optimizer("sgd", {"learning_rate": 0.05, "momentum": 0.9}),
        params0,
        gradient,
        steps=3,
        make_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, _inverse_time),
    )
    with pytest.raises(AssertionError):
        chex.assert_trees_all_close(got, want, rtol=RTOL64, atol=ATOL64, strict=True)


# ----------------------------------------------------------------------------------------------
# Global-norm clipping.


@pytest.mark.parametrize(("max_norm", "clips"), [(0.5, True), (100.0, False)])
def test_clip_by_global_norm_matches_clip_grad_norm(torch64, max_norm, clips):
    """``chain(clip_by_global_norm, sgd)`` equals ``clip_grad_norm_`` followed by SGD."""
    opt = gx.chain(gx.clip_by_global_norm(max_norm), gx.sgd(0.05, momentum=0.9))
    run = _gradxform_runner(opt)
    params0 = _initial_params()
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient()
        got = run(params0, gradient)
        want = _torch_history(
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
            params0,
            gradient,
            clip_norm=max_norm,
        )
        chex.assert_trees_all_close(
            got,
            want,
            rtol=RTOL64,
            atol=ATOL64,
            strict=True,
            custom_message=f"clipped sgd, {variant}",
        )
        # The regime is the intended one (norms recomputed in NumPy): random gradients are
        # clipped at every step or at none; the affine ones shrink as the params converge, so
        # with the small bound the trajectory crosses from clipped to unclipped.
        previous = [params0, *want[:-1]]
        clipped = [
            np.sqrt(sum(np.sum(g**2) for g in gradient(t, p).values())) > max_norm
            for t, p in enumerate(previous)
        ]
        if variant == "random":
            assert all(c == clips for c in clipped), clipped
        else:
            assert any(clipped) == clips and not all(clipped), clipped


# ----------------------------------------------------------------------------------------------
# float32.

# Cases run in float32 on both sides, 100 steps, random and affine gradients.
FLOAT32_CASES = [
    ("sgd", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("adagrad", {"learning_rate": 0.1, "lr_decay": 0.05, "weight_decay": 0.1}),
    ("rmsprop", {"learning_rate": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1}),
    ("adam", {"learning_rate": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    ("adamw", {"learning_rate": 0.01, "weight_decay": 0.1}),
    ("nadam", {"learning_rate": 0.02, "weight_decay": 0.1, "decoupled_weight_decay": True}),
]


@pytest.mark.parametrize(("name", "kwargs"), FLOAT32_CASES, ids=[n for n, _ in FLOAT32_CASES])
def test_matches_torch_float32(torch32, name, kwargs):
    """float32 trajectories agree to ``atol=5e-5`` (the params stay below 4.5 in magnitude).

    Both sides compute in float32, but in a different order, and torch rounds the params up to
    three times per step (NAdam: ``mul_`` for the decay and two ``addcdiv_``) where gradxform
    rounds once; torch also keeps the bias corrections and NAdam's momentum schedule in Python
    float64. Each rounding of a param of magnitude <= 4.5 costs <= 2^-22 ~ 2.4e-7, so 100 steps
    of <= 2 extra roundings bound the drift by ~5e-5; measured drifts are 1e-7 (Adagrad) to 9e-6
    (NAdam). A wrong formula moves the params by O(lr) = 1e-2 within a few steps.
    """
    run = _gradxform_runner(getattr(gx, name)(**kwargs))
    make_torch = _torch_optimizer(name, kwargs)
    params0 = _initial_params(np.float32)
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient(np.float32)
        got = run(params0, gradient)
        want = _torch_history(make_torch, params0, gradient)
        assert got[-1]["w"].dtype == np.float32
        chex.assert_trees_all_close(
            got, want, rtol=0.0, atol=5e-5, strict=True, custom_message=f"float32 {name}, {variant}"
        )


# ----------------------------------------------------------------------------------------------
# A closed form.


def test_one_sgd_step_on_a_parabola(x64):
    """``w - lr * d/dw (w^2 / 2) = 1 - 0.1 * 1 = 0.9`` from ``w = 1``, ``lr = 0.1``."""
    opt = gx.sgd(0.1)
    params = jnp.asarray(1.0)
    grads = jax.grad(lambda w: w**2 / 2)(params)
    updates, _ = opt.update(grads, opt.init(params), params)
    new = gx.apply_updates(params, updates)
    assert new.dtype == jnp.float64
    # One rounding in -0.1 * 1 and one in 1 - 0.1: exact to double precision.
    np.testing.assert_allclose(float(new), 0.9, rtol=1e-15, atol=0)
