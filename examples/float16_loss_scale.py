"""Float16 training with dynamic loss scaling.

Run from the repository root::

    python examples/float16_loss_scale.py

A linear regression whose targets are small (~4e-3) is trained in float16 with Adam, its
moments kept in float32. The backward pass of a mean-squared error multiplies each residual by
``1 / n_examples``; in float16 those products fall below the smallest subnormal (6e-8) long
before the fit is good, the gradient becomes zero and training stalls.
``gx.dynamic_loss_scale`` multiplies the loss by a scale ``S`` (kept in the optimizer state),
so the same products are ``S`` times larger, and divides the gradients by ``S`` in float32
before Adam sees them. The scale starts too large on purpose (2^20, above float16's 65504):
those steps overflow and are skipped while the scale halves, and every ``period`` clean steps
it tries to grow again.

The script prints the final loss of float32, float16 without scaling and float16 with it,
and exits with status 1 unless the scaled float16 run ends at least 10x below the unscaled
one.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx


def make_data(seed: int, n_examples: int = 512, n_features: int = 16):
    """Inputs ``x`` (standard normal) and targets ``y = x @ w_true`` with ``|w_true| ~ 1e-3``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_examples, n_features))
    y = x @ (1e-3 * rng.standard_normal(n_features))
    return x, y


def mse(w, x, y):
    r = x @ w - y
    return 0.5 * jnp.mean(r * r)


def train(x, y, dtype, optimizer, steps: int, scaled: bool):
    """Full-batch training in ``dtype``; returns the float32 losses and the final state."""
    x_low, y_low = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)

    def step(carry, _):
        w, state = carry
        # The loss scale lives in the optimizer state; multiply in float32, so that the scaled
        # loss itself cannot overflow float16.
        scale = gx.current_loss_scale(state) if scaled else 1.0
        grads = jax.grad(lambda w: mse(w, x_low, y_low).astype(jnp.float32) * scale)(w)
        updates, state = optimizer.update(grads, state, w)
        w = gx.apply_updates(w, updates)
        return (w, state), mse(w.astype(jnp.float32), x32, y32)

    w0 = jnp.zeros(x.shape[1], dtype)
    run = jax.jit(lambda w, s: jax.lax.scan(step, (w, s), None, length=steps))
    (_, state), losses = run(w0, optimizer.init(w0))
    return np.asarray(losses), state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x, y = make_data(args.seed)
    initial = 0.5 * np.mean(y**2)

    def adam():
        return gx.adam(gx.cosine_decay_schedule(1e-3, args.steps))

    runs = {
        "float32": train(x, y, jnp.float32, adam(), args.steps, scaled=False),
        "float16, no loss scale": train(
            x,
            y,
            jnp.float16,
            gx.dynamic_loss_scale(adam(), initial_scale=1.0, period=10**9),
            args.steps,
            True,
        ),
        "float16, dynamic loss scale": train(
            x,
            y,
            jnp.float16,
            gx.dynamic_loss_scale(adam(), initial_scale=2.0**20, period=50),
            args.steps,
            True,
        ),
    }
    print(f"{'run':<30} {'final loss / initial':>22} {'skipped':>8} {'final scale':>12}")
    for name, (losses, state) in runs.items():
        scaled = isinstance(state, gx.DynamicLossScaleState)
        skipped = int(state.total_notfinite) if scaled else 0
        scale = f"{float(state.loss_scale):.0f}" if scaled else "-"
        print(f"{name:<30} {losses[-1] / initial:>22.3e} {skipped:>8} {scale:>12}")
    unscaled = runs["float16, no loss scale"][0][-1]
    with_scale = runs["float16, dynamic loss scale"][0][-1]
    return 0 if with_scale * 10 < unscaled else 1


if __name__ == "__main__":
    sys.exit(main())
