"""``gradxform.lbfgs`` reproduces ``torch.optim.LBFGS`` step for step.

Both sides minimise the same objective, evaluated in NumPy float64 (torch's closure sets the
gradients it computes; gradxform's ``value_and_grad_fn`` calls it through
``jax.pure_callback``), so that given the same params both see the same loss and gradient to
the bit and every difference is the optimizers' own. The params are compared after every one
of ``STEPS`` calls of ``step(closure)``, with torch's ``func_evals`` and ``n_iter``: the line
search and the stopping rules are discrete decisions, and every one must be taken alike.

Tolerance: ``rtol = RTOL`` elementwise. The two sides still round differently: torch's dot
products are MKL's ``ddot`` (its own summation order), XLA's a chain of fused multiply-adds,
and ``apply_updates`` rounds ``params + (x - params)`` once more. Each costs an ulp or so of
``y.s``, ``g.d`` and the like, and L-BFGS feeds them back (the measured differences and
the bounds, per problem, are at ``RTOL``). On Rosenbrock's valley with fixed unit steps the
difference grows ~10-100x per step (measured: 1e-8 after 3 steps from (-1.2, 1, -1.2, 1)
with torch's defaults, 3e-8 after 12 with ``max_iter=4``), so the Rosenbrock cases use the
strong-Wolfe search or a step of 0.3, where it stays below 2e-11. A wrong branch, bound or
counter changes ``func_evals`` or moves the params by far more than that.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from references import require_torch
from test_robustness import VALID  # the valid hyperparameters declared for the shared tests

import gradxform as gx

torch = require_torch()

STEPS = 12


@pytest.fixture
def float64_callbacks():
    """float64 on both sides, also in the thread where ``jax.pure_callback`` runs the NumPy
    objective: ``jax.enable_x64`` (the ``x64`` fixture) holds for this thread only, and the
    callback's float64 results would be canonicalised to float32 there. The global flag is read
    before anything enables x64 for this thread, so that the value restored is the global one."""
    previous_jax = jax.config.jax_enable_x64
    previous_torch = torch.get_default_dtype()
    jax.config.update("jax_enable_x64", True)
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous_jax)
        torch.set_default_dtype(previous_torch)


# ----------------------------------------------------------------------------------------------
# The objectives, in NumPy float64: loss and gradient of the params seen as one vector.

_RNG = np.random.default_rng(0)
_Q, _ = np.linalg.qr(_RNG.normal(size=(16, 16)))
# A convex quadratic 1/2 (x - x*)^T H (x - x*) with eigenvalues from 0.5 to 20 and a minimiser
# of O(1) entries, so that relative differences at the minimiser mean something.
_H = _Q @ np.diag(np.geomspace(0.5, 20.0, 16)) @ _Q.T
_X_STAR = _RNG.uniform(0.5, 2.0, 16) * _RNG.choice([-1.0, 1.0], 16)
# Logistic regression with an L2 penalty, 40 examples of 4 features and a bias.
_FEATURES = _RNG.normal(size=(40, 4))
_LABELS = (_FEATURES @ np.array([1.5, -2.0, 0.5, 1.0]) + 0.3 + _RNG.normal(size=40) > 0) * 1.0


def quadratic(x):
    r = x - _X_STAR
    hr = _H @ r
    return 0.5 * (r @ hr), hr


def rosenbrock(x):
    """The chained Rosenbrock function ``sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``."""
    a, b = x[:-1], x[1:]
    g = np.zeros_like(x)
    g[:-1] = -400.0 * a * (b - a**2) - 2.0 * (1.0 - a)
    g[1:] += 200.0 * (b - a**2)
    return np.sum(100.0 * (b - a**2) ** 2 + (1.0 - a) ** 2), g


def logistic(x):
    z = _FEATURES @ x[:-1] + x[-1]
    p = 1.0 / (1.0 + np.exp(-z))
    loss = np.mean(np.logaddexp(0.0, z) - _LABELS * z) + 0.05 * (x[:-1] @ x[:-1])
    dz = (p - _LABELS) / len(z)
    return loss, np.concatenate([_FEATURES.T @ dz + 0.1 * x[:-1], [np.sum(dz)]])


# Each problem: its objective and starting params (a tree of two leaves; the vector the
# objective sees is the leaves in JAX's order, sorted keys, which torch is given too).
PROBLEMS = {
    "quadratic": (quadratic, {"b": np.linspace(-1, 1, 4), "w": np.zeros((3, 4))}),
    "rosenbrock": (rosenbrock, {"a": np.array([-1.2, 1.0]), "b": np.array([-1.2, 1.0])}),
    "logistic": (logistic, {"bias": np.zeros(()), "w": np.zeros(4)}),
}


def _vector(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _tree(vector: np.ndarray, like):
    leaves, treedef = jax.tree.flatten(like)
    parts, offset = [], 0
    for leaf in leaves:
        parts.append(vector[offset : offset + np.size(leaf)].reshape(np.shape(leaf)))
        offset += np.size(leaf)
    return treedef.unflatten(parts)


# ----------------------------------------------------------------------------------------------
# The two runners.


def _torch_kwargs(kwargs):
    return {("lr" if k == "learning_rate" else k): v for k, v in kwargs.items()}


def torch_lbfgs(objective, params0, **torch_kwargs):
    """``(optimizer, closure, params)``: ``torch.optim.LBFGS`` on the leaves of ``params0`` (in
    JAX's order), the closure that sets their gradients from ``objective``, and a function
    returning the current params as a tree."""
    leaves, treedef = jax.tree.flatten(params0)
    tensors = [torch.tensor(np.array(x, np.float64), requires_grad=True) for x in leaves]
    optimizer = torch.optim.LBFGS(tensors, **torch_kwargs)

    def closure():
        loss, grad = objective(np.concatenate([t.detach().numpy().ravel() for t in tensors]))
        for t, g in zip(tensors, jax.tree.leaves(_tree(grad, params0)), strict=True):
            t.grad = torch.tensor(g)
        return torch.tensor(loss)

    def params():
        return treedef.unflatten([t.detach().numpy().copy() for t in tensors])

    return optimizer, closure, params


def _torch_state(optimizer):
    """torch keeps L-BFGS's state with its first param."""
    return optimizer.state[optimizer.param_groups[0]["params"][0]]


def torch_run(objective, params0, kwargs, steps=STEPS):
    """Params, ``func_evals`` and ``n_iter`` after each ``torch.optim.LBFGS.step(closure)``."""
    optimizer, closure, params = torch_lbfgs(objective, params0, **_torch_kwargs(kwargs))
    history = []
    for _ in range(steps):
        optimizer.step(closure)
        state = _torch_state(optimizer)
        history.append((params(), state["func_evals"], state["n_iter"]))
    return history


def numpy_value_and_grad(objective):
    """``params -> (loss, grads)`` evaluating ``objective`` in NumPy, callable under ``jit``."""

    def host(params):
        loss, grad = objective(_vector(params))
        return np.float64(loss), _tree(grad, params)

    def value_and_grad(params):
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), x.dtype), params)
        return jax.pure_callback(host, (jax.ShapeDtypeStruct((), jnp.float64), shapes), params)

    return value_and_grad


def _lbfgs_state(state):
    (inner,) = state  # the chain of one transformation
    assert isinstance(inner, gx.LbfgsState)
    return inner


def gradxform_run(objective, params0, kwargs, steps=STEPS):
    """The same as :func:`torch_run`, with ``gx.lbfgs`` and one jitted update per step."""
    opt = gx.lbfgs(**kwargs)
    value_and_grad = numpy_value_and_grad(objective)

    @jax.jit
    def step(params, state):
        value, grads = value_and_grad(params)
        updates, state = opt.update(
            grads, state, params, value=value, value_and_grad_fn=value_and_grad
        )
        return gx.apply_updates(params, updates), state

    params = jax.tree.map(jnp.asarray, params0)
    state = opt.init(params)
    history = []
    for _ in range(steps):
        params, state = step(params, state)
        inner = _lbfgs_state(state)
        history.append((jax.tree.map(np.asarray, params), int(inner.func_evals), int(inner.n_iter)))
    return history, _lbfgs_state(state)


SW = {"line_search_fn": "strong_wolfe"}
# (problem, options): torch's defaults and the strong-Wolfe search; a short history and few
# iterations (the ring buffer wraps, max_iter ends the steps); loose tolerances that end the
# steps early (later steps return at once: max |g| <= tolerance_grad); max_eval below what
# max_iter would take (the line search runs out of evaluations); a step below 1.
CASES = [
    ("quadratic", {}),
    ("quadratic", SW),
    ("quadratic", {"history_size": 3, "max_iter": 5}),
    ("quadratic", {**SW, "history_size": 3, "max_iter": 5}),
    ("quadratic", {"tolerance_grad": 1e-4, "tolerance_change": 1e-6}),
    ("quadratic", {**SW, "max_iter": 8, "max_eval": 9, "history_size": 2}),
    ("rosenbrock", SW),
    ("rosenbrock", {**SW, "max_iter": 4}),
    ("rosenbrock", {**SW, "history_size": 3, "max_iter": 5}),
    ("rosenbrock", {**SW, "tolerance_grad": 1e-4, "tolerance_change": 1e-6}),
    ("rosenbrock", {**SW, "max_iter": 8, "max_eval": 9, "history_size": 2}),
    ("rosenbrock", {"learning_rate": 0.3, "max_iter": 4}),
    ("logistic", {}),
    ("logistic", SW),
    ("logistic", {"history_size": 3, "max_iter": 5}),
    ("logistic", {"tolerance_grad": 1e-4, "tolerance_change": 1e-6}),
    ("logistic", {**SW, "max_iter": 1}),
    ("logistic", {"learning_rate": 0.3, "max_iter": 4, "max_eval": 3}),
]


def _case_id(case):
    problem, kwargs = case
    return problem + "".join(f"-{k}={v}" for k, v in kwargs.items())


# The largest elementwise relative difference measured over CASES, per problem, over all
# steps: quadratic 2.3e-13, Rosenbrock 2.0e-11, logistic 7.7e-16 (after the first step: 4e-15,
# 1.4e-13 and 3e-16). The bounds are 5 to 13 times the largest.
RTOL = {"quadratic": 2e-12, "rosenbrock": 1e-10, "logistic": 1e-14}


@pytest.mark.parametrize(("problem", "kwargs"), CASES, ids=map(_case_id, CASES))
def test_matches_torch(float64_callbacks, problem, kwargs):
    objective, params0 = PROBLEMS[problem]
    want = torch_run(objective, params0, kwargs)
    got, _ = gradxform_run(objective, params0, kwargs)
    for step, ((p_got, evals_got, iters_got), (p_want, evals_want, iters_want)) in enumerate(
        zip(got, want, strict=True)
    ):
        where = f"after step {step + 1}"
        assert (evals_got, iters_got) == (evals_want, iters_want), f"(func_evals, n_iter) {where}"
        chex.assert_trees_all_close(
            p_got, p_want, rtol=RTOL[problem], atol=0.0, custom_message=where
        )


def _torch_final_state(objective, params0, kwargs, steps=STEPS):
    """torch's L-BFGS state after ``steps`` steps."""
    optimizer, closure, _ = torch_lbfgs(objective, params0, **_torch_kwargs(kwargs))
    for _ in range(steps):
        optimizer.step(closure)
    return _torch_state(optimizer)


def _normwise(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want), initial=0.0) / max(np.max(np.abs(want)), 1e-300))


# The state is compared normwise (the largest difference over the largest magnitude): near a
# minimum the gradients, hence y, d and H_diag, are differences of nearly equal numbers, and
# params equal to 1e-15 give gradients equal only to ~1e-15 of the loss's scale (measured over
# CASES: at most 1e-7 normwise, in d, prev_flat_grad and ro near Rosenbrock's minimum). A pair
# out of order in the ring buffer or a wrong H_diag is off by O(1).
STATE_RTOL = 1e-6


@pytest.mark.parametrize(
    ("problem", "kwargs"),
    [CASES[2], CASES[8], CASES[12], CASES[17]],
    ids=map(_case_id, [CASES[2], CASES[8], CASES[12], CASES[17]]),
)
def test_state_is_torchs(float64_callbacks, problem, kwargs):
    objective, params0 = PROBLEMS[problem]
    want = _torch_final_state(objective, params0, kwargs)
    _, got = gradxform_run(objective, params0, kwargs)
    size, length = got.ro.shape[0], int(got.history_length)
    assert length == len(want["old_dirs"]) > 0
    if kwargs.get("history_size", 100) < 10:
        assert length == size  # the ring buffer is full: it has wrapped around
    order = (int(got.history_start) + np.arange(length)) % size  # oldest first, as torch's lists
    pairs = {
        "old_dirs": (np.asarray(got.old_dirs)[order], np.stack(want["old_dirs"])),
        "old_stps": (np.asarray(got.old_stps)[order], np.stack(want["old_stps"])),
        "ro": (np.asarray(got.ro)[order], np.array([float(r) for r in want["ro"]])),
        "d": (got.d, want["d"]),
        "t": (got.t, float(want["t"])),
        "H_diag": (got.H_diag, float(want["H_diag"])),
        "prev_flat_grad": (got.prev_flat_grad, want["prev_flat_grad"]),
        "prev_loss": (got.prev_loss, float(want["prev_loss"])),
    }
    for name, (a, b) in pairs.items():
        assert _normwise(a, b) <= STATE_RTOL, (name, _normwise(a, b))
    assert (int(got.func_evals), int(got.n_iter)) == (want["func_evals"], want["n_iter"])


# ----------------------------------------------------------------------------------------------
# The strong-Wolfe search and its cubic interpolation against torch's own functions.


def _quartic(seed):
    """A non-convex quartic on R^5, a point, the steepest descent there, a first step."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.1, 2, 5), rng.uniform(0, 3, 5), rng.normal(size=5)

    def f(x):
        return np.sum(a * x**4 - b * x**2 + c * x), 4 * a * x**3 - 2 * b * x + c

    x0 = rng.normal(size=5)
    return f, x0, -f(x0)[1] * rng.uniform(0.5, 2.0), 10.0 ** rng.uniform(-3, 2)


def _wavy(seed):
    """``sum sin(k a x) + x^2 / 10 + c x`` on R^3: many local minima along the line."""
    rng = np.random.default_rng(seed)
    a, c, k = rng.uniform(0.1, 2, 3), rng.normal(size=3), rng.uniform(1, 10)

    def f(x):
        return np.sum(np.sin(k * a * x) + 0.1 * x**2 + c * x), k * a * np.cos(k * a * x) + (
            0.2 * x + c
        )

    x0 = rng.normal(size=3)
    return f, x0, -f(x0)[1], 10.0 ** rng.uniform(-3, 1)


# Quartics with each evaluation budget (torch's max_ls: 25 by default, fewer when L-BFGS has
# few evaluations left, 0 at the last), and wavy lines where the zoom's interpolation lands
# within a tenth of the bracket's ends twice in a row, so that the trial is moved inside: to
# the bracket's low end (seeds 1087, 12165, 12544) or high end (8780, 19560, 22440), found by
# counting those branches in torch's function over seeds 0 to 22440 (1 in ~4000).
LINES = [
    *[("quartic", seed, max_ls) for seed in range(6) for max_ls in (25, 3, 1, 0)],
    *[("wavy", seed, 25) for seed in (1087, 12165, 12544, 8780, 19560, 22440)],
]


# The line the jitted search below evaluates, set by each test: one compilation per dimension
# serves every line (the objective is a host function, its data are not traced).
_LINE: dict = {}


def _evaluate_line(t):
    f, x0, d = _LINE["f"], _LINE["x0"], _LINE["d"]
    return tuple(map(np.asarray, f(x0 + np.asarray(t) * d)))


@functools.partial(jax.jit, static_argnums=0)
def _search(n, t0, d, f0, g0, gtd, max_ls):
    from gradxform.transforms.wolfe import strong_wolfe

    def objective(t):
        shapes = (jax.ShapeDtypeStruct((), jnp.float64), jax.ShapeDtypeStruct((n,), jnp.float64))
        return jax.pure_callback(_evaluate_line, shapes, t)

    return strong_wolfe(objective, t0, d, f0, g0, gtd, max_ls)


@pytest.mark.parametrize(("family", "seed", "max_ls"), LINES)
def test_strong_wolfe_matches_torch(float64_callbacks, family, seed, max_ls):
    from torch.optim.lbfgs import _strong_wolfe

    f, x0, d, t0 = {"quartic": _quartic, "wavy": _wavy}[family](seed)
    f0, g0 = f(x0)

    def torch_objective(x, t, d):
        value, grad = f(x.numpy() + float(t) * d.numpy())
        return float(value), torch.tensor(grad)

    x_t, d_t = torch.tensor(x0), torch.tensor(d)
    gtd = torch.tensor(g0) @ d_t
    want = _strong_wolfe(
        torch_objective, x_t, t0, d_t, float(f0), torch.tensor(g0), gtd, max_ls=max_ls
    )

    _LINE.update(f=f, x0=x0, d=d)
    got = _search(
        len(x0), *map(jnp.asarray, (t0, d, f0, g0, g0 @ d)), jnp.asarray(max_ls, jnp.int32)
    )
    f_new, g_new, t, evals = got
    assert int(evals) == want[3]
    # The same evaluations in the same order: only the cubic's arithmetic and the dot products
    # g.d round differently, by an ulp or two (measured over these lines: at most 1.1e-15
    # relative in t, 4.0e-15 in f, 3.2e-15 in an element of g; 5.5e-13 in t over 150 other
    # random wavy lines, whose steps land where the sine is steep).
    np.testing.assert_allclose(float(t), float(want[2]), rtol=1e-14, atol=0)
    np.testing.assert_allclose(float(f_new), float(want[0]), rtol=2e-14, atol=0)
    np.testing.assert_allclose(np.asarray(g_new), want[1].numpy(), rtol=2e-14, atol=0)


def test_cubic_interpolate_matches_torch(x64):
    from torch.optim.lbfgs import _cubic_interpolate

    from gradxform.transforms.wolfe import cubic_interpolate

    rng = np.random.default_rng(3)
    checked = {"real": 0, "no real minimiser": 0, "clipped": 0}
    for _ in range(600):
        x1, x2 = rng.normal(size=2) * 2
        f1, f2, g1, g2 = rng.normal(size=4) * 3
        bounds = None if rng.random() < 0.5 else tuple(sorted(rng.normal(size=2) * 3))
        args = (x1, f1, g1, x2, f2, g2)
        want = float(_cubic_interpolate(*map(torch.tensor, args), bounds=bounds))
        got = float(cubic_interpolate(*map(jnp.asarray, args), bounds=bounds))
        # Measured: 599 of the 600 equal to the bit, one an ulp apart (4e-16).
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
        d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
        low, high = bounds or sorted((x1, x2))
        if d1**2 - g1 * g2 < 0:
            checked["no real minimiser"] += 1
        elif want in (low, high):
            checked["clipped"] += 1
        else:
            checked["real"] += 1
    assert min(checked.values()) > 20, checked  # every branch was taken


# ----------------------------------------------------------------------------------------------
# One compilation, and a state of fixed size.


def _loss(params):
    """A small smooth loss on a tree: a quadratic with a quartic term, in float64 or not."""
    w, b = params["w"], params["b"]
    return jnp.sum((w @ b - 1.0) ** 2) + 0.1 * jnp.sum(w**4) + jnp.sum((b - 0.5) ** 2)


def _params(dtype=jnp.float32):
    rng = np.random.default_rng(1)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 4)), dtype),
        "b": jnp.asarray(rng.normal(size=4), dtype),
    }


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_compiles_once(line_search_fn):
    opt = gx.lbfgs(line_search_fn=line_search_fn, history_size=4)
    value_and_grad = jax.value_and_grad(_loss)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        value, grads = value_and_grad(params)
        updates, state = opt.update(
            grads, state, params, value=value, value_and_grad_fn=value_and_grad
        )
        return gx.apply_updates(params, updates), state

    params = _params()
    state = opt.init(params)
    losses = [float(_loss(params))]
    for _ in range(4):
        params, state = step(params, state)
        losses.append(float(_loss(params)))
    assert step._cache_size() == 1
    assert losses[-1] < 1e-2 * losses[0]  # and it optimises


def _bytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("history_size", [1, 7, 100])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_is_the_ring_buffer(history_size, dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    params = _params(jnp.dtype(dtype))
    n, m, itemsize = 16, history_size, jnp.dtype(dtype).itemsize
    for max_iter in (1, 20, 500):
        opt = gx.lbfgs(history_size=history_size, max_iter=max_iter)
        state = jax.eval_shape(opt.init, params)
        # 2 m n for the pairs (y, s), m for ro, 2 n for d and prev_flat_grad, 3 scalars (t,
        # H_diag, prev_loss) and 5 int32 counters: nothing grows with max_iter or the steps.
        assert _bytes(state) == itemsize * (2 * m * n + m + 2 * n + 3) + 5 * 4
    # After more iterations than the history holds, it is full and has wrapped around.
    opt = gx.lbfgs(history_size=history_size, max_iter=5)
    state = opt.init(params)
    f = jax.value_and_grad(_loss)
    update = jax.jit(lambda g, s, p, v: opt.update(g, s, p, value=v, value_and_grad_fn=f))
    for _ in range(3):
        value, grads = f(params)
        updates, state = update(grads, state, params, value)
        params = gx.apply_updates(params, updates)
    assert _bytes(state) == _bytes(jax.eval_shape(opt.init, params))
    assert int(state[0].history_length) == min(history_size, int(state[0].n_iter) - 1)


# ----------------------------------------------------------------------------------------------
# Dtypes, trees, complex params.


def _signature(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.dtype(x.dtype), jax.typeof(x).weak_type), tree)


@pytest.mark.parametrize(
    ("dtypes", "compute"),
    [
        (("float32", "float32"), "float32"),
        (("bfloat16", "bfloat16"), "float32"),
        (("float64", "float64"), "float64"),
        (("bfloat16", "float32"), "float32"),
    ],
    ids=["float32", "bfloat16", "float64", "mixed"],
)
@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_dtypes_are_stable(dtypes, compute, line_search_fn, request):
    if "float64" in dtypes:
        request.getfixturevalue("x64")
    params = _params()
    params = {"w": params["w"].astype(dtypes[0]), "b": params["b"].astype(dtypes[1])}
    opt = gx.lbfgs(line_search_fn=line_search_fn, history_size=3)
    state = opt.init(params)
    f = jax.value_and_grad(lambda p: _loss(jax.tree.map(lambda x: x.astype(jnp.float32), p)))

    def step(params, state):
        value, grads = f(params)
        updates, state = opt.update(grads, state, params, value=value, value_and_grad_fn=f)
        return gx.apply_updates(params, updates), updates, state

    new_params, updates, new_state = jax.eval_shape(step, params, state)
    # The state: flat vectors and scalars in the compute dtype (the widest param dtype, at
    # least float32), int32 counters, nothing weakly typed; the same after the update.
    for leaf in jax.tree.leaves(state):
        assert not jax.typeof(leaf).weak_type
        assert leaf.dtype in (jnp.dtype(compute), jnp.dtype(jnp.int32)), leaf.dtype
    assert _signature(new_state) == _signature(state)
    # Updates in each param's update dtype (>= float32), new params in the params' dtypes.
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
        assert u.dtype == jnp.promote_types(p.dtype, jnp.float32)
    assert _signature(new_params) == _signature(params)


def _tree_loss(params):
    """A separable quadratic over every leaf of any tree, computed in float32."""
    leaves = jax.tree.leaves(params)
    return sum(
        jnp.sum((x.astype(jnp.float32) - 0.5) ** 2 * (1.0 + i)) for i, x in enumerate(leaves)
    )


def test_any_tree():
    # Nested containers, None, a scalar, a size-0 leaf, float16 and bfloat16 leaves.
    params = {
        "a": [jnp.ones((2, 3)), None, (jnp.zeros(()), jnp.zeros((0, 4)))],
        "b": {"half": jnp.full(3, 2.0, jnp.float16), "brain": jnp.full(2, -1.0, jnp.bfloat16)},
    }
    opt = gx.lbfgs(line_search_fn="strong_wolfe")
    f = jax.value_and_grad(_tree_loss)
    state = opt.init(params)
    for _ in range(2):
        value, grads = f(params)
        updates, state = opt.update(grads, state, params, value=value, value_and_grad_fn=f)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        params = gx.apply_updates(params, updates)
    assert params["a"][1] is None and params["a"][2][1].shape == (0, 4)
    assert params["b"]["half"].dtype == jnp.float16
    assert params["b"]["brain"].dtype == jnp.bfloat16
    # The minimum, 0.5 everywhere, to the leaves' precision (bfloat16: 2^-9 at 0.5).
    for leaf in jax.tree.leaves(params):
        np.testing.assert_allclose(np.asarray(leaf, np.float32), 0.5, atol=2e-3)


def test_flat_buffers_give_the_tree_numbers(x64):
    # L-BFGS concatenates the params itself, in the order of the tree's leaves, as a flat
    # buffer does: the same vector, the same numbers to the bit.
    params = jax.tree.map(lambda x: x.astype(jnp.float64), _params())
    flat, layout = gx.flatten_params(params)
    runs = []
    for start, loss in ((params, _loss), (flat, lambda f: _loss(layout.unflatten(f)))):
        opt = gx.lbfgs(line_search_fn="strong_wolfe", history_size=3, max_iter=5)
        f = jax.value_and_grad(loss)
        state, current = opt.init(start), start
        for _ in range(3):
            value, grads = f(current)
            updates, state = opt.update(grads, state, current, value=value, value_and_grad_fn=f)
            current = gx.apply_updates(current, updates)
        runs.append((current, state))
    (tree_params, tree_state), (flat_params, flat_state) = runs
    chex.assert_trees_all_equal(layout.unflatten(flat_params), tree_params)
    chex.assert_trees_all_equal(flat_state, tree_state)


def test_complex_params_follow_torch(float64_callbacks):
    """Complex params are pairs of reals, as torch's ``view_as_real``; the gradient is torch's
    convention ``dL/dRe + i dL/dIm`` (the conjugate of ``jax.grad``'s)."""
    rng = np.random.default_rng(4)
    target = rng.normal(size=3) + 1j * rng.normal(size=3)
    weights = rng.uniform(0.5, 2.0, 3)

    def objective(z, r):
        loss = np.sum(weights * np.abs(z - target) ** 2) + np.sum((r - 1.0) ** 2)
        loss = loss + 0.1 * (z[0].real * r[0]) ** 2
        gz = 2 * weights * (z - target)
        gz[0] += 0.2 * z[0].real * r[0] ** 2
        gr = 2 * (r - 1.0)
        gr[0] += 0.2 * z[0].real ** 2 * r[0]
        return loss, gz, gr

    z0, r0 = np.zeros(3, complex), np.zeros(2)
    kwargs = {"line_search_fn": "strong_wolfe", "history_size": 4, "max_iter": 6}
    tensors = [torch.tensor(r0, requires_grad=True), torch.tensor(z0, requires_grad=True)]
    optimizer = torch.optim.LBFGS(tensors, **kwargs)

    def closure():
        loss, gz, gr = objective(tensors[1].detach().numpy(), tensors[0].detach().numpy())
        tensors[0].grad, tensors[1].grad = torch.tensor(gr), torch.tensor(gz)
        return torch.tensor(loss)

    def host(params):
        loss, gz, gr = objective(np.asarray(params["z"]), np.asarray(params["r"]))
        return np.float64(loss), {"r": gr, "z": gz}

    def value_and_grad(params):
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
        return jax.pure_callback(host, (jax.ShapeDtypeStruct((), jnp.float64), shapes), params)

    opt = gx.lbfgs(**kwargs)

    @jax.jit
    def step(params, state):
        value, grads = value_and_grad(params)
        updates, state = opt.update(
            grads, state, params, value=value, value_and_grad_fn=value_and_grad
        )
        return gx.apply_updates(params, updates), state

    params = {"r": jnp.asarray(r0), "z": jnp.asarray(z0)}
    state = opt.init(params)
    for k in range(6):
        optimizer.step(closure)
        params, state = step(params, state)
        assert params["z"].dtype == jnp.complex128
        want = {"r": tensors[0].detach().numpy(), "z": tensors[1].detach().numpy()}
        chex.assert_trees_all_close(params, want, rtol=1e-12, atol=0, custom_message=f"step {k}")
        counts = optimizer.state[tensors[0]]
        assert (int(state[0].func_evals), int(state[0].n_iter)) == (
            counts["func_evals"],
            counts["n_iter"],
        )
    # Towards the minimum (z = target but for the coupled z[0]): a gradient in the other
    # convention would not be a descent direction for the imaginary parts.
    np.testing.assert_allclose(np.asarray(params["z"])[1:], target[1:], atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Wrappers, schedules, and what update needs.


def _run(opt, params, steps=4, loss=_loss):
    f = jax.value_and_grad(loss)

    @jax.jit
    def step(params, state):
        value, grads = f(params)
        updates, state = opt.update(grads, state, params, value=value, value_and_grad_fn=f)
        return gx.apply_updates(params, updates), state

    state = opt.init(params)
    history = []
    for _ in range(steps):
        params, state = step(params, state)
        history.append(params)
    return history, state


def test_injected_hyperparameters_equal_the_plain_ones(x64):
    # history_size is a shape, so it stays a Python int; max_iter, max_eval, the learning rate
    # and the tolerances become arrays: the loop bounds and comparisons read them at run time.
    kwargs = {
        "learning_rate": 0.5,
        "max_iter": 6,
        "max_eval": 8,
        "tolerance_grad": 1e-6,
        "tolerance_change": 1e-10,
        "history_size": 3,
        "line_search_fn": "strong_wolfe",
    }
    params = jax.tree.map(lambda x: x.astype(jnp.float64), _params())
    injected = gx.inject_hyperparams(gx.lbfgs, static_args="history_size")(**kwargs)
    got, state = _run(injected, params)
    want, _ = _run(gx.lbfgs(**kwargs), params)
    chex.assert_trees_all_equal(got, want)
    assert set(state.hyperparams) == {
        "learning_rate",
        "max_iter",
        "max_eval",
        "tolerance_grad",
        "tolerance_change",
    }
    # Changing an injected value changes the steps without a new compilation.
    assert not np.allclose(
        _run(gx.lbfgs(**{**kwargs, "max_iter": 2}), params)[0][0]["w"], want[0]["w"]
    )


def test_learning_rate_schedule_follows_torch_scheduler(float64_callbacks):
    # A schedule of the update count is torch's lr changed between steps by a scheduler.
    objective, params0 = PROBLEMS["logistic"]
    schedule = gx.exponential_decay(0.8, transition_steps=1, decay_rate=0.7)
    got, _ = gradxform_run(objective, params0, {"learning_rate": schedule, "max_iter": 3}, 6)
    optimizer, closure, torch_params = torch_lbfgs(objective, params0, lr=0.8, max_iter=3)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.7)

    for k in range(6):
        optimizer.step(closure)
        scheduler.step()
        chex.assert_trees_all_close(got[k][0], torch_params(), rtol=RTOL["logistic"], atol=0)
        assert got[k][1] == _torch_state(optimizer)["func_evals"]


def test_apply_if_finite_skips_a_step_with_a_nan():
    params = _params()
    f = jax.value_and_grad(_loss)
    plain, guarded = gx.lbfgs(history_size=3), gx.apply_if_finite(gx.lbfgs(history_size=3), 2)
    value, grads = f(params)
    p_updates, p_state = plain.update(grads, plain.init(params), params, value=value,
                                      value_and_grad_fn=f)  # fmt: skip
    g_state = guarded.init(params)
    g_updates, g_state = guarded.update(grads, g_state, params, value=value, value_and_grad_fn=f)
    chex.assert_trees_all_equal(g_updates, p_updates)
    chex.assert_trees_all_equal(g_state.inner_state, p_state)
    poisoned = {**grads, "b": grads["b"].at[0].set(jnp.nan)}
    updates, state = guarded.update(poisoned, g_state, params, value=value, value_and_grad_fn=f)
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates))
    chex.assert_trees_all_equal(state.inner_state, g_state.inner_state)


def test_update_needs_the_loss_and_checks_it():
    params = _params()
    opt = gx.lbfgs()
    state = opt.init(params)
    grads = jax.grad(_loss)(params)
    with pytest.raises(ValueError, match=r"lbfgs needs the loss .*value_and_grad_fn=f"):
        opt.update(grads, state, params)
    with pytest.raises(ValueError, match=r"lbfgs needs the loss"):
        opt.update(grads, state, params, value=_loss(params))
    with pytest.raises(ValueError, match="lbfgs needs `params`"):
        opt.update(grads, state, value=1.0, value_and_grad_fn=jax.value_and_grad(_loss))
    with pytest.raises(ValueError, match=r"lbfgs: the `value` must be a scalar"):
        opt.update(
            grads, state, params, value=jnp.ones(2), value_and_grad_fn=jax.value_and_grad(_loss)
        )
    with pytest.raises(TypeError, match=r"lbfgs: `value_and_grad_fn` must be a function"):
        opt.update(grads, state, params, value=1.0, value_and_grad_fn=3.0)

    def wrong_tree(p):
        return _loss(p), {"w": p["w"]}

    with pytest.raises(ValueError, match=r"lbfgs: the updates tree does not match"):
        opt.update(grads, state, params, value=1.0, value_and_grad_fn=wrong_tree)
    with pytest.raises(ValueError, match=r"lbfgs: `line_search_fn` must be one of None"):
        gx.lbfgs(line_search_fn="backtracking")
    with pytest.raises(TypeError, match=r"lbfgs: `history_size` must be a Python int"):
        gx.lbfgs(history_size=jnp.asarray(3))


def test_sharded_state_refuses_lbfgs():
    # L-BFGS reduces over all params (dot products, max |g|): not element-wise, so ZeRO-1's
    # check, an allow-list, refuses it instead of computing on slices.
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    opt = gx.shard_optimizer_state(gx.lbfgs(), axis_name="data")
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    f = jax.value_and_grad(_loss)

    def run(params):
        value, grads = f(params)
        return opt.update(grads, opt.init(params), params, value=value, value_and_grad_fn=f)

    with pytest.raises(ValueError, match="shard_optimizer_state: the wrapped transformation"):
        jax.jit(jax.shard_map(run, mesh=mesh, in_specs=P(), out_specs=P()))(_params())


_TARGETS = [np.linspace(-100, 100, 6).reshape(2, 3), np.linspace(-3, 3, 4), np.float64(50.0)]


@jax.jit
def _targets_loss(p):
    leaves = [x.astype(jnp.float32) for x in jax.tree.leaves(p)]
    return sum(jnp.sum((x - t) ** 2) / 2 for x, t in zip(leaves, _TARGETS, strict=True))


# Jitted once for every example below (eagerly, each of its operations would compile).
_targets_value_and_grad = jax.jit(jax.value_and_grad(_targets_loss))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kwargs=VALID["lbfgs"])
def test_any_valid_hyperparameters_give_finite_steps(kwargs):
    # The valid ranges tests/test_robustness.py declares for L-BFGS (its tests there feed given
    # gradients, which L-BFGS cannot take), on a tree of float32, bfloat16 and float16 leaves,
    # a scalar and None, pulled towards targets of up to 100 in magnitude.
    params = {
        "a": jnp.zeros((2, 3)),
        "b": [jnp.ones(4, jnp.bfloat16), None, jnp.full((), 2.0, jnp.float16)],
    }
    loss = _targets_loss
    opt = gx.lbfgs(**kwargs)
    f = _targets_value_and_grad
    step = jax.jit(lambda g, s, p, v: opt.update(g, s, p, value=v, value_and_grad_fn=f))
    state = opt.init(params)
    signature, initial = _signature(state), float(loss(params))
    for _ in range(2):
        value, grads = f(params)
        updates, state = step(grads, state, params, value)
        params = gx.apply_updates(params, updates)
        assert _signature(state) == signature
        for tree in (updates, state, params):
            assert all(
                np.all(np.isfinite(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree)
            )
    assert params["b"][1] is None and params["b"][0].dtype == jnp.bfloat16
    # Towards the targets, never away (the Hessian is I: L-BFGS's steps are exact Newton steps
    # of length lr <= 1 after the first, or strong-Wolfe steps).
    assert float(loss(params)) <= initial
