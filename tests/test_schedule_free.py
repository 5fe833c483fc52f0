"""Schedule-free SGD and AdamW against the authors' ``schedulefree`` package (train mode).

Both libraries are fed the same gradients over the harness's tree (a (3, 4) matrix and a (4,)
vector) for 100 float64 steps: random gradients drawn once, and ``g = a * y + b`` computed from
each side's own current params (so differences would feed back). The train-mode params ``y`` are
compared after every step; the eval-mode params ``x`` (:func:`gradxform.schedule_free_eval_params`
against the reference's own ``lerp(y, z, 1 - 1/b1)`` of ``optimizer.eval()``) at several steps,
and against ``optimizer.eval()`` itself after the last step.

Tolerance: the harness's ``rtol=1e-12``, ``atol=1e-14`` (see ``tests/test_torch_reference.py``).
The formulas are the reference's, evaluated in another order (``c * (z - y) + s * d`` added to
``y`` versus torch's in-place ``lerp`` then ``add``; ``1 - b2^t`` as ``-expm1(t log b2)``),
a few ulps per step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from torch_harness import ATOL64, RTOL64, STEPS, initial_params

import gradxform as gx

schedulefree = pytest.importorskip(
    "schedulefree", reason="schedulefree is not installed: install gradxform[compare]"
)
torch = pytest.importorskip("torch", reason="torch is not installed: install gradxform[compare]")

EVAL_STEPS = (0, 1, 9, 49, STEPS - 1)

# (name, gradxform factory kwargs, reference class, reference kwargs): one case per code path
# (warmup, weight decay, r, weight_lr_power each switch a term on).
CASES = {
    "sgd": (gx.schedule_free_sgd, {}, "SGDScheduleFree", {}),
    "sgd_warmup_decay": (
        gx.schedule_free_sgd,
        {"warmup_steps": 7, "momentum": 0.8, "weight_decay": 0.05},
        "SGDScheduleFree",
        {"warmup_steps": 7, "momentum": 0.8, "weight_decay": 0.05},
    ),
    "adamw": (gx.schedule_free_adamw, {}, "AdamWScheduleFree", {}),
    "adamw_all": (
        gx.schedule_free_adamw,
        {
            "warmup_steps": 10,
            "b1": 0.85,
            "b2": 0.99,
            "eps": 1e-6,
            "weight_decay": 0.1,
            "weight_lr_power": 1.5,
            "r": 0.5,
        },
        "AdamWScheduleFree",
        {
            "warmup_steps": 10,
            "betas": (0.85, 0.99),
            "eps": 1e-6,
            "weight_decay": 0.1,
            "weight_lr_power": 1.5,
            "r": 0.5,
        },
    ),
}
LR = {"SGDScheduleFree": 0.05, "AdamWScheduleFree": 0.02}


def gradient_inputs(kind):
    rng = np.random.default_rng(1 if kind == "random" else 2)
    shapes = {k: v.shape for k, v in initial_params().items()}
    if kind == "random":
        return {k: rng.normal(size=(STEPS, *s)) for k, s in shapes.items()}, None
    a = {k: rng.uniform(0.5, 1.5, size=s) for k, s in shapes.items()}
    b = {k: rng.normal(size=s) for k, s in shapes.items()}
    return a, b


def gradient_at(kind, inputs, t, y):
    a, b = inputs
    if kind == "random":
        return {k: v[t] for k, v in a.items()}
    return {k: a[k] * y[k] + b[k] for k in y}


def run_gradxform(opt, params0, kind, inputs):
    """All steps in one compiled scan: ``y`` after each step and ``x`` after each step."""

    inputs = jax.tree.map(jnp.asarray, inputs)

    def body(carry, t):
        y, state = carry
        grads = gradient_at(kind, inputs, t, y)
        updates, state = opt.update(grads, state, y)
        y = gx.apply_updates(y, updates)
        return (y, state), (y, gx.schedule_free_eval_params(state, y))

    @jax.jit
    def run(y0):
        _, (ys, xs) = jax.lax.scan(body, (y0, opt.init(y0)), jnp.arange(STEPS))
        return ys, xs

    ys, xs = run({k: jnp.asarray(v) for k, v in params0.items()})
    return jax.tree.map(np.asarray, ys), jax.tree.map(np.asarray, xs)


def run_reference(cls_name, kwargs, params0, kind, inputs):
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
    optimizer = getattr(schedulefree, cls_name)(list(tensors.values()), lr=LR[cls_name], **kwargs)
    group = optimizer.param_groups[0]
    b1 = group["momentum"] if "momentum" in group else group["betas"][0]
    optimizer.train()
    ys, xs = [], {}
    for t in range(STEPS):
        current = {k: v.detach().numpy().copy() for k, v in tensors.items()}
        grads = gradient_at(kind, inputs, t, current)
        for k, v in tensors.items():
            v.grad = torch.tensor(grads[k])
        optimizer.step()
        ys.append({k: v.detach().numpy().copy() for k, v in tensors.items()})
        if t in EVAL_STEPS:
            # What optimizer.eval() computes, on copies, so that training goes on from y itself
            # (eval() then train() would round y through x and back).
            xs[t] = {
                k: v.detach().clone().lerp_(optimizer.state[v]["z"], 1 - 1 / b1).numpy()
                for k, v in tensors.items()
            }
    optimizer.eval()
    final_x = {k: v.detach().numpy().copy() for k, v in tensors.items()}
    return ys, xs, final_x


@pytest.mark.parametrize("kind", ["random", "affine"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_authors_reference(case, kind, torch64):
    factory, kwargs, cls_name, ref_kwargs = CASES[case]
    params0 = initial_params()
    inputs = gradient_inputs(kind)
    ys, xs = run_gradxform(factory(LR[cls_name], **kwargs), params0, kind, inputs)
    ref_ys, ref_xs, ref_final_x = run_reference(cls_name, ref_kwargs, params0, kind, inputs)
    for t in range(STEPS):
        for k in params0:
            np.testing.assert_allclose(
                ys[k][t], ref_ys[t][k], rtol=RTOL64, atol=ATOL64, err_msg=f"y, step {t}, {k}"
            )
    for t in EVAL_STEPS:
        for k in params0:
            np.testing.assert_allclose(
                xs[k][t], ref_xs[t][k], rtol=RTOL64, atol=ATOL64, err_msg=f"x, step {t}, {k}"
            )
    for k in params0:
        np.testing.assert_allclose(xs[k][-1], ref_final_x[k], rtol=RTOL64, atol=ATOL64)
    # The run moved away from the start, and x differs from y: the comparison can fail.
    assert not np.allclose(ys["w"][-1], params0["w"], rtol=1e-3)
    assert not np.allclose(xs["w"][-1], ys["w"][-1], rtol=1e-6)


# Optax's form, through gradxform.schedule_free around the building blocks. Optax's warmup
# schedule, evaluated on the wrapper's int32 counter, returns float32 even with x64 (0.002 reads
# 0.0020000003278 at count 1) while the base optimizer's copy sees float64: both sides are given
# Optax's own schedule function, so that the test compares the wrappers and not the schedules.
OPTAX_WARMUP, OPTAX_B1, OPTAX_DECAY = 10, 0.85, 0.1


def optax_form(optax, lr):
    """Optax's ``schedule_free_adamw`` from the building blocks, and Optax's own."""
    schedule = optax.warmup_constant_schedule(0.0, lr, OPTAX_WARMUP)
    base = gx.chain(
        gx.scale_by_rms(0.99, 1e-6, eps_in_sqrt=False, bias_correction=True),
        gx.add_decayed_weights(OPTAX_DECAY),
        gx.scale_by_learning_rate(schedule),
    )
    ours = gx.schedule_free(base, schedule, b1=OPTAX_B1, weight_lr_power=1.5)
    theirs = optax.contrib.schedule_free_adamw(
        lr,
        warmup_steps=OPTAX_WARMUP,
        b1=OPTAX_B1,
        b2=0.99,
        eps=1e-6,
        weight_decay=OPTAX_DECAY,
        weight_lr_power=1.5,
    )
    return ours, theirs


def run_scan(opt, eval_params, params0, inputs):
    """``y`` and ``x`` after each of STEPS steps on ``g = a * y + b``, in one compiled scan."""
    inputs = jax.tree.map(jnp.asarray, inputs)

    def body(carry, t):
        y, state = carry
        updates, state = opt.update(gradient_at("affine", inputs, t, y), state, y)
        y = gx.apply_updates(y, updates)
        return (y, state), (y, eval_params(state, y))

    @jax.jit
    def run(y0):
        return jax.lax.scan(body, (y0, opt.init(y0)), jnp.arange(STEPS))[1]

    return jax.tree.map(np.asarray, run({k: jnp.asarray(v) for k, v in params0.items()}))


def test_the_wrapper_gives_optax_contribs_numbers(torch64):
    """``gradxform.schedule_free`` around the building blocks equals
    ``optax.contrib.schedule_free_adamw`` (warmup, decay, b1, weight_lr_power switched on), the
    params ``y`` and the eval params ``x`` after every step (Optax's ``schedule_free_sgd`` is
    the same wrapper around ``chain(add_decayed_weights, sgd)``). Tolerance: the harness's
    float64 one; Optax forms ``x`` and then ``y = b1 x + (1 - b1) z``, this code ``y + c (z -
    y) + s u`` (measured: 1.5e-13 relative at most for AdamW)."""
    optax = pytest.importorskip("optax", reason="optax is not installed")
    ours, theirs = optax_form(optax, 0.02)
    params0, inputs = initial_params(), gradient_inputs("affine")
    ys, xs = run_scan(ours, gx.schedule_free_eval_params, params0, inputs)
    ref_ys, ref_xs = run_scan(theirs, optax.contrib.schedule_free_eval_params, params0, inputs)
    for k in params0:
        np.testing.assert_allclose(ys[k], ref_ys[k], rtol=RTOL64, atol=ATOL64, err_msg=f"y {k}")
        np.testing.assert_allclose(xs[k], ref_xs[k], rtol=RTOL64, atol=ATOL64, err_msg=f"x {k}")


def test_eval_params_are_found_inside_inject_hyperparams(torch64):
    """``schedule_free_eval_params`` takes the whole state of
    ``inject_hyperparams(schedule_free_adamw)``, and the injected optimizer (learning rate and
    warmup as arrays in the state: the general program) gives the numbers of the plain one,
    which equals the authors' (above). Tolerance: the harness's float64 one."""
    kwargs = {"warmup_steps": 10, "weight_decay": 0.1, "r": 0.5}
    params0, inputs = initial_params(), gradient_inputs("affine")
    injected = gx.inject_hyperparams(gx.schedule_free_adamw)(0.02, **kwargs)
    state = injected.init({k: jnp.asarray(v) for k, v in params0.items()})
    assert state.hyperparams["learning_rate"].shape == ()
    assert state.hyperparams["warmup_steps"].shape == ()
    ys, xs = run_scan(injected, gx.schedule_free_eval_params, params0, inputs)
    plain_ys, plain_xs = run_scan(
        gx.schedule_free_adamw(0.02, **kwargs), gx.schedule_free_eval_params, params0, inputs
    )
    for k in params0:
        np.testing.assert_allclose(ys[k], plain_ys[k], rtol=RTOL64, atol=ATOL64)
        np.testing.assert_allclose(xs[k], plain_xs[k], rtol=RTOL64, atol=ATOL64)
    assert not np.allclose(xs["w"][-1], ys["w"][-1], rtol=1e-6)
