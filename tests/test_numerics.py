"""Numbers that stay right at the edges: hyperparameters given as arrays or injected, gradients
near the float32 limit, gradients through the update, and the memory ``init`` takes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import require_torch

import gradxform as gx

PARAMS = {"w": jnp.array([0.5, -1.0, 2.0, 0.0]), "b": jnp.array([1.0, 0.0])}
# Zeros in every step's gradient at some coordinates: where a zero history meets eps = 0.
GRADS = [
    {"w": jnp.array([0.3, 0.0, -1.0, 0.0]), "b": jnp.array([0.0, 2.0])},
    {"w": jnp.array([0.1, 0.0, 0.5, 0.0]), "b": jnp.array([1e-3, -1.0])},
    {"w": jnp.array([-0.2, 0.0, 0.0, 0.0]), "b": jnp.array([0.0, 0.5])},
]

# The optimizers with a denominator that can be zero, and the argument that guards it.
EPS_OPTIMIZERS = {
    "adam": (gx.adam, "eps"),
    "adamw": (gx.adamw, "eps"),
    "amsgrad": (gx.amsgrad, "eps"),
    "adamax": (gx.adamax, "eps"),
    "nadam": (gx.nadam, "eps"),
    "rmsprop": (gx.rmsprop, "eps"),
    "rmsprop_centered": (lambda **kw: gx.rmsprop(centered=True, **kw), "eps"),
    "adagrad": (gx.adagrad, "eps"),
}


def _run(opt, steps=GRADS):
    params, state = PARAMS, opt.init(PARAMS)
    for grads in steps:
        updates, state = opt.update(grads, state, params)
        params = gx.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("name", sorted(EPS_OPTIMIZERS))
@pytest.mark.parametrize("eps", [0.0, 1e-8, 0.3])
def test_an_array_or_injected_eps_gives_the_python_numbers_numbers(name, eps):
    # A static 0 compiles a guard against 0/0; an array or injected eps that happens to be 0
    # used to run without it and gave NaN on zero gradients.
    factory, argument = EPS_OPTIMIZERS[name]
    static = _run(factory(learning_rate=0.1, **{argument: eps}))
    as_array = _run(factory(learning_rate=0.1, **{argument: jnp.asarray(eps)}))
    injected = _run(gx.inject_hyperparams(factory)(learning_rate=0.1, **{argument: eps}))

    @jax.jit
    def traced(value):
        return _run(factory(learning_rate=0.1, **{argument: value}))

    # Equal up to float32 rounding: where eps is a static 0, XLA may fold the addition and
    # rewrite g / sqrt(v) as g * rsqrt(v), which rounds differently by an ulp; coordinates that
    # end near 0 after 1 - 1.0000001 cancellations carry that ulp of 1, hence atol.
    for other in (as_array, injected, traced(eps)):
        for leaf in jax.tree.leaves(other):
            assert np.all(np.isfinite(leaf)), (name, eps, other)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), other, static
        )


# ----------------------------------------------------------------------------------------------
# A finite gradient of 1e20 in float32: torch stays finite, and so must we, with torch's numbers.

HUGE = [
    np.array([1e20, -3e19, 1.0, 0.5], np.float32),
    np.array([2.0, 1e20, -1.0, 1e19], np.float32),
    np.array([0.1, 0.2, 0.3, -1e20], np.float32),
    np.array([0.5, -0.5, 0.25, 1.0], np.float32),
]


def _torch_params(torch, make, kwargs):
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float32))
    opt = make([p], **kwargs)
    out = []
    for g in HUGE:
        p.grad = torch.tensor(g)
        opt.step()
        out.append(p.detach().numpy().copy())
    return out


def _gx_params(opt):
    p, state = jnp.ones(4, jnp.float32), opt.init(jnp.ones(4, jnp.float32))
    out = []
    for g in HUGE:
        updates, state = opt.update(jnp.asarray(g), state, p)
        p = gx.apply_updates(p, updates)
        out.append(np.asarray(p))
    return out, state


@pytest.mark.parametrize(
    ("name", "torch_kwargs", "make"),
    [
        ("Adam", {"lr": 0.1}, lambda: gx.adam(0.1)),
        ("AdamW", {"lr": 0.1}, lambda: gx.adamw(0.1)),
        ("Adam", {"lr": 0.1, "amsgrad": True}, lambda: gx.amsgrad(0.1)),
        ("NAdam", {"lr": 0.1}, lambda: gx.nadam(0.1)),
        ("RMSprop", {"lr": 0.1}, lambda: gx.rmsprop(0.1)),
        (
            "RMSprop",
            {"lr": 0.1, "centered": True, "momentum": 0.5},
            lambda: gx.rmsprop(0.1, centered=True, momentum=0.5),
        ),
        ("Adagrad", {"lr": 0.1}, lambda: gx.adagrad(0.1)),
        ("Adamax", {"lr": 0.1}, lambda: gx.adamax(0.1)),
    ],
    ids=["adam", "adamw", "amsgrad", "nadam", "rmsprop", "rmsprop_centered", "adagrad", "adamax"],
)
def test_gradients_of_1e20_follow_torch_in_float32(name, torch_kwargs, make):
    torch = require_torch()
    want = _torch_params(torch, getattr(torch.optim, name), torch_kwargs)
    got, state = _gx_params(make())
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        # torch computes (1 - b2) * g * g left to right, so (1e-3 * 1e20) * 1e20 = 1e37 stays
        # finite where g * g = 1e40 overflows. Same operations, so float32 rounding alone
        # separates the two (a few ulps).
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-6, err_msg=f"step {step + 1}")
    if name != "Adagrad":  # Adagrad's sum of squares overflows in torch too: g * g, unweighted.
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))
    if name not in ("Adagrad", "NAdam"):
        # NAdam divides v by 1 - b2^t before the root, in torch too, and that quotient
        # overflows: those coordinates do not move while it does, in both.
        assert np.all(got[-1] != 1.0)  # every coordinate still moves


def test_apply_if_finite_skips_a_step_whose_state_would_overflow():
    # 1e30 is finite, and so are the gradients and Adam's update, but (1 - b2) * g * g is not:
    # the step would leave an infinite second moment behind and freeze that parameter.
    opt = gx.apply_if_finite(gx.adam(0.1), max_consecutive_errors=5)
    params = jnp.ones(3)
    state = opt.init(params)
    updates, new_state = opt.update(jnp.array([1e30, 1.0, 1.0]), state, params)
    np.testing.assert_array_equal(updates, np.zeros(3))
    assert not bool(new_state.last_finite) and int(new_state.notfinite_count) == 1
    jax.tree.map(np.testing.assert_array_equal, new_state.inner_state, state.inner_state)
    # A state that holds an infinity on purpose (the best loss so far starts at inf) is fine.
    opt = gx.apply_if_finite(gx.chain(gx.adam(0.1), gx.reduce_on_plateau()), 5)
    state = opt.init(params)
    updates, state = opt.update(jnp.ones(3), state, params, value=1.0)
    assert bool(state.last_finite) and np.all(np.asarray(updates) != 0)


# ----------------------------------------------------------------------------------------------
# Gradients through the update (meta-learning): finite where a gradient is zero, with eps_root.

ROOT_OPTIMIZERS = {
    "adam": (lambda d, r: gx.adam(0.1, b2=d, eps_root=r)),
    "adamw": (lambda d, r: gx.adamw(0.1, b2=d, eps_root=r)),
    "amsgrad": (lambda d, r: gx.amsgrad(0.1, b2=d, eps_root=r)),
    "nadam": (lambda d, r: gx.nadam(0.1, b2=d, eps_root=r)),
    "rmsprop": (lambda d, r: gx.rmsprop(0.1, decay=d, eps_root=r)),
    "rmsprop_centered": (lambda d, r: gx.rmsprop(0.1, decay=d, centered=True, eps_root=r)),
    "adagrad": (lambda d, r: gx.adagrad(0.1, initial_accumulator_value=d - d, eps_root=r)),
}


def _loss_after_two_steps(decay, eps_root, make):
    params = _run(make(decay, eps_root), GRADS[:2])
    return sum(jnp.sum(p**2) for p in jax.tree.leaves(params))


@pytest.mark.parametrize("name", sorted(ROOT_OPTIMIZERS))
def test_meta_gradients_through_the_update_are_finite_with_eps_root(name):
    make = ROOT_OPTIMIZERS[name]
    gradient = jax.grad(_loss_after_two_steps)(jnp.float32(0.9), 1e-16, make)
    assert np.isfinite(gradient), (name, gradient)


def test_rmsprop_meta_gradient_is_nan_without_eps_root_and_finite_with_it():
    # d sqrt(v) / dv is infinite at v = 0, times dv/d(decay) = 0: NaN. This is why every
    # optimizer with a square root takes eps_root.
    without = jax.grad(_loss_after_two_steps)(jnp.float32(0.9), 0.0, ROOT_OPTIMIZERS["rmsprop"])
    with_root = jax.grad(_loss_after_two_steps)(jnp.float32(0.9), 1e-16, ROOT_OPTIMIZERS["rmsprop"])
    assert np.isnan(without) and np.isfinite(with_root)
    # eps_root = 1e-16 is below float32's resolution of these squares: the same params.
    plain = _run(gx.rmsprop(0.1))
    rooted = _run(gx.rmsprop(0.1, eps_root=1e-16))
    jax.tree.map(np.testing.assert_array_equal, rooted, plain)


# ----------------------------------------------------------------------------------------------
# Memory: init builds the state without temporaries of the params' size.

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp
    import gradxform as gx

    def status(field):
        with open("/proc/self/status") as f:
            return int(f.read().split(field + ":")[1].split()[0]) * 1024

    opt = gx.adam(1e-3)
    small = jnp.ones(8)  # compile and dispatch paths warmed up on a tiny tree
    jax.block_until_ready((opt.init(small), jax.jit(opt.init)(small)))
    params = jnp.ones(int(sys.argv[1]), jnp.float32)
    jax.block_until_ready(params)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident size
    base = status("VmRSS")
    init = jax.jit(opt.init) if sys.argv[2] == "jit" else opt.init
    jax.block_until_ready(init(params))
    print((status("VmHWM") - base) / params.nbytes)
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_adam_init_peaks_at_its_state_size(mode):
    # Two moments are 2x the params; the eager path used to peak at 4.3x (it materialised the
    # sharding tie's temporaries). Measured as the growth of the process's peak resident memory
    # (VmHWM, reset just before `init`)
    # over 1e8 float32 params (400 MB, so that compiling the fill, a few tens of MB, is noise),
    # in a fresh process.
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, "100000000", mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    growth = float(result.stdout.strip().splitlines()[-1])
    assert 1.9 < growth <= 2.1, (growth, result.stderr[-2000:])
