"""Agreement with Optax where the semantics are the same, and mixing the two libraries.

In float64 both libraries are fed the same gradients for 50 steps and the updates and params
are compared at every step with ``rtol=1e-12, atol=1e-14``: the formulas are evaluated in a
different order (``sqrt(v) / sqrt(c)`` versus ``sqrt(v / c)``, ``g * rsqrt(x)`` versus
``g / sqrt(x)``, ...), which costs a few ulps per step; the ``atol`` (~45 ulps of 1.0) is for
elements near zero, whose rounding error is at the scale of their O(1) operands.

Where Optax differs on purpose, there is no comparison: ``optax.adagrad`` and
``optax.rmsprop``'s default put eps inside the root, ``optax.amsgrad`` takes the maximum of the
bias-corrected second moment, ``optax.nadam`` has no momentum schedule, and
``optax.clip_by_global_norm`` has no ``1e-6`` in the denominator (gradxform follows torch).
"""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.references import require_optax

optax = require_optax()

STEPS = 50
SHAPES = {"w": (3, 4), "b": (4,)}
RTOL = 1e-12
ATOL = 1e-14


def _initial_params(seed=0):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.normal(size=s)) for k, s in SHAPES.items()}


def _random_grads(seed=1, steps=STEPS):
    rng = np.random.default_rng(seed)
    return [{k: jnp.asarray(rng.normal(size=s)) for k, s in SHAPES.items()} for _ in range(steps)]


def _trajectory(tx, params, grads):
    """``[(updates, params)]`` after each step of ``tx`` on the given gradients, as NumPy."""

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return gx.apply_updates(params, updates), updates, state

    state = tx.init(params)
    history = []
    for g in grads:
        params, updates, state = step(params, state, g)
        history.append(jax.tree.map(np.asarray, (updates, params)))
    return history


# ----------------------------------------------------------------------------------------------
# Same semantics, same numbers.

# (gradxform, optax): factories, called inside the x64 context.
AGREEING = {
    "adam": (
        lambda: gx.adam(1e-2, b1=0.8, b2=0.95, eps=1e-6),
        lambda: optax.adam(1e-2, b1=0.8, b2=0.95, eps=1e-6),
    ),
    "adam-defaults": (lambda: gx.adam(), lambda: optax.adam(1e-3)),
    # optax.adamw is chain(scale_by_adam, add_decayed_weights, scale_by_learning_rate):
    # p <- p - lr * (u + wd * p), torch's decoupled form. Its default wd (1e-4) is not torch's.
    "adamw": (
        lambda: gx.adamw(1e-2, b1=0.8, b2=0.95, weight_decay=0.1),
        lambda: optax.adamw(1e-2, b1=0.8, b2=0.95, weight_decay=0.1),
    ),
    "adamw-mask": (
        lambda: gx.adamw(1e-2, weight_decay=0.1, mask=gx.decay_matrices_only),
        lambda: optax.adamw(1e-2, weight_decay=0.1, mask=gx.decay_matrices_only),
    ),
    "adamax": (
        lambda: gx.adamax(1e-2, b1=0.8, b2=0.95, eps=1e-3),
        lambda: optax.adamax(1e-2, b1=0.8, b2=0.95, eps=1e-3),
    ),
    "sgd": (lambda: gx.sgd(0.1), lambda: optax.sgd(0.1)),
    # optax.trace starts from a zero buffer and adds g: b_1 = g_1, torch's first step.
    "sgd-momentum": (lambda: gx.sgd(0.1, momentum=0.9), lambda: optax.sgd(0.1, momentum=0.9)),
    "sgd-nesterov": (
        lambda: gx.sgd(0.1, momentum=0.9, nesterov=True),
        lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
    ),
    "rmsprop-centered-momentum": (
        lambda: gx.rmsprop(1e-2, decay=0.9, eps=1e-3, momentum=0.9, centered=True),
        lambda: optax.rmsprop(
            1e-2, decay=0.9, eps=1e-3, eps_in_sqrt=False, momentum=0.9, centered=True
        ),
    ),
    "lion": (
        lambda: gx.lion(1e-3, b1=0.8, b2=0.95, weight_decay=0.1),
        lambda: optax.lion(1e-3, b1=0.8, b2=0.95, weight_decay=0.1),
    ),
    "scale_by_adam-eps_root": (
        lambda: gx.scale_by_adam(b1=0.8, b2=0.95, eps=1e-8, eps_root=1e-6),
        lambda: optax.scale_by_adam(b1=0.8, b2=0.95, eps=1e-8, eps_root=1e-6),
    ),
    "scale_by_adam-eps_root-only": (
        lambda: gx.scale_by_adam(eps=0.0, eps_root=1e-6),
        lambda: optax.scale_by_adam(eps=0.0, eps_root=1e-6),
    ),
    "clip": (lambda: gx.clip(0.5), lambda: optax.clip(0.5)),
    "ema-debias": (lambda: gx.ema(0.9, debias=True), lambda: optax.ema(0.9, debias=True)),
    "ema": (lambda: gx.ema(0.9, debias=False), lambda: optax.ema(0.9, debias=False)),
    # Optax's scale_by_rms / scale_by_stddev default to decay 0.9 and eps inside the root.
    "scale_by_rms-eps_in_sqrt": (
        lambda: gx.scale_by_rms(0.9, 1e-8, eps_in_sqrt=True, initial_scale=0.5),
        lambda: optax.scale_by_rms(0.9, 1e-8, initial_scale=0.5, eps_in_sqrt=True),
    ),
    "scale_by_rms-eps_outside": (
        lambda: gx.scale_by_rms(0.99, 1e-3, eps_in_sqrt=False),
        lambda: optax.scale_by_rms(0.99, 1e-3, eps_in_sqrt=False),
    ),
    "scale_by_stddev-eps_in_sqrt": (
        lambda: gx.scale_by_stddev(0.9, 1e-8, eps_in_sqrt=True, initial_scale=0.5),
        lambda: optax.scale_by_stddev(0.9, 1e-8, initial_scale=0.5, eps_in_sqrt=True),
    ),
    "scale_by_stddev-eps_outside": (
        lambda: gx.scale_by_stddev(0.99, 1e-3, eps_in_sqrt=False, initial_scale=0.5),
        lambda: optax.scale_by_stddev(0.99, 1e-3, initial_scale=0.5, eps_in_sqrt=False),
    ),
}


@pytest.mark.parametrize("case", list(AGREEING))
def test_matches_optax_float64(x64, case):
    make_gx, make_optax = AGREEING[case]
    params, grads = _initial_params(), _random_grads()
    got = _trajectory(make_gx(), params, grads)
    want = _trajectory(make_optax(), params, grads)
    chex.assert_trees_all_close(got, want, rtol=RTOL, atol=ATOL, custom_message=case)
    # The updates are not trivially zero.
    assert all(np.max(np.abs(u)) > 1e-4 for u in jax.tree.leaves(want[-1][0])), case


# ----------------------------------------------------------------------------------------------
# Mixing the libraries.


def _quadratic(seed=3):
    """``0.5 * sum a * (p - target)^2`` over the tree, a > 0: a loss every optimizer can fit."""
    rng = np.random.default_rng(seed)
    a = {k: jnp.asarray(rng.uniform(0.5, 1.5, size=s)) for k, s in SHAPES.items()}
    target = {k: jnp.asarray(rng.normal(size=s)) for k, s in SHAPES.items()}

    def loss(params):
        return sum(0.5 * jnp.sum(a[k] * (params[k] - target[k]) ** 2) for k in SHAPES)

    return loss


def _train(tx, loss, params, steps=200):
    """Params after every step of training ``loss`` with ``tx``, and the final loss."""

    @jax.jit
    def step(params, state):
        value, g = jax.value_and_grad(loss)(params)
        updates, state = tx.update(g, state, params, value=value)
        return gx.apply_updates(params, updates), state

    state = tx.init(params)
    history = []
    for _ in range(steps):
        params, state = step(params, state)
        history.append(jax.tree.map(np.asarray, params))
    return history, float(loss(params))


MIXED = {
    # A gradxform transformation inside optax.chain equals the all-gradxform chain.
    "optax.chain(gx.clip_by_global_norm, gx.adam)": (
        lambda: optax.chain(gx.clip_by_global_norm(1.0), gx.adam(5e-2)),
        lambda: gx.chain(gx.clip_by_global_norm(1.0), gx.adam(5e-2)),
    ),
    "optax.chain(optax.clip, gx.adam)": (
        lambda: optax.chain(optax.clip(0.5), gx.adam(5e-2)),
        lambda: gx.chain(gx.clip(0.5), gx.adam(5e-2)),
    ),
    # Optax's global-norm clipping (no 1e-6) before gx.adam equals the all-Optax chain.
    "optax.chain(optax.clip_by_global_norm, gx.adam)": (
        lambda: optax.chain(optax.clip_by_global_norm(1.0), gx.adam(5e-2)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(5e-2)),
    ),
    # An Optax transformation inside gx.chain equals the all-gradxform chain.
    "gx.chain(optax.clip, gx.sgd)": (
        lambda: gx.chain(optax.clip(0.5), gx.sgd(0.1)),
        lambda: gx.chain(gx.clip(0.5), gx.sgd(0.1)),
    ),
    "gx.chain(optax.scale_by_adam, gx.scale_by_learning_rate)": (
        lambda: gx.chain(optax.scale_by_adam(), gx.scale_by_learning_rate(5e-2)),
        lambda: gx.adam(5e-2),
    ),
}


@pytest.mark.parametrize("case", list(MIXED))
def test_mixed_chains_train_and_agree(x64, case):
    make_mixed, make_reference = MIXED[case]
    loss = _quadratic()
    params = _initial_params()
    got, final = _train(make_mixed(), loss, params)
    want, _ = _train(make_reference(), loss, params)
    chex.assert_trees_all_close(got, want, rtol=RTOL, atol=ATOL, custom_message=case)
    initial = float(loss(params))
    assert final < 1e-2 * initial, (case, initial, final)


def test_optax_inject_hyperparams_wraps_a_gradxform_optimizer(x64):
    """``optax.inject_hyperparams(gx.adam)`` keeps the learning rate in the state and is adam."""
    injected = optax.inject_hyperparams(gx.adam)(learning_rate=1e-2, b1=0.8)
    params, grads = _initial_params(), _random_grads()
    chex.assert_trees_all_close(
        _trajectory(injected, params, grads),
        _trajectory(gx.adam(1e-2, b1=0.8), params, grads),
        rtol=RTOL,
        atol=ATOL,
    )
    state = injected.init(params)
    np.testing.assert_allclose(state.hyperparams["learning_rate"], 1e-2, rtol=0)


# ----------------------------------------------------------------------------------------------
# Extra arguments through gx.chain.


def _recording(received):
    """An Optax ``GradientTransformationExtraArgs`` that records its extra args and scales
    the updates by ``value``, so the effect shows in the numbers too."""

    def update(updates, state, params=None, **extra_args):
        received.append(sorted(extra_args))
        return jax.tree.map(lambda u: u * extra_args["value"], updates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def _value_only(received):
    """Declares ``value`` alone: it must get ``value`` and nothing else."""

    def update(updates, state, params=None, *, value):
        received.append(float(value))
        return updates, state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def test_gx_chain_passes_extra_args_only_to_transforms_that_declare_them(x64):
    plain = optax.clip(0.5)
    # A plain Optax transformation: its update takes no extra args and would raise if given one.
    assert not isinstance(plain, optax.GradientTransformationExtraArgs)
    assert "value" not in inspect.signature(plain.update).parameters
    received, values = [], []
    opt = gx.chain(plain, _value_only(values), _recording(received), gx.sgd(0.1))
    params, grads = _initial_params(), _random_grads(steps=1)[0]
    updates, _ = opt.update(grads, opt.init(params), params, value=jnp.asarray(3.0), other=1)
    assert values == [3.0]
    assert received == [["other", "value"]]
    expected = jax.tree.map(lambda g: -0.1 * 3.0 * np.clip(g, -0.5, 0.5), grads)
    chex.assert_trees_all_close(updates, expected, rtol=RTOL, atol=ATOL)


def test_gx_chain_passes_value_to_an_optax_transform_that_declares_it(x64):
    """``optax.contrib.reduce_on_plateau`` declares ``value`` (keyword-only, required).

    With a constant loss the first step sets the best value; every later step is a plateau,
    and every ``patience = 2`` plateau steps the scale is multiplied by ``factor = 0.5``:
    scales 1, 1, 0.5, 0.5, 0.25, 0.25, 0.125 over seven steps.
    """
    plateau = optax.contrib.reduce_on_plateau(patience=2, factor=0.5, accumulation_size=1)
    opt = gx.chain(gx.sgd(1.0), plateau)
    params = _initial_params()
    grads = jax.tree.map(jnp.ones_like, params)
    step = jax.jit(lambda state: opt.update(grads, state, params, value=jnp.asarray(1.0), other=1))
    state = opt.init(params)
    scales = []
    for _ in range(7):
        updates, state = step(state)
        scales.append(float(-updates["b"][0]))
    np.testing.assert_allclose(scales, [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125], rtol=0)
    with pytest.raises(TypeError, match="value"):
        opt.update(grads, state, params)  # without `value`, the Optax transform must complain


# ----------------------------------------------------------------------------------------------
# Flax.


def test_flax_train_state_with_a_gradxform_optimizer(x64):
    train_state = pytest.importorskip("flax.training.train_state")
    params, grads = _initial_params(), _random_grads(steps=2)
    tx = gx.adam(5e-2)
    state = train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
    for g in grads:
        state = state.apply_gradients(grads=g)
    assert int(state.step) == 2
    want = _trajectory(tx, params, grads)[-1][1]
    # dict(): flax may hand the params back as its own mapping type; the leaves are compared.
    chex.assert_trees_all_close(dict(state.params), want, rtol=RTOL, atol=ATOL)
