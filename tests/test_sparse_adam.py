"""sparse_adam against ``torch.optim.SparseAdam`` fed the equivalent sparse gradients.

Two embeddings (10 x 4 and 6 x 3) are trained for 100 steps. At each step a random subset of
each embedding's rows is looked up, and some steps look up no row at all. torch gets each
gradient as a ``torch.sparse_coo_tensor`` listing those rows (an empty one when none is
looked up); gradxform gets the dense gradient, zero outside them. The looked-up rows hold
normal draws (or ``a * w + b`` computed from each side's own params), so they hold no exact 0,
the condition under which the two agree (see ``scale_by_sparse_adam``).

Tolerances are the harness's (``tests/torch_harness.py``): float64 to ``rtol=1e-12``,
``atol=1e-14``. The two sides differ in the order of a few roundings per step (torch writes
``m + (1 - b1) * (g - m)`` and multiplies by ``lr * sqrt(1 - b2^t) / (1 - b1^t)`` at the end,
gradxform ``b1 * m + (1 - b1) * g`` with the learning rate applied last), which stays many
orders of magnitude below what a wrong rule would give: a missed or extra step count changes
the bias corrections by O(1e-3) relative, and touching an untouched row moves it by O(lr).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import require_torch
from torch_harness import ATOL64, RTOL64, gradxform_runner

import gradxform as gx

torch = require_torch()

SHAPES = {"emb": (10, 4), "small": (6, 3)}
STEPS = 100


def _lookups(seed=3, steps=STEPS):
    """Per step and embedding, the sorted rows looked up (every 7th step none at all)."""
    rng = np.random.default_rng(seed)
    schedule = []
    for t in range(steps):
        rows = {}
        for key, (n, _) in SHAPES.items():
            chosen = np.flatnonzero(rng.random(n) < 0.3)
            rows[key] = chosen if t % 7 != 3 else chosen[:0]
        schedule.append(rows)
    return schedule


LOOKUPS = _lookups()


def _initial_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}


def _only_rows(dense, rows):
    out = np.zeros_like(dense)
    out[rows] = dense[rows]
    return out


def _random_gradient(dtype=np.float64, seed=1):
    rng = np.random.default_rng(seed)
    draws = [{k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()} for _ in LOOKUPS]

    def gradient(t, params):
        return {k: _only_rows(draws[t][k], LOOKUPS[t][k]) for k in SHAPES}

    return gradient


def _affine_gradient(dtype=np.float64, seed=2):
    """``a * w + b`` on the looked-up rows, from the current params (errors would feed back)."""
    rng = np.random.default_rng(seed)
    a = {k: rng.uniform(0.5, 1.5, size=s).astype(dtype) for k, s in SHAPES.items()}
    b = {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}

    def gradient(t, params):
        return {k: _only_rows(a[k] * params[k] + b[k], LOOKUPS[t][k]) for k in SHAPES}

    return gradient


GRADIENTS = {"random": _random_gradient, "affine": _affine_gradient}


def _sparse(dense, rows):
    """The sparse COO gradient listing ``rows`` of ``dense`` (an embedding's sparse gradient)."""
    indices = torch.as_tensor(np.asarray(rows, np.int64).reshape(1, -1))
    values = torch.as_tensor(dense[rows])
    return torch.sparse_coo_tensor(indices, values, size=dense.shape, check_invariants=True)


def _torch_history(kwargs, params0, gradient, steps=STEPS):
    """torch's SparseAdam on the sparse form of the same gradients; params after each step."""
    torch_kwargs = {"lr": kwargs.get("learning_rate", 1e-3)}
    torch_kwargs["betas"] = (kwargs.get("b1", 0.9), kwargs.get("b2", 0.999))
    torch_kwargs.update({k: kwargs[k] for k in ("eps", "maximize") if k in kwargs})
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
    optimizer = torch.optim.SparseAdam(list(tensors.values()), **torch_kwargs)
    history = []
    for t in range(steps):
        current = {k: v.detach().numpy().copy() for k, v in tensors.items()}
        dense = gradient(t, current)
        for k, tensor in tensors.items():
            tensor.grad = _sparse(dense[k], LOOKUPS[t][k])
        optimizer.step()
        history.append({k: v.detach().numpy().copy() for k, v in tensors.items()})
    return history


def test_the_lookups_have_the_intended_mix():
    # Steps that touch no row of either embedding, steps that touch one only, rows left alone
    # for several steps in a row: the cases the comparison is meant to cover.
    empty = [t for t, rows in enumerate(LOOKUPS) if all(len(r) == 0 for r in rows.values())]
    assert len(empty) >= 10
    assert any(len(rows["emb"]) == 0 and len(rows["small"]) > 0 for rows in LOOKUPS)
    assert any(len(rows["emb"]) == 10 or 0 < len(rows["emb"]) < 10 for rows in LOOKUPS)
    touched = np.asarray([np.isin(np.arange(10), rows["emb"]) for rows in LOOKUPS])
    assert touched.any(axis=0).all() and (~touched).sum() > 0.5 * touched.size


CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"learning_rate": 0.01}, id="lr"),
    pytest.param({"learning_rate": 0.02, "b1": 0.8, "b2": 0.95, "eps": 1e-3}, id="betas-eps"),
    # b1 = 0: the first moment is the gradient, and its bias correction 1 - 0^t = 1.
    pytest.param({"learning_rate": 0.01, "b1": 0.0, "b2": 0.99}, id="b1=0"),
    pytest.param({"learning_rate": 0.01, "maximize": True}, id="maximize"),
    pytest.param(
        {"learning_rate": 0.02, "b1": 0.8, "b2": 0.95, "eps": 1e-3, "maximize": True},
        id="maximize-betas-eps",
    ),
]


@pytest.mark.parametrize("kwargs", CASES)
def test_matches_torch_sparse_adam_float64(torch64, kwargs):
    run = gradxform_runner(gx.sparse_adam(**kwargs))
    params0 = _initial_params()
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient()
        got = run(params0, gradient)
        want = _torch_history(kwargs, params0, gradient)
        chex.assert_trees_all_close(
            got,
            want,
            rtol=RTOL64,
            atol=ATOL64,
            strict=True,
            custom_message=f"sparse_adam({kwargs}), {variant} gradients",
        )
        # The params really moved, and rows that a step did not look up did not.
        assert all(not np.allclose(want[-1][k], params0[k], rtol=1e-3) for k in SHAPES)
        previous = [params0, *got[:-1]]
        for t, rows in enumerate(LOOKUPS):
            for k, (n, _) in SHAPES.items():
                untouched = np.setdiff1d(np.arange(n), rows[k])
                np.testing.assert_array_equal(got[t][k][untouched], previous[t][k][untouched])


def test_the_comparison_sees_the_step_count_and_the_lazy_rule(torch64):
    """Two wrong rules fail the comparison above: Adam's dense update (moments that decay,
    and rows that keep moving, where the gradient is 0), and a count that skips the steps
    without a gradient."""
    kwargs = {"learning_rate": 0.01}
    params0 = _initial_params()
    gradient = _random_gradient()
    want = _torch_history(kwargs, params0, gradient)
    dense = gradxform_runner(gx.adam(0.01))(params0, gradient)

    opt = gx.sparse_adam(0.01)
    params = jax.tree.map(jnp.asarray, params0)
    state = opt.init(params)
    skipping = []
    for t in range(STEPS):
        grads = gradient(t, None)
        if any(np.any(g != 0) for g in grads.values()):  # skip the steps with no gradient
            updates, state = opt.update(jax.tree.map(jnp.asarray, grads), state, params)
            params = gx.apply_updates(params, updates)
        skipping.append(jax.tree.map(np.asarray, params))
    for wrong in (dense, skipping):
        with pytest.raises(AssertionError):
            chex.assert_trees_all_close(wrong, want, rtol=RTOL64, atol=ATOL64, strict=True)


def test_matches_torch_sparse_adam_float32():
    """float32 on both sides, to ``atol=5e-5`` (the params stay below 3 in magnitude).

    Each side rounds a param once per step, from updates computed in a different order (torch
    rounds ``g - m``, its product and its sum; gradxform two products and a sum): a rounding
    of a param below 4 in magnitude is at most 2^-22 = 2.4e-7, so 100 steps of one rounding
    that differs stay within 2.4e-5, half the bound (measured: 1.8e-7). A wrong rule moves a
    row by O(lr) = 1e-2 within a step.
    """
    kwargs = {"learning_rate": 0.01, "b1": 0.8, "b2": 0.95, "eps": 1e-3}
    params0 = _initial_params(np.float32)
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient(np.float32)
        got = gradxform_runner(gx.sparse_adam(**kwargs))(params0, gradient)
        want = _torch_history(kwargs, params0, gradient)
        assert got[-1]["emb"].dtype == want[-1]["emb"].dtype == np.float32
        chex.assert_trees_all_close(
            got, want, rtol=0.0, atol=5e-5, strict=True, custom_message=f"float32, {variant}"
        )


# ----------------------------------------------------------------------------------------------
# The elementwise rule, against a float64 NumPy re-derivation.


def _numpy_lazy_adam(grads, b1=0.9, b2=0.999, eps=1e-8):
    """The docstring's rule for one leaf: updates (before the learning rate) per step."""
    m = np.zeros_like(grads[0])
    v = np.zeros_like(grads[0])
    out = []
    for t, g in enumerate(grads, start=1):
        present = g != 0
        m = np.where(present, b1 * m + (1 - b1) * g, m)
        v = np.where(present, b2 * v + (1 - b2) * g * g, v)
        step_size = np.sqrt(1 - b2**t) / (1 - b1**t)
        out.append(np.where(present, step_size * m / (np.sqrt(v) + eps), 0.0))
    return out


@pytest.mark.parametrize("kwargs", [{}, {"b1": 0.5, "b2": 0.7, "eps": 0.1}])
def test_scale_by_sparse_adam_is_elementwise_lazy(x64, kwargs):
    """Exact zeros anywhere (not only whole rows) leave that element's moments alone.

    20 steps of (3, 4) gradients whose scale changes by four orders of magnitude, with 40% of
    the elements exactly 0. ``1 - b^t`` is evaluated directly here, while the library takes
    ``-expm1(t log b)``: the reference's cancellation costs up to ~1e-14 relative for
    b2 = 0.999, so ``rtol=1e-12`` (several hundred ulps) still catches any wrong coefficient.
    """
    rng = np.random.default_rng(5)
    scales = [1.0, 0.01, 30.0, 0.5, 3.0, 1e-3] * 4
    grads = [rng.normal(size=(3, 4)) * s * (rng.random((3, 4)) > 0.4) for s in scales[:20]]
    transform = gx.scale_by_sparse_adam(**kwargs)
    state = transform.init(jnp.zeros((3, 4)))
    got = []
    for g in grads:
        u, state = transform.update(jnp.asarray(g), state)
        got.append(np.asarray(u))
    assert int(state.count) == 20
    for t, (u, want) in enumerate(zip(got, _numpy_lazy_adam(grads, **kwargs), strict=True)):
        np.testing.assert_allclose(u, want, rtol=1e-12, atol=0, err_msg=f"step {t + 1}")
        assert np.all((u == 0) == (grads[t] == 0))


def test_a_stored_zero_in_a_looked_up_row_is_where_torch_differs(torch64):
    """The documented limit: torch updates every element its sparse gradient lists, a listed
    exact 0 included (its moments decay, and it moves by its remaining momentum), where
    sparse_adam leaves an exact 0 alone. Everything else agrees."""
    first = np.asarray([[0.5, 0.7], [0.0, 0.0], [1.0, 2.0], [0.0, 0.0]])
    second = np.asarray([[0.5, 0.0], [0.0, 0.0], [1.0, -2.0], [0.0, 0.0]])  # (0, 1): a listed 0
    params = {"emb": jnp.ones((4, 2))}
    opt = gx.sparse_adam(0.1)
    state = opt.init(params)
    tensor = torch.tensor(np.ones((4, 2)), requires_grad=True)
    reference = torch.optim.SparseAdam([tensor], lr=0.1)
    history = []
    for gradient in (first, second):
        updates, state = opt.update({"emb": jnp.asarray(gradient)}, state, params)
        params = gx.apply_updates(params, updates)
        tensor.grad = _sparse(gradient, [0, 2])
        reference.step()
        history.append((np.asarray(params["emb"]), tensor.detach().numpy().copy()))
    (got1, want1), (got2, want2) = history
    np.testing.assert_allclose(got1, want1, rtol=RTOL64, atol=ATOL64)
    differs = np.zeros((4, 2), bool)
    differs[0, 1] = True
    np.testing.assert_allclose(got2[~differs], want2[~differs], rtol=RTOL64, atol=ATOL64)
    assert got2[0, 1] == got1[0, 1]  # left alone here
    assert abs(want2[0, 1] - want1[0, 1]) > 1e-2  # torch: moved by ~lr, by its momentum
