"""Property tests (hypothesis): algebraic laws of chain and identity, Adam's invariance to the
gradient scale, and apply_updates' dtypes.

Shapes are fixed and updates run eagerly, so no example triggers a compilation: each JAX
primitive compiles once per shape and dtype, and all examples after the first reuse it.
"""

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradxform as gx

SETTINGS = settings(max_examples=30, deadline=None)

SHAPES = {"w": (3,), "b": (2,)}
PARAMS = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array([0.1, -0.3])}

# Transformations with and without state, needing params or not; each a factory so that every
# chain gets fresh instances.
POOL = [
    gx.identity,
    lambda: gx.scale(-0.5),
    lambda: gx.clip(1.0),
    lambda: gx.clip_by_global_norm(2.0),
    lambda: gx.trace(0.9),
    lambda: gx.trace(0.5, nesterov=True),
    lambda: gx.ema(0.9),
    lambda: gx.scale_by_adam(),
    lambda: gx.scale_by_rms(centered=True),
    lambda: gx.scale_by_rss(0.1),
    lambda: gx.scale_by_lion(),
    lambda: gx.add_decayed_weights(0.1),
    lambda: gx.zero_nans(),
    lambda: gx.scale_by_learning_rate(lambda count: 0.1 / (1 + count)),
    lambda: gx.masked(gx.scale_by_adam(), {"w": True, "b": False}),
]

finite_f32 = st.floats(-100, 100, allow_nan=False, width=32)


def _grad_tree(elements=finite_f32, dtype=np.float32):
    return st.fixed_dictionaries(
        {k: hnp.arrays(dtype, shape, elements=elements) for k, shape in SHAPES.items()}
    )


def _run(transform, grads):
    state = transform.init(PARAMS)
    outputs = []
    for g in grads:
        updates, state = transform.update(jax.tree.map(jnp.asarray, g), state, PARAMS)
        outputs.append(updates)
    return outputs, state


indices = st.integers(0, len(POOL) - 1)


@SETTINGS
@given(i=indices, j=indices, k=indices, grads=st.lists(_grad_tree(), min_size=2, max_size=2))
def test_chain_is_associative(i, j, k, grads):
    left = gx.chain(gx.chain(POOL[i](), POOL[j]()), POOL[k]())
    right = gx.chain(POOL[i](), gx.chain(POOL[j](), POOL[k]()))
    left_updates, left_state = _run(left, grads)
    right_updates, right_state = _run(right, grads)
    # The same operations in the same order: bit for bit the same, states included. The states
    # nest differently (a chain's state is a tuple per chain), so their leaves are compared.
    chex.assert_trees_all_equal(left_updates, right_updates, strict=True)
    chex.assert_trees_all_equal(
        jax.tree.leaves(left_state), jax.tree.leaves(right_state), strict=True
    )


@SETTINGS
@given(i=indices, grads=st.lists(_grad_tree(), min_size=2, max_size=2))
def test_identity_is_neutral_on_both_sides(i, grads):
    alone, alone_state = _run(POOL[i](), grads)
    for wrapped in (gx.chain(gx.identity(), POOL[i]()), gx.chain(POOL[i](), gx.identity())):
        updates, state = _run(wrapped, grads)
        chex.assert_trees_all_equal(updates, alone, strict=True)
        # The chain's state holds the identity's empty state too: the leaves are compared.
        chex.assert_trees_all_equal(
            jax.tree.leaves(state), jax.tree.leaves(alone_state), strict=True
        )


# Gradient entries are 0 or of magnitude in [1e-3, 10]: neither c * g nor (c * g)^2 comes near
# float64's underflow or overflow for c in [1e-3, 1e3].
_magnitudes = st.one_of(st.just(0.0), st.floats(1e-3, 10.0))
_entries = st.tuples(_magnitudes, st.booleans()).map(lambda ms: -ms[0] if ms[1] else ms[0])


@settings(max_examples=40, deadline=None)
@given(
    grads=st.lists(hnp.arrays(np.float64, (6,), elements=_entries), min_size=1, max_size=4),
    c=st.floats(1e-3, 1e3),
    amsgrad=st.booleans(),
)
def test_adam_is_invariant_to_gradient_scale(grads, c, amsgrad):
    # With eps = 0, m scales by c, v by c^2, so m_hat / sqrt(v_hat) does not change: the only
    # differences are roundings. Each of m and v is a sum of at most 4 terms rounded a few
    # times per step, so its error is at most ~20 ulps (2e-15 relative) of the sum of the
    # absolute values of its terms; m's terms may cancel, so the error bound for an update is
    # 2e-15 * (|u| + m_abs_hat / sqrt(v_hat)), with m_abs the first moment of |g|. The check
    # uses 1e-13, fifty times that.
    b1, b2 = 0.9, 0.999
    with jax.enable_x64(True):
        results = []
        for factor in (1.0, c):
            transform = gx.scale_by_adam(b1, b2, eps=0.0, amsgrad=amsgrad)
            state = transform.init({"w": jnp.zeros(6)})
            for g in grads:
                updates, state = transform.update({"w": jnp.asarray(factor * g)}, state)
            results.append(np.asarray(updates["w"]))
    base, scaled = results
    t = len(grads)
    m_abs = sum((1 - b1) * b1 ** (t - s) * np.abs(g) for s, g in enumerate(grads, start=1))
    v = sum((1 - b2) * b2 ** (t - s) * g**2 for s, g in enumerate(grads, start=1))
    zero = v == 0  # no gradient yet at these coordinates: both updates are exactly 0
    np.testing.assert_array_equal(base[zero], 0.0)
    np.testing.assert_array_equal(scaled[zero], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = (m_abs / (1 - b1**t)) / np.sqrt(v / (1 - b2**t))
    bound = 1e-13 * (np.abs(base) + spread)
    assert np.all(np.abs(scaled - base)[~zero] <= bound[~zero]), (base, scaled, bound)


_FLOAT_DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]
# 0 or 1e-3 <= |x| <= 100: normal numbers in every dtype here (float16's range is 6e-5 to
# 65504). Subnormal inputs are left out because XLA on CPU flushes them to zero.
_values = st.tuples(st.one_of(st.just(0.0), st.floats(1e-3, 100.0)), st.booleans()).map(
    lambda ms: -ms[0] if ms[1] else ms[0]
)


@settings(max_examples=40, deadline=None)
@given(
    dtypes=st.lists(
        st.tuples(st.sampled_from(_FLOAT_DTYPES), st.sampled_from(_FLOAT_DTYPES)),
        min_size=1,
        max_size=4,
    ),
    data=st.data(),
)
def test_apply_updates_keeps_dtypes(dtypes, data):
    params, updates = {}, {}
    for n, (param_dtype, update_dtype) in enumerate(dtypes):
        p = data.draw(hnp.arrays(np.float64, (4,), elements=_values))
        u = data.draw(hnp.arrays(np.float64, (4,), elements=_values))
        params[f"p{n}"] = p.astype(param_dtype)
        updates[f"p{n}"] = u.astype(update_dtype)
    with jax.enable_x64(True):
        new = gx.apply_updates(
            jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, updates)
        )
        for name, p in params.items():
            got = new[name]
            assert got.dtype == p.dtype
            # The exact sum (float64 holds it) rounded to the param's dtype; the library may
            # round through float32 first, so allow one ulp of the param's dtype.
            exact = p.astype(np.float64) + updates[name].astype(np.float64)
            info = ml_dtypes.finfo(p.dtype)
            np.testing.assert_allclose(
                np.asarray(got, np.float64),
                exact.astype(p.dtype).astype(np.float64),
                rtol=float(info.eps),
                atol=float(info.smallest_subnormal),
            )
