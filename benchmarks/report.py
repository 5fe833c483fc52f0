"""Turns a results JSON of ``benchmarks.run`` into Markdown tables and a plot.

    python -m benchmarks.report benchmarks/results/full-cpu.json [more.json ...]
    python -m benchmarks.report RUN.json --ratios        # the README's table: ratios to Optax
    python -m benchmarks.report RUN.json --plot RUN.png  # redraw a run's plot from its JSON

With several files, rows of a later file replace the same (case, optimizer) of earlier ones
(say a re-run of some cases after a change).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

COLUMNS = ["gradxform", "gradxform-flat", "optax", "torch-fused", "torch-foreach"]


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    if "skipped" in row:
        return "skipped"
    return f"{row['step_ms']:.3g} ms ({row['x_floor']:.2f}x)"


def _compile(row: dict | None) -> str:
    if row is None or "skipped" in row:
        return "-"
    return f"{row['compile_s']:.2g} s"


def table(results: dict) -> str:
    rows = results["rows"]
    keys = list(dict.fromkeys((r["case"], r["optimizer"]) for r in rows))
    lines = [
        "| case | optimizer | " + " | ".join(COLUMNS) + " | compile: flat / tree / optax |",
        "|---" * (len(COLUMNS) + 3) + "|",
    ]
    for case, optimizer in keys:
        by_impl = {r["impl"]: r for r in rows if r["case"] == case and r["optimizer"] == optimizer}
        cells = [_cell(by_impl.get(impl)) for impl in COLUMNS]
        compiles = " / ".join(
            _compile(by_impl.get(impl)) for impl in ("gradxform-flat", "gradxform", "optax")
        )
        lines.append(f"| {case} | {optimizer} | " + " | ".join(cells) + f" | {compiles} |")
    return "\n".join(lines)


def _ratio(row: dict | None, base: dict | None) -> str:
    if row is None or base is None or "skipped" in row or "skipped" in base:
        return "-"
    return f"{row['step_ms'] / base['step_ms']:.2g}x"


def ratio_table(results: dict) -> str:
    """Step times as ratios between implementations of the same run (below 1: faster): the
    tree and flat paths against Optax, the flat path against torch's fused optimizer, and the
    flat path's compile time against Optax's."""
    rows = results["rows"]
    keys = list(dict.fromkeys((r["case"], r["optimizer"]) for r in rows))
    lines = [
        "| case | optimizer | tree / Optax | flat / Optax | flat / torch fused "
        "| compile: flat / Optax |",
        "|---" * 6 + "|",
    ]
    for case, optimizer in keys:
        by_impl = {r["impl"]: r for r in rows if r["case"] == case and r["optimizer"] == optimizer}
        tree, flat = by_impl.get("gradxform"), by_impl.get("gradxform-flat")
        optax, fused = by_impl.get("optax"), by_impl.get("torch-fused")
        cells = [_ratio(tree, optax), _ratio(flat, optax), _ratio(flat, fused)]
        compiles = f"{_compile(flat)} / {_compile(optax)}"
        lines.append(f"| {case} | {optimizer} | " + " | ".join(cells) + f" | {compiles} |")
    return "\n".join(lines)


def machine_label(machine: dict) -> str:
    """``2-core AMD EPYC (cpu)``-like: the CPU model where the run recorded one, else the
    architecture; the accelerator's kind on a GPU or TPU backend."""
    if machine.get("jax_backend", "cpu") != "cpu":
        return f"{machine['jax_device']} ({machine['jax_backend']})"
    cpu = machine.get("cpu_model") or machine.get("processor") or "CPU"
    return f"{machine.get('cpu_count', '?')}-core {cpu} (cpu)"


# One colour per implementation in every panel; the floor is black.
_COLOURS = {
    "gradxform": "tab:blue",
    "gradxform-flat": "tab:orange",
    "optax": "tab:green",
    "torch-fused": "tab:brown",
    "torch-foreach": "tab:red",
    "torch-forloop": "tab:purple",
}


def plot(results: dict, path: Path, machine: str | None = None, optimizer: str = "adam") -> None:
    """Draws ``optimizer``'s step time: per parameter against size on one float32 leaf (left),
    and per step on the trees of many leaves (right), every implementation of the run, with
    the legend below both panels so that it covers no line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    rows = [r for r in results["rows"] if "skipped" not in r and r["optimizer"] == optimizer]
    single = [r for r in rows if r["leaves"] == 1 and r["dtype"] == "float32"]
    many = [r for r in rows if r["leaves"] > 1]
    panels = [p for p in (single, many) if p]
    if not panels:
        return  # nothing of this optimizer in this run
    impls = [i for i in _COLOURS if any(r["impl"] == i for r in rows)]
    skipped = {
        (r["case"], r["impl"])
        for r in results["rows"]
        if "skipped" in r and r["optimizer"] == optimizer
    }
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    fig, axes = plt.subplots(
        1, len(panels), figsize=(max(7.5, 6.2 * len(panels)), 4.6), squeeze=False
    )
    axes = list(axes[0])
    if single:
        ax = axes.pop(0)
        for impl in impls:
            pts = sorted(
                (r["params"], 1e6 * r["step_ms"] / r["params"]) for r in single if r["impl"] == impl
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", color=_COLOURS[impl], label=impl)
        floors = sorted({(r["params"], 1e6 * r["floor_ms"] / r["params"]) for r in single})
        ax.plot(*zip(*floors, strict=True), "k--", label="floor: bytes moved at triad bandwidth")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters (one float32 leaf)")
        ax.set_ylabel("step time per parameter (ns, log scale)")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title("One leaf: time per parameter")
        ax.grid(True, which="both", alpha=0.3)
    if many:
        ax = axes.pop(0)
        cases = list(dict.fromkeys(r["case"] for r in many))
        width = 0.8 / len(impls)
        for j, impl in enumerate(impls):
            for i, case in enumerate(cases):
                hit = [r for r in many if r["case"] == case and r["impl"] == impl]
                x = i - 0.4 + (j + 0.5) * width
                if hit:
                    ax.bar(x, hit[0]["step_ms"], width, color=_COLOURS[impl], label=impl)
                elif (case, impl) in skipped:
                    ax.text(
                        x,
                        0.02,
                        "not run",
                        rotation=90,
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        color=_COLOURS[impl],
                        transform=ax.get_xaxis_transform(),
                    )
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels([f"{c}\n({_params(many, c)} params)" for c in cases], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("step time (ms, log scale)")
        ax.yaxis.set_major_formatter(plain)
        ax.set_title("Many leaves: time per step")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    handles: dict = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.suptitle(
        f"{optimizer.capitalize()} optimizer step (update + apply_updates, jitted), "
        f"{machine or machine_label(results['machine'])}",
        fontsize=11,
    )
    fig.legend(
        handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=8, frameon=False
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def _params(rows: list[dict], case: str) -> str:
    n = next(r["params"] for r in rows if r["case"] == case)
    return f"{n / 10 ** math.floor(math.log10(n)):.3g}e{math.floor(math.log10(n))}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--ratios", action="store_true", help="step times as ratios to Optax")
    parser.add_argument("--plot", type=Path, default=None, help="draw the run's plot to this PNG")
    parser.add_argument("--machine", default=None, help="the machine's name in the plot's title")
    args = parser.parse_args(argv)
    files = [json.loads(path.read_text()) for path in args.results]
    results = {"machine": files[-1]["machine"], "rows": []}
    for data in files:
        replaced = {(r["case"], r["optimizer"]) for r in data["rows"]}
        results["rows"] = [
            r for r in results["rows"] if (r["case"], r["optimizer"]) not in replaced
        ] + data["rows"]
    machine = results["machine"]
    what = (
        "Step time as a ratio to Optax's in the same run (median over interleaved rounds; "
        "below 1x: faster); compile times in seconds."
        if args.ratios
        else "Step time, median over interleaved rounds, and in parentheses its ratio to the "
        "floor (the optimizer's bytes at the best same-size triad bandwidth)."
    )
    print(
        f"Machine: {machine_label(machine)}, {machine['platform']}; "
        f"jax {machine['jax']} ({machine['jax_backend']}), optax {machine['optax']}, "
        f"torch {machine['torch']}, gradxform {machine.get('gradxform')}. {what}\n"
    )
    print(ratio_table(results) if args.ratios else table(results))
    if args.plot is not None:
        plot(results, args.plot, args.machine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
