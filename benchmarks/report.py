"""Turns a results JSON of ``benchmarks.run`` into the Markdown table the README shows.

    python -m benchmarks.report benchmarks/results/full-cpu.json [more.json ...]

With several files, rows of a later file replace the same (case, optimizer) of earlier ones
(say a re-run of some cases after a change).
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args(argv)
    files = [json.loads(path.read_text()) for path in args.results]
    results = {"machine": files[-1]["machine"], "rows": []}
    for data in files:
        replaced = {(r["case"], r["optimizer"]) for r in data["rows"]}
        results["rows"] = [
            r for r in results["rows"] if (r["case"], r["optimizer"]) not in replaced
        ] + data["rows"]
    machine = results["machine"]
    print(
        f"Machine: {machine['processor']}, {machine['cpu_count']} cores, {machine['platform']}; "
        f"jax {machine['jax']} ({machine['jax_backend']}), optax {machine['optax']}, "
        f"torch {machine['torch']}. Step time, median over interleaved rounds, and in "
        "parentheses its ratio to the floor (the optimizer's bytes at the best same-size "
        "triad bandwidth).\n"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
