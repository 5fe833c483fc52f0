"""Paths of the classic optimizers on two 2-D surfaces: a saddle and Rosenbrock's valley.

Run from the repository root::

    python examples/trajectories.py                  # writes docs/trajectories.png

Left: ``f(x, y) = x^2 + y^4/4 - y^2/2``, a saddle at the origin between two minima at
``(0, +-1)``. Every optimizer starts at ``(1.5, 1e-5)``, almost on the saddle's ridge, where
the gradient across the ridge is tiny. Plain gradient descent crawls out of it; momentum
accumulates the small push; the adaptive methods divide by the gradient's size and leave at
once. Right: Rosenbrock's banana ``(1 - x)^2 + 100 (y - x^2)^2`` from ``(-1.2, 1)``, whose
curved, flat-bottomed valley punishes small steps and rewards momentum.

The parameters are a single array of shape ``(2,)``; each path is one ``lax.scan``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from tqdm import tqdm

import gradxform as gx

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.colors import LogNorm

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "trajectories.png"


def saddle(p: jax.Array) -> jax.Array:
    """``x^2 + y^4/4 - y^2/2``: a saddle at (0, 0), minima at (0, +-1) with value -1/4."""
    x, y = p[0], p[1]
    return x**2 + y**4 / 4 - y**2 / 2


def rosenbrock(p: jax.Array) -> jax.Array:
    """``(1 - x)^2 + 100 (y - x^2)^2``, minimum 0 at (1, 1)."""
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


# (label, factory of the learning rate, learning rate on the saddle, on Rosenbrock).
# Rosenbrock's curvature across the valley is ~1300 at the start, so gradient descent must
# step below 2/1300 there; heavy-ball momentum 0.9 allows about twice that.
OPTIMIZERS: list[tuple[str, Callable[[float], gx.GradientTransformation], float, float]] = [
    ("SGD", gx.sgd, 0.05, 1.5e-3),
    ("Momentum 0.9", lambda lr: gx.sgd(lr, momentum=0.9), 0.05, 1e-3),
    ("Nesterov 0.9", lambda lr: gx.sgd(lr, momentum=0.9, nesterov=True), 0.05, 1e-3),
    ("AdaGrad", gx.adagrad, 0.3, 0.5),
    ("RMSProp", gx.rmsprop, 0.02, 3e-3),
    ("Adam", gx.adam, 0.05, 0.05),
    ("Adamax", gx.adamax, 0.05, 0.1),
]


def path(
    f: Callable[[jax.Array], jax.Array],
    optimizer: gx.GradientTransformation,
    start: jax.Array,
    steps: int,
) -> np.ndarray:
    """The iterates of ``optimizer`` minimizing ``f`` from ``start``, shape ``(steps + 1, 2)``."""

    def step(carry, _):
        p, state = carry
        updates, state = optimizer.update(jax.grad(f)(p), state, p)
        p = gx.apply_updates(p, updates)
        return (p, state), p

    @jax.jit
    def run(start):
        _, points = jax.lax.scan(step, (start, optimizer.init(start)), length=steps)
        return jnp.concatenate([start[None], points])

    return np.asarray(run(start))


def draw_panel(
    ax,
    f: Callable[[jax.Array], jax.Array],
    paths: dict[str, np.ndarray],
    *,
    extent: tuple[tuple[float, float], tuple[float, float]],
    levels,
    log_scale: bool,
    marks: dict[str, tuple[list[tuple[float, float]], dict]],
    title: str,
    legend_loc: str,
):
    """Filled contours of ``f``, each optimizer's path and end point, and marked points."""
    (x0, x1), (y0, y1) = extent
    xs, ys = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    zs = np.asarray(jax.vmap(jax.vmap(f))(jnp.stack([xs, ys], axis=-1)))
    norm = LogNorm() if log_scale else None
    contour = ax.contourf(xs, ys, zs, levels=levels, norm=norm, cmap="Greys_r", alpha=0.55)
    ax.contour(xs, ys, zs, levels=levels, norm=norm, colors="grey", linewidths=0.4)
    colors = plt.get_cmap("tab10")
    for i, (label, points) in enumerate(paths.items()):
        final = float(f(jnp.asarray(points[-1])))
        ax.plot(*points.T, color=colors(i), lw=1.5, label=f"{label}  (f = {final:.3g})")
        # End points above every path, so a path that stalls is not hidden by one passing by.
        ax.plot(*points[-1], marker="o", color=colors(i), ms=6, mec="black", mew=0.6, zorder=5)
    for label, (points, style) in marks.items():
        ax.plot(*np.asarray(points).T, ls="none", label=label, zorder=4, **style)
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x", ylabel="y", title=title)
    ax.legend(fontsize=8, loc=legend_loc, framealpha=0.9)
    return contour


START = {"marker": "*", "color": "black", "ms": 14}
MINIMUM = {"marker": "X", "color": "red", "ms": 10, "mec": "white", "mew": 0.8}
SADDLE = {"marker": "P", "color": "gold", "ms": 9, "mec": "black", "mew": 0.8}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the PNG")
    parser.add_argument("--quick", action="store_true", help="fewer steps (for tests)")
    args = parser.parse_args(argv)
    saddle_steps, rosen_steps = (20, 50) if args.quick else (150, 2000)

    saddle_start = jnp.array([1.5, 1e-5])
    rosen_start = jnp.array([-1.2, 1.0])
    saddle_paths, rosen_paths = {}, {}
    for label, make, saddle_lr, rosen_lr in tqdm(OPTIMIZERS, desc="trajectories"):
        saddle_paths[f"{label}, lr {saddle_lr:g}"] = path(
            saddle, make(saddle_lr), saddle_start, saddle_steps
        )
        rosen_paths[f"{label}, lr {rosen_lr:g}"] = path(
            rosenbrock, make(rosen_lr), rosen_start, rosen_steps
        )

    fig, (ax_saddle, ax_rosen) = plt.subplots(1, 2, figsize=(14, 6), constrained_layout=True)
    contour = draw_panel(
        ax_saddle,
        saddle,
        saddle_paths,
        extent=((-1.8, 1.8), (-1.6, 1.6)),
        levels=30,
        log_scale=False,
        marks={
            "start": ([(1.5, 0.0)], START),
            "saddle point": ([(0.0, 0.0)], SADDLE),
            "minima": ([(0.0, 1.0), (0.0, -1.0)], MINIMUM),
        },
        title=f"Saddle $x^2 + y^4/4 - y^2/2$, {saddle_steps} steps from (1.5, $10^{{-5}}$)",
        legend_loc="lower right",
    )
    fig.colorbar(contour, ax=ax_saddle, label="f(x, y)")
    contour = draw_panel(
        ax_rosen,
        rosenbrock,
        rosen_paths,
        extent=((-1.6, 1.6), (-0.5, 1.8)),
        levels=np.logspace(-2.5, 3, 23),
        log_scale=True,
        marks={"start": ([(-1.2, 1.0)], START), "minimum": ([(1.0, 1.0)], MINIMUM)},
        title=f"Rosenbrock $(1 - x)^2 + 100\\,(y - x^2)^2$, {rosen_steps} steps from (-1.2, 1)",
        legend_loc="upper right",
    )
    fig.colorbar(contour, ax=ax_rosen, label="f(x, y) (log scale)")
    fig.suptitle("Optimizer trajectories (dots: where each one ends; legend: its final value)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
