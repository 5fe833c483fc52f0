"""Optax's protocol names, state surgery, stateful schedules and numerics, against Optax.

State surgery (``tree_get``, ``tree_set``, ``tree_get_all_with_path``, ``tree_map_params``) runs
on real gradxform states and must give what Optax's functions give on the same states. The
numbers (``safe_norm``, the stateful injection, ``warmup_constant_schedule``) are compared in
float64 over 100 steps, every step, at ``rtol=1e-12``: both sides evaluate the same formulas,
so only a reassociation by the compiler could separate them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.references import require_optax

optax = require_optax()
otu = optax.tree_utils
gtu = gx.tree_utils

PARAMS = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
MASK = {"kernel": True, "bias": False}
RTOL = 1e-12
STEPS = 100


def _keys(found):
    return [(jax.tree_util.keystr(p), p) for p, _ in found]


def _same_found(ours, theirs):
    """The same paths (NamedTupleKey compared by its two names) and values, in the same order."""
    assert [jax.tree_util.keystr(p) for p, _ in ours] == [
        jax.tree_util.keystr(p) for p, _ in theirs
    ]
    for (_, a), (_, b) in zip(ours, theirs, strict=True):
        chex_equal(a, b)


def chex_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


# ----------------------------------------------------------------------------------------------
# State surgery on gradxform states.

STATES = {
    "chain_clip_adam": lambda: gx.chain(gx.clip(1.0), gx.adam(1e-3)),
    "inject_adam": lambda: gx.inject_hyperparams(gx.adam)(learning_rate=1e-3),
    "inject_schedule": lambda: gx.inject_hyperparams(gx.sgd)(
        learning_rate=gx.linear_schedule(0.1, 0.0, 10), momentum=0.9
    ),
    "stateful_sgd": lambda: gx.inject_stateful_hyperparams(gx.sgd)(
        learning_rate=lambda k: 0.1 / (k + 1)
    ),
    "masked_adamw": lambda: gx.adamw(0.1, mask=MASK),
    "named_chain": lambda: gx.named_chain(("clip", gx.clip(1.0)), ("opt", gx.adam(0.1))),
}
KEYS = [
    "count",
    "mu",
    "nu",
    "learning_rate",
    "hyperparams",
    "hyperparams_states",
    "ScaleByAdamState",
    "InjectStatefulHyperparamsState",
    "WrappedScheduleState",
    "inner_state",
    "opt",
    "absent",
]


@pytest.mark.parametrize("state_id", STATES)
def test_get_all_with_path_and_get_match_optax(state_id):
    state = STATES[state_id]().init(PARAMS)
    for key in KEYS:
        ours = gtu.tree_get_all_with_path(state, key)
        _same_found(ours, otu.tree_get_all_with_path(state, key))
        is_array = lambda path, value: isinstance(value, jax.Array)  # noqa: E731
        _same_found(
            gtu.tree_get_all_with_path(state, key, is_array),
            otu.tree_get_all_with_path(state, key, is_array),
        )
        if len(ours) > 1:
            with pytest.raises(KeyError):
                gtu.tree_get(state, key)
            with pytest.raises(KeyError):
                otu.tree_get(state, key)
        else:
            chex_equal(gtu.tree_get(state, key, "none"), otu.tree_get(state, key, "none"))


def test_reading_count_and_mu_from_a_chain():
    opt = gx.chain(gx.clip(1.0), gx.adam(1e-3))
    state = opt.init(PARAMS)
    _, state = opt.update(jax.tree.map(jnp.ones_like, PARAMS), state, PARAMS)
    assert int(gtu.tree_get(state, "count")) == 1
    mu = gtu.tree_get(state, "mu")
    np.testing.assert_allclose(mu["kernel"], np.full((3, 2), 0.1))  # (1 - 0.9) * 1
    adam_state = gtu.tree_get(state, "ScaleByAdamState")
    assert isinstance(adam_state, gx.ScaleByAdamState)
    [(path, _)] = gtu.tree_get_all_with_path(state, "mu")
    assert path[-1] == gtu.NamedTupleKey("ScaleByAdamState", "mu")
    assert str(path[-1]) == "ScaleByAdamState.mu"


SETS = [
    ("chain_clip_adam", None, {"count": jnp.asarray(7, jnp.int32)}),
    ("chain_clip_adam", None, {"mu": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}),
    ("inject_adam", None, {"learning_rate": jnp.asarray(0.5)}),
    # Optax's quirk, kept: the search stops at the outermost state holding `count` and does not
    # reach the ScaleByAdamState inside the inner chain's tuple.
    ("inject_adam", None, {"count": jnp.asarray(3, jnp.int32)}),
    ("stateful_sgd", lambda p, v: isinstance(v, jax.Array), {"learning_rate": jnp.asarray(0.2)}),
    ("named_chain", None, {"ScaleByAdamState": "replaced"}),
    ("masked_adamw", None, {"nu": "replaced", "count": jnp.asarray(2, jnp.int32)}),
]


@pytest.mark.parametrize(("state_id", "filtering", "values"), SETS)
def test_set_matches_optax(state_id, filtering, values):
    state = STATES[state_id]().init(PARAMS)
    ours = gtu.tree_set(state, filtering, **values)
    theirs = otu.tree_set(state, filtering, **values)
    chex_equal(ours, theirs)
    assert jax.tree.structure(ours) != jax.tree.structure(state) or not jax.tree.all(
        jax.tree.map(lambda a, b: bool(jnp.all(a == b)), ours, state)
    ), "nothing was replaced"


def test_set_learning_rate_inside_inject_hyperparams_takes_effect():
    opt = gx.inject_hyperparams(gx.sgd)(learning_rate=0.1)
    state = gtu.tree_set(opt.init(PARAMS), learning_rate=jnp.asarray(0.5))
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    updates, _ = opt.update(grads, state, PARAMS)
    np.testing.assert_array_equal(updates["kernel"], np.full((3, 2), -0.5))


def test_set_raises_for_a_key_found_nowhere():
    state = STATES["chain_clip_adam"]().init(PARAMS)
    with pytest.raises(KeyError, match="absent"):
        gtu.tree_set(state, absent=1.0)
    with pytest.raises(KeyError, match="filtering"):
        gtu.tree_set(state, lambda p, v: False, count=1)


MAP_CASES = {
    "masked": lambda: gx.masked(gx.adam(0.1), MASK),
    "masked_fn": lambda: gx.masked(gx.adam(0.1), gx.decay_matrices_only),
    "freeze": lambda: gx.freeze(MASK, inner=gx.adam(0.1)),
    "multi_transform": lambda: gx.multi_transform(
        {"a": gx.adam(0.1), "s": gx.sgd(0.1, momentum=0.9)}, {"kernel": "a", "bias": "s"}
    ),
    "adamw_mask_fn": lambda: gx.adamw(0.1, mask=gx.decay_matrices_only),
    "inject": lambda: gx.inject_hyperparams(gx.adam)(0.1),
    "stateful": lambda: gx.inject_stateful_hyperparams(gx.adam)(lambda k: 0.1),
}


@pytest.mark.parametrize("case", MAP_CASES)
def test_map_params_reaches_every_copy_like_optax(case):
    opt = MAP_CASES[case]()
    state = opt.init(PARAMS)
    for initable in (opt, opt.init):
        ours = gtu.tree_map_params(
            initable, lambda p: jnp.full_like(p, 7.0), state, transform_non_params=jnp.zeros_like
        )
        theirs = otu.tree_map_params(
            initable, lambda p: jnp.full_like(p, 7.0), state, transform_non_params=jnp.zeros_like
        )
        chex_equal(ours, theirs)
    # Some leaf was reached (a 7), and the counters were not.
    assert any(bool(jnp.all(x == 7.0)) for x in jax.tree.leaves(ours) if x.size)
    assert int(gtu.tree_get_all_with_path(ours, "count")[0][1]) == 0


def test_map_params_builds_shardings_and_passes_rest():
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    opt = gx.adamw(0.1, mask=gx.decay_matrices_only)
    state = opt.init(PARAMS)
    shardings = gtu.tree_map_params(
        opt,
        lambda _, s: s,
        state,
        jax.tree.map(lambda _: spec, PARAMS),
        transform_non_params=lambda _: spec,
        is_leaf=lambda x: isinstance(x, gx.MaskedNode),
    )
    placed = jax.device_put(state, shardings)
    assert jax.tree.structure(placed) == jax.tree.structure(state)


# ----------------------------------------------------------------------------------------------
# The protocol names.


def test_chain_and_wrappers_return_extra_args_transformations():
    inner = gx.sgd(0.1)
    made = [
        gx.chain(gx.scale(1.0)),
        gx.named_chain(("a", gx.scale(1.0))),
        gx.masked(inner, MASK),
        gx.inject_hyperparams(gx.sgd)(0.1),
        gx.inject_stateful_hyperparams(gx.sgd)(0.1),
        gx.apply_if_finite(inner, 2),
        gx.lookahead(inner),
        gx.multi_transform({"a": inner}, {"kernel": "a", "bias": "a"}),
        gx.adam(0.1),
        gx.with_extra_args_support(gx.scale(2.0)),
    ]
    for tx in made:
        assert isinstance(tx, gx.GradientTransformationExtraArgs), tx
        assert isinstance(tx, gx.GradientTransformation)
        assert tx._fields == ("init", "update")


def test_with_extra_args_support_drops_what_update_does_not_take():
    seen = {}

    def update(updates, state, params=None):
        return updates, state

    def update_value(updates, state, params=None, *, value):
        seen["value"] = value
        return updates, state

    plain = gx.with_extra_args_support(optax.GradientTransformation(gx.init_empty_state, update))
    plain.update({"w": jnp.ones(1)}, gx.EmptyState(), value=1.0, other=2)
    takes = gx.with_extra_args_support(gx.GradientTransformation(gx.init_empty_state, update_value))
    takes.update({"w": jnp.ones(1)}, gx.EmptyState(), value=3.0, other=2)
    assert seen == {"value": 3.0}
    already = gx.chain(gx.scale(1.0))
    assert gx.with_extra_args_support(already) is already
    ref = optax.with_extra_args_support(
        optax.GradientTransformation(optax.init_empty_state, update)
    )
    ref.update({"w": jnp.ones(1)}, optax.EmptyState(), value=1.0)


def test_stateless_with_tree_map_and_init_empty_state_match_optax():
    f = lambda g, p: g * 2 if p is None else g * p  # noqa: E731
    grads = {"a": jnp.arange(3.0), "b": jnp.ones(2)}
    params = {"a": jnp.full(3, 0.5), "b": jnp.full(2, -1.0)}
    ours, theirs = gx.stateless_with_tree_map(f), optax.stateless_with_tree_map(f)
    assert ours.init(params) == gx.EmptyState() == gx.init_empty_state(params)
    for p in (params, None):
        chex_equal(ours.update(grads, ours.init(params), p)[0], theirs.update(grads, (), p)[0])


def test_optax_isinstance_checks_pass_with_the_documented_wrap():
    # Optax's utilities that test `isinstance(tx, optax.GradientTransformation)` accept a
    # gradxform transformation once re-wrapped: the README's one line.
    tx = gx.adam(1e-3)
    wrapped = optax.GradientTransformationExtraArgs(*tx)
    assert not isinstance(tx, optax.GradientTransformation)
    assert isinstance(wrapped, optax.GradientTransformation)
    assert optax.with_extra_args_support(wrapped) is wrapped
    state = wrapped.init(PARAMS)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    chex_equal(wrapped.update(grads, state, PARAMS), tx.update(grads, state, PARAMS))


def test_types_are_exported():
    assert isinstance(gx.WrappedSchedule(lambda k: k), gx.StatefulSchedule)
    assert isinstance(optax.WrappedSchedule(lambda k: k), gx.StatefulSchedule)
    assert isinstance(gx.WrappedSchedule(lambda k: k), optax.schedules.StatefulSchedule)
    for name in ("ScalarOrSchedule", "Schedule", "OptState", "Params", "Updates", "MaskOrFn"):
        assert hasattr(gx, name) and hasattr(optax, name)
    for name in ("TransformInitFn", "TransformUpdateFn", "TransformUpdateExtraArgsFn"):
        assert hasattr(gx, name) and hasattr(optax, name)


# ----------------------------------------------------------------------------------------------
# Numerics.


SAFE_NORM_CASES = [
    dict(min_norm=1e-3),
    dict(min_norm=0.5, ord=1, axis=1),
    dict(min_norm=0.5, ord=jnp.inf, axis=0, keepdims=True),
    dict(min_norm=1e-2, ord="fro", axis=(0, 1)),
]


def _floored_norms(lib, x):
    return [lib.safe_norm(x, **k) for k in SAFE_NORM_CASES] + [lib.safe_root_mean_squares(x, 1e-3)]


def test_safe_norm_and_rms_match_optax_with_their_gradients(x64):
    # The values and Jacobians of both libraries in one compiled program, reused for the three
    # inputs (eagerly, or one program each, the Jacobians took most of this module's time).
    rng = np.random.default_rng(0)

    def both(lib, x):
        return _floored_norms(lib, x), jax.jacobian(functools.partial(_floored_norms, lib))(x)

    run = jax.jit(lambda x: {lib.__name__: both(lib, x) for lib in (gx, optax)})

    for x in (
        jnp.zeros((3, 4)),
        jnp.asarray(rng.normal(size=(3, 4))),
        jnp.full((3, 4), 1e-4, jnp.float64),
    ):
        out = run(x)
        for which in (0, 1):  # the values, then the Jacobians
            ours, theirs = out["gradxform"][which], out["optax"][which]
            for a, b in zip(ours, theirs, strict=True):
                np.testing.assert_allclose(a, b, rtol=RTOL, atol=0)
                assert np.all(np.isfinite(a))  # no NaN gradient at a floored norm
    assert run._cache_size() == 1
    z = jnp.asarray([1 + 2j, 3 - 1j])
    np.testing.assert_allclose(
        gx.safe_root_mean_squares(z, 0.1), optax.safe_root_mean_squares(z, 0.1), rtol=RTOL
    )


def test_global_norm_and_increments_match_optax():
    tree = {"a": jnp.arange(4.0), "b": None, "c": jnp.asarray([1 + 1j])}
    with pytest.warns(DeprecationWarning):
        theirs = optax.global_norm(tree)
    chex_equal(gx.global_norm(tree), theirs)
    counts = (
        jnp.asarray(5, jnp.int32),
        jnp.asarray(2**31 - 1, jnp.int32),
        jnp.asarray(255, jnp.uint8),
        jnp.asarray(3.0, jnp.float32),
        jnp.asarray(jnp.finfo(jnp.float16).max, jnp.float16),
    )
    # Every count, both libraries, one compiled program.
    increments = jax.jit(
        lambda cs: [
            (gx.safe_increment(c), gx.safe_int32_increment(c), optax.safe_increment(c)) for c in cs
        ]
    )(counts)
    for ours, ours_int32, theirs in increments:
        chex_equal(ours, theirs)
        chex_equal(ours_int32, theirs)
        assert ours.dtype == theirs.dtype
    with pytest.raises(ValueError, match="safe_increment"):
        gx.safe_increment(jnp.asarray(True))


# ----------------------------------------------------------------------------------------------
# Stateful schedules.


WARMUPS = [(0.0, 0.1, 30), (1e-3, 2.0, 1), (0.5, -0.5, 99), (0.3, 1.0, 0), (-2.0, 5.0, 0.0)]


def test_warmup_constant_schedule_matches_optax(x64):
    # warmup_steps=0 (an int or the float 0.0) disables the warmup in Optax: init_value at
    # every step, never peak_value.
    counts = jnp.arange(STEPS)
    both = jax.jit(
        lambda k: [
            (gx.warmup_constant_schedule(*args)(k), optax.warmup_constant_schedule(*args)(k))
            for args in WARMUPS
        ]
    )(counts)
    for args, (ours, theirs) in zip(WARMUPS, both, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0, err_msg=str(args))
        assert ours.shape == (STEPS,)
    np.testing.assert_array_equal(both[3][0], np.full(STEPS, 0.3))
    # Eagerly, at a Python int count: Optax's constant is the Python value itself.
    for args in WARMUPS[3:]:
        assert float(gx.warmup_constant_schedule(*args)(7)) == float(
            optax.warmup_constant_schedule(*args)(7)
        )
    with pytest.raises(ValueError, match="warmup_constant_schedule: `warmup_steps`"):
        gx.warmup_constant_schedule(0.0, 1.0, -1)


class LossScaled:
    """A stateful schedule driven by the loss: ``lr = base / (1 + running mean of loss)``."""

    def __init__(self, base):
        self.base = base

    def init(self):
        return {"mean": jnp.zeros([]), "n": jnp.zeros([], jnp.int32)}

    def update(self, state, *, value=0.0, **extra_args):
        n = state["n"] + 1
        return {"mean": state["mean"] + (value - state["mean"]) / n, "n": n}

    def __call__(self, state, **extra_args):
        return self.base / (1.0 + state["mean"])


def _trajectory(opt, params, grads, losses):
    """Params and learning rate after each of the updates, in one scan (for use under jit)."""

    def step(carry, inputs):
        params, state = carry
        g, loss = inputs
        updates, state = opt.update(g, state, params, value=loss)
        params = optax.apply_updates(params, updates)
        return (params, state), (params, state.hyperparams["learning_rate"])

    return jax.lax.scan(step, (params, opt.init(params)), (grads, losses))[1]


INJECTORS = {
    "inject_hyperparams": gx.inject_hyperparams,
    "inject_stateful_hyperparams": gx.inject_stateful_hyperparams,
    "optax": optax.inject_hyperparams,  # Optax 0.2.8's, which takes stateful schedules too
}


def test_inject_hyperparams_matches_optax_over_100_steps(x64):
    # A plain schedule of the count and a stateful one driven by the loss; gradxform's two
    # injectors and Optax's, all six runs in one compiled program.
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(3, 2))), "b": jnp.asarray(rng.normal(size=2))}
    grads = jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=(STEPS, *p.shape))), params
    )  # fmt: skip
    losses = jnp.asarray(rng.uniform(size=STEPS))
    schedules = {"plain": gx.linear_schedule(0.1, 0.01, 60), "stateful": LossScaled(0.1)}
    sgd = {"optax": optax.sgd}

    def run_all(params, grads, losses):
        return {
            (name, injector): _trajectory(
                INJECTORS[injector](sgd.get(injector, gx.sgd))(learning_rate=lr, momentum=0.9),
                params,
                grads,
                losses,
            )
            for name, lr in schedules.items()
            for injector in INJECTORS
        }

    runs = jax.jit(run_all)(params, grads, losses)
    for name in schedules:
        p_theirs, lr_theirs = runs[name, "optax"]
        for injector in ("inject_hyperparams", "inject_stateful_hyperparams"):
            p_ours, lr_ours = runs[name, injector]
            np.testing.assert_allclose(lr_ours, lr_theirs, rtol=RTOL, atol=0)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-14),
                         p_ours, p_theirs)  # fmt: skip
            assert len(set(np.asarray(lr_ours).round(12).tolist())) > 10  # the schedule moved


def _layout(state):
    """Every leaf's path (field and dict-key names) and abstract value (shape, dtype)."""
    return [
        (jax.tree_util.keystr(path), jax.typeof(leaf))
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
    ]


INJECT_CALLS = {
    "numeric": (gx.adam, (), dict(learning_rate=1e-3, b1=0.8)),
    "schedule": (gx.sgd, (), dict(learning_rate=gx.linear_schedule(0.1, 0.0, 10), momentum=0.9)),
    "stateful": (gx.sgd, (), dict(learning_rate=LossScaled(0.1))),
    "static": (gx.adam, ("b1",), dict(learning_rate=0.1, b1=0.5)),
}


@pytest.mark.parametrize("injector", ["inject_hyperparams", "inject_stateful_hyperparams"])
def test_inject_hyperparams_state_is_optaxs(injector, x64):
    # The same call (the same inner factory, so that the inner states agree) through Optax's
    # inject_hyperparams gives a state with the same class name, fields in the same order, and
    # the same leaves under the same paths, at init and after an update (traced, not compiled).
    params = jax.tree.map(lambda x: x.astype(jnp.float64), PARAMS)
    grads = jax.tree.map(jnp.ones_like, params)
    for case, (factory, static, kwargs) in INJECT_CALLS.items():
        ours = INJECTORS[injector](factory, static_args=static)(**kwargs)
        theirs = optax.inject_hyperparams(factory, static_args=static)(**kwargs)
        states = []
        for opt in (ours, theirs):
            state = opt.init(params)
            _, new = jax.eval_shape(
                lambda s, opt=opt: opt.update(grads, s, params, value=0.5), state
            )
            states.append((state, new))
        for s, t in zip(states[0], states[1], strict=True):
            assert type(s).__name__ == type(t).__name__ == "InjectStatefulHyperparamsState"
            assert s._fields == t._fields == optax.InjectStatefulHyperparamsState._fields
            assert _layout(s) == _layout(t), case
        state = states[0][0]
        assert sorted(state.hyperparams_states) == sorted(
            name for name, value in kwargs.items() if callable(value)
        ), case
        # Optax's own state surgery reads the schedule states of ours.
        chex_equal(
            otu.tree_get(state, "hyperparams_states"), gtu.tree_get(state, "hyperparams_states")
        )
    assert gx.InjectHyperparamsState is gx.InjectStatefulHyperparamsState


def test_inject_stateful_hyperparams_state_and_validation():
    opt = gx.inject_stateful_hyperparams(gx.adam)(learning_rate=lambda k: 0.1, b1=0.9)
    state = opt.init(PARAMS)
    assert isinstance(state, gx.InjectStatefulHyperparamsState)
    assert state._fields == optax.InjectStatefulHyperparamsState._fields
    assert state.hyperparams_states["learning_rate"] == gx.WrappedScheduleState(
        jnp.zeros([], jnp.int32)
    )
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    _, new = jax.jit(opt.update)(grads, state, PARAMS)
    assert jax.tree.map(lambda a: a.dtype, new) == jax.tree.map(lambda a: a.dtype, state)
    assert int(new.hyperparams_states["learning_rate"].count) == 1
    with pytest.raises(ValueError, match="learning_rate"):
        gx.inject_stateful_hyperparams(gx.adam)(learning_rate=-1.0)
    with pytest.raises(TypeError, match="`hyperparam_dtype`"):
        gx.inject_stateful_hyperparams(gx.adam, hyperparam_dtype=jnp.int32)
    with pytest.raises(TypeError, match="expected its state"):
        opt.update(grads, gx.adam(0.1).init(PARAMS), PARAMS)
