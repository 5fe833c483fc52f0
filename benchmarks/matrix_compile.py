"""Compile time and step time of the matrix optimizers, stacked against per-leaf, by depth.

    python -m benchmarks.matrix_compile            # 4, 12 and 48 layers
    python -m benchmarks.matrix_compile --quick    # 4 and 12 layers, 3 timed steps (not 5)
    python -m benchmarks.matrix_compile --only soap shampoo --layers 12 48

The tree is transformer-shaped: per layer the attention's q, k, v, o (256 x 256), the MLP's
256 x 1024 and 1024 x 256, and two layer-norm vectors (256); plus an embedding 1024 x 256. For
each matrix optimizer of gradxform (``muon_with_adamw``, ``shampoo``, ``soap``,
``galore_adamw``; and ``adamw``, the floor that any optimizer's per-leaf program sets) it
measures the lowering plus compilation of the jitted ``update`` + ``apply_updates`` and the
time of one compiled step, in wall time and in the process's CPU time (all threads; less
perturbed when other processes share the cores), and the compiled program's size (HLO
instructions, fused kernels, distinct fused kernels). It does so for the stacked program
(``stack_by_shape=True``: the state kept in one stack per shape, each shape computed once under
``vmap``, each leaf's update read out at a runtime position), for the per-leaf one
(gradxform's default), and for Optax's nearest equivalent where there is one:
``optax.contrib.muon`` for Muon, ``optax.contrib.galore`` for GaLore, ``optax.adamw`` for
AdamW. Optax 0.2.8 has no Shampoo and no SOAP, in its core or contrib; those rows have no peer.

Shampoo runs with ``preconditioning_compute_steps=ROOT_EVERY``: its roots (an SVD per factor)
are compiled, inside the step's ``cond``, but the timed steps (the 2nd to the 6th) do not
compute them. They are the steady-state step between two root computations: on a 2-core CPU
one float32 SVD of a 1024 x 1024 factor takes ~10 s (measured), and the 12-layer tree has 25.

Results: a table on stdout (times, distinct / all fused kernels, the per-leaf / stacked ratio
of compile CPU time), and the raw numbers as JSON under ``--out`` (default
``benchmarks/results/<machine>-matrix-compile.json``), rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx
from benchmarks.run import machine_description

try:
    import optax
    import optax.contrib
except ImportError:  # pragma: no cover - optional peer
    optax = None

WIDTH, HIDDEN, VOCAB = 256, 1024, 1024
ROOT_EVERY = 1000


def transformer_tree(layers: int) -> dict:
    """The benchmark's params (float32), ``layers`` blocks and an embedding."""
    rng = np.random.default_rng(0)

    def matrix(rows, cols):
        return jnp.asarray(rng.normal(size=(rows, cols)) / np.sqrt(cols), jnp.float32)

    blocks = {
        f"layer{i}": {
            **{name: matrix(WIDTH, WIDTH) for name in ("q", "k", "v", "o")},
            "mlp_in": matrix(WIDTH, HIDDEN),
            "mlp_out": matrix(HIDDEN, WIDTH),
            "ln1": jnp.ones(WIDTH, jnp.float32),
            "ln2": jnp.ones(WIDTH, jnp.float32),
        }
        for i in range(layers)
    }
    return {"embedding": matrix(VOCAB, WIDTH), **blocks}


def optimizers() -> dict:
    """gradxform's matrix optimizers, each a factory of ``stack_by_shape``, with their Optax
    peer (or None); and AdamW, the floor: an element-wise optimizer's per-leaf program, which
    has no stacked form (its factory gives None for it)."""
    return {
        "muon_with_adamw": (
            lambda stacked: gx.muon_with_adamw(0.02, stack_by_shape=stacked),
            (lambda: optax.contrib.muon(0.02)) if optax is not None else None,
        ),
        "shampoo": (
            lambda stacked: gx.shampoo(
                1e-3, preconditioning_compute_steps=ROOT_EVERY, stack_by_shape=stacked
            ),
            None,
        ),
        "soap": (lambda stacked: gx.soap(3e-3, stack_by_shape=stacked), None),
        # Optax's contrib GaLore (other side, Adam's eps outside the root, scale 1) at the same
        # rank and gap: the nearest equivalent.
        "galore_adamw": (
            lambda stacked: gx.galore_adamw(1e-3, rank=64, stack_by_shape=stacked),
            (lambda: optax.contrib.galore(1e-3, rank=64)) if optax is not None else None,
        ),
        "adamw": (
            lambda stacked: None if stacked else gx.adamw(1e-3),
            (lambda: optax.adamw(1e-3, weight_decay=1e-2)) if optax is not None else None,
        ),
    }


def measure(opt, params, *, steps: int) -> dict:
    """Seconds to lower + compile the jitted step, and the median of ``steps`` steps, in wall
    time and in this process's CPU time (all threads: less perturbed by other processes on a
    shared machine); the compiled program's size (HLO instructions, fused kernels, distinct
    fused kernels: XLA compiles each distinct one once)."""
    grads = jax.tree.map(lambda p: 0.01 * jnp.ones_like(p), params)

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    state = jax.jit(opt.init)(params)
    start, cpu_start = time.perf_counter(), time.process_time()
    traced = jax.jit(step).trace(params, state, grads)
    compiled = traced.lower().compile()
    compile_s = time.perf_counter() - start
    compile_cpu_s = time.process_time() - cpu_start
    params, state = jax.block_until_ready(compiled(params, state, grads))
    times, cpu_times = [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        params, state = jax.block_until_ready(compiled(params, state, grads))
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    counts = {name: _count(traced.jaxpr.jaxpr, name) for name in COUNTED}
    return {
        "compile_s": compile_s,
        "compile_cpu_s": compile_cpu_s,
        "step_s": statistics.median(times),
        "step_cpu_s": statistics.median(cpu_times),
        "equations": counts,
        "hlo": hlo_size(compiled.as_text()),
    }


def hlo_size(text: str) -> dict:
    """Instructions, fused kernels and distinct fused kernels (bodies equal up to names and
    metadata) of an optimized HLO module's text."""
    bodies: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if header and not line.startswith(" "):
            current = bodies.setdefault(header.group(1), [])
        elif line.startswith("}"):
            current = None
        elif current is not None:
            line = re.sub(r", metadata=\{[^}]*\}|backend_config=.*", "", line)
            current.append(re.sub(r"%[\w.\-]+", "%", line.strip()))
    fused = [b for name, b in bodies.items() if "fused" in name or "fusion" in name]
    return {
        "instructions": sum(map(len, bodies.values())),
        "fused_kernels": len(fused),
        "distinct_fused_kernels": len({"\n".join(b) for b in fused}),
    }


# Equations counted in each variant's jaxpr (sub-jaxprs included, a loop body once): the
# per-leaf program holds one decomposition, or Newton-Schulz iteration, per matrix, the
# stacked one one per distinct shape.
COUNTED = ("svd", "eigh", "qr", "dot_general")


def _count(jaxpr, name: str) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn.primitive.name == name
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += _count(sub, name)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 and 12 layers only")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--machine", default="cpu-2core-epyc")
    parser.add_argument("--only", nargs="*", default=None, help="optimizers to measure")
    parser.add_argument("--layers", nargs="*", type=int, default=None, help="depths to measure")
    args = parser.parse_args(argv)
    depths = args.layers or ((4, 12) if args.quick else (4, 12, 48))
    steps = 3 if args.quick else 5
    rows = []
    out = args.out or Path("benchmarks/results") / f"{args.machine}-matrix-compile.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for depth in depths:
        params = transformer_tree(depth)
        for name, (ours, peer) in optimizers().items():
            if args.only is not None and name not in args.only:
                continue
            row = {"optimizer": name, "layers": depth}
            stacked = ours(True)
            row["stacked"] = None if stacked is None else measure(stacked, params, steps=steps)
            row["per_leaf"] = measure(ours(False), params, steps=steps)
            row["optax"] = None if peer is None else measure(peer(), params, steps=steps)
            rows.append(row)
            print(_line(row), flush=True)
            # Written after every row, so that an interrupted run keeps what it measured.
            record = {"machine": machine_description(), "quick": args.quick, "rows": rows}
            out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _line(row: dict) -> str:
    s, p, o = row["stacked"], row["per_leaf"], row["optax"]

    def part(m: dict) -> str:
        return (
            f"compile {m['compile_s']:6.2f}s (cpu {m['compile_cpu_s']:6.2f}s) step "
            f"{m['step_s'] * 1e3:7.1f}ms (cpu {m['step_cpu_s'] * 1e3:7.1f}ms) kernels "
            f"{m['hlo']['distinct_fused_kernels']}/{m['hlo']['fused_kernels']}"
        )

    optax_part = "none in optax 0.2.8" if o is None else part(o)
    if s is None:
        stacked_part = "none (element-wise)"
    else:
        ratio = p["compile_cpu_s"] / s["compile_cpu_s"]
        stacked_part = f"{part(s)} | cpu compile per-leaf/stacked {ratio:5.2f}x"
    return (
        f"{row['optimizer']:>16} {row['layers']:>3} layers | stacked {stacked_part} | per-leaf "
        f"{part(p)} | optax {optax_part}"
    )


if __name__ == "__main__":
    sys.exit(main())
