"""Compare the classic and the frontier optimizers on the digits MLP and plot their curves.

Run from the repository root::

    python examples/compare_optimizers.py            # writes docs/compare_optimizers.png
                                                     # and docs/compare_frontier.png
    python examples/compare_optimizers.py --sweep    # reruns the frontier learning-rate sweep

Every optimizer starts from the same initialization and sees the same minibatches, so the
curves differ only by the optimizer. In the classic figure each one gets a learning rate that
suits it (SGD wants a far larger step than Adam); the point is the shape of the curves, not a
tuned leaderboard. Its last entry switches from Adam to SGD with momentum halfway through, with
``gradxform.join_transforms``.

The frontier figure puts AdamW beside schedule-free SGD and AdamW, Prodigy, D-Adaptation AdamW,
Sophia, GaLore AdamW and SOAP. Schedule-free optimizers train at the params ``y`` they update
(their losses are those minibatch losses, as for the others) and are tested at the averaged
params ``x`` (``gradxform.schedule_free_eval_params``). Sophia gets a Gauss-Newton-Bartlett
Hessian estimate of the current minibatch every 10 steps (``train_epoch_with_hessian``).

How the frontier learning rates were tuned: ``--sweep`` trains each optimizer at every rate of
its ``sweep`` (30 epochs, seed 0) and prints the mean training loss of the last epoch, the mean
over the whole run and the test accuracy. The last-epoch losses do not rank the rates: most
runs memorize the 1,347 training images (down to 1e-6 or 0 in float32). The plotted rate is the
one with the lowest mean over the run, i.e. the one that trains fastest; every chosen rate has
a worse one on each side. Rate: last-epoch loss / mean loss / test accuracy (* = plotted)::

    AdamW, wd 0.05        1e-3: 2.6e-2/0.214/97.3%   3e-3: 4.4e-3/0.078/97.6%
                         *1e-2: 1.4e-3/0.030/97.8%   3e-2: 1.5e-3/0.031/97.8%
    Schedule-free SGD      0.1: 3.9e-2/0.192/96.7%    0.3: 9.0e-3/0.095/96.9%
                             1: 1.5e-3/0.045/97.1%    *3: 1.2e-4/0.040/96.7%
                            10: 3.1e+2/708/95.6%
    Schedule-free AdamW   3e-3: 8.2e-3/0.168/97.6%   1e-2: 8.1e-4/0.075/97.6%
                         *3e-2: 1.3e-4/0.041/97.8%    0.1: 3.3e-3/0.066/95.6%
    Prodigy                0.1: 1.6e-4/0.207/97.8%   *0.3: 2.7e-4/0.112/97.6%
                             1: 1.2e-5/0.119/95.6%      3: 1.0e-6/0.330/95.1%
    D-Adaptation AdamW     0.1: 1.8e-3/0.240/97.6%   *0.3: 8.0e-6/0.138/96.7%
                             1: 0/0.933/97.1%           3: 0/5.818/96.7%
    Sophia                1e-4: 1.5e-1/0.906/94.7%   3e-4: 1.0e-3/0.334/97.8%
                          1e-3: 7.8e-4/0.116/96.7%  *3e-3: 5.3e-2/0.085/97.6%
                          1e-2: 4.4e-1/0.492/96.0%
    GaLore AdamW, rank 16 1e-2: 1.2e-2/0.139/96.9%   3e-2: 1.8e-3/0.052/96.9%
                          *0.1: 2.2e-4/0.028/96.9%    0.3: 1.0e-1/0.217/94.7%
    SOAP                  1e-3: 6.7e-3/0.455/97.3%   3e-3: 6.3e-7/0.133/97.3%
                          1e-2: 2.6e-9/0.045/98.0%  *3e-2: 2.0e-9/0.031/97.6%
                           0.1: 7.3e-2/0.286/96.0%
    Shampoo               1e-3: 2.6e+0/2.703/15.8%   3e-3: 2.0e+0/2.281/34.2%
                          1e-2: 8.0e-1/1.293/80.0%   3e-2: 1.7e-1/0.453/94.7%
                           0.1: 2.1e-2/0.104/96.9%    0.3: 2.4e-3/0.029/97.1%
                            *1: 3.7e-4/0.023/97.3%      3: 4.8e-6/0.121/96.9%

Prodigy's and D-Adaptation's ``learning_rate`` multiplies their estimated step (1.0 is the
authors' setting); here 0.3 trains faster than 1.0 for both. Shampoo's step shrinks like
``lr / sqrt(t)`` (its factors accumulate, as AdaGrad's), hence its large rate.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import _digits
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from tqdm import tqdm

import gradxform as gx

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "compare_optimizers.png"
FRONTIER_NAME = "compare_frontier.png"
# The classic optimizers that ``--quick`` runs (the labels' starts).
QUICK_CLASSIC = ("SGD", "Adam (", "Adam, then")
BATCH_SIZE = 64
TITLE = "on scikit-learn digits (MLP 64-128-10, batch 64)"


def optimizers(switch: int) -> dict[str, Callable[[], gx.GradientTransformation]]:
    """Each classic optimizer's label and factory, with the learning rate it is run at.

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


class Frontier(NamedTuple):
    """A frontier optimizer as the figure runs it.

    Attributes:
      make: the optimizer at a learning rate, its other arguments fixed.
      learning_rate: the rate plotted, the best of ``sweep``.
      sweep: the rates ``--sweep`` tries.
      hessian_every: pass ``hessian=`` every this many steps (Sophia), or ``None``.
      eval_params: ``(state, params) -> params`` to test at, or ``None`` for the params.
    """

    make: Callable[[float], gx.GradientTransformation]
    learning_rate: float
    sweep: tuple[float, ...]
    hessian_every: int | None = None
    eval_params: Callable[[Any, Any], Any] | None = None


SOPHIA_HESSIAN_EVERY = 10

# The learning rates are the best of each sweep (see the module docstring); everything else is
# the authors' default, but GaLore's rank (the default 128 would not project a 64 x 128 matrix
# at all) and the schedule-free warmup (the authors recommend one; 20 steps is about an epoch).
FRONTIER = {
    "AdamW, wd 0.05": Frontier(
        lambda lr: gx.adamw(lr, weight_decay=0.05), 1e-2, (1e-3, 3e-3, 1e-2, 3e-2)
    ),
    "Schedule-free SGD": Frontier(
        lambda lr: gx.schedule_free_sgd(lr, warmup_steps=20),
        3.0,
        (0.1, 0.3, 1.0, 3.0, 10.0),
        eval_params=gx.schedule_free_eval_params,
    ),
    "Schedule-free AdamW": Frontier(
        lambda lr: gx.schedule_free_adamw(lr, warmup_steps=20),
        3e-2,
        (3e-3, 1e-2, 3e-2, 0.1),
        eval_params=gx.schedule_free_eval_params,
    ),
    "Prodigy": Frontier(gx.prodigy, 0.3, (0.1, 0.3, 1.0, 3.0)),
    "D-Adaptation AdamW": Frontier(gx.dadapt_adamw, 0.3, (0.1, 0.3, 1.0, 3.0)),
    f"Sophia, Hessian every {SOPHIA_HESSIAN_EVERY} steps": Frontier(
        lambda lr: gx.sophia(lr, hessian_update_interval=SOPHIA_HESSIAN_EVERY),
        3e-3,
        (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
        hessian_every=SOPHIA_HESSIAN_EVERY,
    ),
    "GaLore AdamW, rank 16": Frontier(
        lambda lr: gx.galore_adamw(lr, rank=16), 0.1, (1e-2, 3e-2, 0.1, 0.3)
    ),
    "SOAP": Frontier(gx.soap, 3e-2, (1e-3, 3e-3, 1e-2, 3e-2, 0.1)),
    "Shampoo": Frontier(gx.shampoo, 1.0, (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)),
}


def train_epoch_with_hessian(
    optimizer: gx.GradientTransformation,
    hessian_every: int,
    params: _digits.Params,
    opt_state: Any,
    data: _digits.Digits,
    batch_indices: jax.Array,
    first_step: jax.Array,
    key: jax.Array,
) -> tuple[_digits.Params, Any, jax.Array]:
    """:func:`_digits.train_epoch` for Sophia: ``hessian=`` on every ``hessian_every``-th step.

    Step ``k`` (counted over the whole run from ``first_step``) passes a Gauss-Newton-Bartlett
    estimate of its minibatch where ``k % hessian_every == 0`` and nothing on the other steps.
    ``lax.cond`` runs one of the two updates, each traced once, so the estimate's extra forward
    and backward pass is paid only on the steps that use it.
    """

    def step(carry, inputs):
        params, opt_state = carry
        k, indices = inputs
        x, y = data.x_train[indices], data.y_train[indices]
        batch_loss, grads = jax.value_and_grad(_digits.loss)(params, x, y)

        def with_hessian():
            key_k = jax.random.fold_in(key, k)
            hessian = gx.gauss_newton_bartlett(_digits.logits, params, key_k, x)
            return optimizer.update(grads, opt_state, params, hessian=hessian)

        def without_hessian():
            return optimizer.update(grads, opt_state, params)

        updates, opt_state = jax.lax.cond(k % hessian_every == 0, with_hessian, without_hessian)
        return (gx.apply_updates(params, updates), opt_state), batch_loss

    steps = first_step + jnp.arange(batch_indices.shape[0], dtype=jnp.int32)
    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (steps, batch_indices))
    return params, opt_state, losses


def run(
    optimizer: gx.GradientTransformation,
    data: _digits.Digits,
    epochs: int,
    seed: int,
    bar: tqdm,
    hessian_every: int | None = None,
    eval_params: Callable[[Any, Any], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Trains one MLP; returns the per-step minibatch losses and the per-epoch test accuracy.

    ``hessian_every`` and ``eval_params`` are a :class:`Frontier`'s (``None``: neither).
    """
    params = _digits.init_mlp(jax.random.key(seed))
    opt_state = optimizer.init(params)
    if hessian_every is None:
        train = functools.partial(_digits.train_epoch, optimizer)
    else:
        hessian_key = jax.random.key(seed + 1)
        train = functools.partial(train_epoch_with_hessian, optimizer, hessian_every)
    epoch = jax.jit(train, donate_argnums=(0, 1))

    @jax.jit
    def test_accuracy(opt_state, params):
        tested = params if eval_params is None else eval_params(opt_state, params)
        return _digits.accuracy(tested, data.x_test, data.y_test)

    losses, accuracies = [], []
    batches = _digits.batch_schedule(seed, data.x_train.shape[0], BATCH_SIZE, epochs)
    for i, indices in enumerate(batches):
        if hessian_every is None:
            params, opt_state, epoch_losses = epoch(params, opt_state, data, indices)
        else:
            first_step = jnp.asarray(i * indices.shape[0], jnp.int32)
            params, opt_state, epoch_losses = epoch(
                params, opt_state, data, indices, first_step, hessian_key
            )
        losses.append(np.asarray(epoch_losses))
        accuracies.append(float(test_accuracy(opt_state, params)))
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
    results: dict[str, tuple[np.ndarray, np.ndarray]],
    steps_per_epoch: int,
    out: Path,
    title: str,
    accuracy_title: str = "Test accuracy after each epoch",
    switch: int | None = None,
) -> None:
    """Training loss per step and test accuracy per epoch, one legend below both panels."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 6.2), layout="constrained")
    colors = plt.get_cmap("tab10")
    for i, (label, (losses, accuracies)) in enumerate(results.items()):
        color = colors(i)
        steps = np.arange(1, len(losses) + 1)
        ax_loss.plot(
            steps,
            smooth(losses, steps_per_epoch),
            color=color,
            lw=1.6,
            label=f"{label}: final test accuracy {100 * accuracies[-1]:.1f}%",
        )
        epochs = np.arange(1, len(accuracies) + 1)
        ax_acc.plot(epochs, 100 * accuracies, color=color, lw=1.6, marker="o", ms=2.5)
    if switch is not None:
        ax_loss.axvline(switch, color="grey", ls=":", lw=1, label="Adam -> Momentum switch")
    ax_loss.set(
        yscale="log",
        xlabel="step",
        ylabel="cross-entropy (moving average over an epoch)",
        title="Training loss on the minibatches",
    )
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title=accuracy_title)
    ax_acc.set_ylim(85, 100)
    ax_acc.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8.5, frameon=False)
    fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run_frontier(
    data: _digits.Digits, epochs: int, seed: int, rates: Callable[[Frontier], tuple[float, ...]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every frontier optimizer at each of ``rates(entry)``; labels name the rate."""
    runs = [(name, entry, lr) for name, entry in FRONTIER.items() for lr in rates(entry)]
    results = {}
    with tqdm(total=len(runs) * epochs, desc="frontier x epochs") as bar:
        for name, entry, lr in runs:
            label = f"{name}, lr {lr:g}"
            bar.set_description(label)
            results[label] = run(
                entry.make(lr), data, epochs, seed, bar, entry.hessian_every, entry.eval_params
            )
    return results


def report(results: dict[str, tuple[np.ndarray, np.ndarray]], steps_per_epoch: int) -> None:
    for label, (losses, accuracies) in results.items():
        print(
            f"{label:44s} final loss {losses[-steps_per_epoch:].mean():.1e}  "
            f"mean loss {losses.mean():.4f}  test accuracy {100 * accuracies[-1]:.1f}%"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the classic PNG")
    parser.add_argument(
        "--frontier-out",
        type=Path,
        help=f"the frontier PNG (default: {FRONTIER_NAME} beside --out)",
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 epochs, 1 for the frontier; of the classic table only SGD, Adam and the switch "
        "(a smoke run for the tests: each optimizer is one more compile)",
    )
    parser.add_argument(
        "--sweep", action="store_true", help="print the frontier learning-rate sweep, no plots"
    )
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else args.epochs
    frontier_epochs = 1 if args.quick else args.epochs
    frontier_out = args.frontier_out or args.out.with_name(FRONTIER_NAME)

    data = _digits.load_digits()
    steps_per_epoch = data.x_train.shape[0] // BATCH_SIZE
    if args.sweep:
        report(run_frontier(data, epochs, args.seed, lambda e: e.sweep), steps_per_epoch)
        return 0

    switch = epochs * steps_per_epoch // 2  # halfway through, in updates
    table = optimizers(switch)
    if args.quick:
        table = {label: make for label, make in table.items() if label.startswith(QUICK_CLASSIC)}
    results = {}
    with tqdm(total=len(table) * epochs, desc="optimizers x epochs") as bar:
        for label, make_optimizer in table.items():
            bar.set_description(label)
            results[label] = run(make_optimizer(), data, epochs, args.seed, bar)
    plot(results, steps_per_epoch, args.out, f"Classic optimizers {TITLE}", switch=switch)
    report(results, steps_per_epoch)
    print(f"wrote {args.out}")

    frontier = run_frontier(data, frontier_epochs, args.seed, lambda e: (e.learning_rate,))
    plot(
        frontier,
        steps_per_epoch,
        frontier_out,
        f"Frontier optimizers against AdamW {TITLE}, each at its tuned learning rate",
        accuracy_title="Test accuracy after each epoch (schedule-free: at the average x)",
    )
    report(frontier, steps_per_epoch)
    print(f"wrote {frontier_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
