"""Compare the classic optimizers on the digits MLP and plot their loss curves.

Run from the repository root::

    python examples/compare_optimizers.py            # writes docs/compare_optimizers.png

Every optimizer starts from the same initialization and sees the same minibatches, so the
curves differ only by the optimizer. Each one gets a learning rate that suits it (SGD wants a
far larger step than Adam); the point is the shape of the curves, not a tuned leaderboard.
The last entry switches from Adam to SGD with momentum halfway through, with
``gradxform.join_transforms``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import _digits
import jax
import matplotlib
import numpy as np
from tqdm import tqdm

import gradxform as gx

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "compare_optimizers.png"
BATCH_SIZE = 64


def optimizers(switch: int) -> dict[str, Callable[[], gx.GradientTransformation]]:
    """Each optimizer's label and factory, with the learning rate it is run at.

    ``switch`` is the update count at which the last entry moves from Adam to momentum SGD.
    """
    table = {
        "SGD (lr 0.2)": lambda: gx.sgd(0.2),
        "Momentum 0.9 (lr 0.02)": lambda: gx.sgd(0.02, momentum=0.9),
        "Nesterov 0.9 (lr 0.02)": lambda: gx.sgd(0.02, momentum=0.9, nesterov=True),
        "AdaGrad (lr 0.03)": lambda: gx.adagrad(0.03),
        "RMSProp (lr 1e-3)": lambda: gx.rmsprop(1e-3),
        "Adam (lr 3e-3)": lambda: gx.adam(3e-3),
        "AdamW (lr 3e-3, wd 0.05)": lambda: gx.adamw(3e-3, weight_decay=0.05),
        "Adamax (lr 5e-3)": lambda: gx.adamax(5e-3),
    }
    table[f"Adam, then Momentum 0.9 from step {switch}"] = lambda: gx.join_transforms(
        [gx.adam(3e-3), gx.sgd(0.02, momentum=0.9)], boundaries=[switch]
    )
    return table


def run(
    make_optimizer: Callable[[], gx.GradientTransformation],
    data: _digits.Digits,
    epochs: int,
    seed: int,
    bar: tqdm,
) -> tuple[np.ndarray, np.ndarray]:
    """Trains one MLP; returns the per-step minibatch losses and the per-epoch test accuracy."""
    optimizer = make_optimizer()
    params = _digits.init_mlp(jax.random.key(seed))
    opt_state = optimizer.init(params)
    epoch = jax.jit(functools.partial(_digits.train_epoch, optimizer), donate_argnums=(0, 1))
    accuracy = jax.jit(_digits.accuracy)
    losses, accuracies = [], []
    for indices in _digits.batch_schedule(seed, data.x_train.shape[0], BATCH_SIZE, epochs):
        params, opt_state, epoch_losses = epoch(params, opt_state, data, indices)
        losses.append(np.asarray(epoch_losses))
        accuracies.append(float(accuracy(params, data.x_test, data.y_test)))
        bar.update()
        bar.set_postfix(loss=f"{losses[-1].mean():.4f}", test_acc=f"{accuracies[-1]:.3f}")
    return np.concatenate(losses), np.asarray(accuracies)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """A trailing moving average (over fewer values at the start), to see through the noise."""
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def plot(
    results: dict[str, tuple[np.ndarray, np.ndarray]], steps_per_epoch: int, switch: int, out: Path
) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    colors = plt.get_cmap("tab10")
    for i, (label, (losses, accuracies)) in enumerate(results.items()):
        color = colors(i)
        steps = np.arange(1, len(losses) + 1)
        ax_loss.plot(steps, smooth(losses, steps_per_epoch), color=color, lw=1.6, label=label)
        epochs = np.arange(1, len(accuracies) + 1)
        ax_acc.plot(
            epochs,
            100 * accuracies,
            color=color,
            lw=1.6,
            marker="o",
            ms=2.5,
            label=f"{label}: {100 * accuracies[-1]:.1f}%",
        )
    ax_loss.axvline(switch, color="grey", ls=":", lw=1, label="Adam -> Momentum switch")
    ax_loss.set(
        yscale="log",
        xlabel="step",
        ylabel="training loss (cross-entropy, moving average over an epoch)",
        title="Training loss",
    )
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_loss.legend(fontsize=8)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    ax_acc.set_ylim(85, 100)
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend(fontsize=8, loc="lower right", title="final test accuracy")
    fig.suptitle("gradxform optimizers on scikit-learn digits (MLP 64-128-10, batch 64)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the PNG")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 epochs (for tests)")
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else args.epochs

    data = _digits.load_digits()
    steps_per_epoch = data.x_train.shape[0] // BATCH_SIZE
    switch = epochs * steps_per_epoch // 2  # halfway through, in updates
    table = optimizers(switch)
    results = {}
    with tqdm(total=len(table) * epochs, desc="optimizers x epochs") as bar:
        for label, make_optimizer in table.items():
            bar.set_description(label)
            results[label] = run(make_optimizer, data, epochs, args.seed, bar)
    plot(results, steps_per_epoch, switch, args.out)
    for label, (losses, accuracies) in results.items():
        print(
            f"{label:38s} final loss {losses[-steps_per_epoch:].mean():.4f}  "
            f"test accuracy {100 * accuracies[-1]:.1f}%"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
