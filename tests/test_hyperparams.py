"""Tests of inject_hyperparams: hyperparameters kept in the state, changed without recompiling."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from optimizer_table import loss_update, skip_if_update_needs_the_loss, table

import gradxform as gx

STEPS = 12


def _grads(seed, shape=(5,), steps=STEPS):
    rng = np.random.default_rng(seed)
    draws = [{"w": rng.normal(size=shape), "b": rng.normal(size=(2,))} for _ in range(steps)]
    return jax.tree.map(jnp.asarray, draws)


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.normal(size=(5,))), "b": jnp.asarray(rng.normal(size=(2,)))}


def _given_gradient_loss(params, g):
    """The loss ``|q - (p - g)|^2 / 2`` at ``q = p``: a quadratic whose gradient at the params
    ``p`` is the given ``g``, so its value there is ``|g|^2 / 2`` (>= 0, MoMo's lower bound)."""
    del params
    return sum(jnp.sum(x * x) for x in jax.tree.leaves(g)) / 2


def _run(opt, params, grads, update_args=()):
    """Params after each update, the whole run in one compiled scan. ``update_args``: what the
    update needs besides the gradient (``Entry.update_args``), from the loss of the given
    gradient (:func:`_given_gradient_loss`)."""
    update = loss_update(opt, update_args, _given_gradient_loss)

    @jax.jit
    def run(params, grads):
        def body(carry, g):
            p, s = carry
            u, s = update(g, s, p, g)
            p = gx.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(body, (params, opt.init(params)), grads)[1]

    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *grads)
    return run(params, stacked)


def _numpy_adam(params, grads, lrs, b1s, b2=0.999, eps=1e-8):
    """Adam in float64 NumPy with a learning rate and b1 given per step."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    out = []
    for t, (g, lr, b1) in enumerate(zip(grads, lrs, b1s, strict=True), start=1):
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            m_hat = m[k] / (1 - b1**t)
            v_hat = v[k] / (1 - b2**t)
            p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append({k: x.copy() for k, x in p.items()})
    return out


# Numeric arguments that decide the state's or the program's shapes stay Python values when
# injected (``static_args``, as a user must keep them): GaLore's rank is the projected moments'
# size; SOAP's max_precond_dim decides which axes get a factor.
STATIC_ARGS = {"galore_adamw": ("rank",), "galore": ("rank",), "soap": ("max_precond_dim",)}


@table
def test_injected_optimizer_equals_plain_one(x64, entry):
    if "value_and_grad_fn" in entry.update_args:
        skip_if_update_needs_the_loss(
            entry,
            "these runs feed given gradients; tests/test_lbfgs.py compares the injected L-BFGS "
            "(history_size static: it is a shape) with the plain one on a loss",
        )
    # Bitwise: float64 hyperparameter arrays hold exactly the Python floats the plain optimizer
    # bakes in as constants, and both run the same IEEE operations in the same order (XLA on
    # CPU neither folds nor contracts them differently for a runtime operand). It may lower a
    # primitive differently in the two programs, though: cbrt as pow(|x|, 1/3) in a loop body
    # compiled as one function, as libm's cbrt in a fusion's kernel (see scale_by_madgrad).
    params, grads = _params(), _grads(1)
    # MoMo gets the loss value too: that of a quadratic whose gradient is the given one.
    plain = _run(entry.make(entry.parabola_lr), params, grads, entry.update_args)
    injected = _run(
        gx.inject_hyperparams(entry.factory, static_args=STATIC_ARGS.get(entry.name, ()))(
            entry.parabola_lr, **entry.kwargs
        ),
        params,
        grads,
        entry.update_args,
    )
    chex.assert_trees_all_equal(injected, plain, strict=True)
    assert {leaf.dtype for leaf in jax.tree.leaves(injected)} == {jnp.dtype(jnp.float64)}


@table
def test_init_and_update_build_the_same_structure_as_the_plain_optimizer(entry):
    if "value_and_grad_fn" in entry.update_args:
        skip_if_update_needs_the_loss(
            entry,
            "injecting L-BFGS needs static_args='history_size' (a shape): tests/test_lbfgs.py "
            "checks the injected L-BFGS",
        )
    # Same arguments, same structure: init and update both call the factory with arrays, so
    # the state that update returns has init's structure, shapes and dtypes (checked without
    # compiling, by tracing), and the inner state is the plain optimizer's given the same
    # hyperparameters as arrays (the general program: no link is dropped for a traced zero).
    params = jax.tree.map(lambda x: x.astype(jnp.float32), _params())
    opt = gx.inject_hyperparams(entry.factory, static_args=STATIC_ARGS.get(entry.name, ()))(
        entry.parabola_lr, **entry.kwargs
    )
    state = opt.init(params)
    # MoMo's update also takes the loss value (here of the params as gradients: |p|^2 / 2).
    update = loss_update(opt, entry.update_args, _given_gradient_loss)
    _, new_state = jax.eval_shape(update, params, state, params, params)
    assert jax.tree.map(jax.typeof, state) == jax.tree.map(jax.typeof, new_state)
    as_arrays = {name: jnp.asarray(value) for name, value in state.hyperparams.items()}
    plain_state = entry.factory(**{**entry.kwargs, **as_arrays}).init(params)
    assert jax.tree.structure(state.inner_state) == jax.tree.structure(plain_state)


def test_state_holds_the_numeric_hyperparameters_as_arrays():
    opt = gx.inject_hyperparams(gx.adam)(learning_rate=0.01, b1=0.8, amsgrad=False)
    state = opt.init(_params())
    # Every numeric argument is injected, given or default, zeros included; bools and None
    # stay Python values.
    assert sorted(state.hyperparams) == [
        "b1",
        "b2",
        "eps",
        "eps_root",
        "learning_rate",
        "weight_decay",
    ]
    expected = {
        "learning_rate": 0.01,
        "b1": 0.8,
        "b2": 0.999,
        "eps": 1e-8,
        "eps_root": 0.0,
        "weight_decay": 0.0,
    }
    for name, value in expected.items():
        hp = state.hyperparams[name]
        assert hp.dtype == jnp.float32 and not hp.weak_type and hp.shape == ()
        assert float(hp) == float(np.float32(value))
    assert isinstance(state.count, jax.Array) and state.count.dtype == jnp.int32


def test_zero_defaults_are_injected_and_static_args_keep_them_fixed():
    # Optax-style code sets hyperparameters whose default is 0 (weight_decay, eps_root): they
    # must be in the state. An injected 0 runs the general program (a momentum buffer, a decay
    # pass), which gives the plain optimizer's numbers for 0 and can be changed later.
    params = _params()
    grads = jax.tree.map(lambda p: 0.5 * p + 1.0, params)
    injected = gx.inject_hyperparams(gx.sgd)(learning_rate=0.1)
    state = injected.init(params)
    assert sorted(state.hyperparams) == ["dampening", "learning_rate", "momentum", "weight_decay"]
    assert isinstance(state.inner_state[1], gx.TraceState)
    u_injected, state = injected.update(grads, state, params)
    u_plain, _ = gx.sgd(0.1).update(grads, gx.sgd(0.1).init(params), params)
    chex.assert_trees_all_equal(u_injected, u_plain, strict=True)
    # Changed later: a momentum of 0.9 and a weight decay of 0.01 take effect.
    state = state._replace(
        hyperparams={
            **state.hyperparams,
            "momentum": jnp.asarray(0.9),
            "weight_decay": jnp.asarray(0.01),
        }
    )
    u2, _ = injected.update(grads, state, params)
    # b_2 = 0.9 * b_1 + g_2 with b_1 = g (the first step's buffer) and g_2 = g + 0.01 * p.
    expected = jax.tree.map(lambda g, p: -0.1 * (0.9 * g + g + 0.01 * p), grads, params)
    chex.assert_trees_all_close(u2, expected, rtol=1e-6)
    # static_args keeps them Python constants: the plain program, without those parts.
    fixed = gx.inject_hyperparams(gx.sgd, static_args=("momentum", "weight_decay", "dampening"))
    fixed_state = fixed(learning_rate=0.1).init(params)
    assert sorted(fixed_state.hyperparams) == ["learning_rate"]
    assert jax.tree.structure(fixed_state.inner_state) == jax.tree.structure(
        gx.sgd(0.1).init(params)
    )


def test_static_args_stay_python_values():
    seen = []

    def factory(learning_rate, b1=0.9):
        seen.append(b1)
        return gx.adam(learning_rate, b1=b1)

    opt = gx.inject_hyperparams(factory, static_args="b1")(0.1, b1=0.5)
    state = opt.init(_params())
    opt.update(_grads(0)[0], state, _params())
    assert sorted(state.hyperparams) == ["learning_rate"]
    assert seen and all(b1 == 0.5 and isinstance(b1, float) for b1 in seen)


@pytest.mark.parametrize(
    "schedule",
    [lambda count: 0.3 * 0.8**count, gx.cosine_decay_schedule(0.3, decay_steps=8, alpha=0.1)],
    ids=["lambda", "cosine_decay"],
)
def test_schedule_as_hyperparameter_equals_scale_by_schedule(schedule):
    params, grads = _params(), _grads(2)
    opt = gx.inject_hyperparams(gx.scale)(step_size=schedule)
    reference = gx.scale_by_schedule(schedule)
    state, ref_state = opt.init(params), reference.init(params)
    for k, g in enumerate(grads):
        u, state = opt.update(g, state)
        ref_u, ref_state = reference.update(g, ref_state)
        # The stored value is the one this update used: the schedule at the count before it,
        # here against the schedule in float64 (the stored one is evaluated in float32: a few
        # ulps of float32 for the power or cosine).
        stored = state.hyperparams["step_size"]
        assert stored.dtype == jnp.float32
        np.testing.assert_allclose(stored, schedule(k), rtol=4 * np.finfo(np.float32).eps)
        for key in g:
            np.testing.assert_array_equal(u[key], ref_u[key])
    assert int(state.count) == len(grads)


def test_scheduled_learning_rate_equals_plain_optimizer_with_schedule(x64):
    params, grads = _params(), _grads(3)
    schedule = gx.cosine_decay_schedule(0.05, decay_steps=STEPS)
    plain = _run(gx.adam(schedule), params, grads)
    injected = _run(gx.inject_hyperparams(gx.adam)(schedule), params, grads)
    for k in params:
        np.testing.assert_array_equal(injected[k], plain[k])  # bitwise, as above


def _jitted_step(opt):
    """A training step under jit that donates params and state and may be traced only once."""

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    @chex.assert_max_traces(n=1)
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    return step


def _set(state, **values):
    hyperparams = dict(state.hyperparams)
    for name, value in values.items():
        hyperparams[name] = jnp.asarray(value, hyperparams[name].dtype)
    return state._replace(hyperparams=hyperparams)


def test_changing_hyperparameters_between_steps_takes_effect_without_recompiling(x64):
    opt = gx.inject_hyperparams(gx.adam)(learning_rate=0.1, b1=0.9)
    step = _jitted_step(opt)
    params0, grads = _params(4), _grads(4)
    # (learning rate, b1) for each step: four changes of the learning rate, two of b1.
    schedule = [(0.1, 0.9)] * 3 + [(0.03, 0.9)] * 2 + [(0.03, 0.5)] * 2 + [(0.2, 0.5)] * 2
    schedule += [(0.2, 0.95), (0.01, 0.95), (0.07, 0.95)]
    params, state = jax.tree.map(jnp.copy, params0), opt.init(params0)
    got = []
    for g, (lr, b1) in zip(grads, schedule, strict=True):
        state = _set(state, learning_rate=lr, b1=b1)
        params, state = step(params, state, g)
        got.append(jax.tree.map(np.asarray, params))  # before the next step donates them
        assert float(state.hyperparams["learning_rate"]) == lr
    # One trace (chex above) and one executable: no recompilation from one trace either.
    assert step._cache_size() == 1
    lrs, b1s = zip(*schedule, strict=True)
    expected = _numpy_adam(params0, grads, lrs, b1s)
    for p, e in zip(got, expected, strict=True):
        for k in e:
            np.testing.assert_allclose(p[k], e[k], rtol=1e-13, atol=1e-15)


def test_changing_learning_rate_mid_run_equals_two_runs_stitched_together(x64):
    params, grads = _params(5), _grads(5)
    switch, lr1, lr2 = 5, 0.1, 0.02
    opt = gx.inject_hyperparams(gx.sgd)(learning_rate=lr1, momentum=0.9)
    state, p = opt.init(params), params
    for k, g in enumerate(grads):
        if k == switch:
            state = _set(state, learning_rate=lr2)
        u, state = opt.update(g, state, p)
        p = gx.apply_updates(p, u)
    # Reference: torch-style SGD with momentum in NumPy, lr1 for `switch` steps, then lr2 on
    # the same momentum buffer.
    ref = {k: np.asarray(v) for k, v in params.items()}
    buf = None
    for k, g in enumerate(grads):
        lr = lr1 if k < switch else lr2
        buf = g if buf is None else {n: 0.9 * buf[n] + g[n] for n in g}
        ref = {n: ref[n] - lr * buf[n] for n in ref}
    # And two plain runs: sgd(lr1) for `switch` steps, then sgd(lr2) from the state it left.
    first, second = gx.sgd(lr1, momentum=0.9), gx.sgd(lr2, momentum=0.9)
    plain_state, q = first.init(params), params
    for k, g in enumerate(grads):
        u, plain_state = (first if k < switch else second).update(g, plain_state, q)
        q = gx.apply_updates(q, u)
    for n in params:
        np.testing.assert_allclose(p[n], ref[n], rtol=1e-14)
        np.testing.assert_array_equal(p[n], q[n])  # bitwise, as above


def test_vmap_over_learning_rates_equals_separate_runs():
    lrs = jnp.asarray([1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.2, 0.3, 0.5], jnp.float32)
    opt = gx.inject_hyperparams(gx.adam)(learning_rate=0.1)
    params = jax.tree.map(lambda x: x.astype(jnp.float32), _params(6))

    def loss(p):
        return jnp.sum((p["w"] - 1.0) ** 2) + jnp.sum(jnp.cos(p["b"]))

    def train(lr):
        state = _set(opt.init(params), learning_rate=lr)

        def body(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (gx.apply_updates(p, u), s), None

        (p, s), _ = jax.lax.scan(body, (params, state), None, length=STEPS)
        return p, s.hyperparams["learning_rate"]

    swept, swept_lrs = jax.jit(jax.vmap(train))(lrs)
    single = jax.jit(train)
    np.testing.assert_array_equal(swept_lrs, lrs)
    for i, lr in enumerate(lrs):
        alone, _ = single(lr)
        for k in params:
            # Bitwise: vmap only adds a batch axis to elementwise float32 arithmetic (the
            # learning rate is the one batched input), and each element is computed by the
            # same IEEE operations in the same order, batched or not.
            np.testing.assert_array_equal(swept[k][i], alone[k])
    assert not np.allclose(swept["w"][0], swept["w"][-1])  # the sweep did sweep


def test_state_can_be_donated_when_hyperparameters_share_an_array():
    shared = jnp.asarray(0.5, jnp.float32)
    opt = gx.inject_hyperparams(gx.sgd)(learning_rate=shared, momentum=shared)
    step = _jitted_step(opt)
    params = jax.tree.map(lambda x: x.astype(jnp.float32), _params())
    grads = jax.tree.map(jnp.ones_like, params)
    params, state = step(params, opt.init(params), grads)
    params, state = step(params, state, grads)
    assert float(shared) == 0.5  # the caller's array is not part of the donated state
    assert float(state.hyperparams["momentum"]) == 0.5


def test_state_dtypes_are_stable_and_python_floats_are_cast_back():
    opt = gx.inject_hyperparams(gx.adam)(learning_rate=0.1)
    params = jax.tree.map(lambda x: x.astype(jnp.float32), _params())
    state = opt.init(params)
    # A Python float put in by hand is cast back to the hyperparameter dtype by the update.
    state = state._replace(hyperparams={**state.hyperparams, "learning_rate": 0.05})
    _, new_state = opt.update(params, state, params)
    init_avals = jax.tree.map(lambda x: jax.typeof(x), opt.init(params))
    new_avals = jax.tree.map(lambda x: jax.typeof(x), new_state)
    assert init_avals == new_avals
    assert float(new_state.hyperparams["learning_rate"]) == float(np.float32(0.05))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_hyperparam_dtype(dtype):
    opt = gx.inject_hyperparams(gx.sgd, hyperparam_dtype=dtype)(learning_rate=0.1, momentum=0.5)
    state = opt.init(_params())
    _, state = opt.update(_params(), state, _params())
    assert all(v.dtype == dtype for v in state.hyperparams.values())


def test_injected_hyperparameters_pass_extra_args_to_the_inner_optimizer():
    opt = gx.inject_hyperparams(gx.reduce_on_plateau)(factor=0.5, patience=0)
    state = opt.init(None)
    for loss in [3.0, 3.0, 3.0]:
        u, state = opt.update(jnp.ones(2), state, value=loss)
    # decision 1 improves (inf -> 3); decisions 2 and 3 exceed patience 0 and halve the scale.
    np.testing.assert_array_equal(u, [0.25, 0.25])
    assert sorted(state.hyperparams) == [
        "accumulation_size",
        "atol",
        "cooldown",
        "eps",
        "factor",
        "min_scale",
        "patience",
        "rtol",
    ]


def test_unknown_argument_names_raise_type_error():
    with pytest.raises(TypeError, match=r"unknown arguments \['beta1', 'lr'\]"):
        gx.inject_hyperparams(gx.adam)(lr=0.1, beta1=0.9)
    with pytest.raises(TypeError, match=r"static_args.*\['nesterov_'\]"):
        gx.inject_hyperparams(gx.sgd, static_args=("nesterov_",))
    with pytest.raises(TypeError, match="multiple values"):
        gx.inject_hyperparams(gx.sgd)(0.1, learning_rate=0.2)


def test_invalid_values_raise_at_construction():
    with pytest.raises(ValueError, match="learning_rate"):
        gx.inject_hyperparams(gx.adam)(learning_rate=-1e-3)
    with pytest.raises(ValueError, match="b1"):
        gx.inject_hyperparams(gx.adam)(b1=1.5)
    with pytest.raises(TypeError, match="inner_factory"):
        gx.inject_hyperparams(gx.adam(0.1))
    with pytest.raises(TypeError, match="hyperparam_dtype"):
        gx.inject_hyperparams(gx.adam, hyperparam_dtype=jnp.int32)


def test_state_of_another_optimizer_or_missing_keys_raise_naming_both():
    params = _params()
    opt = gx.inject_hyperparams(gx.sgd)(learning_rate=0.1, momentum=0.9)
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"(?s)expected.*TraceState.*got"):
        opt.update(params, state._replace(inner_state=gx.adam().init(params)), params)
    with pytest.raises(
        ValueError, match=r"\['dampening', 'learning_rate', 'momentum', 'weight_decay'\]"
    ):
        opt.update(params, state._replace(hyperparams={"learning_rate": 0.1}), params)
    # The schedule states are Optax's `hyperparams_states`: their keys are fixed too.
    scheduled = gx.inject_hyperparams(gx.sgd)(learning_rate=lambda k: 0.1)
    state = scheduled.init(params)
    assert list(state.hyperparams_states) == ["learning_rate"]
    with pytest.raises(ValueError, match=r"hyperparams_states.*\['learning_rate'\], got \[\]"):
        scheduled.update(params, state._replace(hyperparams_states={}), params)
