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
from references import require_torch
from torch_harness import (
    ATOL64,
    GRADIENTS,
    RTOL64,
    assert_matches_torch,
    gradxform_runner,
    initial_params,
    random_gradient,
    torch_history,
)

import gradxform as gx

torch = require_torch()


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
    # maximize=True negates the gradient first, before weight decay, in every optimizer.
    *[
        pytest.param(name, {**kwargs, "maximize": True}, id=f"{name}[maximize]")
        for name, kwargs in [
            ("sgd", {"learning_rate": 0.05, "momentum": 0.9, "weight_decay": 0.1}),
            ("adagrad", {"learning_rate": 0.1, "weight_decay": 0.1}),
            ("rmsprop", {"learning_rate": 0.01, "momentum": 0.9, "weight_decay": 0.1}),
            ("adam", {"learning_rate": 0.01, "weight_decay": 0.1}),
            ("adamw", {"learning_rate": 0.01, "weight_decay": 0.1}),
            ("amsgrad", {"learning_rate": 0.01, "weight_decay": 0.1}),
            ("adamax", {"learning_rate": 0.02, "weight_decay": 0.1}),
            ("nadam", {"learning_rate": 0.02, "weight_decay": 0.1}),
        ]
    ],
    # torch 2.13's Adam takes decoupled_weight_decay (then it is AdamW).
    *_grid(
        "adam",
        {"learning_rate": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        amsgrad=[False, True],
    ),
    # Every default agrees with torch's (the learning rate included).
    *[
        pytest.param(name, {}, id=f"{name}[defaults]")
        for name in ["adagrad", "rmsprop", "adam", "adamw", "amsgrad", "adamax", "nadam"]
    ],
]


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_matches_torch_float64(torch64, name, kwargs):
    assert_matches_torch(
        getattr(gx, name)(**kwargs), _torch_optimizer(name, kwargs), f"{name}({kwargs})"
    )


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
    run = gradxform_runner(getattr(gx, name)(**scheduled))
    params0 = initial_params()
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient()
        got = run(params0, gradient)
        want = torch_history(
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
    gradient = random_gradient()
    params0 = initial_params()
    got = gradxform_runner(shifted)(params0, gradient, steps=3)
    want = torch_history(
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
    run = gradxform_runner(opt)
    params0 = initial_params()
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient()
        got = run(params0, gradient)
        want = torch_history(
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


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, 1.5, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_by_global_norm_takes_torchs_norm_types(torch64, norm_type, max_norm):
    rng = np.random.default_rng(7)
    grads = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=4), "s": rng.normal(size=())}
    tensors = [torch.zeros(np.shape(g), requires_grad=True) for g in grads.values()]
    for t, g in zip(tensors, grads.values(), strict=True):
        t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type=norm_type)
    want = {k: t.grad.numpy() for k, t in zip(grads, tensors, strict=True)}
    clip = gx.clip_by_global_norm(max_norm, norm_type=norm_type)
    got, _ = clip.update({k: jnp.asarray(v) for k, v in grads.items()}, clip.init(None))
    chex.assert_trees_all_close(got, want, rtol=RTOL64, atol=0)
    scaled = not np.allclose(want["w"], grads["w"])
    assert scaled == (max_norm < 1.0)  # the small bound clips, the large one does not


def test_clip_by_global_norm_rejects_norm_types_torch_does_not_take():
    for bad, error in [(0.5, ValueError), (float("nan"), ValueError), ("2", TypeError)]:
        with pytest.raises(error, match="clip_by_global_norm: `norm_type`"):
            gx.clip_by_global_norm(1.0, norm_type=bad)


def test_clip_matches_clip_grad_value(torch64):
    rng = np.random.default_rng(8)
    grads = {"w": 2 * rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    tensors = [torch.zeros(np.shape(g), requires_grad=True) for g in grads.values()]
    for t, g in zip(tensors, grads.values(), strict=True):
        t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_value_(tensors, 0.7)
    got, _ = gx.clip(0.7).update({k: jnp.asarray(v) for k, v in grads.items()}, None)
    for k, t in zip(grads, tensors, strict=True):
        np.testing.assert_array_equal(got[k], t.grad.numpy(), err_msg=k)


# ----------------------------------------------------------------------------------------------
# Complex params: torch sees each as two independent reals (view_as_real).

_COMPLEX_CASES = [
    ("sgd", {"learning_rate": 0.05, "momentum": 0.9, "weight_decay": 0.1}),
    ("adagrad", {"learning_rate": 0.1, "weight_decay": 0.1}),
    ("rmsprop", {"learning_rate": 0.01, "momentum": 0.9, "centered": True}),
    ("adam", {"learning_rate": 0.01, "weight_decay": 0.1}),
    ("adamw", {"learning_rate": 0.01}),
    ("amsgrad", {"learning_rate": 0.01}),
    ("adamax", {"learning_rate": 0.02}),
    ("nadam", {"learning_rate": 0.02, "decoupled_weight_decay": True, "weight_decay": 0.1}),
]


@pytest.mark.parametrize(("name", "kwargs"), _COMPLEX_CASES, ids=[c[0] for c in _COMPLEX_CASES])
def test_complex_params_follow_torch(torch64, name, kwargs):
    rng = np.random.default_rng(9)

    def cplx(*shape):
        return rng.normal(size=shape) + 1j * rng.normal(size=shape)

    params0 = {"z": cplx(3, 2), "r": rng.normal(size=3)}  # a complex and a real leaf
    grads = [{"z": cplx(3, 2), "r": rng.normal(size=3)} for _ in range(20)]
    run = gradxform_runner(getattr(gx, name)(**kwargs))
    got = run(params0, lambda t, p: grads[t], steps=20)
    want = torch_history(_torch_optimizer(name, kwargs), params0, lambda t, p: grads[t], steps=20)
    chex.assert_trees_all_close(got, want, rtol=RTOL64, atol=ATOL64, strict=True)
    # Optax's rule (one moment for |g|^2) gives other numbers: the choice is visible.
    if name in ("adam", "rmsprop", "adagrad"):
        optax_rule = gx.chain(
            {"adam": gx.scale_by_adam, "rmsprop": gx.scale_by_stddev, "adagrad": gx.scale_by_rss}[
                name
            ](),
            gx.scale_by_learning_rate(0.01),
        )
        other = gradxform_runner(optax_rule)(params0, lambda t, p: grads[t], steps=20)
        assert not np.allclose(other[-1]["z"], want[-1]["z"], rtol=1e-3)


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
    run = gradxform_runner(getattr(gx, name)(**kwargs))
    make_torch = _torch_optimizer(name, kwargs)
    params0 = initial_params(np.float32)
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient(np.float32)
        got = run(params0, gradient)
        want = torch_history(make_torch, params0, gradient)
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
