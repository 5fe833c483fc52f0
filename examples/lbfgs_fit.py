"""Fitting a damped oscillation to noisy samples with L-BFGS, as ``torch.optim.LBFGS`` would.

Run from the repository root::

    python examples/lbfgs_fit.py                  # writes docs/lbfgs_fit.png

The model is ``y(t) = A exp(-g t) cos(w t + phi)``, four parameters fitted by least squares
to 200 noisy samples. ``gx.lbfgs`` runs torch's L-BFGS: each ``update`` is one
``step(closure)``, here up to ``max_iter=4`` inner iterations with a strong-Wolfe line search,
and it evaluates the loss itself through ``value_and_grad_fn``. Once the fit reaches the noise
floor (the noise's variance, 0.01), each step stops after one evaluation (``tolerance_change``
or ``tolerance_grad``), as torch's does. The script prints the loss and the
evaluations used after each step, and plots the data with the fit (left) and the loss per
step (right).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import gradxform as gx

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "lbfgs_fit.png"
TRUE = {"amplitude": 2.0, "decay": 0.3, "frequency": 2.5, "phase": 0.4}


def model(params: dict, t: jax.Array) -> jax.Array:
    """``A exp(-g t) cos(w t + phi)``."""
    envelope = params["amplitude"] * jnp.exp(-params["decay"] * t)
    return envelope * jnp.cos(params["frequency"] * t + params["phase"])


def make_data(samples: int, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """``samples`` times in [0, 10] and the true curve there plus Gaussian noise of 0.1."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 10.0, samples)
    y = np.asarray(model(TRUE, jnp.asarray(t))) + 0.1 * rng.normal(size=samples)
    return jnp.asarray(t, jnp.float32), jnp.asarray(y, jnp.float32)


def fit(steps: int, samples: int = 200) -> tuple[dict, list[float], list[int], tuple]:
    """Fits the model with ``gx.lbfgs``; returns the params, the loss and the number of loss
    evaluations after each step, and the data."""
    t, y = make_data(samples)

    def loss(params):
        return jnp.mean((model(params, t) - y) ** 2)

    value_and_grad = jax.value_and_grad(loss)
    optimizer = gx.lbfgs(line_search_fn="strong_wolfe", max_iter=4, history_size=10)

    @jax.jit
    def step(params, state):
        value, grads = value_and_grad(params)
        updates, state = optimizer.update(
            grads, state, params, value=value, value_and_grad_fn=value_and_grad
        )
        params = gx.apply_updates(params, updates)
        (lbfgs_state,) = state  # gx.lbfgs is a chain of one transformation
        return params, state, loss(params), lbfgs_state.func_evals

    # A start near the right frequency: the loss has a local minimum at every other one.
    params = {"amplitude": 1.0, "decay": 0.1, "frequency": 2.2, "phase": 0.0}
    params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params)
    state = optimizer.init(params)
    losses, evaluations = [float(loss(params))], [0]
    print(f"step  0  loss {losses[0]:.6f}")
    for k in range(1, steps + 1):
        params, state, value, func_evals = step(params, state)
        losses.append(float(value))
        evaluations.append(int(func_evals))
        print(f"step {k:2d}  loss {losses[-1]:.6f}  ({evaluations[-1]} loss evaluations so far)")
    return jax.device_get(params), losses, evaluations, (np.asarray(t), np.asarray(y))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the PNG")
    parser.add_argument("--steps", type=int, default=10, help="L-BFGS steps (step() calls)")
    parser.add_argument("--quick", action="store_true", help="fewer steps (for tests)")
    args = parser.parse_args(argv)
    params, losses, evaluations, (t, y) = fit(3 if args.quick else args.steps)
    print("fitted:", {k: round(float(v), 4) for k, v in params.items()})
    print("true:  ", TRUE)

    fig, (ax_fit, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    ax_fit.plot(t, y, ".", ms=3, color="grey", label="samples")
    dense = np.linspace(t[0], t[-1], 1000)
    ax_fit.plot(dense, model(TRUE, dense), color="black", lw=1, ls="--", label="true curve")
    ax_fit.plot(dense, model(params, dense), color="tab:blue", lw=1.5, label="L-BFGS fit")
    ax_fit.set(xlabel="t", ylabel="y", title=r"$A\,e^{-g t}\cos(w t + \varphi)$")
    ax_fit.legend()
    ax_loss.semilogy(range(len(losses)), losses, marker="o", color="tab:blue")
    for k, (value, count) in enumerate(zip(losses, evaluations, strict=True)):
        if k:
            ax_loss.annotate(str(count), (k, value), textcoords="offset points", xytext=(4, 4))
    ax_loss.set(
        xlabel="step (one update = one torch step(closure))",
        ylabel="mean squared error",
        title="Loss after each step (labels: loss evaluations so far)",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
