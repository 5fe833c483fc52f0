"""Every schedule in ``gradxform``, one panel each, titled with its PyTorch or Keras name.

Run from the repository root::

    python examples/plot_schedules.py                # writes docs/schedules.png

A schedule is a pure function of the update count ``k`` (0 for the first update) and is
elementwise in ``k``, so ``schedule(jnp.arange(steps))`` gives the whole curve in one call.
The value at ``k`` is the learning rate of update ``k + 1``: the ``lr`` torch reports after
``k`` calls to ``scheduler.step()``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import matplotlib

import gradxform as gx

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "schedules.png"
STEPS = 300
LR = 0.1

# (gradxform call, its PyTorch / Keras counterpart, the schedules drawn in that panel)
PANELS: list[tuple[str, str, dict[str, Callable]]] = [
    ("constant_schedule(0.1)", "no scheduler", {"": gx.constant_schedule(LR)}),
    (
        "linear_schedule(0.025, 0.1, 60)",
        "torch LinearLR(start_factor=0.25, total_iters=60)",
        {"": gx.linear_schedule(0.25 * LR, LR, 60)},
    ),
    (
        "polynomial_schedule(0.1, 0, 2, 250)",
        "torch PolynomialLR(total_iters=250, power=2)\nKeras PolynomialDecay",
        {"": gx.polynomial_schedule(LR, 0.0, 2.0, 250)},
    ),
    (
        "exponential_decay(0.1, 60, 0.5, staircase=True)",
        "torch StepLR(step_size=60, gamma=0.5)",
        {"": gx.exponential_decay(LR, 60, 0.5, staircase=True)},
    ),
    (
        "exponential_decay(0.1, 1, 0.99)",
        "torch ExponentialLR(gamma=0.99)\nKeras ExponentialDecay",
        {
            "no end_value": gx.exponential_decay(LR, 1, 0.99),
            "end_value=0.02": gx.exponential_decay(LR, 1, 0.99, end_value=0.02),
        },
    ),
    (
        "piecewise_constant_schedule(0.1, {100: 0.3, 200: 0.3})",
        "torch MultiStepLR(milestones=[100, 200], gamma=0.3)\nKeras PiecewiseConstantDecay",
        {"": gx.piecewise_constant_schedule(LR, {100: 0.3, 200: 0.3})},
    ),
    (
        "piecewise_interpolate_schedule(..., {50: 2, 200: 0.1})",
        "Optax only",
        {
            "linear": gx.piecewise_interpolate_schedule("linear", 0.05, {50: 2.0, 200: 0.1}),
            "cosine": gx.piecewise_interpolate_schedule("cosine", 0.05, {50: 2.0, 200: 0.1}),
        },
    ),
    (
        "inverse_time_decay(0.1, decay_rate=0.5, decay_steps=10)",
        "Keras InverseTimeDecay(0.1, 10, 0.5)",
        {
            "decay_steps=10": gx.inverse_time_decay(LR, decay_rate=0.5, decay_steps=10),
            "decay_steps=30, staircase": gx.inverse_time_decay(
                LR, decay_rate=0.5, decay_steps=30, staircase=True
            ),
        },
    ),
    (
        "cosine_decay_schedule(0.1, 300, alpha=0.05)",
        "torch CosineAnnealingLR(T_max=300, eta_min=0.005)\nKeras CosineDecay",
        {"": gx.cosine_decay_schedule(LR, STEPS, alpha=0.05)},
    ),
    (
        "warmup_cosine_decay_schedule(0, 0.1, 30, 300)",
        "Keras CosineDecay(warmup_target=0.1,\nwarmup_steps=30)",
        {"": gx.warmup_cosine_decay_schedule(0.0, LR, 30, STEPS)},
    ),
    (
        "warmup_exponential_decay_schedule(0, 0.1, 30, 1, 0.99)",
        "torch SequentialLR(LinearLR, ExponentialLR)",
        {"": gx.warmup_exponential_decay_schedule(0.0, LR, 30, 1, 0.99)},
    ),
    (
        "cosine_onecycle_schedule(300, 0.1)",
        "torch OneCycleLR(anneal_strategy='cos')",
        {
            "two phases (default)": gx.cosine_onecycle_schedule(STEPS, LR),
            "three_phase=True": gx.cosine_onecycle_schedule(STEPS, LR, three_phase=True),
        },
    ),
    (
        "linear_onecycle_schedule(300, 0.1)",
        "torch OneCycleLR(anneal_strategy='linear')",
        {
            "two phases (default)": gx.linear_onecycle_schedule(STEPS, LR),
            "three_phase=True": gx.linear_onecycle_schedule(STEPS, LR, three_phase=True),
        },
    ),
    (
        "cosine_annealing_warm_restarts(0.1, t_0=20, t_mult=2)",
        "torch CosineAnnealingWarmRestarts\nKeras CosineDecayRestarts",
        {
            "t_0=50": gx.cosine_annealing_warm_restarts(LR, t_0=50),
            "t_0=20, t_mult=2": gx.cosine_annealing_warm_restarts(LR, t_0=20, t_mult=2),
        },
    ),
    (
        "sgdr_schedule([...])",
        "Optax sgdr_schedule (cycles with their own peaks)",
        {
            "": gx.sgdr_schedule(
                [
                    dict(init_value=0.0, peak_value=LR, warmup_steps=10, decay_steps=80),
                    dict(init_value=0.0, peak_value=0.6 * LR, warmup_steps=10, decay_steps=100),
                    dict(init_value=0.0, peak_value=0.3 * LR, warmup_steps=10, decay_steps=120),
                ]
            )
        },
    ),
    (
        "cyclic_schedule(0.01, max_value=0.1, step_size_up=40)",
        "torch CyclicLR(base_lr=0.01, max_lr=0.1,\nstep_size_up=40)",
        {
            "triangular": gx.cyclic_schedule(0.01, max_value=LR, step_size_up=40),
            "triangular2": gx.cyclic_schedule(
                0.01, max_value=LR, step_size_up=40, mode="triangular2"
            ),
            "exp_range": gx.cyclic_schedule(
                0.01, max_value=LR, step_size_up=40, mode="exp_range", gamma=0.995
            ),
        },
    ),
    (
        "join_schedules([...], [50, 150])",
        "torch SequentialLR(milestones=[50, 150])",
        {
            "": gx.join_schedules(
                [
                    gx.linear_schedule(0.0, LR, 50),
                    gx.constant_schedule(LR),
                    gx.cosine_decay_schedule(LR, 150),
                ],
                [50, 150],
            )
        },
    ),
]


def plot(out: Path) -> None:
    columns = 4
    rows = -(-len(PANELS) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.9 * rows))
    counts = jnp.arange(STEPS)
    for i, (ax, (call, counterpart, curves)) in enumerate(zip(axes.flat, PANELS, strict=False)):
        top = 0.0
        for label, schedule in curves.items():
            values = schedule(counts)
            top = max(top, float(values.max()))
            ax.plot(counts, values, lw=1.6, label=label or None)
        ax.set_title(f"{counterpart}\n{call}", fontsize=8.5, loc="left")
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
        if len(curves) > 1:  # headroom above the curves for the legend
            ax.set_ylim(0, 1.3 * top)
            ax.legend(fontsize=7, loc="upper right", ncol=len(curves), frameon=False)
        else:
            ax.set_ylim(0, 1.05 * top)
        if i + columns >= len(PANELS):  # the lowest panel of its column
            ax.set_xlabel("update count k", fontsize=8)
    for ax in axes.flat[len(PANELS) :]:
        ax.axis("off")
    fig.suptitle(
        "gradxform schedules: the value at k is the learning rate of update k + 1 "
        "(torch's lr after k scheduler.step() calls)",
        fontsize=11,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the PNG")
    args = parser.parse_args(argv)
    plot(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
