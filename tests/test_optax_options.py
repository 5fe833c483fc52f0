"""Optax's options of existing transformations, and Optax's aliases beside torch's, against
Optax 0.2.8 itself.

Both libraries run the same 100 steps in float64, each inside one ``jax.jit`` (a ``lax.scan``
over the steps), from the same params and the same random gradients; the updates and the params
are compared at every step. ``rtol=1e-12``: the formulas are evaluated in a different order
(``sqrt(v + eps_root * c) / sqrt(c)`` versus ``sqrt(v / c + eps_root)``, ``g * rsqrt(x)`` versus
``g / sqrt(x)``, ``-expm1(t log b)`` versus ``1 - b^t``), a few ulps (~1e-16 each) per step,
which 100 steps of feedback through the params grow to ~1e-14 at most. ``atol=1e-14`` (~45 ulps
of 1.0) is for elements that cross zero, whose rounding error is at the scale of their O(1)
operands (the same bounds as ``tests/test_optax_interop.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.references import require_optax

optax = require_optax()

STEPS = 100
SHAPES = {"w": (3, 4), "b": (4,)}
RTOL = 1e-12
ATOL = 1e-14


def _params_and_grads(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = {k: jnp.asarray(rng.normal(size=s).astype(dtype)) for k, s in SHAPES.items()}
    grads = {k: jnp.asarray(rng.normal(size=(STEPS, *s))) for k, s in SHAPES.items()}
    return params, grads


def _history(tx, apply_updates, params, grads):
    """``(updates, params)`` after each of the steps, stacked, and the last state."""

    @jax.jit
    def run(params, grads):
        def step(carry, g):
            params, state = carry
            updates, state = tx.update(g, state, params)
            params = apply_updates(params, updates)
            return (params, state), (updates, params)

        (_, state), history = jax.lax.scan(step, (params, tx.init(params)), grads)
        return history, state

    return jax.tree.map(np.asarray, run(params, grads))


def _rmsprop_chain(learning_rate, decay, eps, initial_scale, eps_in_sqrt, centered, momentum,
                   nesterov, bias_correction):  # fmt: skip
    """Optax's ``rmsprop``, as the docstring of :func:`gradxform.rmsprop` writes it."""
    return gx.chain(
        gx.scale_by_rms(decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered=centered),
        gx.scale_by_learning_rate(learning_rate),
        gx.trace(momentum, nesterov),
    )


_RMSPROP = {
    "learning_rate": 1e-2,
    "decay": 0.8,
    "eps": 1e-3,
    "initial_scale": 0.5,
    "momentum": 0.9,
}

# (gradxform, optax, compare the states): factories, called inside the x64 context. One case per
# option that changes the rule.
CASES = {
    "scale_by_adam-nesterov": (
        lambda: gx.scale_by_adam(0.8, 0.95, 1e-6, 1e-10, nesterov=True),
        lambda: optax.scale_by_adam(0.8, 0.95, 1e-6, 1e-10, nesterov=True),
        True,
    ),
    "adam-nesterov-is-optax-nadam": (
        lambda: gx.adam(1e-2, 0.8, 0.95, nesterov=True),
        lambda: optax.nadam(1e-2, 0.8, 0.95),
        False,
    ),
    "adamw-nesterov": (
        lambda: gx.adamw(1e-2, 0.8, 0.95, weight_decay=0.1, nesterov=True),
        lambda: optax.adamw(1e-2, 0.8, 0.95, weight_decay=0.1, nesterov=True),
        False,
    ),
    "nadamw": (
        lambda: gx.nadamw(1e-2, 0.8, 0.95, 1e-6, 0.0, None, 0.1, gx.decay_matrices_only),
        lambda: optax.nadamw(1e-2, 0.8, 0.95, 1e-6, 0.0, None, 0.1, gx.decay_matrices_only),
        False,
    ),
    "adamaxw": (
        lambda: gx.adamaxw(1e-2, 0.8, 0.95, 1e-3, 0.1),
        lambda: optax.adamaxw(1e-2, 0.8, 0.95, 1e-3, 0.1),
        False,
    ),
    "scale_by_amsgrad": (
        lambda: gx.scale_by_amsgrad(0.8, 0.95, 1e-6, 1e-10),
        lambda: optax.scale_by_amsgrad(0.8, 0.95, 1e-6, 1e-10),
        True,
    ),
    "scale_by_amsgrad-uncorrected": (
        lambda: gx.scale_by_amsgrad(0.8, 0.95, 1e-6, 0.0, None, False, False),
        lambda: optax.scale_by_amsgrad(0.8, 0.95, 1e-6, 0.0, None, False, False),
        True,
    ),
    "scale_by_rms-bias_correction": (
        lambda: gx.scale_by_rms(0.9, 1e-8, 0.5, True, True),
        lambda: optax.scale_by_rms(0.9, 1e-8, 0.5, True, True),
        True,
    ),
    "scale_by_stddev-bias_correction": (
        lambda: gx.scale_by_stddev(0.9, 1e-3, 0.5, False, True),
        lambda: optax.scale_by_stddev(0.9, 1e-3, 0.5, False, True),
        True,
    ),
    **{
        f"rmsprop-chain-{'centered' if centered else 'plain'}": (
            lambda centered=centered: _rmsprop_chain(
                **_RMSPROP,
                eps_in_sqrt=not centered,
                centered=centered,
                nesterov=True,
                bias_correction=True,
            ),
            lambda centered=centered: optax.rmsprop(
                **_RMSPROP,
                eps_in_sqrt=not centered,
                centered=centered,
                nesterov=True,
                bias_correction=True,
            ),
            False,
        )
        for centered in (False, True)
    },
    # optax.lion has no mode: its chain with scale_by_lion's.
    **{
        f"lion-{mode}": (
            lambda mode=mode: gx.lion(1e-2, 0.8, 0.95, None, 0.1, mode=mode, smooth_beta=2.0),
            lambda mode=mode: optax.chain(
                optax.scale_by_lion(0.8, 0.95, mode=mode, smooth_beta=2.0),
                optax.add_decayed_weights(0.1),
                optax.scale_by_learning_rate(1e-2),
            ),
            False,
        )
        for mode in ("smooth", "refined")  # "hard": tests/test_optax_interop.py
    },
    "scale_by_sign": (gx.scale_by_sign, optax.scale_by_sign, True),
    "normalize_by_update_norm": (
        lambda: gx.normalize_by_update_norm(-0.5, 1e-6),
        lambda: optax.normalize_by_update_norm(-0.5, 1e-6),
        True,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_optax_float64_every_step(x64, case):
    make_gx, make_optax, same_state = CASES[case]
    params, grads = _params_and_grads()
    (got, got_state) = _history(make_gx(), gx.apply_updates, params, grads)
    (want, want_state) = _history(make_optax(), optax.apply_updates, params, grads)
    for name, g, w in zip(("updates", "params"), got, want, strict=True):
        for key in SHAPES:
            np.testing.assert_allclose(
                g[key], w[key], rtol=RTOL, atol=ATOL, err_msg=f"{case}: {name}[{key!r}]"
            )
    # The updates are not trivially zero (nor all of one size, but for the sign cases).
    last = np.concatenate([np.ravel(u[-1]) for u in want[0].values()])
    assert np.max(np.abs(last)) > 1e-4, case
    if same_state:
        # Optax's state: the same type name and fields, holding the same numbers.
        assert type(got_state).__name__ == type(want_state).__name__, case
        assert got_state._fields == want_state._fields, case
        for field in got_state._fields:
            for g, w in zip(
                jax.tree.leaves(getattr(got_state, field)),
                jax.tree.leaves(getattr(want_state, field)),
                strict=True,
            ):
                np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=f"{case}.{field}")


# accumulator_dtype wider than the gradients: float32 params (and gradients), float64 buffers.
# Optax's trace computes ``decay * t`` in the buffer's dtype and gradxform in the wider of the
# two (at least float32), so where the buffer is the wider one both compute in it: the same
# operations, and the float32 params are rounded from the same float64 updates. (Optax's ema
# computes ``(1 - decay) * g`` in the gradient's dtype, so no mixed-dtype ema agrees with it to
# float64 rounding; with one dtype ema is the case of tests/test_optax_interop.py.)
ACCUMULATOR_CASES = {
    "sgd": (
        lambda: gx.sgd(1e-2, 0.9, True, jnp.float64),
        lambda: optax.sgd(1e-2, 0.9, True, jnp.float64),
    ),
}


@pytest.mark.parametrize("case", list(ACCUMULATOR_CASES))
def test_a_wider_accumulator_matches_optax(x64, case):
    make_gx, make_optax = ACCUMULATOR_CASES[case]
    params, grads = _params_and_grads(dtype=np.float32)
    grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
    (got, got_state), (want, _) = (
        _history(make_gx(), gx.apply_updates, params, grads),
        _history(make_optax(), optax.apply_updates, params, grads),
    )
    for name, g, w in zip(("updates", "params"), got, want, strict=True):
        for key in SHAPES:
            assert g[key].dtype == w[key].dtype, (case, name)
            np.testing.assert_allclose(g[key], w[key], rtol=RTOL, atol=ATOL, err_msg=name)
    assert all(leaf.dtype == np.float64 for leaf in jax.tree.leaves(got_state)[1:])


def test_a_narrower_accumulator_rounds_only_the_stored_buffer(x64):
    # float64 gradients, a float32 buffer: b_t = g_t + mu * b_{t-1} in float64, stored rounded
    # to float32, the update the unrounded b_t (Nesterov: g_t + mu * b_t). A float64 NumPy
    # re-derivation; Optax instead rounds mu * b_{t-1} to float32 first (one more rounding).
    mu, lr = 0.9, 1e-2
    params, grads = _params_and_grads()
    (updates, _), state = _history(
        gx.sgd(lr, mu, True, jnp.float32), gx.apply_updates, params, grads
    )
    assert jax.tree.leaves(state)[1].dtype == np.float32
    for key in SHAPES:
        buffer = np.zeros(SHAPES[key], np.float32)
        for t in range(STEPS):
            g = np.asarray(grads[key][t])
            b = g + mu * buffer.astype(np.float64)
            want = -lr * (g + mu * b)
            np.testing.assert_allclose(updates[key][t], want, rtol=RTOL, atol=ATOL)
            buffer = b.astype(np.float32)


@pytest.mark.parametrize("scale", [2.5, -0.5, 0.0, 1.0])
def test_scale_gradient_matches_optax(x64, scale):
    x = {"a": jnp.linspace(-1.0, 2.0, 5), "b": jnp.asarray(3.0)}

    def loss(scale_gradient, x, s):
        y = scale_gradient(x, s)
        return jnp.sum(jnp.sin(y["a"]) * y["b"]) + y["b"] ** 3

    def grads(scale_gradient, s):
        return jax.grad(lambda x: loss(scale_gradient, x, s))(x)

    got, want = grads(gx.scale_gradient, scale), grads(optax.scale_gradient, scale)
    for key in x:
        np.testing.assert_allclose(got[key], want[key], rtol=RTOL, atol=0, err_msg=key)
    # Independently: the gradient of the identity's loss, times the scale.
    plain = jax.grad(lambda x: loss(lambda x, s: x, x, 0.0))(x)
    for key in x:
        np.testing.assert_allclose(got[key], scale * plain[key], rtol=RTOL, atol=0)
    # The forward value is the identity.
    assert gx.scale_gradient(x, scale) is x or gx.scale_gradient(x, scale)["b"] == x["b"]


def test_a_traced_scale_runs_the_general_program_zero_included():
    x = jnp.array([1.0, -2.0])

    @jax.jit
    def grad(s):
        return jax.grad(lambda x: jnp.sum(gx.scale_gradient(x, s) ** 2))(x)

    np.testing.assert_array_equal(grad(jnp.float32(0.0)), [0.0, 0.0])
    np.testing.assert_allclose(grad(jnp.float32(-3.0)), [-6.0, 12.0], rtol=1e-6)


def test_normalize_with_an_epsilon_that_may_be_zero_keeps_zero_updates_finite():
    # A static eps of 0, or one given as an array (whose value may be 0), is guarded: Optax's
    # 0 / 0 would be NaN.
    zeros = {"w": jnp.zeros(3)}
    for eps in (0.0, jnp.float32(0.0)):
        tx = gx.normalize_by_update_norm(eps=eps)
        updates, _ = tx.update(zeros, tx.init(zeros), zeros)
        np.testing.assert_array_equal(updates["w"], [0.0, 0.0, 0.0])
    tx = gx.normalize_by_update_norm(2.0, jnp.float32(0.0))
    updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init({"w": jnp.zeros(2)}))
    np.testing.assert_allclose(updates["w"], [1.2, 1.6], rtol=1e-6)


def test_lion_modes_differ_where_they_should():
    # One step from m = 0: x = (1 - b1) g. |x| < 1 is linear in "refined" and tanh in "smooth".
    g = {"w": jnp.array([-30.0, -0.5, 0.0, 0.5, 30.0])}
    x = 0.1 * g["w"]
    expected = {
        "hard": np.sign(x),
        "smooth": np.tanh(3.0 * x),
        "refined": np.where(np.abs(x) < 1, x, np.sign(x)),
    }
    for mode, want in expected.items():
        tx = gx.scale_by_lion(0.9, 0.99, mode=mode, smooth_beta=3.0)
        got, _ = tx.update(g, tx.init(g))
        np.testing.assert_allclose(got["w"], want, rtol=1e-6, err_msg=mode)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: gx.scale_by_lion(mode="soft"), ValueError, r"scale_by_lion: `mode` must be one"),
        (lambda: gx.lion(mode=None), ValueError, r"lion: `mode` must be one of"),
        (lambda: gx.lion(smooth_beta=-1.0), ValueError, r"lion: `smooth_beta` must be"),
        (
            lambda: gx.scale_by_adam(nesterov=True, amsgrad=True),
            ValueError,
            r"scale_by_adam: `nesterov=True` and `amsgrad=True`",
        ),
        (lambda: gx.adam(nesterov=True, amsgrad=True), ValueError, r"adam: `nesterov=True`"),
        (lambda: gx.adamw(nesterov=1), TypeError, r"adamw: `nesterov` must be True or False"),
        (lambda: gx.scale_gradient({}, "2"), TypeError, r"scale_gradient: `scale` must be"),
        (lambda: gx.scale_gradient({}, np.nan), ValueError, r"scale_gradient: `scale` must be"),
        (lambda: gx.normalize_by_update_norm(eps=-1.0), ValueError, r"`eps` must be"),
        (lambda: gx.scale_by_rms(bias_correction=1), TypeError, r"`bias_correction` must be"),
    ],
)
def test_invalid_options_raise_at_construction(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_torch_records_only_what_torch_has():
    # torch's Adam has no Nesterov form: such an optimizer records no torch class.
    assert gx.optimizers.adam_family.adam.__name__ == "adam"
    from gradxform.optimizers._links import torch_spec

    assert torch_spec(gx.adam()) is not None
    assert torch_spec(gx.adam(nesterov=True)) is None
    assert torch_spec(gx.adamw(nesterov=True)) is None
