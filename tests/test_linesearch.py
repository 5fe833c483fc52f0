"""Optax's L-BFGS building blocks against Optax: ``scale_by_lbfgs``,
``scale_by_zoom_linesearch``, ``scale_by_backtracking_linesearch``,
``value_and_grad_from_state``, and ``optax.lbfgs`` as their chain.

Every comparison runs Optax's documented loop on both sides in float64::

    value, grad = value_and_grad_from_state(fn)(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fn)

and compares the params, the line search's state (step size, value, gradient, number of
evaluations) and the updates after every step. Tolerance ``rtol = 1e-12``: the formulas are
Optax's, in Optax's order, evaluated by the same XLA; measured, every comparison here is equal
to the bit. The margin is for a compiler that fuses the two programs differently (an ulp per
operation); the line searches' decisions (how many evaluations) must be equal, and a wrong
branch moves the params by far more.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import require_optax

import gradxform as gx

optax = require_optax()

RTOL = 1e-12
STEPS = 15


def rosenbrock(params):
    x = jnp.concatenate([params["a"], params["b"].ravel()])
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


ROSENBROCK_START = {"a": np.array([-1.2, 1.0, -0.5]), "b": np.array([[1.0, 0.5], [0.2, -0.3]])}

_RNG = np.random.default_rng(0)
FEATURES, TARGETS = _RNG.normal(size=(30, 4)), _RNG.normal(size=30)


def least_squares(params, x, y):
    """A loss with data passed as keyword arguments of ``update`` (Optax's ``**extra_args``)."""
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2) + 0.01 * jnp.sum(params["w"] ** 2)


LEAST_SQUARES_START = {"w": np.zeros(4), "b": np.zeros(())}


def _run(opt, fn, start, value_and_grad_from_state, apply_updates, steps=STEPS, **data):
    """Optax's documented loop, one jitted step; the params, updates and state after each."""
    value_and_grad = value_and_grad_from_state(fn)

    @jax.jit
    def step(params, state):
        value, grad = value_and_grad(params, state=state, **data)
        updates, state = opt.update(
            grad, state, params, value=value, grad=grad, value_fn=fn, **data
        )
        return apply_updates(params, updates), updates, state

    params = jax.tree.map(jnp.asarray, start)
    state = opt.init(params)
    history = []
    for _ in range(steps):
        params, updates, state = step(params, state)
        history.append(jax.device_get((params, updates, state)))
    return history


def _line_search_state(state, kind):
    """The one line-search state (by its type's name) inside a chain's state."""
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: type(x).__name__ == kind)
        if type(s).__name__ == kind
    ]
    assert len(found) == 1, kind
    return found[0]


def _compare(ours, theirs, fn, start, kind=None, **data):
    got = _run(ours, fn, start, gx.value_and_grad_from_state, gx.apply_updates, **data)
    want = _run(theirs, fn, start, optax.value_and_grad_from_state, optax.apply_updates, **data)
    for k, ((p, u, s), (p_ref, u_ref, s_ref)) in enumerate(zip(got, want, strict=True)):
        where = f"after step {k + 1}"
        chex.assert_trees_all_close(p, p_ref, rtol=RTOL, atol=0, custom_message=where)
        chex.assert_trees_all_close(u, u_ref, rtol=RTOL, atol=0, custom_message=where)
        if kind is not None:
            mine, ref = _line_search_state(s, kind), _line_search_state(s_ref, kind)
            assert int(mine.info.num_linesearch_steps) == int(ref.info.num_linesearch_steps)
            for field in ("learning_rate", "value", "grad"):
                chex.assert_trees_all_close(
                    getattr(mine, field), getattr(ref, field), rtol=RTOL, atol=0,
                    custom_message=f"{field} {where}",
                )  # fmt: skip
    return got


def _lbfgs_chain(memory_size=10, scale_init_precond=True, **zoom):
    zoom = {"max_linesearch_steps": 20, "initial_guess_strategy": "one", **zoom}
    return gx.chain(
        gx.scale_by_lbfgs(memory_size, scale_init_precond),
        gx.scale(-1.0),
        gx.scale_by_zoom_linesearch(**zoom),
    )


@pytest.mark.parametrize(
    ("memory_size", "scale_init_precond"), [(10, True), (3, True), (1, False), (4, False)]
)
def test_optax_lbfgs_is_the_chain(x64, memory_size, scale_init_precond):
    """``optax.lbfgs`` = ``chain(scale_by_lbfgs, scale(-1), scale_by_zoom_linesearch(20,
    initial_guess_strategy="one"))``, as ``gx.lbfgs``'s docstring says."""
    got = _compare(
        _lbfgs_chain(memory_size, scale_init_precond),
        optax.lbfgs(memory_size=memory_size, scale_init_precond=scale_init_precond),
        rosenbrock,
        ROSENBROCK_START,
        "ScaleByZoomLinesearchState",
    )
    # It minimises: 15 steps take Rosenbrock's value from 1e2 to well under 1e-1.
    assert float(rosenbrock(got[-1][0])) < 1e-1 * float(rosenbrock(ROSENBROCK_START))


def test_optax_lbfgs_with_data_arguments(x64):
    # Keyword arguments that value_fn takes (the data) go through update to the line search.
    data = {"x": FEATURES, "y": TARGETS}
    got = _compare(_lbfgs_chain(), optax.lbfgs(), least_squares, LEAST_SQUARES_START, **data)
    params = got[-1][0]
    # Least squares with a ridge: the normal equations' solution, to a few ulps.
    design = np.concatenate([FEATURES, np.ones((30, 1))], axis=1)
    ridge = np.diag([0.01 * 30] * 4 + [0.0])
    solution = np.linalg.solve(design.T @ design + ridge, design.T @ TARGETS)
    np.testing.assert_allclose(np.append(params["w"], params["b"]), solution, rtol=1e-8)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"max_learning_rate": 0.05},
        {"approx_dec_rtol": None, "curv_rtol": 0.5},
        {"curv_rtol": float("inf"), "initial_guess_strategy": "one"},
        {"tol": 1e-3, "increase_factor": 3.0, "slope_rtol": 1e-2},
        {"stepsize_precision": 1e-2, "max_linesearch_steps": 4},
    ],
    ids=["defaults", "max_learning_rate", "armijo_only", "no_curvature", "tol", "few_steps"],
)
def test_zoom_linesearch_matches_optax(x64, options):
    options = {"max_linesearch_steps": 15, **options}
    ours = gx.chain(gx.sgd(1e-3), gx.scale_by_zoom_linesearch(**options))
    theirs = optax.chain(optax.sgd(1e-3), optax.scale_by_zoom_linesearch(**options))
    _compare(ours, theirs, rosenbrock, ROSENBROCK_START, "ScaleByZoomLinesearchState")


@pytest.mark.parametrize(
    "options",
    [
        {"store_grad": True},
        {"store_grad": True, "decrease_factor": 0.5, "increase_factor": float("inf")},
        {"store_grad": True, "slope_rtol": 0.3, "atol": 1e-3, "rtol": 1e-3},
        {"store_grad": True, "max_backtracking_steps": 3, "max_learning_rate": 0.01},
    ],
    ids=["defaults", "restart_at_max", "tolerances", "few_steps"],
)
def test_backtracking_linesearch_matches_optax(x64, options):
    options = {"max_backtracking_steps": 30, **options}
    ours = gx.chain(gx.sgd(1e-2), gx.scale_by_backtracking_linesearch(**options))
    theirs = optax.chain(optax.sgd(1e-2), optax.scale_by_backtracking_linesearch(**options))
    _compare(ours, theirs, rosenbrock, ROSENBROCK_START, "ScaleByBacktrackingLinesearchState")


def test_backtracking_without_stored_gradient_matches_optax(x64):
    # Without store_grad there is no gradient to reuse: the loop takes jax.value_and_grad.
    ours = gx.chain(gx.sgd(1e-2), gx.scale_by_backtracking_linesearch(20))
    theirs = optax.chain(optax.sgd(1e-2), optax.scale_by_backtracking_linesearch(20))
    assert ours.init(ROSENBROCK_START)[1].grad is None
    got, want = _run_plain(ours, gx.apply_updates), _run_plain(theirs, optax.apply_updates)
    chex.assert_trees_all_close(got, want, rtol=RTOL, atol=0)
    assert float(rosenbrock(got[-1])) < float(rosenbrock(ROSENBROCK_START))


def _run_plain(opt, apply_updates):
    value_and_grad = jax.value_and_grad(rosenbrock)

    @jax.jit
    def step(params, state):
        value, grad = value_and_grad(params)
        updates, state = opt.update(
            grad, state, params, value=value, grad=grad, value_fn=rosenbrock
        )
        return apply_updates(params, updates), state

    params, history = jax.tree.map(jnp.asarray, ROSENBROCK_START), []
    state = opt.init(params)
    for _ in range(STEPS):
        params, state = step(params, state)
        history.append(jax.device_get(params))
    return history


@pytest.mark.parametrize("memory_size", [1, 4])
def test_scale_by_lbfgs_matches_optax_on_given_gradients(x64, memory_size):
    # The preconditioner alone, fed the gradients of an affine field at params that move by
    # -0.05 times its output: the memory fills, wraps around, and its weights are used.
    rng = np.random.default_rng(2)
    a = {"w": rng.uniform(0.5, 1.5, (3, 4)), "b": rng.uniform(0.5, 1.5, 4)}
    b = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    runs = []
    for transform in (gx.scale_by_lbfgs(memory_size), optax.scale_by_lbfgs(memory_size)):
        params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
        state = transform.init(params)
        update = jax.jit(transform.update)
        history = []
        for _ in range(12):
            grads = jax.tree.map(lambda a, b, p: a * p + b, a, b, params)
            direction, state = update(grads, state, params)
            params = jax.tree.map(lambda p, d: p - 0.05 * d, params, direction)
            history.append(jax.device_get((direction, state.diff_params_memory)))
        runs.append(history)
    chex.assert_trees_all_close(runs[0], runs[1], rtol=RTOL, atol=0)


# ----------------------------------------------------------------------------------------------
# value_and_grad_from_state, the extra arguments, the states.


def test_value_and_grad_from_state_reuses_the_stored_value():
    opt = gx.chain(gx.sgd(1e-3), gx.scale_by_zoom_linesearch(10))
    params = jax.tree.map(jnp.asarray, ROSENBROCK_START)
    value_and_grad = gx.value_and_grad_from_state(rosenbrock)
    state = opt.init(params)
    # The first call evaluates (the stored value is inf).
    chex.assert_trees_all_close(
        value_and_grad(params, state=state), jax.value_and_grad(rosenbrock)(params)
    )
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=rosenbrock)
    stored = state[1]
    # Then it returns what the line search stored, whatever params it is given.
    got = value_and_grad(jax.tree.map(jnp.zeros_like, params), state=state)
    chex.assert_trees_all_equal(got, (stored.value, stored.grad))
    new_params = gx.apply_updates(params, updates)
    chex.assert_trees_all_close(got, jax.value_and_grad(rosenbrock)(new_params), rtol=1e-5)


def test_value_and_grad_from_state_needs_one_stored_gradient():
    params = jax.tree.map(jnp.asarray, ROSENBROCK_START)
    value_and_grad = gx.value_and_grad_from_state(rosenbrock)
    for opt in (
        gx.sgd(0.1),
        gx.chain(gx.sgd(0.1), gx.scale_by_backtracking_linesearch(5)),  # store_grad=False
        gx.chain(gx.scale_by_zoom_linesearch(5), gx.scale_by_zoom_linesearch(5)),
    ):
        with pytest.raises(ValueError, match="value_and_grad_from_state: expected one"):
            value_and_grad(params, state=opt.init(params))
    with pytest.raises(TypeError, match="`value_fn` must be a function"):
        gx.value_and_grad_from_state(3.0)


@pytest.mark.parametrize(
    "make",
    [lambda: gx.scale_by_zoom_linesearch(5), lambda: gx.scale_by_backtracking_linesearch(5)],
    ids=["zoom", "backtracking"],
)
def test_line_searches_need_the_loss_and_take_only_its_arguments(make):
    opt = make()
    params = {"w": jnp.ones(4), "b": jnp.zeros(())}
    state = opt.init(params)
    grad = jax.grad(least_squares)(params, FEATURES, TARGETS)
    value = least_squares(params, FEATURES, TARGETS)
    descent = jax.tree.map(jnp.negative, grad)
    with pytest.raises(ValueError, match="needs the loss"):
        opt.update(descent, state, params)
    with pytest.raises(TypeError, match=r"keyword arguments \['z'\] were passed"):
        opt.update(
            descent, state, params, value=value, grad=grad, value_fn=least_squares,
            x=FEATURES, y=TARGETS, z=1.0,
        )  # fmt: skip
    updates, new_state = opt.update(
        descent, state, params, value=value, grad=grad, value_fn=least_squares,
        x=FEATURES, y=TARGETS,
    )  # fmt: skip
    # State dtypes do not change (jit would recompile), and the step decreased the loss.
    assert jax.tree.map(jax.typeof, new_state) == jax.tree.map(jax.typeof, state)
    assert least_squares(gx.apply_updates(params, updates), FEATURES, TARGETS) < value


def test_states_have_optax_fields_and_fixed_dtypes():
    params = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.zeros(3, jnp.float32)}
    for opt, theirs in (
        (gx.scale_by_lbfgs(), optax.scale_by_lbfgs()),
        (gx.scale_by_zoom_linesearch(5), optax.scale_by_zoom_linesearch(5)),
        (gx.scale_by_backtracking_linesearch(5), optax.scale_by_backtracking_linesearch(5)),
    ):
        state = opt.init(params)
        assert type(state).__name__ == type(theirs.init(params)).__name__
        assert set(type(theirs.init(params))._fields) <= set(state._fields)
        assert state.count.dtype == jnp.int32
        for leaf in jax.tree.leaves(state):
            assert not jax.typeof(leaf).weak_type


def test_optax_lbfgs_with_complex_params(x64):
    target = np.array([1.0 - 2.0j, 0.5j, -1.5])

    def loss(params):
        z = params["z"]
        quadratic = jnp.sum(jnp.abs(z - target) ** 2 * jnp.array([1.0, 2.0, 3.0]))
        return quadratic + 0.1 * jnp.sum(jnp.abs(z) ** 4) + jnp.sum((params["r"] - 1.0) ** 2)

    start = {"z": np.zeros(3, complex), "r": np.zeros(2)}
    # The gradients are jax.grad's, as Optax's loop takes them; the complex dot products
    # (conjugating their first argument) are Optax's.
    got = _compare(_lbfgs_chain(), optax.lbfgs(), loss, start, "ScaleByZoomLinesearchState")
    assert got[-1][0]["z"].dtype == np.complex128


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: gx.scale_by_zoom_linesearch(1, verbose=True), "no step met both criteria"),
        (
            lambda: gx.scale_by_backtracking_linesearch(0, verbose=True),
            "no step size with a sufficient decrease",
        ),
    ],
    ids=["zoom", "backtracking"],
)
def test_verbose_line_searches_say_when_they_fail(capfd, make, message):
    # One evaluation from a step of 1 along -grad on Rosenbrock cannot meet the criteria.
    opt = gx.chain(gx.sgd(1.0), make())
    params = jax.tree.map(jnp.asarray, ROSENBROCK_START)
    value, grad = jax.value_and_grad(rosenbrock)(params)
    updates, _ = opt.update(
        grad, opt.init(params), params, value=value, grad=grad, value_fn=rosenbrock
    )
    jax.block_until_ready(updates)
    jax.effects_barrier()
    assert message in capfd.readouterr().out
