"""The protocol (gradxform/_base.py): chain, named_chain, identity, stateless, apply_updates,
routing of extra arguments, and the errors every transformation gives for misuse."""

import types

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from optimizer_table import every_optimizer, loss_update, table

import gradxform as gx
from tests.references import require_optax

# --- chain and named_chain ----------------------------------------------------------------


def test_chain_state_is_a_tuple_in_order():
    params = {"w": jnp.ones(3)}
    opt = gx.chain(gx.trace(0.5), gx.scale_by_adam(), gx.scale(2.0))
    state = opt.init(params)
    assert type(state) is tuple and len(state) == 3
    assert isinstance(state[0], gx.TraceState)
    assert isinstance(state[1], gx.ScaleByAdamState)
    assert isinstance(state[2], gx.EmptyState)
    _, new_state = opt.update({"w": jnp.ones(3)}, state, params)
    assert type(new_state) is tuple
    assert [type(s) for s in new_state] == [type(s) for s in state]
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


@pytest.mark.parametrize(
    "first, second, expected",
    [
        # 0.8 -> 1.6 -> clipped to 1
        (gx.scale(2.0), gx.clip(1.0), 1.0),
        # 0.8 -> clipped to 0.8 -> 1.6
        (gx.clip(1.0), gx.scale(2.0), 1.6),
        # 0.8 -> 1.8 -> 3.6
        (gx.stateless(lambda u, p: jax.tree.map(lambda x: x + 1, u)), gx.scale(2.0), 3.6),
        # 0.8 -> 1.6 -> 2.6
        (gx.scale(2.0), gx.stateless(lambda u, p: jax.tree.map(lambda x: x + 1, u)), 2.6),
    ],
)
def test_chain_applies_in_order(first, second, expected):
    opt = gx.chain(first, second)
    updates, _ = opt.update({"w": jnp.array([0.8])}, opt.init({"w": jnp.zeros(1)}))
    np.testing.assert_allclose(np.asarray(updates["w"]), [expected], rtol=1e-7)


def test_chain_state_passes_between_steps():
    # trace(0.5) with g = 1 every step: b_t = 1 + 0.5 b_{t-1} = 1, 1.5, 1.75.
    opt = gx.chain(gx.trace(0.5), gx.scale(-1.0))
    params = {"w": jnp.zeros(2)}
    state = opt.init(params)
    for expected in (1.0, 1.5, 1.75):
        updates, state = opt.update({"w": jnp.ones(2)}, state, params)
        np.testing.assert_array_equal(np.asarray(updates["w"]), [-expected] * 2)


def test_empty_chain_is_identity():
    opt = gx.chain()
    state = opt.init({"w": jnp.ones(2)})
    assert state == ()
    updates, state = opt.update({"w": jnp.array([1.0, -2.0])}, state)
    np.testing.assert_array_equal(np.asarray(updates["w"]), [1.0, -2.0])


def test_chain_rejects_state_of_wrong_length():
    opt = gx.chain(gx.scale(1.0), gx.scale(2.0))
    with pytest.raises(ValueError, match="chain of 2 transformations"):
        opt.update({"w": jnp.ones(1)}, (gx.EmptyState(),))


def test_named_chain_state_is_a_dict_in_order():
    params = {"w": jnp.ones(3)}
    opt = gx.named_chain(("momentum", gx.trace(0.9)), ("lr", gx.scale(-0.1)))
    state = opt.init(params)
    assert isinstance(state, dict) and list(state) == ["momentum", "lr"]
    assert isinstance(state["momentum"], gx.TraceState)
    assert isinstance(state["lr"], gx.EmptyState)
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}
    updates, new_state = opt.update(grads, state, params)
    # Same arithmetic as the chain of the same transformations.
    plain = gx.chain(gx.trace(0.9), gx.scale(-0.1))
    plain_updates, plain_state = plain.update(grads, plain.init(params), params)
    np.testing.assert_array_equal(np.asarray(updates["w"]), np.asarray(plain_updates["w"]))
    assert list(new_state) == ["momentum", "lr"]
    np.testing.assert_array_equal(
        np.asarray(new_state["momentum"].trace["w"]), np.asarray(plain_state[0].trace["w"])
    )


def test_named_chain_rejects_duplicate_names():
    with pytest.raises(ValueError, match="unique"):
        gx.named_chain(("a", gx.scale(1.0)), ("b", gx.identity()), ("a", gx.scale(2.0)))


@pytest.mark.parametrize("bad", ["lr", ("lr",), ("lr", gx.scale(1.0), "extra")])
def test_named_chain_rejects_non_pairs(bad):
    with pytest.raises(TypeError, match="pair"):
        gx.named_chain(("ok", gx.identity()), bad)


def test_named_chain_rejects_state_with_other_keys():
    opt = gx.named_chain(("a", gx.scale(1.0)))
    with pytest.raises(ValueError, match="keys"):
        opt.update({"w": jnp.ones(1)}, {"b": gx.EmptyState()})


@pytest.mark.parametrize("bad", [gx.adam, 1.0, None, "scale", (gx.scale(1.0),)])
def test_chain_rejects_non_transformations(bad):
    with pytest.raises(TypeError, match="chain argument 1"):
        gx.chain(gx.identity(), bad)


def test_named_chain_rejects_non_transformations():
    with pytest.raises(TypeError, match="'lr'"):
        gx.named_chain(("lr", gx.sgd))


# --- identity, stateless, EmptyState ---------------------------------------------------------


def test_identity():
    opt = gx.identity()
    state = opt.init({"w": jnp.ones(2)})
    assert state == gx.EmptyState()
    grads = {"w": jnp.array([1.5, -2.0]), "b": jnp.array(3.0, jnp.bfloat16)}
    updates, new_state = opt.update(grads, state, None, value=1.0)
    assert updates is grads and new_state == state


def test_stateless_passes_params():
    seen = []

    def fn(updates, params):
        seen.append(params)
        if params is None:
            return updates
        return jax.tree.map(lambda u, p: u * p, updates, params)

    opt = gx.stateless(fn)
    params = {"w": jnp.array([2.0, 3.0])}
    state = opt.init(params)
    assert state == gx.EmptyState()
    updates, _ = opt.update({"w": jnp.array([1.0, -1.0])}, state, params, value=4.0)
    np.testing.assert_array_equal(np.asarray(updates["w"]), [2.0, -3.0])
    assert seen == [params]
    # Without params the function receives None.
    opt.update({"w": jnp.ones(2)}, state)
    assert seen[-1] is None


def test_stateless_rejects_non_callables():
    with pytest.raises(TypeError, match="stateless: `f` must be a function"):
        gx.stateless(3.0)


def test_empty_state_has_no_leaves():
    state = gx.EmptyState()
    assert jax.tree.leaves(state) == []
    assert state == gx.EmptyState() and len(state) == 0
    # It survives jit as a pytree.
    assert jax.jit(lambda s: s)(state) == gx.EmptyState()


# --- apply_updates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "param_dtype, update_dtype",
    [
        (jnp.float32, jnp.float32),
        (jnp.bfloat16, jnp.float32),
        (jnp.float16, jnp.float32),
        (jnp.float32, jnp.bfloat16),
        (jnp.bfloat16, jnp.bfloat16),
        (jnp.bfloat16, jnp.float16),
    ],
)
def test_apply_updates_keeps_param_dtype(param_dtype, update_dtype):
    rng = np.random.default_rng(0)
    p = jnp.asarray(rng.standard_normal(32), param_dtype)
    u = jnp.asarray(rng.standard_normal(32) * 0.01, update_dtype)
    got = gx.apply_updates({"w": p}, {"w": u})["w"]
    assert got.dtype == param_dtype
    # Reference: the sum in float32 (exact for these inputs up to one rounding), rounded once
    # to the parameter's dtype, in NumPy/ml_dtypes.
    expected = (np.asarray(p, np.float32) + np.asarray(u, np.float32)).astype(
        ml_dtypes.bfloat16 if param_dtype == jnp.bfloat16 else jnp.dtype(param_dtype)
    )
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_apply_updates_bf16_param_with_small_f32_update():
    # 1 + 2^-7 is a bf16 number; the f32 sum is rounded to bf16 once, after the addition.
    p = jnp.ones(1, jnp.bfloat16)
    got = gx.apply_updates({"w": p}, {"w": jnp.array([2.0**-7], jnp.float32)})["w"]
    assert got.dtype == jnp.bfloat16 and float(got[0]) == 1.0 + 2.0**-7
    # Too small to move a bf16 1.0 (half an ulp rounds to even).
    got = gx.apply_updates({"w": p}, {"w": jnp.array([2.0**-9], jnp.float32)})["w"]
    assert float(got[0]) == 1.0


def test_apply_updates_keeps_dtype_under_jit_and_x64(x64):
    params = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2, jnp.bfloat16)}
    updates = {"a": jnp.full(2, 0.5, jnp.float64), "b": jnp.full(2, 0.5, jnp.float64)}
    got = jax.jit(gx.apply_updates)(params, updates)
    assert got["a"].dtype == jnp.float32 and got["b"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got["a"]), [1.5, 1.5])


def test_apply_updates_complex_param():
    p = jnp.array([1 + 1j, 2 - 1j], jnp.complex64)
    got = gx.apply_updates({"z": p}, {"z": jnp.array([0.5 - 0.5j, -1.0 + 0j], jnp.complex64)})
    assert got["z"].dtype == jnp.complex64
    np.testing.assert_array_equal(np.asarray(got["z"]), [1.5 + 0.5j, 1.0 - 1j])


def test_apply_updates_none_update_leaves_param_unchanged():
    params = {"frozen": jnp.array([1.0, 2.0]), "w": jnp.array([3.0])}
    got = gx.apply_updates(params, {"frozen": None, "w": jnp.array([-1.0])})
    assert got["frozen"] is params["frozen"]
    np.testing.assert_array_equal(np.asarray(got["w"]), [2.0])


def test_apply_updates_none_param_and_update():
    got = gx.apply_updates({"w": jnp.ones(1), "b": None}, {"w": jnp.ones(1), "b": None})
    assert got["b"] is None
    np.testing.assert_array_equal(np.asarray(got["w"]), [2.0])


def test_apply_updates_structure_mismatch_shows_both():
    params = {"w": jnp.ones(1), "b": jnp.ones(1)}
    updates = {"w": jnp.ones(1)}
    with pytest.raises(ValueError) as info:
        gx.apply_updates(params, updates)
    assert str(jax.tree.structure(params)) in str(info.value)
    assert str(jax.tree.structure(updates)) in str(info.value)


# --- extra arguments --------------------------------------------------------------------------


def _times_value(keyword_only: bool) -> gx.GradientTransformation:
    """Multiplies the updates by the extra argument ``value`` (recorded as the state)."""

    def init_fn(params):
        del params
        return jnp.zeros([])

    if keyword_only:

        def update_fn(updates, state, params=None, *, value):
            del state, params
            return jax.tree.map(lambda u: u * value, updates), jnp.asarray(value, jnp.float32)

    else:

        def update_fn(updates, state, params=None, value=None):
            del state, params
            return jax.tree.map(lambda u: u * value, updates), jnp.asarray(value, jnp.float32)

    return gx.GradientTransformation(init_fn, update_fn)


def _foreign(factor: float):
    """A transformation from elsewhere: any object with init/update, no extra arguments."""

    def init(params):
        del params
        return ()

    def update(updates, state, params=None):
        return jax.tree.map(lambda u: u * factor, updates), state

    return types.SimpleNamespace(init=init, update=update)


@pytest.mark.parametrize("keyword_only", [True, False])
def test_extra_args_reach_only_the_transformations_that_declare_them(keyword_only):
    params = {"w": jnp.ones(2)}
    opt = gx.chain(
        gx.scale(2.0),  # declares **extra_args: receives and ignores `value`
        _times_value(keyword_only),  # declares `value`: receives it
        _foreign(-1.0),  # declares neither: must not receive it
        gx.stateless(lambda u, p: u),
    )
    state = opt.init(params)
    updates, state = opt.update({"w": jnp.array([1.0, 3.0])}, state, params, value=5.0)
    np.testing.assert_array_equal(np.asarray(updates["w"]), [-10.0, -30.0])
    assert float(state[1]) == 5.0
    # Under jit with a traced value too.
    updates, state = jax.jit(opt.update)({"w": jnp.array([1.0, 3.0])}, state, params, value=0.5)
    np.testing.assert_array_equal(np.asarray(updates["w"]), [-1.0, -3.0])


def test_extra_args_through_named_chain_and_masked():
    params = {"a": jnp.ones(1), "b": jnp.ones(1)}
    inner = gx.masked(_times_value(True), {"a": True, "b": False})
    opt = gx.named_chain(("value", inner), ("foreign", _foreign(2.0)))
    state = opt.init(params)
    updates, _ = opt.update({"a": jnp.array([1.0]), "b": jnp.array([1.0])}, state, params, value=3)
    np.testing.assert_array_equal(np.asarray(updates["a"]), [6.0])
    np.testing.assert_array_equal(np.asarray(updates["b"]), [2.0])


def test_foreign_transformation_needs_chain_for_extra_args():
    foreign = _foreign(3.0)
    grads = {"w": jnp.array([1.0])}
    # Called directly, an update without **extra_args cannot take `value` ...
    with pytest.raises(TypeError):
        foreign.update(grads, foreign.init(None), None, value=1.0)
    # ... but inside a chain the argument is left out for it.
    opt = gx.chain(foreign)
    updates, _ = opt.update(grads, opt.init(None), None, value=1.0)
    np.testing.assert_array_equal(np.asarray(updates["w"]), [3.0])


def test_optax_transformation_in_chain_with_extra_args():
    optax = require_optax()
    opt = gx.chain(gx.scale(3.0), optax.scale(-0.5), _times_value(True))
    params = {"w": jnp.ones(2)}
    updates, _ = opt.update({"w": jnp.array([2.0, -3.0])}, opt.init(params), params, value=2.0)
    # 3 * -0.5 * 2 = -3, exact in binary.
    np.testing.assert_array_equal(np.asarray(updates["w"]), [-6.0, 9.0])


def test_missing_required_extra_arg_raises():
    opt = gx.chain(_times_value(True))
    with pytest.raises(TypeError, match="value"):
        opt.update({"w": jnp.ones(1)}, opt.init(None))


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: gx.scale_by_adam(),
        lambda: gx.trace(0.9),
        lambda: gx.chain(gx.clip(1.0), gx.scale_by_adam(), gx.scale(-0.1)),
        lambda: gx.chain(gx.trace(0.9, nesterov=True), gx.scale(-0.1)),
        lambda: gx.adam(),
        lambda: gx.sgd(0.1, momentum=0.9),
    ],
)
@pytest.mark.parametrize(
    "bad_grads",
    [
        {"w": jnp.ones(3), "bias": jnp.ones(2)},  # a key renamed
        {"w": jnp.ones(3)},  # a leaf missing
        {"w": jnp.ones(3), "b": jnp.ones(2), "extra": jnp.ones(1)},  # a leaf too many
        [jnp.ones(3), jnp.ones(2)],  # another container
    ],
)
def test_gradient_structure_mismatch_shows_both_structures(make, bad_grads):
    params = {"w": jnp.ones(3), "b": jnp.ones(2)}
    opt = make()
    state = opt.init(params)
    with pytest.raises(ValueError) as info:
        opt.update(bad_grads, state, params)
    message = str(info.value)
    assert str(jax.tree.structure(params)) in message
    assert str(jax.tree.structure(bad_grads)) in message


def test_decayed_weights_structure_mismatch_shows_both_structures():
    params = {"w": jnp.ones(3)}
    grads = {"v": jnp.ones(3)}
    opt = gx.add_decayed_weights(0.1)
    with pytest.raises(ValueError) as info:
        opt.update(grads, opt.init(params), params)
    assert str(jax.tree.structure(params)) in str(info.value)
    assert str(jax.tree.structure(grads)) in str(info.value)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: gx.add_decayed_weights(0.1), "add_decayed_weights"),
        (lambda: gx.add_decayed_weights(0.1, mask={"w": True}), "add_decayed_weights"),
        (lambda: gx.add_l2(0.1), "add_l2"),
        (lambda: gx.adamw(), "adamw"),
        (lambda: gx.adamw(mask=gx.decay_matrices_only), "adamw"),
        (lambda: gx.lion(), "lion"),
        (lambda: gx.nadam(weight_decay=0.1, decoupled_weight_decay=True), "nadam"),
        (lambda: gx.sgd(0.1, weight_decay=0.1), "sgd"),
        (lambda: gx.adam(weight_decay=0.1), "adam"),
    ],
)
def test_transformations_that_need_params_say_so(make, name):
    params = {"w": jnp.ones((2, 2))}
    opt = make()
    state = opt.init(params)
    with pytest.raises(ValueError) as info:
        opt.update({"w": jnp.ones((2, 2))}, state)
    message = str(info.value)
    # The message names the function the user called, not an inner building block.
    assert message.startswith(f"{name} needs `params`")
    assert "params" in message


@table
@pytest.mark.parametrize("bad_leaf", [jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.bool_)])
def test_integer_and_boolean_params_rejected_at_init(entry, bad_leaf):
    params = {"layer": {"kernel": jnp.ones((2, 2)), "step": bad_leaf}}
    with pytest.raises(TypeError) as info:
        entry.make(entry.parabola_lr).init(params)
    assert "['layer']['step']" in str(info.value)
    assert str(bad_leaf.dtype) in str(info.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda: gx.scale_by_adam(),
        lambda: gx.scale_by_adam(amsgrad=True),
        lambda: gx.scale_by_adamax(),
        lambda: gx.scale_by_nadam(),
        lambda: gx.scale_by_rms(),
        lambda: gx.scale_by_stddev(),
        lambda: gx.scale_by_rss(),
        lambda: gx.scale_by_lion(),
        lambda: gx.trace(0.9),
        lambda: gx.ema(0.9),
    ],
)
def test_stateful_transformations_reject_integer_params_naming_themselves(make):
    transform = make()
    with pytest.raises(TypeError) as info:
        transform.init({"count": jnp.zeros([], jnp.int32)})
    assert "['count']" in str(info.value)
    assert "int32" in str(info.value)


@every_optimizer
def test_none_leaves_in_params_are_passed_over(entry):
    def loss(params):
        return jnp.sum((params["w"] @ params["x"] - 1.0) ** 2)

    x = jnp.array([0.5, -1.0])
    with_none = {"w": jnp.array([[1.0, 2.0], [-0.5, 0.3]]), "x": x, "frozen": None}
    without = {"w": with_none["w"], "x": x}
    results = []
    for params in (with_none, without):
        opt = entry.make(entry.parabola_lr)
        state = opt.init(params)
        step = jax.jit(loss_update(opt, entry.update_args, loss))
        for _ in range(3):
            grads = jax.grad(loss)(params)
            updates, state = step(grads, state, params)
            params = gx.apply_updates(params, updates)
        results.append(params)
    got, reference = results
    assert got["frozen"] is None
    # The None leaf changes nothing for the others: same numbers as without it.
    for key in ("w", "x"):
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(reference[key]))
    assert not np.array_equal(np.asarray(got["w"]), np.asarray(with_none["w"]))
