"""A small training run that can stop and resume from a gradxform checkpoint.

``tests/test_checkpoint.py`` imports this module to train in its own process, and runs it as
a script to resume from a checkpoint in a fresh Python process::

    python _resume_worker.py CHECKPOINT OUTPUT STEPS

loads ``{"params", "opt_state", "step"}`` from CHECKPOINT (with a freshly initialised tree as
``like``), trains STEPS more steps, and saves the same kind of tree to OUTPUT. Both processes
use the one jitted :func:`train_step` defined here, so XLA compiles the same program and a
resumed run can be compared with an uninterrupted one bit for bit.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx

SEED = 0
BATCH = 32
TOTAL_STEPS = 100

# Warmup then cosine decay, kept in the state by inject_hyperparams, after a global-norm clip.
SCHEDULE = gx.warmup_cosine_decay_schedule(
    init_value=0.0, peak_value=3e-2, warmup_steps=10, decay_steps=TOTAL_STEPS, end_value=1e-3
)
OPTIMIZER = gx.chain(
    gx.clip_by_global_norm(1.0),
    gx.inject_hyperparams(gx.adamw)(learning_rate=SCHEDULE, b2=0.99, weight_decay=1e-2),
)


def init_params() -> dict:
    """A 4-16-1 tanh MLP, drawn from a fixed seed."""
    rng = np.random.default_rng(SEED)
    return {
        "hidden": {
            "w": jnp.asarray(rng.standard_normal((4, 16), np.float32) / 2),
            "b": jnp.zeros(16, jnp.float32),
        },
        "out": {
            "w": jnp.asarray(rng.standard_normal((16, 1), np.float32) / 4),
            "b": jnp.zeros(1, jnp.float32),
        },
    }


def batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    """The data of one step, a function of the seed and the step number only."""
    rng = np.random.default_rng([SEED, step])
    x = rng.standard_normal((BATCH, 4), np.float32)
    y = np.sin(x).sum(axis=1, keepdims=True).astype(np.float32)
    return x, y


def loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    prediction = hidden @ params["out"]["w"] + params["out"]["b"]
    return jnp.mean((prediction - y) ** 2)


@jax.jit
def train_step(params, opt_state, x, y):
    grads = jax.grad(loss)(params, x, y)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
    return gx.apply_updates(params, updates), opt_state


def train(params, opt_state, start: int, stop: int):
    """Steps ``start`` to ``stop - 1``; returns the params and the optimizer state."""
    for step in range(start, stop):
        params, opt_state = train_step(params, opt_state, *batch(step))
    return params, opt_state


def main(argv: list[str]) -> None:
    checkpoint, output, steps = argv
    params = init_params()
    like = {"params": params, "opt_state": OPTIMIZER.init(params), "step": 0}
    loaded = gx.load_state(checkpoint, like=like)
    start = loaded["step"]
    stop = start + int(steps)
    params, opt_state = train(loaded["params"], loaded["opt_state"], start, stop)
    gx.save_state(output, {"params": params, "opt_state": opt_state, "step": stop})


if __name__ == "__main__":
    main(sys.argv[1:])
