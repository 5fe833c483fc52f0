"""Tests of reduce_on_plateau against torch.optim.lr_scheduler.ReduceLROnPlateau."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.references import require_torch


def _losses(seed, steps=200, offset=0.0):
    """A loss curve with improving stretches, noisy plateaus and setbacks."""
    rng = np.random.default_rng(seed)
    losses, level = [], 10.0
    while len(losses) < steps:
        kind = rng.choice(["improve", "plateau", "setback"], p=[0.4, 0.45, 0.15])
        for _ in range(int(rng.integers(3, 25))):
            if kind == "improve":
                level *= rng.uniform(0.9, 0.99)
            elif kind == "setback":
                level *= rng.uniform(1.0, 1.05)
            noise = rng.normal(scale=2e-3) if kind == "plateau" else 0.0
            losses.append(level * (1 + noise) + offset)
    return losses[:steps]


def _torch_lrs(values, base_lr, factor, patience, rtol, atol, cooldown, min_scale, eps=0.0):
    """torch's learning rate after each ``scheduler.step(value)``."""
    torch = require_torch()
    if rtol > 0 and atol > 0:
        raise ValueError("torch has one threshold: rtol or atol")
    optimizer = torch.optim.SGD([torch.zeros(1, dtype=torch.float64)], lr=base_lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=factor,
        patience=patience,
        threshold=atol if atol > 0 else rtol,
        threshold_mode="abs" if atol > 0 else "rel",
        cooldown=cooldown,
        min_lr=min_scale * base_lr,
        eps=eps,  # torch skips reductions of the learning rate by eps or less
    )
    lrs = []
    for value in values:
        scheduler.step(value)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


SETTINGS = [
    dict(factor=0.5, patience=3, rtol=1e-2, atol=0.0, cooldown=0, min_scale=0.0),
    dict(factor=0.1, patience=10, rtol=1e-4, atol=0.0, cooldown=0, min_scale=0.0),
    dict(factor=0.7, patience=2, rtol=0.0, atol=0.05, cooldown=4, min_scale=0.2),
    dict(factor=0.3, patience=0, rtol=0.0, atol=0.0, cooldown=1, min_scale=0.01),
    dict(factor=0.8, patience=1, rtol=5e-3, atol=0.0, cooldown=2, min_scale=0.3),
]


# How torch's eps is given: 0 on both sides (every reduction made), or torch's default 1e-8
# with the base learning rate passed, so that eps compares learning rates as torch's does.
EPS_MODES = {
    "eps0": (dict(eps=0.0), 0.0),
    "eps1e-8-learning_rate": (dict(eps=1e-8, learning_rate=0.3), 1e-8),
}


@pytest.mark.parametrize("eps_mode", EPS_MODES)
@pytest.mark.parametrize("offset", [0.0, -12.0], ids=["positive", "negative"])
@pytest.mark.parametrize("accumulation_size", [1, 4])
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(map(str, s.values())))
def test_scale_matches_torch_reduce_lr_on_plateau(
    x64, setting, accumulation_size, offset, eps_mode
):
    base_lr = 0.3
    eps_kwargs, torch_eps = EPS_MODES[eps_mode]
    losses = _losses(seed=len(str(setting)), offset=offset)
    opt = gx.reduce_on_plateau(**setting, accumulation_size=accumulation_size, **eps_kwargs)

    @jax.jit
    def scales(losses):
        def body(state, value):
            _, state = opt.update(jnp.zeros(()), state, value=value)
            return state, state.scale

        return jax.lax.scan(body, opt.init(None), losses)[1]

    got = np.asarray(scales(jnp.asarray(losses)))
    # torch decides once per window, on the window's mean (summed left to right, as the state
    # accumulates it, so the float64 means are the same numbers).
    windows = [losses[i : i + accumulation_size] for i in range(0, 200, accumulation_size)]
    means = [sum(w, 0.0) / accumulation_size for w in windows]
    torch_lrs = _torch_lrs(means, base_lr, **setting, eps=torch_eps)
    # The scale changes on the last call of a window and holds until the next window ends.
    held = [base_lr, *torch_lrs[:-1]]
    expected = [
        torch_lrs[i // accumulation_size]
        if i % accumulation_size == accumulation_size - 1
        else held[i // accumulation_size]
        for i in range(200)
    ]
    # torch multiplies the learning rate by the factor, the state multiplies the scale: the
    # products of up to ~20 factors agree to a few ulps each.
    np.testing.assert_allclose(got * base_lr, expected, rtol=1e-13)
    assert got[-1] < 1.0  # the sequence did plateau


def test_rtol_and_atol_together_require_both_margins(x64):
    opt = gx.reduce_on_plateau(factor=0.5, patience=0, rtol=0.1, atol=0.05)
    state = opt.init(None)
    _, state = opt.update(jnp.zeros(()), state, value=1.0)  # best = 1
    # Threshold: 1 * (1 - 0.1) - 0.05 = 0.85. 0.86 clears the relative margin only.
    _, state = opt.update(jnp.zeros(()), state, value=0.86)
    assert float(state.best_value) == 1.0 and float(state.scale) == 0.5
    _, state = opt.update(jnp.zeros(()), state, value=0.84)
    assert float(state.best_value) == 0.84 and float(state.scale) == 0.5
    assert int(state.plateau_count) == 0


def test_inside_chain_with_adam_under_jit_matches_torch(x64):
    torch = require_torch()
    target = np.asarray([0.5, -1.0, 2.0])
    base_lr, steps = 0.4, 60
    setting = dict(factor=0.5, patience=3, rtol=1e-3, cooldown=2, min_scale=0.05)
    opt = gx.chain(gx.adam(base_lr), gx.reduce_on_plateau(**setting, learning_rate=base_lr))

    def loss_fn(w):
        return jnp.sum((w - target) ** 2)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    @chex.assert_max_traces(n=1)
    def step(w, state):
        loss, grad = jax.value_and_grad(loss_fn)(w)
        updates, state = opt.update(grad, state, w, value=loss)
        return gx.apply_updates(w, updates), state

    w, state = jnp.zeros(3), opt.init(jnp.zeros(3))
    state_types = jax.tree.map(jax.typeof, state)
    trajectory = []
    for _ in range(steps):
        w, state = step(w, state)
        trajectory.append(np.asarray(w))
    assert step._cache_size() == 1  # one trace (chex, above), and one executable
    assert jax.tree.map(jax.typeof, state) == state_types

    # torch: the loss of the current params decides the learning rate that this step uses.
    tw = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([tw], lr=base_lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        factor=setting["factor"],
        patience=setting["patience"],
        threshold=setting["rtol"],
        cooldown=setting["cooldown"],
        min_lr=setting["min_scale"] * base_lr,
    )
    torch_target = torch.tensor(target)
    for k in range(steps):
        optimizer.zero_grad()
        loss = torch.sum((tw - torch_target) ** 2)
        loss.backward()
        scheduler.step(loss.item())
        optimizer.step()
        np.testing.assert_allclose(
            trajectory[k], tw.detach().numpy(), rtol=1e-11, atol=1e-13, err_msg=f"step {k}"
        )
    assert optimizer.param_groups[0]["lr"] < base_lr / 4  # it did reduce, more than once
    np.testing.assert_allclose(float(state[1].scale) * base_lr, optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("base_lr", [0.02, 0.3])
def test_eps_skips_the_reductions_torch_skips(x64, base_lr):
    """A loss that never improves, with patience 0, reduces at every decision until a reduction
    would lower the learning rate by 1e-8 or less (torch's default eps); then the rate stays.

    With ``learning_rate`` the decisions are torch's. Without it eps is compared with the scale
    (a learning rate of 1), and with eps = 0 the scale keeps falling: both differ from torch
    for ``base_lr = 0.02``, where torch stops at 2e-9 (a scale of 1e-7, where the next step
    would change the rate by 1.8e-9), while the scale alone would go on to 1e-8. (For 0.3 the
    two stops happen to agree: 3e-9 and a scale of 1e-8.)
    """
    decisions, factor = 20, 0.1
    setting = dict(factor=factor, patience=0, rtol=0.0, atol=0.0, cooldown=0, min_scale=0.0)
    expected = np.asarray(_torch_lrs([1.0] * decisions, base_lr, **setting, eps=1e-8))
    assert expected[-1] == expected[-5] > 0  # torch did stop reducing

    def scales(**kwargs):
        opt = gx.reduce_on_plateau(**setting, **kwargs)
        state, out = opt.init(None), []
        for _ in range(decisions):
            _, state = opt.update(jnp.zeros(()), state, value=1.0)
            out.append(float(state.scale))
        return np.asarray(out)

    np.testing.assert_allclose(scales(learning_rate=base_lr) * base_lr, expected, rtol=1e-13)
    np.testing.assert_allclose(scales(eps=1e-8 / base_lr) * base_lr, expected, rtol=1e-13)
    assert scales(eps=0.0)[-1] < expected[-1] / base_lr / 1e6  # it never stops
    if base_lr == 0.02:
        assert not np.allclose(scales() * base_lr, expected, rtol=1e-3, atol=0)


def test_eps_applies_to_injected_and_traced_values():
    # An injected eps (and learning_rate) is an array in the state: the same decisions.
    opt = gx.inject_hyperparams(gx.reduce_on_plateau)(
        factor=0.1, patience=0, eps=1e-8, learning_rate=0.02
    )
    state = opt.init(None)
    step = jax.jit(lambda s: opt.update(jnp.ones(()), s, value=1.0))
    for _ in range(12):
        u, state = step(state)
    # Reductions from 1 to 1e-7 (six of them after the first decision), then none.
    np.testing.assert_allclose(float(u), 1e-7, rtol=1e-6)


def test_updates_are_scaled_in_their_own_dtype():
    opt = gx.reduce_on_plateau(factor=0.5, patience=0)
    state = opt.init(None)
    updates = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(3)}
    for _ in range(2):
        out, state = opt.update(updates, state, value=jnp.asarray(1.0))
    assert out["a"].dtype == jnp.bfloat16 and out["b"].dtype == jnp.float32
    np.testing.assert_array_equal(out["b"], np.full(3, 0.5))
    assert state.scale.dtype == jnp.float32 and state.count.dtype == jnp.int32


def test_missing_or_non_scalar_value_raises():
    opt = gx.reduce_on_plateau()
    with pytest.raises(ValueError, match="value=loss"):
        opt.update(jnp.ones(2), opt.init(None))
    with pytest.raises(ValueError, match="scalar"):
        opt.update(jnp.ones(2), opt.init(None), value=jnp.ones(2))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(factor=1.0), ValueError),
        (dict(factor=-0.1), ValueError),
        (dict(patience=-1), ValueError),
        (dict(patience=2.5), TypeError),
        (dict(cooldown=-1), ValueError),
        (dict(accumulation_size=0), ValueError),
        (dict(accumulation_size=True), TypeError),
        (dict(rtol=1.0), ValueError),
        (dict(atol=-1e-3), ValueError),
        (dict(min_scale=1.5), ValueError),
        (dict(eps=-1e-8), ValueError),
        (dict(eps=None), TypeError),
        (dict(learning_rate=-0.1), ValueError),
        (dict(learning_rate="0.1"), TypeError),
    ],
)
def test_invalid_arguments_raise(kwargs, error):
    (name,) = kwargs
    with pytest.raises(error, match=name):
        gx.reduce_on_plateau(**kwargs)
