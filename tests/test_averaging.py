"""Tests of gradxform.averaging: ema_params, swa_params, averaged_params and lookahead.

References: the closed forms of the averages over the recorded parameter path, a NumPy
re-derivation of Lookahead around momentum SGD, and ``torch.optim.swa_utils.AveragedModel``.
float64 comparisons use ``rtol=1e-12``: the averages are summed in a different order than the
references (a recursion against an explicit sum), which costs a few ulps per step, while a
wrong start step, a missing first copy or a sync one step off changes the result at 1e-2.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

RTOL64 = 1e-12
SHAPES = {"w": (3, 2), "b": (2,)}


def _init(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s) for k, s in SHAPES.items()}


def _affine_grad(seed=3):
    """``g = a * p + c`` (a > 0), evaluated in NumPy from whichever params it is given."""
    rng = np.random.default_rng(seed)
    coef = {k: (rng.uniform(0.5, 1.5, size=s), rng.normal(size=s)) for k, s in SHAPES.items()}
    return lambda params: {k: coef[k][0] * np.asarray(params[k]) + coef[k][1] for k in coef}


def _run(opt, steps, params=None):
    """Runs ``opt`` on the affine gradient; returns the params after each step and the state."""
    grad_fn = _affine_grad()
    params = jax.tree.map(jnp.asarray, _init()) if params is None else params
    update = jax.jit(opt.update)
    state = opt.init(params)
    path = []
    for _ in range(steps):
        updates, state = update(grad_fn(params), state, params)
        params = gx.apply_updates(params, updates)
        path.append(jax.tree.map(np.asarray, params))
    return path, state


def _signature(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype, jax.typeof(x).weak_type), tree)


# ----------------------------------------------------------------------------------------------
# ema_params and swa_params


@pytest.mark.parametrize("start_step", [0, 4])
def test_ema_params_is_the_closed_form_over_the_path(x64, start_step):
    decay, steps = 0.8, 12
    path, state = _run(
        gx.chain(gx.sgd(0.05, momentum=0.9), gx.ema_params(decay, start_step=start_step)), steps
    )
    # The updates pass through unchanged: the same path as without the average.
    plain, _ = _run(gx.sgd(0.05, momentum=0.9), steps)
    for k in SHAPES:
        np.testing.assert_array_equal(path[-1][k], plain[-1][k])
    # a_T = decay^(T-s-1) q_{s+1} + sum_{t=s+2}^{T} (1 - decay) decay^(T-t) q_t, q_t = path[t-1]
    s, T = start_step, steps
    for k in SHAPES:
        want = decay ** (T - s - 1) * path[s][k] + sum(
            (1 - decay) * decay ** (T - t) * path[t - 1][k] for t in range(s + 2, T + 1)
        )
        np.testing.assert_allclose(gx.averaged_params(state)[k], want, rtol=RTOL64, atol=0)


@pytest.mark.parametrize("start_step", [0, 5])
def test_swa_params_is_the_mean_of_the_path(x64, start_step):
    steps = 11
    path, state = _run(
        gx.chain(gx.sgd(0.05, momentum=0.9), gx.swa_params(start_step=start_step)), steps
    )
    for k in SHAPES:
        want = np.mean([q[k] for q in path[start_step:]], axis=0)
        np.testing.assert_allclose(gx.averaged_params(state)[k], want, rtol=RTOL64, atol=0)
    assert int(state[-1].count) == steps


def test_averages_before_the_start_step_follow_the_params(x64):
    path, state = _run(gx.chain(gx.sgd(0.1), gx.ema_params(0.9, start_step=10)), 3)
    for k in SHAPES:  # equal up to XLA fusing ``p + u`` differently in and out of the update
        np.testing.assert_allclose(gx.averaged_params(state)[k], path[-1][k], rtol=RTOL64, atol=0)


@pytest.mark.parametrize("kind", ["swa", "ema"])
def test_averages_match_torch_averaged_model(torch64, kind):
    torch = torch64
    swa_utils = torch.optim.swa_utils
    steps, start_step, lr, decay = 15, 3, 0.05, 0.7
    init = _init()
    grad_fn = _affine_grad()

    model = torch.nn.Module()
    for k, v in init.items():
        model.register_parameter(k, torch.nn.Parameter(torch.tensor(v)))
    if kind == "swa":
        averaged = swa_utils.AveragedModel(model)
        transform = gx.swa_params(start_step=start_step)
    else:
        averaged = swa_utils.AveragedModel(
            model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(decay)
        )
        transform = gx.ema_params(decay, start_step=start_step)
    torch_opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for t in range(1, steps + 1):
        grads = grad_fn({k: p.detach().numpy() for k, p in model.named_parameters()})
        for k, p in model.named_parameters():
            p.grad = torch.tensor(grads[k])
        torch_opt.step()
        if t > start_step:
            averaged.update_parameters(model)

    _, state = _run(gx.chain(gx.sgd(lr, momentum=0.9), transform), steps)
    ours = gx.averaged_params(state)
    for k, p in averaged.module.named_parameters():
        np.testing.assert_allclose(ours[k], p.detach().numpy(), rtol=RTOL64, atol=0)


def test_averaged_params_finds_exactly_one_average():
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="found 0"):
        gx.averaged_params(gx.adam().init(params))
    two = gx.chain(gx.ema_params(0.9), gx.swa_params()).init(params)
    with pytest.raises(ValueError, match="found 2"):
        gx.averaged_params(two)
    # Inside wrappers too.
    state = gx.MultiSteps(gx.chain(gx.sgd(0.1), gx.ema_params(0.9)), 2).init(params)
    np.testing.assert_array_equal(gx.averaged_params(state)["w"], np.ones(2))


def test_average_state_never_aliases_params():
    params = {"w": jnp.arange(4.0)}
    for transform in (gx.ema_params(0.9), gx.swa_params(), gx.lookahead(gx.sgd(0.1))):
        state = transform.init(params)
        copy = gx.averaged_params(state) if hasattr(state, "average") else state.slow
        assert copy["w"].unsafe_buffer_pointer() != params["w"].unsafe_buffer_pointer()
        np.testing.assert_array_equal(copy["w"], params["w"])


def test_averaging_validates_and_needs_params():
    with pytest.raises(
        ValueError, match=r"ema_params: `decay` must be a number in \[0, 1\], got 1.5"
    ):
        gx.ema_params(1.5)
    with pytest.raises(
        ValueError, match=r"swa_params: `start_step` must be a whole number in \[0,"
    ):
        gx.swa_params(start_step=-1)
    opt = gx.ema_params(0.9)
    with pytest.raises(ValueError, match="needs `params`"):
        opt.update({"w": jnp.ones(2)}, opt.init({"w": jnp.ones(2)}))


# ----------------------------------------------------------------------------------------------
# lookahead


def _np_lookahead_momentum(init, grad_fn, steps, lr, mu, k, alpha):
    """Lookahead around torch-style momentum SGD (buffer kept across syncs), in NumPy."""
    fast = dict(init)
    slow = dict(init)
    buf = None
    fast_path, slow_path = [], []
    for t in range(1, steps + 1):
        g = grad_fn(fast)
        buf = g if buf is None else {key: mu * buf[key] + g[key] for key in g}
        fast = {key: fast[key] - lr * buf[key] for key in g}
        if t % k == 0:
            slow = {key: slow[key] + alpha * (fast[key] - slow[key]) for key in g}
            fast = dict(slow)
        fast_path.append(fast)
        slow_path.append(slow)
    return fast_path, slow_path


@pytest.mark.parametrize(("sync_period", "alpha"), [(3, 0.5), (1, 0.25), (4, 1.0)])
def test_lookahead_matches_numpy(x64, sync_period, alpha):
    steps, lr, mu = 13, 0.05, 0.9
    opt = gx.lookahead(gx.sgd(lr, momentum=mu), sync_period=sync_period, slow_step_size=alpha)
    grad_fn = _affine_grad()
    want_fast, want_slow = _np_lookahead_momentum(
        _init(), grad_fn, steps, lr, mu, sync_period, alpha
    )
    params = jax.tree.map(jnp.asarray, _init())
    state = opt.init(params)
    update = jax.jit(opt.update)
    for t in range(steps):
        updates, state = update(grad_fn(params), state, params)
        params = gx.apply_updates(params, updates)
        slow = gx.lookahead_slow_params(state)
        for k in SHAPES:
            np.testing.assert_allclose(params[k], want_fast[t][k], rtol=RTOL64, atol=0)
            np.testing.assert_allclose(slow[k], want_slow[t][k], rtol=RTOL64, atol=0)


def test_lookahead_validates():
    with pytest.raises(
        ValueError, match=r"lookahead: `sync_period` must be a whole number in \[1,"
    ):
        gx.lookahead(gx.sgd(0.1), sync_period=0)
    with pytest.raises(
        ValueError, match=r"lookahead: `slow_step_size` must be a number in \[0, 1\]"
    ):
        gx.lookahead(gx.sgd(0.1), slow_step_size=1.5)
    with pytest.raises(TypeError, match="Did you pass an optimizer factory"):
        gx.lookahead(gx.adam)
    opt = gx.lookahead(gx.sgd(0.1))
    with pytest.raises(ValueError, match="needs `params`"):
        opt.update({"w": jnp.ones(2)}, opt.init({"w": jnp.ones(2)}))
    with pytest.raises(ValueError, match="exactly one LookaheadState"):
        gx.lookahead_slow_params(gx.adam().init({"w": jnp.ones(2)}))


# ----------------------------------------------------------------------------------------------
# Under jit: one trace, stable state.


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
    "make",
    [
        lambda: gx.chain(gx.adam(1e-2), gx.ema_params(0.99, accumulator_dtype=jnp.float32)),
        lambda: gx.chain(gx.adam(1e-2), gx.swa_params(start_step=1)),
        lambda: gx.chain(gx.lookahead(gx.adam(1e-2), sync_period=2), gx.ema_params(0.9)),
    ],
    ids=["ema_params", "swa_params", "lookahead"],
)
def test_averaging_under_jit_traces_once_with_stable_state(make, dtype):
    opt = make()
    params = {k: jnp.ones(s, dtype) for k, s in SHAPES.items()}
    grads = {k: jnp.full(s, 0.5, dtype) for k, s in SHAPES.items()}

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = opt.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    state = opt.init(params)
    expected = _signature(state)
    for _ in range(5):
        params, state = step(params, state)
    assert _signature(state) == expected
    assert all(x.dtype == dtype for x in jax.tree.leaves(params))
