"""Muon (gradxform/transforms/muon.py, gradxform/optimizers/orthogonalized.py) against
``torch.optim.Muon``, Optax's ``scale_by_muon`` and closed forms; the recipe with AdamW; the
loop and the sharding.

torch's Muon hard-wires its Newton-Schulz iteration to bfloat16 (``grad.bfloat16()``). Its
float64 numbers come from the same code with ``Tensor.bfloat16`` patched to return the tensor
as it is (:func:`torch_iteration_in`): torch's own algorithm, nothing re-implemented.

Tolerances:

- float64 (``ns_dtype=None`` with x64) against torch in float64: ``RTOL64``/``ATOL64`` of the
  harness (1e-12 relative). Measured: the largest ``|got - want| / (ATOL64 + RTOL64 |want|)``
  over the cases and gradients compared is 0.12, and torch itself moves by up to 0.07 of the
  tolerance when its initial params move by one ulp (see ``CASES`` for the two cases where
  it moves by more, and which are compared on one gradient only).
- bfloat16 (the default, torch's): equality to 1e-12 is not a property of the algorithm.
  Each product is summed in float32 by both libraries, in their own orders, and an ulp of
  float32 sometimes moves a bfloat16 rounding; the iteration then spreads that ulp. torch's own
  sensitivity, measured over 200 random matrices (1 to 40 rows and columns, scales 1e-3 to
  1e3): moving one element of its bfloat16 input by one bfloat16 ulp moves its output by up to
  6.1% of the output's largest element (median 1.6%), and its bfloat16 output differs from its
  float64 one by up to 5.7% (median 2.0%). ``BF16_STEP_TOLERANCE = 0.08`` allows, at every
  step, one such change (6.1%) of an orthogonalised matrix whose elements reach 1.2 (the
  quintic's largest value on [0, 1] is 1.19): params after ``k`` steps within
  ``k * lr * s * 0.08`` of torch's (``s`` torch's shape factor). Measured on the shapes here:
  2.7e-15 (the iterations agree bit for bit; see below). That bound cannot tell one rounding
  model from another (a wrong one moves the output by as much as bfloat16 itself does), so
  the iteration is also compared bit for bit: :func:`test_bfloat16_iteration_rounds_as_torch`.
- float32 (``ns_dtype=jnp.float32``, float32 params) against torch in float32: see there.
"""

from __future__ import annotations

import contextlib
import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from references import require_optax, require_torch
from torch_harness import ATOL64, RTOL64, gradxform_runner, torch_history

import gradxform as gx
from gradxform.transforms.muon import lr_adjustment, newton_schulz

torch = require_torch()

# Tall (transposed by the iteration), wide and square matrices.
SHAPES = {"tall": (6, 4), "wide": (3, 5), "square": (4, 4)}
STEPS = 100
BF16_STEP_TOLERANCE = 0.08


@contextlib.contextmanager
def torch_iteration_in(dtype):
    """Runs torch's Muon with its Newton-Schulz iteration in ``dtype`` instead of bfloat16:
    ``_zeropower_via_newtonschulz`` starts with ``grad.bfloat16()``, the one place it sets
    the dtype. It must copy, as the real conversion does: the iteration then divides in place,
    and without Nesterov its input is the momentum buffer itself."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.Tensor, "bfloat16", lambda self, *a, **k: self.to(dtype, copy=True))
        yield


def _params0(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}


def _random_gradient(dtype=np.float64, seed=1):
    rng = np.random.default_rng(seed)
    grads = [{k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()} for _ in range(STEPS)]
    return lambda t, params: grads[t]


def _affine_gradient(dtype=np.float64, seed=2):
    """``g = a * w + b`` from each side's own params, so that differences feed back."""
    rng = np.random.default_rng(seed)
    a = {k: rng.uniform(0.5, 1.5, size=s).astype(dtype) for k, s in SHAPES.items()}
    b = {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
    return lambda t, params: {k: a[k] * params[k] + b[k] for k in SHAPES}


GRADIENTS = {"random": _random_gradient, "affine": _affine_gradient}
_TORCH_NAMES = {"learning_rate": "lr"}


def _torch_run(kwargs, params0, gradient):
    """torch's Muon with gradxform's ``kwargs``; ``maximize`` (which torch's Muon lacks) as
    the negated gradient, which is what it means in every torch optimizer."""
    torch_kwargs = {
        _TORCH_NAMES.get(k, k): v for k, v in kwargs.items() if k not in ("maximize", "ns_dtype")
    }
    if kwargs.get("maximize"):
        negated = gradient
        gradient = lambda t, p: {k: -g for k, g in negated(t, p).items()}  # noqa: E731
    return torch_history(lambda p: torch.optim.Muon(p, **torch_kwargs), params0, gradient)


def _moved(history, params0):
    return all(not np.allclose(history[-1][k], params0[k], rtol=1e-3) for k in SHAPES)


# Every option takes a non-default value somewhere; Nesterov x shape factor x weight decay are
# crossed, the others changed one at a time. Each case runs on both gradients, except where
# torch itself is ill-conditioned: with a low momentum the affine gradients, which shrink
# towards a minimum, are orthogonalised from a nearly cancelled (and nearly singular) matrix,
# and torch's own params after 100 steps move by 430 times the tolerance (momentum 0) and 0.34
# of it (momentum 0.6) when its initial params move by one ulp. Over the other cases: torch
# moves by at most 0.07 of the tolerance that way, and gradxform differs from it by at most
# 0.12 of the tolerance (the nesterov=False, weight_decay=0.1 affine case).
BOTH = tuple(GRADIENTS)
CASES = [
    *[
        ({"learning_rate": 0.02, "nesterov": n, "adjust_lr_fn": f, "weight_decay": w}, BOTH)
        for n, f, w in itertools.product([True, False], [None, "match_rms_adamw"], [0.0, 0.1])
    ],
    ({}, BOTH),  # torch's defaults, the learning rate included
    ({"learning_rate": 0.02, "adjust_lr_fn": "original"}, BOTH),
    ({"learning_rate": 0.02, "maximize": True}, BOTH),
    ({"learning_rate": 0.02, "ns_steps": 1}, BOTH),
    ({"learning_rate": 0.02, "ns_steps": 9, "ns_coefficients": (1.875, -1.25, 0.375)}, BOTH),
    ({"learning_rate": 0.02, "momentum": 0.6, "eps": 1e-3}, ("random",)),
    ({"learning_rate": 0.02, "momentum": 0.0}, ("random",)),
]


def _case_id(kwargs):
    return ",".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"


@pytest.mark.parametrize(("kwargs", "variants"), CASES, ids=[_case_id(c[0]) for c in CASES])
def test_float64_iteration_matches_torch_in_float64(torch64, kwargs, variants):
    run = gradxform_runner(gx.muon(**kwargs, ns_dtype=None))
    params0 = _params0()
    for variant in variants:
        got = run(params0, GRADIENTS[variant](), STEPS)
        with torch_iteration_in(torch.float64):
            want = _torch_run(kwargs, params0, GRADIENTS[variant]())
        chex.assert_trees_all_close(
            got, want, rtol=RTOL64, atol=ATOL64, strict=True, custom_message=variant
        )
        assert _moved(want, params0)


def _assert_within_bf16_steps(got, want, kwargs):
    """After step ``k``, each param within ``k * lr * s * BF16_STEP_TOLERANCE`` of torch's."""
    lr = kwargs.get("learning_rate", 1e-3)
    for k, (g, w) in enumerate(zip(got, want, strict=True), start=1):
        for name in SHAPES:
            factor = lr_adjustment(kwargs.get("adjust_lr_fn"), SHAPES[name])
            bound = k * lr * factor * BF16_STEP_TOLERANCE
            error = np.abs(g[name] - w[name]).max()
            assert error <= bound, f"step {k}, {name}: {error:.3g} > {bound:.3g}"


BF16_CASES = [
    {"learning_rate": 0.02},
    {"learning_rate": 0.02, "nesterov": False, "adjust_lr_fn": "match_rms_adamw"},
    {"learning_rate": 0.02, "weight_decay": 0.0, "maximize": True},
    {"learning_rate": 0.02, "ns_steps": 3, "momentum": 0.8},
]


@pytest.mark.parametrize("kwargs", BF16_CASES, ids=map(_case_id, BF16_CASES))
def test_bfloat16_iteration_matches_torch(torch64, kwargs):
    run = gradxform_runner(gx.muon(**kwargs))
    params0 = _params0()
    for make_gradient in GRADIENTS.values():
        got = run(params0, make_gradient(), STEPS)
        want = _torch_run(kwargs, params0, make_gradient())
        _assert_within_bf16_steps(got, want, kwargs)
        assert _moved(want, params0)
        # And the bfloat16 run is not the float64 one: the default really is torch's bfloat16.
        with torch_iteration_in(torch.float64):
            exact = _torch_run(kwargs, params0, make_gradient())
        assert not np.allclose(got[-1]["tall"], exact[-1]["tall"], rtol=1e-6, atol=0)


# Each of these rounding models, measured against torch over 100 matrices of 1 to 64 rows and
# columns, gives torch's bfloat16 output bit for bit in this fraction of its elements: the one
# implemented (each product summed in float32, rounded once with the term added to it, the norm
# rounded to bfloat16) 0.96 (0.99 up to 16 rows and columns), where a rounding or two of
# float32 sums taken in another order spread; rounding A A before adding b A, 0.10; the whole
# iteration in float32 and one rounding at the end, 0.12; the norm left in float32, 0.13-0.19.
# Equality of 90% of the elements tells the model apart from any of the others.
BITWISE_FRACTION = 0.9


def test_bfloat16_iteration_rounds_as_torch():
    zeropower = torch.optim._muon._zeropower_via_newtonschulz
    iterate = jax.jit(functools.partial(newton_schulz, dtype=jnp.bfloat16))
    rng = np.random.default_rng(3)
    equal = total = 0
    for _ in range(15):
        shape = tuple(int(n) for n in rng.integers(1, 33, size=2))
        for _ in range(4):
            g = rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 3)
            want = zeropower(torch.tensor(g), (3.4445, -4.775, 2.0315), 5, 1e-7).float().numpy()
            got = np.asarray(iterate(jnp.asarray(g, jnp.float32)))
            assert got.dtype == ml_dtypes.bfloat16 and got.shape == shape
            equal += np.sum(got.astype(np.float32) == want)
            total += want.size
    assert equal / total >= BITWISE_FRACTION, equal / total


# float32 on both sides: gradxform's iteration in float32, torch's patched to float32, 100
# steps. The two sum the products in other orders (an ulp of float32 each), which the
# iteration carries through; measured: 4.5e-6 absolute on params of order 1, the largest over
# both gradients and the three shapes (torch moves by 8.9e-7 when its initial params move by
# one ulp). 2e-5 is 4 times that and ~170 ulps of 1.0, while a formula error as small as a
# missing weight decay moves the params by lr * weight_decay * |p| ~ 2e-3 per step.
RTOL32, ATOL32 = 0.0, 2e-5


@pytest.mark.parametrize("ns_dtype", [jnp.float32, None])
def test_float32_iteration_matches_torch_in_float32(ns_dtype):
    kwargs = {"learning_rate": 0.02, "weight_decay": 0.1}
    run = gradxform_runner(gx.muon(**kwargs, ns_dtype=ns_dtype))
    params0 = _params0(np.float32)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        for make_gradient in GRADIENTS.values():
            got = run(params0, make_gradient(np.float32), STEPS)
            with torch_iteration_in(torch.float32):
                want = _torch_run(kwargs, params0, make_gradient(np.float32))
            chex.assert_trees_all_close(got, want, rtol=RTOL32, atol=ATOL32)
            assert got[-1]["tall"].dtype == np.float32 and _moved(want, params0)
    finally:
        torch.set_default_dtype(previous)


# ----------------------------------------------------------------------------------------------
# The iteration: closed forms, the transpose, the loop.


def test_iteration_of_a_diagonal_matrix_is_the_quintic_on_its_values(x64):
    # diag(s) / |s| stays diagonal: each value follows x <- a x + b x^3 + c x^5.
    s = np.array([3.0, 1.0, 0.25])
    a, b, c = 3.4445, -4.775, 2.0315
    x = s / np.linalg.norm(s)
    for _ in range(5):
        x = a * x + b * x**3 + c * x**5
    got = newton_schulz(jnp.diag(jnp.asarray(s)), eps=1e-7, dtype=jnp.float64)
    np.testing.assert_allclose(np.diag(got), x, rtol=1e-14)
    np.testing.assert_array_equal(got - jnp.diag(jnp.diag(got)), 0.0)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_tall_matrices_are_iterated_as_their_transpose(dtype):
    x = jnp.asarray(np.random.default_rng(4).normal(size=(7, 3)), jnp.float32)
    chex.assert_trees_all_equal(newton_schulz(x, dtype=dtype), newton_schulz(x.T, dtype=dtype).T)
    # (X X^T for the tall matrix would be 7 x 7 and of rank 3, another iteration.)


def test_zero_and_empty_matrices_give_zeros():
    for shape in [(3, 2), (0, 3), (3, 0)]:
        for eps in (1e-7, 0.0):
            out = newton_schulz(jnp.zeros(shape), eps=eps, dtype=jnp.bfloat16)
            assert out.shape == shape and not np.any(np.asarray(out, np.float32))


def _loops_and_products(jaxpr, inside=False):
    """``(loop primitives, matrix products outside any loop, products inside one)``."""
    loops, outside, within = [], 0, 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in ("while", "scan"):
            loops.append(name)
        elif name == "dot_general":
            within, outside = (within + 1, outside) if inside else (within, outside + 1)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            inner_loops, inner_outside, inner_within = _loops_and_products(
                sub, inside or name in ("while", "scan")
            )
            loops += inner_loops
            outside += inner_outside
            within += inner_within
    return loops, outside, within


def _count_equations(jaxpr):
    return sum(
        1 + sum(_count_equations(sub) for sub in jax.extend.core.jaxprs_in_params(e.params))
        for e in jaxpr.eqns
    )


def test_newton_schulz_is_one_loop_whose_size_does_not_grow_with_the_steps():
    x = jnp.ones((6, 4))
    sizes = {}
    for steps in (1, 5, 50):
        closed = jax.make_jaxpr(functools.partial(newton_schulz, steps=steps))(x)
        # A fixed count is a scan (reverse-mode differentiable), three products in its body.
        assert _loops_and_products(closed.jaxpr) == (["scan"], 0, 3)
        (scan,) = [e for e in closed.jaxpr.eqns if e.primitive.name == "scan"]
        assert scan.params["length"] == steps
        lowered = jax.jit(functools.partial(newton_schulz, steps=steps)).lower(x).as_text()
        assert lowered.count("stablehlo.while") == 1
        assert lowered.count("stablehlo.dot_general") == 3
        sizes[steps] = (_count_equations(closed.jaxpr), lowered.count("\n"))
    assert sizes[1] == sizes[5] == sizes[50], sizes
    # A count known only when the step runs (an injected hyperparameter) is a while loop.
    traced = jax.make_jaxpr(lambda x, n: newton_schulz(x, steps=n))(x, 5)
    assert _loops_and_products(traced.jaxpr) == (["while"], 0, 3)
    y = x + jnp.eye(6, 4)
    np.testing.assert_array_equal(
        jax.jit(lambda x, n: newton_schulz(x, steps=n))(y, 5), newton_schulz(y, steps=5)
    )


def test_optimizer_update_is_one_loop_per_matrix():
    params = {"a": jnp.ones((6, 4)), "b": jnp.ones((3, 5))}
    opt = gx.muon(0.02)
    jaxpr = jax.make_jaxpr(lambda g, p: opt.update(g, opt.init(p), p))(params, params).jaxpr
    assert _loops_and_products(jaxpr) == (["scan", "scan"], 0, 6)


# ----------------------------------------------------------------------------------------------
# Sharded: a (64, 32) matrix split by rows over the 8 host devices (tests/conftest.py).

# float32 iteration: the products over the sharded dimension are summed in 8 partial sums and
# then across devices, in another order than on one device: measured 1.2e-6 of the largest
# update element, over 3 steps. 1e-5 is 8 times that.
SHARDED_RTOL32 = 1e-5


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize(
    ("ns_dtype", "stacked"), [(jnp.bfloat16, False), (jnp.float32, False), (jnp.float32, True)]
)
def test_sharded_matrix_keeps_its_sharding_and_numbers(axis_type, ns_dtype, stacked):
    mesh = jax.make_mesh((8,), ("rows",), axis_types=(axis_type,))
    by_rows = NamedSharding(mesh, P("rows", None))
    rng = np.random.default_rng(5)
    params = {"w": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32)}
    grads = [{"w": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32)} for _ in range(3)]
    opt = gx.muon(0.02, ns_dtype=jnp.dtype(ns_dtype), stack_by_shape=stacked)

    def run(params, grads):
        state, updates = opt.init(params), []
        for g in grads:
            u, state = opt.update(g, state, params)
            params = gx.apply_updates(params, u)
            updates.append(u["w"])
        return params, state, updates

    want = jax.jit(run)(params, grads)
    with jax.set_mesh(mesh):
        got = jax.jit(run)(*jax.device_put((params, grads), by_rows))
    new_params, state, updates = got
    (muon_state, *_) = state
    # Stacked (stack_by_shape=True), the momentum is a stack of one, sharded on its rows.
    momentum = muon_state.mu[0][0] if stacked else muon_state.mu["w"]
    for what, leaf in [("params", new_params["w"]), ("momentum", momentum)] + [
        (f"update {k}", u) for k, u in enumerate(updates)
    ]:
        assert leaf.sharding.is_equivalent_to(by_rows, 2), (what, leaf.sharding)
        assert len(leaf.addressable_shards) == 8 and leaf.addressable_shards[0].data.shape == (
            8,
            32,
        )
    for k, (g, w) in enumerate(zip(updates, want[2], strict=True)):
        g, w = np.asarray(g), np.asarray(w)
        if ns_dtype == jnp.bfloat16:
            # The update is a bfloat16 matrix times the learning rate: see BITWISE_FRACTION.
            assert np.mean(g == w) >= BITWISE_FRACTION, (k, np.mean(g == w))
        else:
            assert np.abs(g - w).max() <= SHARDED_RTOL32 * np.abs(w).max(), k


# ----------------------------------------------------------------------------------------------
# scale_by_muon: Optax's numbers by default, torch's with torch_arithmetic.


@pytest.mark.parametrize("nesterov", [True, False])
def test_scale_by_muon_is_optax_scale_by_muon(x64, nesterov):
    optax = require_optax()
    rng = np.random.default_rng(6)
    params = {k: jnp.asarray(rng.normal(size=s)) for k, s in SHAPES.items()}
    ours = gx.scale_by_muon(beta=0.9, eps=1e-8, nesterov=nesterov)
    # Optax maps its dimension numbers over the updates: one per matrix, (rows, cols) as here.
    dims = {k: optax.contrib.MuonDimensionNumbers() for k in SHAPES}
    theirs = optax.contrib.scale_by_muon(
        beta=0.9, eps=1e-8, nesterov=nesterov, weight_dimension_numbers=dims
    )
    torch_form = gx.scale_by_muon(beta=0.9, eps=1e-8, nesterov=nesterov, torch_arithmetic=True)
    s_ours, s_theirs, s_torch = ours.init(params), theirs.init(params), torch_form.init(params)
    update_ours, update_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    update_torch = jax.jit(torch_form.update)
    for _ in range(20):
        g = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
        u_ours, s_ours = update_ours(g, s_ours, params)
        u_theirs, s_theirs = update_theirs(g, s_theirs, params)
        u_torch, s_torch = update_torch(g, s_torch, params)
        # Bias corrections as 1 - b^t (Optax) or -expm1(t log b) (here), products summed in
        # other orders: a few ulps.
        chex.assert_trees_all_close(u_ours, u_theirs, rtol=1e-12, atol=1e-14)
        chex.assert_trees_all_close(s_ours.mu, s_theirs.mu, rtol=1e-12, atol=1e-14)
    # torch's arithmetic is another direction with Nesterov (no bias correction: another mix
    # of gradient and momentum), and without it the same direction (NS(c m) = NS(m)).
    differs = not np.allclose(u_torch["tall"], u_theirs["tall"], rtol=1e-3)
    assert differs == nesterov


def test_scale_by_muon_positional_arguments_are_optax():
    optax = require_optax()
    ours = gx.scale_by_muon((3.0, -3.0, 1.0), 2, 0.5, 1e-6, jnp.float32)
    params = {"w": jnp.asarray(np.random.default_rng(7).normal(size=(3, 4)), jnp.float32)}
    dims = {"w": optax.contrib.MuonDimensionNumbers()}
    theirs = optax.contrib.scale_by_muon(
        (3.0, -3.0, 1.0), 2, 0.5, 1e-6, jnp.float32, weight_dimension_numbers=dims
    )
    u1, s1 = ours.update(params, ours.init(params), params)
    u2, s2 = theirs.update(params, theirs.init(params), params)
    chex.assert_trees_all_close(u1, u2, rtol=1e-5, atol=1e-6)
    assert s1.mu["w"].dtype == s2.mu["w"].dtype == jnp.float32


# ----------------------------------------------------------------------------------------------
# Errors, dtypes, injection.


@pytest.mark.parametrize("make", [lambda: gx.muon(0.02), lambda: gx.scale_by_muon()])
def test_leaves_that_are_not_matrices_are_refused_by_name(make):
    for leaf in (jnp.ones(3), jnp.ones(()), jnp.ones((2, 3, 4))):
        with pytest.raises(ValueError, match=r"\['layer'\]\['bias'\] has shape") as info:
            make().init({"layer": {"kernel": jnp.ones((3, 3)), "bias": leaf}})
        assert str(jnp.shape(leaf)) in str(info.value)
        assert "muon_with_adamw" in str(info.value)
    with pytest.raises(TypeError, match=r"\['z'\] is complex"):
        gx.scale_by_muon().init({"z": jnp.ones((2, 2), jnp.complex64)})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ns_coefficients": (1.0, 2.0)}, ValueError, "three numbers"),
        ({"ns_coefficients": 3.0}, TypeError, "tuple of three"),
        ({"ns_coefficients": (1.0, float("nan"), 2.0)}, ValueError, "`ns_coefficients`"),
        ({"ns_steps": 100}, ValueError, r"`ns_steps` must be a whole number in \[0, 99\]"),
        ({"momentum": 1.0}, ValueError, "`momentum`"),
        ({"adjust_lr_fn": "sqrt"}, ValueError, "`adjust_lr_fn` must be one of"),
        ({"ns_dtype": jnp.int8}, TypeError, "`ns_dtype`"),
    ],
)
def test_muon_arguments_are_checked(kwargs, error, match):
    for factory in (gx.muon, gx.muon_with_adamw):
        with pytest.raises(error, match=match) as info:
            factory(**kwargs)
        assert str(info.value).startswith(factory.__name__)


def test_bfloat16_params_keep_bfloat16_momentum_and_get_float32_updates():
    params = {"w": jnp.ones((3, 4), jnp.bfloat16)}
    opt = gx.muon(0.02)
    state = opt.init(params)
    updates, new_state = opt.update(jax.tree.map(lambda p: p * 0.5, params), state, params)
    assert updates["w"].dtype == jnp.float32
    assert new_state[0].mu["w"].dtype == state[0].mu["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize("ns_dtype", [jnp.dtype(jnp.bfloat16), None])
def test_injected_hyperparameters_give_the_plain_numbers(x64, ns_dtype):
    kwargs = {"learning_rate": 0.02, "momentum": 0.9, "eps": 1e-6, "ns_steps": 4}
    params, gradient = _params0(), _random_gradient()
    plain = gradxform_runner(gx.muon(**kwargs, ns_dtype=ns_dtype))(params, gradient, 10)
    opt = gx.inject_hyperparams(gx.muon)(**kwargs, ns_dtype=ns_dtype)
    injected = gradxform_runner(opt)(params, gradient, 10)
    chex.assert_trees_all_equal(injected, plain)
    assert sorted(opt.init(params).hyperparams) == [
        "eps", "learning_rate", "momentum", "ns_steps", "weight_decay"
    ]  # fmt: skip


def test_complex_matrices_are_pairs_of_real_matrices(x64):
    # torch's Muon refuses complex params; as every torch-named optimizer here, gradxform's sees
    # one as two real matrices (torch's view_as_real), each with its momentum.
    rng = np.random.default_rng(11)
    z = jnp.asarray(rng.normal(size=(3, 4)) + 1j * rng.normal(size=(3, 4)))
    grads = [jnp.asarray(rng.normal(size=(3, 4)) + 1j * rng.normal(size=(3, 4))) for _ in range(3)]
    opt = gx.muon(0.02, ns_dtype=None)
    (got,) = _recipe_run(opt, {"z": z}, [{"z": g} for g in grads])[0].values()
    parts = {"re": jnp.real(z), "im": jnp.imag(z)}
    split = [{"re": jnp.real(g), "im": jnp.imag(g)} for g in grads]
    want = _recipe_run(opt, parts, split)[0]
    assert got.dtype == jnp.complex128
    chex.assert_trees_all_equal((jnp.real(got), jnp.imag(got)), (want["re"], want["im"]))


# Muon on trees of matrices only (the robustness test of tests/test_robustness.py, which
# draws vectors and scalars too, runs the recipe): any shape up to 3 x 3 (empty ones too),
# float32, bfloat16 and float16 leaves, gradients from 1e-6 to 100, valid hyperparameters.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_muon_on_any_tree_of_matrices_gives_finite_numbers(data):
    shapes = data.draw(
        st.dictionaries(
            st.sampled_from("abc"),
            st.tuples(st.integers(0, 3), st.integers(0, 3)),
            min_size=1,
            max_size=3,
        )
    )
    dtype = data.draw(st.sampled_from([np.float32, ml_dtypes.bfloat16, np.float16]))
    kwargs = data.draw(
        st.fixed_dictionaries(
            {
                "learning_rate": st.floats(0.0, 1.0),
                "weight_decay": st.floats(0.0, 0.1),
                "momentum": st.floats(0.0, 0.99),
                "nesterov": st.booleans(),
                "eps": st.one_of(st.just(0.0), st.floats(1e-12, 1e-3)),
                "ns_steps": st.integers(0, 6),
                "adjust_lr_fn": st.sampled_from([None, "original", "match_rms_adamw"]),
                "ns_dtype": st.sampled_from([jnp.dtype(jnp.bfloat16), None]),
            }
        )
    )
    scale = 10.0 ** data.draw(st.sampled_from([-6, -3, 0, 2]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    params = {k: jnp.asarray(rng.normal(size=s).astype(dtype)) for k, s in shapes.items()}
    opt = gx.muon(**kwargs)
    state = opt.init(params)
    # One compile for both steps: eagerly, every operation of the update compiles on its own.
    update = jax.jit(opt.update)
    for _ in range(2):
        grads = {
            k: jnp.asarray((scale * rng.uniform(-1, 1, s)).astype(dtype)) for k, s in shapes.items()
        }
        updates, state = update(grads, state, params)
        params = gx.apply_updates(params, updates)
        for tree in (updates, state, params):
            assert all(
                np.all(np.isfinite(np.asarray(x, np.float32))) for x in jax.tree.leaves(tree)
            )
        assert {p.dtype for p in params.values()} == {jnp.dtype(dtype)}


# ----------------------------------------------------------------------------------------------
# The recipe: Muon for the hidden matrices, AdamW for the rest.


def _model(dtype=jnp.float32, seed=8):
    rng = np.random.default_rng(seed)
    shapes = {
        "embed": {"embedding": (10, 4)},
        "layers": [{"w": (4, 6), "b": (6,)}, {"w": (6, 4), "b": (4,)}],
        "norm": {"scale": (4,)},
        "conv": (3, 3, 2, 2),
        "lm_head": (4, 10),
    }
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s), dtype),
        shapes,
        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(n, int) for n in x),
    )


def test_default_labels():
    labels = gx.muon_labels(_model())
    assert labels == {
        "embed": {"embedding": "adamw"},
        "layers": [{"w": "muon", "b": "adamw"}, {"w": "muon", "b": "adamw"}],
        "norm": {"scale": "adamw"},
        "conv": "adamw",
        "lm_head": "adamw",
    }
    matrix = jnp.ones((2, 2))
    named = {
        "MultiHeadDotProductAttention_0": {"kernel": matrix},  # "head" inside a word
        "heads": matrix,
        "Head_0": matrix,
        "wte": matrix,
        "Embed_0": {"kernel": matrix},
        "token_embeddings": matrix,
        "unembed": matrix,
    }
    assert gx.muon_labels(named) == {
        "MultiHeadDotProductAttention_0": {"kernel": "muon"},
        "heads": "muon",
        "Head_0": "adamw",
        "wte": "adamw",
        "Embed_0": {"kernel": "adamw"},
        "token_embeddings": "adamw",
        "unembed": "adamw",
    }


def _labelled(tree, labels, label):
    """The leaves of ``tree`` with ``label``, as a dict keyed by their index among the leaves."""
    pairs = zip(jax.tree.leaves(tree), jax.tree.leaves(labels), strict=True)
    return {i: leaf for i, (leaf, lab) in enumerate(pairs) if lab == label}


def _by_hand(opts, params, grads_seq, labels):
    """Each optimizer of ``opts`` (by label) run alone on the leaves with its label."""
    results = {}
    for label, opt in opts.items():
        grads = [_labelled(g, labels, label) for g in grads_seq]
        results.update(_recipe_run(opt, _labelled(params, labels, label), grads)[0])
    leaves = [results[i] for i in range(len(results))]
    return jax.tree.unflatten(jax.tree.structure(params), leaves)


def _recipe_run(opt, params, grads_seq):
    @jax.jit
    def run(params, grads_seq):
        state = opt.init(params)
        for grads in grads_seq:
            updates, state = opt.update(grads, state, params)
            params = gx.apply_updates(params, updates)
        return params, state

    return run(params, grads_seq)


def test_recipe_is_muon_and_adamw_run_by_hand_on_their_leaves(x64):
    params = _model(jnp.float64)
    rng = np.random.default_rng(9)
    grads_seq = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params) for _ in range(4)
    ]
    kwargs = {"weight_decay": 0.05, "momentum": 0.9, "adjust_lr_fn": "match_rms_adamw"}
    adamw_kwargs = {"adamw_learning_rate": 3e-3, "adamw_b1": 0.8, "adamw_weight_decay": 0.1}
    recipe = gx.muon_with_adamw(0.02, **kwargs, **adamw_kwargs)
    got, state = _recipe_run(recipe, params, grads_seq)
    by_hand = {"muon": gx.muon(0.02, **kwargs), "adamw": gx.adamw(3e-3, b1=0.8, weight_decay=0.1)}
    chex.assert_trees_all_equal(got, _by_hand(by_hand, params, grads_seq, gx.muon_labels(params)))
    assert isinstance(state, gx.MultiTransformState)
    assert sorted(state.inner_states) == ["adamw", "muon"]
    # Each optimizer keeps state for its own leaves only.
    muon_mu = state.inner_states["muon"][0].mu
    assert [leaf.shape for leaf in jax.tree.leaves(muon_mu)] == [(4, 6), (6, 4)]
    # Another split, given as a function: every matrix to Muon, the embedding and head too.
    matrices = lambda p: jax.tree.map(lambda x: "muon" if x.ndim == 2 else "adamw", p)  # noqa: E731
    other, _ = _recipe_run(
        gx.muon_with_adamw(0.02, **kwargs, **adamw_kwargs, labels=matrices), params, grads_seq
    )
    chex.assert_trees_all_equal(other, _by_hand(by_hand, params, grads_seq, matrices(params)))
    assert not np.allclose(other["embed"]["embedding"], got["embed"]["embedding"], rtol=1e-6)
    chex.assert_trees_all_equal(other["layers"], got["layers"])


def test_recipe_without_matrices_is_adamw_and_with_only_matrices_is_muon(x64):
    rng = np.random.default_rng(10)
    for params, alone in [
        ({"b": jnp.asarray(rng.normal(size=3)), "s": jnp.asarray(1.5)}, gx.adamw(0.02)),
        ({"w": jnp.asarray(rng.normal(size=(3, 4)))}, gx.muon(0.02)),
    ]:
        grads_seq = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)] * 3
        got, state = _recipe_run(gx.muon_with_adamw(0.02), params, grads_seq)
        want, _ = _recipe_run(alone, params, grads_seq)
        chex.assert_trees_all_equal(got, want)
        assert len(state.inner_states) == 1
    # A tree without leaves (Optax's tree_map_params builds one) passes through.
    opt = gx.muon_with_adamw(0.02)
    state = opt.init({})
    assert opt.update({}, state, {}) == ({}, state)


def test_recipe_refuses_a_vector_labelled_muon_and_unknown_labels():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    all_muon = gx.muon_with_adamw(labels=lambda p: jax.tree.map(lambda _: "muon", p))
    with pytest.raises(ValueError, match=r"muon: .*\['b'\] has shape \(2,\)"):
        all_muon.init(params)
    sgd_label = gx.muon_with_adamw(labels=lambda p: {"w": "muon", "b": "sgd"})
    with pytest.raises(ValueError, match=r"no transformation for the label\(s\) \['sgd'\]"):
        sgd_label.init(params)
