"""A learning-rate sweep on the digits MLP: every learning rate trained at once, under ``vmap``.

Run from the repository root::

    python examples/lr_sweep.py                      # writes docs/lr_sweep.png

``gradxform.inject_hyperparams(gx.adam)`` keeps the learning rate in the optimizer state as
an array, ``state.hyperparams["learning_rate"]``. Stacking one state per learning rate and
``jax.vmap``-ing the training epoch over the stack (params and states batched, data shared)
trains all the models side by side in one compiled program: one compilation, one call per
epoch, however many learning rates. Every model starts from the same initialization and sees
the same minibatches, so the curves differ only by the learning rate.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import _digits
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from tqdm import tqdm

import gradxform as gx

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "lr_sweep.png"
BATCH_SIZE = 64
LOSS_CEILING = 100.0

# The optimizers swept, as factories taking the learning rate first.
SWEPT: dict[str, Callable[..., gx.GradientTransformation]] = {
    "SGD": gx.sgd,
    "SGD, momentum 0.9": functools.partial(gx.sgd, momentum=0.9),
    "Adam": gx.adam,
}


def sweep(
    factory: Callable[..., gx.GradientTransformation],
    learning_rates: jax.Array,
    data: _digits.Digits,
    epochs: int,
    seed: int,
    bar: tqdm,
) -> tuple[np.ndarray, np.ndarray]:
    """Trains one MLP per learning rate, all at once; returns final training losses and
    test accuracies, each of shape ``learning_rates.shape``.
    """
    optimizer = gx.inject_hyperparams(factory)(learning_rate=1.0)
    params = _digits.init_mlp(jax.random.key(seed))

    def init_one(learning_rate):
        state = optimizer.init(params)
        hyperparams = {**state.hyperparams, "learning_rate": learning_rate}
        return params, state._replace(hyperparams=hyperparams)

    # A stack of models: every leaf gains a leading axis of len(learning_rates).
    stacked_params, stacked_states = jax.vmap(init_one)(learning_rates)
    epoch = jax.jit(
        jax.vmap(functools.partial(_digits.train_epoch, optimizer), in_axes=(0, 0, None, None))
    )
    for indices in _digits.batch_schedule(seed, data.x_train.shape[0], BATCH_SIZE, epochs):
        stacked_params, stacked_states, _ = epoch(stacked_params, stacked_states, data, indices)
        bar.update()

    final_loss = jax.vmap(_digits.loss, in_axes=(0, None, None))(
        stacked_params, data.x_train, data.y_train
    )
    accuracy = jax.vmap(_digits.accuracy, in_axes=(0, None, None))(
        stacked_params, data.x_test, data.y_test
    )
    return np.asarray(final_loss), np.asarray(accuracy)


def plot(
    learning_rates: np.ndarray,
    results: dict[str, tuple[np.ndarray, np.ndarray]],
    initial_loss: float,
    epochs: int,
    out: Path,
) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    colors = plt.get_cmap("tab10")
    for i, (label, (losses, accuracies)) in enumerate(results.items()):
        color = colors(i)
        # A run that blew up (NaN, inf, or a loss past the ceiling) is drawn as an x on the
        # ceiling rather than left out, so the edge of stability stays visible.
        off_chart = ~(losses <= LOSS_CEILING)
        shown = np.where(off_chart, LOSS_CEILING, losses)
        best = np.argmin(np.where(off_chart, np.inf, losses))
        ax_loss.plot(
            learning_rates,
            shown,
            color=color,
            marker="o",
            ms=4,
            label=f"{label} (lowest at lr {learning_rates[best]:.2g})",
        )
        ax_loss.plot(
            learning_rates[off_chart],
            shown[off_chart],
            ls="none",
            marker="x",
            ms=9,
            mew=2,
            color=color,
        )
        ax_acc.plot(learning_rates, 100 * accuracies, color=color, marker="o", ms=4, label=label)
    ax_loss.axhline(initial_loss, color="grey", ls="--", lw=1, label="loss at initialization")
    ax_loss.set(
        xscale="log",
        yscale="log",
        ylim=(None, 2 * LOSS_CEILING),
        xlabel="learning rate",
        ylabel="final training loss (cross-entropy, full training set)",
        title=f"Training loss after {epochs} epochs (x: NaN or above {LOSS_CEILING:g})",
    )
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_loss.legend(fontsize=9, loc="upper left")
    ax_acc.axhline(100 / _digits.NUM_CLASSES, color="grey", ls=":", lw=1, label="chance")
    ax_acc.set(
        xscale="log",
        ylim=(0, 100),
        xlabel="learning rate",
        ylabel="test accuracy (%)",
        title=f"Test accuracy after {epochs} epochs",
    )
    ax_acc.grid(True, which="both", alpha=0.3)
    ax_acc.legend(fontsize=9, loc="center right")
    fig.suptitle(
        f"Learning-rate sweep on digits: {len(learning_rates)} learning rates per optimizer, "
        "trained together under jax.vmap"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the PNG")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--num-rates", type=int, default=16, help="learning rates per optimizer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1 epoch, 4 rates (for tests)")
    args = parser.parse_args(argv)
    epochs, num_rates = (1, 4) if args.quick else (args.epochs, args.num_rates)

    data = _digits.load_digits()
    learning_rates = jnp.logspace(-4, 1, num_rates, dtype=jnp.float32)
    initial_loss = float(_digits.loss(_digits.init_mlp(jax.random.key(args.seed)), *data[:2]))
    results = {}
    with tqdm(total=len(SWEPT) * epochs, desc="sweep (epochs)") as bar:
        for label, factory in SWEPT.items():
            bar.set_description(f"{label}, {num_rates} rates")
            results[label] = sweep(factory, learning_rates, data, epochs, args.seed, bar)
    learning_rates = np.asarray(learning_rates)
    plot(learning_rates, results, initial_loss, epochs, args.out)
    for label, (losses, accuracies) in results.items():
        best = np.nanargmin(np.where(np.isfinite(losses), losses, np.inf))
        print(
            f"{label:18s} best lr {learning_rates[best]:.3g}: final loss {losses[best]:.4f}, "
            f"test accuracy {100 * accuracies[best]:.1f}%"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
