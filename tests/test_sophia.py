"""Sophia (gradxform/transforms/sophia.py, gradxform/optimizers/second_order.py) against the
authors' ``SophiaG`` (PyPI ``sophia-opt`` 0.2.2, their repository's ``sophia.py`` packaged),
and the Gauss-Newton-Bartlett estimate against torch's autograd and its closed-form mean.

The reference runs in float64 torch. Each Hessian step is ``update_hessian()`` on the sampled
gradient ``g_hat`` then ``step(bs=B)``; gradxform is given ``hessian=B * g_hat^2``. The
reference keeps the average of ``g_hat^2`` and multiplies it by ``bs`` in the step; gradxform
averages ``B g_hat^2``, and applies the decay as ``p + (-lr) (u + wd p)`` where torch computes
``p (1 - lr wd) - lr u``: the same numbers to rounding, which the 100 steps accumulate.
Measured, the largest relative difference of any param at any step: 3.9e-13 (K = 10, B = 64,
a power of two, so the Hessian's scaling is exact), 4.1e-13 (K = 3, B = 48, injected) and
2.9e-13 (maximize); ``RTOL = 1e-12``. In each case between 13% and 41% of the ratios
``|m| / (rho H + eps)`` are clipped, so both branches of the ``min`` are compared.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import require_torch

import gradxform as gx

torch = require_torch()
sophia_opt = pytest.importorskip(
    "sophia_opt", reason="sophia-opt is not installed: install gradxform[compare]"
)

STEPS = 100
RTOL = 1e-12
LR = 0.05
# A matrix, a vector and a scalar.
SHAPES = {"w": (3, 4), "b": (5,), "s": ()}


def _data(seed):
    """Initial params, gradients and sampled gradients ``g_hat`` (float64 NumPy)."""
    rng = np.random.default_rng(seed)
    draw = lambda: {k: rng.normal(size=s) for k, s in SHAPES.items()}  # noqa: E731
    return draw(), [draw() for _ in range(STEPS)], [draw() for _ in range(STEPS)]


def _reference(p0, grads, g_hats, interval, batch, **kwargs):
    """The authors' SophiaG: params after each step, and the fraction of clipped ratios."""
    params = {k: torch.tensor(v, dtype=torch.float64) for k, v in p0.items()}
    opt = sophia_opt.SophiaG(list(params.values()), lr=LR, **kwargs)
    history, clipped, total = [], 0, 0
    for t in range(STEPS):
        if t % interval == 0:
            for k, p in params.items():
                p.grad = torch.tensor(g_hats[t][k])
            opt.update_hessian()
        for k, p in params.items():
            p.grad = torch.tensor(grads[t][k])
        opt.step(bs=batch)
        history.append({k: p.detach().numpy().copy() for k, p in params.items()})
        for p in params.values():
            state = opt.state[p]
            rho = opt.param_groups[0]["rho"]
            ratio = state["exp_avg"].abs() / (rho * batch * state["hessian"] + 1e-15)
            clipped += int((ratio >= 1).sum())
            total += ratio.numel()
    return history, clipped / total


# (interval K, batch B, injected, maximize): the authors' K = 10 with a power-of-two batch; K = 3
# with another, through inject_hyperparams (the general program, hyperparameters as arrays);
# maximize (a negating link before the step).
CASES = {
    "every_10": (10, 64, False, False),
    "every_3_injected": (3, 48, True, False),
    "every_10_maximize": (10, 64, False, True),
}


@pytest.mark.parametrize("case", CASES)
def test_sophia_equals_the_authors_sophiag(x64, case):
    interval, batch, injected, maximize = CASES[case]
    p0, grads, g_hats = _data(sum(map(ord, case)))
    options = {"b1": 0.965, "b2": 0.99, "rho": 0.04, "weight_decay": 0.1}
    want, clipped = _reference(
        p0,
        grads,
        g_hats,
        interval,
        batch,
        betas=(0.965, 0.99),
        rho=0.04,
        weight_decay=0.1,
        maximize=maximize,
    )
    # Both regimes of min(|m| / (rho H + eps), 1) are compared, not only the clipped one.
    assert 0.05 < clipped < 0.95, clipped
    factory = gx.inject_hyperparams(gx.sophia) if injected else gx.sophia
    opt = factory(LR, **options, hessian_update_interval=interval, maximize=maximize)
    with_estimate = jax.jit(lambda g, s, p, h: opt.update(g, s, p, hessian=h))
    # The other steps call both forms: no argument, and `hessian=None` given explicitly.
    without = jax.jit(opt.update)
    explicit_none = jax.jit(lambda g, s, p: opt.update(g, s, p, hessian=None))
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    state = opt.init(params)
    for t in range(STEPS):
        g = {k: jnp.asarray(v) for k, v in grads[t].items()}
        if t % interval == 0:
            h = {k: batch * jnp.asarray(v) ** 2 for k, v in g_hats[t].items()}
            updates, state = with_estimate(g, state, params, h)
        else:
            updates, state = (without if t % 2 else explicit_none)(g, state, params)
        params = gx.apply_updates(params, updates)
        chex.assert_trees_all_close(params, want[t], rtol=RTOL, atol=0.0)
    if injected:
        assert state.hyperparams["learning_rate"] == LR


def test_a_hessian_of_the_wrong_shape_names_the_leaf():
    opt = gx.sophia(0.1)
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    state = opt.init(params)
    hessian = {"w": jnp.ones((3, 2)), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"scale_by_sophia: .*\['w'\] has shape \(3, 2\)"):
        opt.update(params, state, params, hessian=hessian)
    with pytest.raises(ValueError, match="scale_by_sophia: the updates tree does not match"):
        opt.update(params, state, params, hessian={"w": jnp.ones((2, 3))})


def test_traced_zero_eps_and_rho_give_the_sign_of_the_momentum(x64):
    # rho = eps = 0 as arrays: every denominator is 0, |m| / 0 is clipped to 1 and a zero
    # momentum gives 0 (not NaN): u = sign(m), the step before any Hessian estimate.
    opt = gx.inject_hyperparams(gx.scale_by_sophia)(b1=0.5, rho=0.0, eps=0.0)
    g = {"w": jnp.array([2.0, 0.0, -1e-30])}
    updates, _ = jax.jit(opt.update)(g, opt.init(g), g, hessian={"w": jnp.ones(3)})
    np.testing.assert_array_equal(updates["w"], [1.0, 0.0, -1.0])


# --- the Gauss-Newton-Bartlett estimate --------------------------------------------------------


def _linear_logits(params, x):
    return x @ params["w"] + params["b"]


@pytest.mark.parametrize("batch_shape", [(6,), (2, 3)], ids=["rows", "batch_by_positions"])
def test_gauss_newton_bartlett_equals_torch(x64, batch_shape):
    # A linear softmax model; B counts every position of the logits but the class axis, as
    # the authors' bs = batch size x block size.
    rng = np.random.default_rng(7)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4))), "b": jnp.asarray(rng.normal(size=4))}
    x = jnp.asarray(rng.normal(size=(*batch_shape, 3)))
    key = jax.random.key(3)
    got = jax.jit(gx.gauss_newton_bartlett, static_argnums=0)(_linear_logits, params, key, x)
    # The labels are drawn as documented, jax.random.categorical on the logits; torch then
    # takes the gradient of the mean cross-entropy, and h = B g^2.
    draw = jax.jit(lambda k, p, x: jax.random.categorical(k, _linear_logits(p, x)))
    labels = np.asarray(draw(key, params, x))
    w, b = (torch.tensor(np.asarray(params[k]), requires_grad=True) for k in ("w", "b"))
    logits = torch.tensor(np.asarray(x)) @ w + b
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), torch.tensor(labels).ravel())
    loss.backward()
    rows = int(np.prod(batch_shape))
    want = {"w": rows * w.grad.numpy() ** 2, "b": rows * b.grad.numpy() ** 2}
    chex.assert_trees_all_close(got, want, rtol=1e-14, atol=0.0)


def test_gauss_newton_bartlett_samples_labels_from_the_softmax(x64):
    # One row: the estimate for the bias is (p - onehot(y))^2, whose mean over y ~ softmax(z)
    # is p (1 - p), the Gauss-Newton diagonal (Bartlett's identity). Over N = 20000 keys the
    # sample mean's standard deviation is at most sqrt(max Var / N) < 0.25 / 141 = 1.8e-3: a
    # bound of 1e-2 is over 5 of them, and labels drawn uniformly instead would be off by up to 0.2.
    z = jnp.array([2.0, 0.5, -1.0, 0.0])
    params = {"b": z}
    keys = jax.random.split(jax.random.key(0), 20000)
    estimates = jax.jit(
        jax.vmap(lambda k: gx.gauss_newton_bartlett(lambda p: p["b"][None, :], params, k)["b"])
    )(keys)
    p = jax.nn.softmax(z)
    np.testing.assert_allclose(estimates.mean(axis=0), p * (1 - p), atol=1e-2, rtol=0)
