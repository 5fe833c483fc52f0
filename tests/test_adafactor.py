"""Adafactor: ``gx.adafactor`` against ``torch.optim.Adafactor``, the chain of
``scale_by_factored_rms``'s docstring against ``optax.adafactor``, and the size of the state.

The torch comparisons use the harness of ``tests/torch_harness.py`` and its tolerance in
float64 (``rtol=1e-12, atol=1e-14``, after every one of 100 steps). The two sides evaluate the
same formulas in another order (``lerp`` versus ``v + w * (x - v)``, ``norm(g)^2 / n`` versus
``mean(g^2)``, ``rsqrt(v) * g`` versus ``g / sqrt(v)``, one factor ``alpha / denom`` versus four
successive ones, ``p * (1 - lr wd) - a u`` versus ``p - lr (c u + wd p)``, the relative step
``min(lr, 1/sqrt(t))`` as ``lr * min(1, 1 / (lr sqrt(t)))``), a few ulps per step: measured at
most 8.5% of the tolerance over every case below. The tree is the harness's (a (3, 4) matrix
and a (4,) vector, fed the harness's random and affine gradients) plus a 3-d kernel and a
scalar fed gradients drawn the same way, and a small (4, 1) matrix fed small random ones.

Where the gradients depend on the params (the affine ones), Adafactor's normalised steps make
the iterate hover around the minimum once they are large next to the distance to it, and that
hovering is chaotic: any rounding difference is amplified, by torch's own arithmetic too
(started 1e-15 relative away, torch drifts up to 1.7e-5 of the largest param away from its own
run within 100 steps at lr = 0.12 with weight decay 0.1, 4.4e-9 at lr = 0.05 with weight decay
0.1, 3.5e-10 at lr = 0.5). Those cases are compared on the random gradients only (see
``CASES``).

Optax's numbers are compared at the same tolerance; they agree bit for bit in most cases
(measured: at most 5.4e-17 of the largest param, with a float64 momentum buffer), except with
Optax's float32 momentum buffer (see its test).
"""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse
from references import require_optax
from torch_harness import (
    ATOL64,
    GRADIENTS,
    RTOL64,
    STEPS,
    gradxform_runner,
    initial_params,
    torch_history,
)

import gradxform as gx

# Leaves beyond the harness's: a 3-d kernel (factored over its last two axes), a matrix with
# a size-1 axis (factored by torch; by Optax only with min_dim_size_to_factor=1, and then over
# axes in the other order) and a scalar (never factored).
EXTRA_SHAPES = {"k": (2, 3, 5), "c": (4, 1), "s": ()}


# c is small, params and gradients: its RMS (1e-5) is below eps2 (1e-3 by default), and the
# squares of its gradients (1e-8) below eps1^2 = 1e-6 for eps1 = 1e-3, so both floors bind.
SMALL = 1e-5
SMALL_GRADIENT = 1e-4


def _params0():
    rng = np.random.default_rng(10)
    extra = {k: rng.normal(size=s) for k, s in EXTRA_SHAPES.items()}
    return {**initial_params(), **extra, "c": SMALL * extra["c"]}


def _extra_random(seed=11):
    rng = np.random.default_rng(seed)
    draws = [{k: rng.normal(size=s) for k, s in EXTRA_SHAPES.items()} for _ in range(STEPS)]
    for draw in draws:
        draw["c"] = SMALL_GRADIENT * draw["c"]
    return lambda t, params: draws[t]


def _extra_affine(seed=12):
    """``a * w + b`` as the harness's, except for c: its gradients are the random ones, since an
    affine gradient of a param that small makes it hover chaotically around its minimum (with
    weight decay 0.1 at lr = 1e-2, torch's and gradxform's c part by up to 1e-8 relative)."""
    rng = np.random.default_rng(seed)
    a = {k: rng.uniform(0.5, 1.5, size=s) for k, s in EXTRA_SHAPES.items()}
    b = {k: rng.normal(size=s) for k, s in EXTRA_SHAPES.items()}
    small = _extra_random()
    return lambda t, params: {
        **{k: a[k] * params[k] + b[k] for k in EXTRA_SHAPES},
        "c": small(t, params)["c"],
    }


_EXTRA = {"random": _extra_random, "affine": _extra_affine}


def _gradient(variant):
    """The harness's gradient sequence ``variant`` for w and b, the same kind for the rest."""
    harness, extra = GRADIENTS[variant](), _EXTRA[variant]()
    return lambda t, params: {**harness(t, params), **extra(t, params)}


def _torch_adafactor(torch, kwargs):
    torch_kwargs = {("lr" if k == "learning_rate" else k): v for k, v in kwargs.items()}
    return lambda params: torch.optim.Adafactor(params, **torch_kwargs)


def _assert_matches(got, want, params0, what):
    chex.assert_trees_all_close(
        got, want, rtol=RTOL64, atol=ATOL64, strict=True, custom_message=what
    )
    # Every leaf really moved: a comparison of unchanged trees would prove nothing.
    for k, start in params0.items():
        assert not np.allclose(want[-1][k], start, rtol=1e-3), (what, k)


# ----------------------------------------------------------------------------------------------
# torch.optim.Adafactor


def _grid(variants, fixed, **options):
    cases = []
    for values in itertools.product(*options.values()):
        kwargs = dict(fixed)
        for key, value in zip(options, values, strict=True):
            kwargs.update(value if isinstance(value, dict) else {key: value})
        label = ",".join(f"{k}={v}" for k, v in kwargs.items())
        cases.append(pytest.param(kwargs, variants, id=label))
    return cases


BOTH = ("random", "affine")

# At torch's lr = 1e-2 (rho_t = lr throughout) with both gradient sequences: weight decay (lr *
# wd * p) crossed with maximize, and the clipping threshold paired with the eps pair (eps1 and
# eps2 both bind for c) crossed with beta2_decay (-1: the plain average of all |g|^2).
# At lr = 0.5 the relative step min(lr, 1/sqrt(t)) is 1/sqrt(t) from step 5 on: random
# gradients only. With the affine ones steps that large make the iterate hover around the
# minimum, chaotically: torch itself, started 1e-15 (relative) away, drifts up to 3.5e-10
# away within 100 steps, so no reordering of its arithmetic could match it to 1e-12. The
# random gradients do not depend on the params: rounding differences add up instead of
# compounding.
CASES = [
    pytest.param({}, BOTH, id="defaults"),
    *_grid(BOTH, {"learning_rate": 1e-2}, weight_decay=[0.0, 0.1], maximize=[False, True]),
    *_grid(
        BOTH,
        {"learning_rate": 1e-2},
        clipping=[{"d": 2.0, "eps": (1e-3, 1e-2)}, {"d": 1.5, "eps": (0.0, 0.0)}],
        beta2_decay=[-0.8, -0.5, -1.0],
    ),
    *_grid(("random",), {"learning_rate": 0.5}, weight_decay=[0.0, 0.1], maximize=[False, True]),
]


@pytest.mark.parametrize(("kwargs", "variants"), CASES)
def test_matches_torch_float64(torch64, kwargs, variants):
    run = gradxform_runner(gx.adafactor(**kwargs))
    params0 = _params0()
    for variant in variants:
        gradient = _gradient(variant)
        got = run(params0, gradient)
        want = torch_history(_torch_adafactor(torch64, kwargs), params0, gradient)
        _assert_matches(got, want, params0, f"adafactor({kwargs}), {variant} gradients")


@functools.cache
def _default_history(variant):
    """``gx.adafactor(1e-2)``'s params after every step of ``variant``'s gradients (float64:
    called under the ``x64`` fixture), computed once for every option below."""
    return gradxform_runner(gx.adafactor(1e-2))(_params0(), _gradient(variant))


@pytest.mark.parametrize(
    "option",
    [
        {"d": 2.0},
        {"eps": (1e-3, 1e-3)},
        {"eps": (None, 1e-2)},
        {"eps": (None, 0.0)},
        {"beta2_decay": -0.5},
        {"beta2_decay": -1.0},
    ],
    ids=str,
)
def test_every_option_of_the_grid_changes_the_numbers(x64, option):
    """Each non-default value above moves the params away from the defaults' (measured, the
    largest relative change after 100 steps: from 5.5e-3 for d = 2 with the affine gradients
    to 16 for eps2 = 1e-2), so the comparisons test it: eps1 = 1e-3 binds for c's small
    gradients, eps2 = 1e-2 (and 0) for c's small RMS."""
    run = gradxform_runner(gx.adafactor(1e-2, **option))
    for variant in BOTH:
        base = _default_history(variant)
        changed = run(_params0(), _gradient(variant))
        assert not all(np.allclose(changed[-1][k], base[-1][k], rtol=1e-3) for k in base[-1])


def _inverse_time(k):
    return 1.0 / (1.0 + 0.05 * k)


@pytest.mark.parametrize(
    ("variant", "base"), [("random", 0.5), ("affine", 1e-2)], ids=["random", "affine"]
)
def test_schedule_matches_lambda_lr_in_the_relative_step_and_the_decay(torch64, variant, base):
    # lr_k = base / (1 + 0.05 k), and the decay lr_k * wd * p throughout. From base 0.5,
    # rho_t = min(lr_k, 1/sqrt(t)) is lr_k up to t = 6, 1/sqrt(t) from 7 to 55, lr_k again from
    # 56 on; from 1e-2 it is lr_k throughout.
    kwargs = {"learning_rate": base, "weight_decay": 0.1}
    opt = gx.adafactor(lambda k: base * _inverse_time(k), weight_decay=0.1)
    params0 = _params0()
    gradient = _gradient(variant)
    got = gradxform_runner(opt)(params0, gradient)
    want = torch_history(
        _torch_adafactor(torch64, kwargs),
        params0,
        gradient,
        make_scheduler=lambda o: torch64.optim.lr_scheduler.LambdaLR(o, _inverse_time),
    )
    _assert_matches(got, want, params0, f"scheduled adafactor, {variant} gradients")


@functools.cache
def _torch_reference(torch, steps=30):
    """torch's Adafactor(lr=0.5, weight_decay=0.1) over ``steps`` random gradients."""
    kwargs = {"learning_rate": 0.5, "weight_decay": 0.1}
    return torch_history(
        _torch_adafactor(torch, kwargs), _params0(), _gradient("random"), steps=steps
    )


def _chain(drop=None):
    """adafactor(0.5, weight_decay=0.1) from the public blocks, without the link ``drop``."""
    lr = 0.5
    links = {
        "preconditioner": gx.scale_by_adafactor(),
        "clip": gx.clip_by_block_rms(1.0),
        "param_scale": gx.scale_by_param_block_rms(1e-3),
        "relative_step": gx.scale_by_schedule(
            lambda k: jnp.minimum(1.0, 1.0 / (lr * jnp.sqrt(k + 1.0)))
        ),
        "decay": gx.add_decayed_weights(0.1),
        "learning_rate": gx.scale_by_learning_rate(lr),
    }
    if drop == "decoupled":  # torch's Adam-style coupled L2 instead
        links = {"l2": gx.add_l2(0.1), **links}
        del links["decay"]
    elif drop is not None:
        del links[drop]
    return gx.chain(*links.values())


@pytest.mark.parametrize(
    "drop", [None, "clip", "param_scale", "relative_step", "decoupled"], ids=str
)
def test_the_comparison_sees_every_link(torch64, drop):
    """The chain of ``adafactor``'s docstring matches torch, and without any one of its links
    (or with coupled decay) it does not: at lr = 0.5 the clipping, the parameter scale, the
    relative step and the decay each move the params by far more than the tolerance."""
    want = _torch_reference(torch64)
    got = gradxform_runner(_chain(drop))(_params0(), _gradient("random"), steps=len(want))
    if drop is None:
        chex.assert_trees_all_close(got, want, rtol=RTOL64, atol=ATOL64, strict=True)
        return
    with pytest.raises(AssertionError):
        chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-8, strict=True)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"beta2_decay": 0.5}, "beta2_decay"),
        ({"eps": (-1e-3, 1e-3)}, "eps"),
        ({"eps": (None, -1e-3)}, "eps"),
        ({"d": 0.5}, "d"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_rejects_what_torch_rejects(torch64, kwargs, argument):
    with pytest.raises(ValueError):
        _torch_adafactor(torch64, kwargs)([torch64.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match=rf"adafactor: `{argument}"):
        gx.adafactor(**kwargs)


def test_complex_params_are_refused_as_torch_refuses_them(torch64):
    z = torch64.zeros(2, dtype=torch64.complex128, requires_grad=True)
    z.grad = torch64.ones(2, dtype=torch64.complex128)
    with pytest.raises(RuntimeError, match="does not support complex parameters"):
        torch64.optim.Adafactor([z]).step()
    params = {"r": jnp.ones(3), "z": jnp.array([1 + 2j, -1j, 0.5])}
    with pytest.raises(TypeError, match=r"adafactor: parameter \['z'\] is complex \(complex"):
        gx.adafactor().init(params)
    # The way out the message names: the two parts as real params, with a moment and an RMS
    # each (the same numbers as two real leaves).
    opt = gx.split_real_and_imaginary(gx.adafactor(0.1))
    grads = {"r": jnp.full(3, 0.5), "z": jnp.array([1 - 1j, 2j, -0.5])}
    updates, _ = opt.update(grads, opt.init(params), params)
    parts = {"r": params["r"], "re": params["z"].real, "im": params["z"].imag}
    part_grads = {"r": grads["r"], "re": grads["z"].real, "im": grads["z"].imag}
    real = gx.adafactor(0.1)
    expected, _ = real.update(part_grads, real.init(parts), parts)
    np.testing.assert_array_equal(updates["z"].real, expected["re"])
    np.testing.assert_array_equal(updates["z"].imag, expected["im"])
    np.testing.assert_array_equal(updates["r"], expected["r"])


def test_sparse_gradients_are_refused_as_torch_refuses_them(torch64):
    p = torch64.zeros(3, requires_grad=True)
    p.grad = torch64.tensor([0.0, 1.0, 0.0]).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        torch64.optim.Adafactor([p]).step()
    # A sparse JAX gradient is a tree of its data and indices, not an array of the param's
    # shape: the check of the updates' tree refuses it.
    params = {"w": jnp.zeros((2, 3))}
    opt = gx.adafactor()
    grads = {"w": sparse.BCOO.fromdense(jnp.eye(2, 3))}
    with pytest.raises(ValueError, match="does not match the param tree"):
        opt.update(grads, opt.init(params), params)


def test_zero_gradients_with_eps1_zero_give_zero_updates_where_torch_gives_nan(torch64):
    p = torch64.ones(2, 3, requires_grad=True)
    p.grad = torch64.zeros(2, 3)
    torch64.optim.Adafactor([p], eps=(0.0, 1e-3)).step()
    assert torch64.isnan(p).all()
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    opt = gx.adafactor(eps=(0.0, 1e-3))
    state = opt.init(params)
    for _ in range(2):
        updates, state = opt.update(jax.tree.map(jnp.zeros_like, params), state, params)
        assert all(np.array_equal(u, np.zeros_like(u)) for u in jax.tree.leaves(updates))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))


@pytest.mark.parametrize("learning_rate", [0.0, jnp.asarray(0.0)], ids=["static", "array"])
def test_a_learning_rate_of_zero_changes_nothing(learning_rate):
    # The relative step is computed as lr * min(1, 1 / (lr sqrt(t))): 1 / 0 = inf, min = 1.
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    opt = gx.adafactor(learning_rate, weight_decay=0.1)
    updates, _ = opt.update(params, opt.init(params), params)
    assert all(np.array_equal(u, np.zeros_like(u)) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_eps1_none_is_the_machine_epsilon_of_each_params_dtype(dtype):
    # Gradients of 1e-9: their squares (1e-18) are below eps1^2 for both dtypes (float32:
    # 1.4e-14, bfloat16: 6.1e-5), so the floor decides the update: g / eps1.
    eps = float(jnp.finfo(dtype).eps)
    grads = {"w": jnp.full((2, 3), 1e-9, dtype), "b": jnp.full(3, -1e-9, dtype)}
    default, explicit, other = (
        gx.scale_by_adafactor(eps1=e) for e in (None, eps, float(jnp.finfo(jnp.float16).eps))
    )
    out = [t.update(grads, t.init(grads))[0] for t in (default, explicit, other)]
    chex.assert_trees_all_equal(out[0], out[1], strict=True)
    # The floor binds (g / eps1, not g / |g|): another eps1 gives other numbers.
    np.testing.assert_allclose(out[0]["b"], np.full(3, -1e-9 / eps, np.float32), rtol=1e-2)
    assert not np.allclose(out[2]["b"], out[0]["b"], rtol=1e-2)


# ----------------------------------------------------------------------------------------------
# Optax's Adafactor: the chain of scale_by_factored_rms's docstring.


def optax_chain(
    learning_rate=None,
    min_dim_size_to_factor=128,
    decay_rate=0.8,
    decay_offset=0,
    multiply_by_parameter_scale=True,
    clipping_threshold=1.0,
    momentum=None,
    dtype_momentum=jnp.float32,
    weight_decay_rate=None,
    eps=1e-30,
    factored=True,
    weight_decay_mask=None,
):
    """``optax.adafactor``'s signature, built as ``scale_by_factored_rms``'s docstring says."""
    links = [
        gx.scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)
    ]
    if clipping_threshold is not None:
        links.append(gx.clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        links.append(gx.scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        links.append(gx.scale_by_param_block_rms())
    if momentum is not None:
        links.append(gx.ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        links.append(gx.add_decayed_weights(weight_decay_rate, weight_decay_mask))
    links.append(gx.scale(-1.0))
    return gx.chain(*links)


_DECAY_MASK = {"w": True, "b": False, "k": True, "c": False, "s": False}

# Optax's defaults factor nothing here (no axis reaches 128): min_dim_size_to_factor=2 factors
# w and k, and 1 factors c too, over its axes in the other order (the largest axis first).
OPTAX_CASES = [
    {},
    {"min_dim_size_to_factor": 2},
    {"min_dim_size_to_factor": 1, "learning_rate": 0.1},
    {"min_dim_size_to_factor": 2, "learning_rate": 0.1, "multiply_by_parameter_scale": False},
    {"min_dim_size_to_factor": 2, "learning_rate": 0.1, "clipping_threshold": None},
    {"min_dim_size_to_factor": 2, "learning_rate": 0.1, "clipping_threshold": 0.5},
    {"min_dim_size_to_factor": 2, "learning_rate": 0.1, "weight_decay_rate": 0.01},
    {
        "min_dim_size_to_factor": 2,
        "learning_rate": 0.1,
        "weight_decay_rate": 0.05,
        "weight_decay_mask": _DECAY_MASK,
    },
    # A float64 momentum buffer: the float32 default is compared below.
    {
        "min_dim_size_to_factor": 2,
        "learning_rate": 0.1,
        "momentum": 0.9,
        "dtype_momentum": jnp.float64,
    },
    {"min_dim_size_to_factor": 2, "decay_rate": 0.5, "eps": 1e-3, "learning_rate": 0.1},
    {"factored": False, "learning_rate": lambda k: 0.1 * _inverse_time(k)},
]


def _optax_id(kwargs):
    def show(v):
        if isinstance(v, type):
            return v.__name__
        return "schedule" if callable(v) else v

    return ",".join(f"{k}={show(v)}" for k, v in kwargs.items()) or "defaults"


def _optax_runs(kwargs):
    optax = require_optax()
    params0 = _params0()
    # One runner (one compiled step) per side, for both gradient sequences.
    ours = gradxform_runner(optax_chain(**kwargs))
    theirs = gradxform_runner(optax.adafactor(**kwargs))
    for variant in GRADIENTS:
        gradient = _gradient(variant)
        got = ours(params0, gradient)
        want = theirs(params0, gradient)
        yield variant, params0, got, want


@pytest.mark.parametrize("kwargs", OPTAX_CASES, ids=map(_optax_id, OPTAX_CASES))
def test_the_documented_chain_matches_optax_adafactor(x64, kwargs):
    for variant, params0, got, want in _optax_runs(kwargs):
        _assert_matches(got, want, params0, f"optax.adafactor({kwargs}), {variant}")


def test_optax_float32_momentum_buffer_agrees_to_float32_precision(x64):
    """With Optax's default ``dtype_momentum=float32`` the buffer is stored in float32 on both
    sides, but Optax multiplies ``decay * buffer`` in float32 (a Python float times a float32
    array) where gradxform's ``ema`` computes in the gradient's float64: the momentum differs
    by float32 roundings, ~6e-8 relative per step. Measured over 100 steps: 1.2e-7 (random
    gradients) and 1.6e-7 (affine) of the largest param; the bound is 1e-6 of it, while a
    float64 buffer agrees to 5.4e-17 of it."""
    kwargs = {"min_dim_size_to_factor": 2, "learning_rate": 0.1, "momentum": 0.9}
    for _, _, got, want in _optax_runs(kwargs):
        scale = max(np.max(np.abs(step[k])) for step in want for k in step)
        chex.assert_trees_all_close(got, want, rtol=0, atol=1e-6 * scale, strict=True)
        with pytest.raises(AssertionError):  # not float64-close: the difference is real
            chex.assert_trees_all_close(got, want, rtol=RTOL64, atol=ATOL64, strict=True)


def test_zero_statistics_with_epsilon_zero_give_zero_updates():
    # Optax's x^(-1/2) of a zero statistic is inf, and 0 * inf is NaN.
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    t = gx.scale_by_factored_rms(min_dim_size_to_factor=2, epsilon=0.0)
    grads = {"w": jnp.zeros((2, 3)).at[0, 0].set(1.0), "b": jnp.zeros(3)}
    updates, state = t.update(grads, t.init(params), params)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves((updates, state)))
    np.testing.assert_array_equal(updates["b"], np.zeros(3))
    np.testing.assert_array_equal(updates["w"][1], np.zeros(3))
    assert float(updates["w"][0, 0]) > 0


# ----------------------------------------------------------------------------------------------
# Memory: the point of factoring.


@pytest.mark.parametrize(
    ("make", "shapes"),
    [
        (gx.adafactor, {(512, 1), (1, 256)}),
        (gx.scale_by_adafactor, {(512, 1), (1, 256)}),
        (gx.scale_by_factored_rms, {(256,), (512,)}),
    ],
    ids=["adafactor", "scale_by_adafactor", "scale_by_factored_rms"],
)
def test_state_of_a_512_by_256_matrix_holds_512_plus_256_numbers(make, shapes):
    params = {"w": jnp.zeros((512, 256))}
    state = make().init(params)
    moments = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert {x.shape for x in moments} == shapes
    assert sum(x.size for x in moments) == 512 + 256
    # Besides them, only int32 counters.
    others = [x for x in jax.tree.leaves(state) if not jnp.issubdtype(x.dtype, jnp.floating)]
    assert all(x.shape == () and x.dtype == jnp.int32 for x in others)
