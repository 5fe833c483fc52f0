"""The harness of the ``torch.optim`` comparisons: the same gradients fed to a gradxform
optimizer and to a torch one, the params recorded after every step.

Tolerance in float64: ``RTOL64 = 1e-12`` and ``ATOL64 = 1e-14`` (see
``tests/test_torch_reference.py``'s docstring for why these bound a few ulps per step over 100
steps, and what the ``atol`` is for).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from references import require_torch

import gradxform as gx

STEPS = 100
SHAPES = {"w": (3, 4), "b": (4,)}
RTOL64 = 1e-12
ATOL64 = 1e-14


# ----------------------------------------------------------------------------------------------
# The two runners and the comparison.


def initial_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}


def random_gradient(dtype=np.float64, seed=1, steps=STEPS):
    """The same precomputed gradients, whatever the params."""
    rng = np.random.default_rng(seed)
    grads = [{k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()} for _ in range(steps)]
    return lambda t, params: grads[t]


def affine_gradient(dtype=np.float64, seed=2):
    """``g = a * w + b`` (a > 0: the gradient of a convex quadratic), evaluated in NumPy."""
    rng = np.random.default_rng(seed)
    a = {k: rng.uniform(0.5, 1.5, size=s).astype(dtype) for k, s in SHAPES.items()}
    b = {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
    return lambda t, params: {k: a[k] * params[k] + b[k] for k in SHAPES}


GRADIENTS = {"random": random_gradient, "affine": affine_gradient}


def gradxform_runner(opt):
    """A function ``(params0, gradient, steps) -> params after every step``, jitted once."""

    @jax.jit
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    def run(params0, gradient, steps=STEPS):
        params = {k: jnp.asarray(v) for k, v in params0.items()}
        state = opt.init(params)
        history = []
        for t in range(steps):
            current = {k: np.asarray(v) for k, v in params.items()}
            params, state = step(params, state, gradient(t, current))
            history.append({k: np.asarray(v) for k, v in params.items()})
        return history

    return run


def torch_history(
    make_optimizer, params0, gradient, steps=STEPS, make_scheduler=None, clip_norm=None
):
    """Runs a torch optimizer on the same gradients; returns the params after every step."""
    torch = require_torch()
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params0.items()}
    optimizer = make_optimizer(list(tensors.values()))
    scheduler = None if make_scheduler is None else make_scheduler(optimizer)
    history = []
    for t in range(steps):
        current = {k: v.detach().numpy().copy() for k, v in tensors.items()}
        grads = gradient(t, current)
        for k, v in tensors.items():
            v.grad = torch.tensor(grads[k])
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(tensors.values()), clip_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        history.append({k: v.detach().numpy().copy() for k, v in tensors.items()})
    return history


def assert_matches_torch(opt, make_torch, label: str) -> None:
    """``opt`` and ``make_torch`` (a torch optimizer factory, see :func:`torch_history`) give the
    same params after every step (float64, ``RTOL64``/``ATOL64``) on every gradient sequence of
    ``GRADIENTS``, and the params moved: two unchanged trees would compare equal and prove
    nothing."""
    run = gradxform_runner(opt)
    params0 = initial_params()
    for variant, make_gradient in GRADIENTS.items():
        gradient = make_gradient()
        got = run(params0, gradient)
        want = torch_history(make_torch, params0, gradient)
        chex.assert_trees_all_close(
            got,
            want,
            rtol=RTOL64,
            atol=ATOL64,
            strict=True,
            custom_message=f"{label}, {variant} gradients",
        )
        assert all(not np.allclose(want[-1][k], params0[k], rtol=1e-3) for k in SHAPES)
