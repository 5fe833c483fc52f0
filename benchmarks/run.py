"""Optimizer-step benchmarks: gradxform side by side with Optax and torch, in one process.

    python -m benchmarks.run            # the full suite (long: the per-leaf Optax compiles)
    python -m benchmarks.run --quick    # a small subset, under two minutes

The step is ``update`` + ``apply_updates`` under one ``jax.jit`` with params and state donated
(for torch: ``optimizer.step()`` with gradients already set). Implementations are measured in
interleaved rounds, so that the machine's drifting memory bandwidth hits them all alike, and
every time is reported as a ratio to the others and to the floor: the bytes an optimizer must
move (28 per float32 parameter for Adam) at the bandwidth of an elementwise triad
``a <- a + s * b`` of the same size (the faster of XLA's and torch's), measured in the same
rounds.

Results: a table on stdout, raw numbers as JSON and a PNG (time per parameter against model
size) under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx
from benchmarks import report

try:
    import optax
except ImportError:  # pragma: no cover - optional peer
    optax = None
try:
    import torch
except ImportError:  # pragma: no cover - optional peer
    torch = None

LEARNING_RATE = 1e-3

# Bytes each optimizer must read and write per parameter, for float32 params and state:
# params r+w, gradient r, and each moment r+w; the chain also reads the gradient for its norm.
FLOOR_BYTES = {"adam": 28, "adamw": 28, "sgd_momentum": 20, "chain5": 32}
# bf16 params and gradients with float32 moments: 2 + 2 + 2 + 8 + 8.
FLOOR_BYTES_BF16_PARAMS = {"adam": 22, "adamw": 22, "sgd_momentum": 14, "chain5": 24}


# ----------------------------------------------------------------------------- cases


def transformer_like(num_leaves: int, total: int) -> list[tuple[int, ...]]:
    """Leaf shapes of a small transformer: per block 4 attention matrices, an MLP, biases and
    layer-norm scales (14 leaves), plus an embedding that brings the total to ``total``."""
    width = 32
    block = [(width, width)] * 4 + [(width,)] * 4
    block += [(width, 4 * width), (4 * width,), (4 * width, width), (width,), (width,), (width,)]
    shapes: list[tuple[int, ...]] = []
    while len(shapes) + len(block) < num_leaves:
        shapes += block
    shapes += [(width,)] * (num_leaves - 1 - len(shapes))
    used = sum(math.prod(s) for s in shapes)
    shapes.append((max(1, (total - used) // width), width))
    return shapes


@dataclass
class Case:
    name: str
    shapes: list[tuple[int, ...]]
    dtype: str = "float32"

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def leaves(self) -> int:
        return len(self.shapes)


def make_cases(quick: bool) -> list[Case]:
    if quick:
        return [
            Case("1 leaf, 1e5", [(100_000,)]),
            Case("1 leaf, 1e6", [(1_000_000,)]),
            Case("200 leaves, 2e5", transformer_like(200, 200_000)),
            Case("1000 leaves of 16", [(16,)] * 1000),
            Case("1 leaf, 1e6, bf16", [(1_000_000,)], "bfloat16"),
        ]
    return [
        Case("1 leaf, 1e5", [(100_000,)]),
        Case("1 leaf, 1e6", [(1_000_000,)]),
        Case("1 leaf, 1e7", [(10_000_000,)]),
        Case("1000 leaves, 1e6", transformer_like(1000, 1_000_000)),
        Case("10000 leaves of 16", [(16,)] * 10_000),
        Case("1 leaf, 1e7, bf16", [(10_000_000,)], "bfloat16"),
    ]


# ----------------------------------------------------------------------------- optimizers


def gradxform_optimizer(name: str, bf16: bool) -> gx.GradientTransformation:
    moments = {"mu_dtype": jnp.float32, "nu_dtype": jnp.float32} if bf16 else {}
    if name == "adam":
        return gx.adam(LEARNING_RATE, **moments)
    if name == "adamw":
        return gx.adamw(LEARNING_RATE, weight_decay=1e-2, **moments)
    if name == "sgd_momentum":
        return gx.chain(
            gx.trace(0.9, accumulator_dtype=jnp.float32 if bf16 else None),
            gx.scale_by_learning_rate(LEARNING_RATE),
        )
    if name == "chain5":
        return gx.chain(
            gx.clip_by_global_norm(1.0),
            gx.scale_by_adam(**moments),
            gx.add_decayed_weights(1e-4),
            gx.scale_by_schedule(gx.cosine_decay_schedule(1.0, 10_000)),
            gx.scale(-LEARNING_RATE),
        )
    raise ValueError(name)


def optax_optimizer(name: str, bf16: bool):
    mu_dtype = jnp.float32 if bf16 else None
    if name == "adam":
        return optax.adam(LEARNING_RATE, mu_dtype=mu_dtype)
    if name == "adamw":
        return optax.adamw(LEARNING_RATE, weight_decay=1e-2, mu_dtype=mu_dtype)
    if name == "sgd_momentum":
        return optax.sgd(LEARNING_RATE, momentum=0.9, accumulator_dtype=mu_dtype)
    if name == "chain5":
        return optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.scale_by_adam(mu_dtype=mu_dtype),
            optax.add_decayed_weights(1e-4),
            optax.scale_by_schedule(optax.cosine_decay_schedule(1.0, 10_000)),
            optax.scale(-LEARNING_RATE),
        )
    raise ValueError(name)


# ----------------------------------------------------------------------------- runners


@dataclass
class Runner:
    """One implementation on one case: ``step()`` runs one optimizer step and waits for it."""

    impl: str
    step: Callable[[], None]
    compile_s: float
    memory_bytes: int | None
    times: list[float] = field(default_factory=list)


def _tree_params(case: Case, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    dtype = jnp.dtype(case.dtype)
    return {f"p{i:05d}": jnp.asarray(rng.normal(size=s), dtype) for i, s in enumerate(case.shapes)}


def _memory(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
        return int(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            - m.alias_size_in_bytes
            + m.temp_size_in_bytes
        )
    except Exception:
        return None


def jax_runner(impl: str, opt, params, grads) -> Runner:
    def step(p, s, g):
        updates, s = opt.update(g, s, p)
        return gx.apply_updates(p, updates), s

    state = opt.init(params)
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    compile_s = time.perf_counter() - start
    live = {"params": jax.tree.map(jnp.copy, params), "state": state}

    def run() -> None:
        live["params"], live["state"] = compiled(live["params"], live["state"], grads)
        jax.block_until_ready(live["params"])

    return Runner(impl, run, compile_s, _memory(compiled))


def torch_runner(impl: str, name: str, case: Case) -> Runner | None:
    dtype = torch.bfloat16 if case.dtype == "bfloat16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen, dtype=torch.float32).to(dtype) for s in case.shapes]
    for p in params:
        p.requires_grad_(True)
        p.grad = torch.full_like(p, 0.01)
    mode = impl.removeprefix("torch-")
    kwargs = {"fused": True} if mode == "fused" else {"foreach": mode == "foreach"}
    try:
        if name == "sgd_momentum":
            opt = torch.optim.SGD(params, lr=LEARNING_RATE, momentum=0.9, **kwargs)
        elif name == "adam":
            opt = torch.optim.Adam(params, lr=LEARNING_RATE, **kwargs)
        else:  # adamw, and the chain: clip_grad_norm_, AdamW and a cosine schedule
            opt = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=1e-2, **kwargs)
    except (RuntimeError, ValueError, TypeError):
        return None
    schedule = None
    if name == "chain5":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10_000)

    def run() -> None:
        if schedule is not None:
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=mode != "forloop")
        opt.step()
        if schedule is not None:
            schedule.step()

    start = time.perf_counter()
    try:
        run()  # allocates the state
    except RuntimeError:
        return None
    compile_s = time.perf_counter() - start
    state_bytes = sum(
        t.numel() * t.element_size()
        for s in opt.state.values()
        for t in s.values()
        if torch.is_tensor(t)
    )
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    return Runner(impl, run, compile_s, 2 * param_bytes + state_bytes)


def triad_runner(case: Case) -> Runner:
    """``a <- a + s * b`` over ``case.size`` float32 elements: 12 bytes per element."""
    a = jnp.ones(case.size, jnp.float32)
    b = jnp.full(case.size, 0.5, jnp.float32)
    compiled = jax.jit(lambda a, b: a + 1e-3 * b, donate_argnums=0).lower(a, b).compile()
    live = {"a": a}

    def run() -> None:
        live["a"] = compiled(live["a"], b)
        live["a"].block_until_ready()

    return Runner("triad", run, 0.0, None)


def torch_triad_runner(case: Case) -> Runner | None:
    """The same triad in torch (``a.add_(b, alpha=s)``), which may use more threads than XLA."""
    if torch is None:
        return None
    a = torch.ones(case.size)
    b = torch.full((case.size,), 0.5)
    return Runner("triad-torch", lambda: a.add_(b, alpha=1e-3), 0.0, None)


# ----------------------------------------------------------------------------- measuring


def measure(runners: list[Runner], rounds: int, reps: int) -> dict[str, list[float]]:
    """Interleaved rounds after two warm-up steps each: wall times go to ``runner.times``; the
    process's CPU time per step (all threads, read outside the wall-clock window) is returned,
    by implementation: on a machine shared with other jobs, wall time includes waiting for a
    core and CPU time does not."""
    cpu: dict[str, list[float]] = {runner.impl: [] for runner in runners}
    for runner in runners:  # warm-up
        for _ in range(2):
            runner.step()
    for _ in range(rounds):
        for runner in runners:
            for _ in range(reps):
                start_cpu = time.process_time()
                start = time.perf_counter()
                runner.step()
                runner.times.append(time.perf_counter() - start)
                cpu[runner.impl].append(time.process_time() - start_cpu)
    return cpu


def bench_case(case: Case, names: list[str], impls: list[str], args) -> list[dict]:
    rows = []
    bf16 = case.dtype == "bfloat16"
    params = _tree_params(case)
    grads = jax.tree.map(lambda p: (0.01 * p).astype(p.dtype), params)
    flat_params, layout = gx.flatten_params(params)
    flat_grads = layout.flatten(grads)
    reps = args.reps or max(3, min(50, int(3e7 / max(case.size, 1))))
    for name in names:
        triads = [r for r in (triad_runner(case), torch_triad_runner(case)) if r is not None]
        runners = list(triads)
        skipped = {}
        for impl in impls:
            per_leaf = impl in ("gradxform", "optax")
            if per_leaf and case.leaves > args.per_leaf_limit:
                skipped[impl] = f"{case.leaves} leaves > --per-leaf-limit {args.per_leaf_limit}"
                continue
            if impl == "gradxform":
                runners.append(jax_runner(impl, gradxform_optimizer(name, bf16), params, grads))
            elif impl == "gradxform-flat":
                opt = gradxform_optimizer(name, bf16)
                runners.append(jax_runner(impl, opt, flat_params, flat_grads))
            elif impl == "optax" and optax is not None:
                runners.append(jax_runner(impl, optax_optimizer(name, bf16), params, grads))
            elif impl.startswith("torch-") and torch is not None:
                runner = torch_runner(impl, name, case)
                if runner is None:
                    skipped[impl] = "not supported by this torch build"
                else:
                    runners.append(runner)
        measure(runners, args.rounds, reps)
        # The floor takes the faster triad: the best bandwidth this machine showed for the size.
        triad = min(statistics.median(r.times) for r in triads)
        bytes_per_param = (FLOOR_BYTES_BF16_PARAMS if bf16 else FLOOR_BYTES)[name]
        floor = triad * bytes_per_param / 12.0
        measured = runners[len(triads) :]
        medians = {r.impl: statistics.median(r.times) for r in measured}
        for r in measured:
            t = medians[r.impl]
            rows.append(
                {
                    "case": case.name,
                    "leaves": case.leaves,
                    "params": case.size,
                    "dtype": case.dtype,
                    "optimizer": name,
                    "impl": r.impl,
                    "step_ms": 1e3 * t,
                    "floor_ms": 1e3 * floor,
                    "x_floor": t / floor,
                    "x_optax": t / medians["optax"] if "optax" in medians else None,
                    "x_torch_fused": (
                        t / medians["torch-fused"] if "torch-fused" in medians else None
                    ),
                    "compile_s": r.compile_s,
                    "memory_bytes": r.memory_bytes,
                    "samples": len(r.times),
                }
            )
        for impl, why in skipped.items():
            rows.append(
                {
                    "case": case.name,
                    "optimizer": name,
                    "impl": impl,
                    "skipped": why,
                    "leaves": case.leaves,
                    "params": case.size,
                    "dtype": case.dtype,
                }
            )
        _print_rows([r for r in rows if r["case"] == case.name and r["optimizer"] == name])
    return rows


# ----------------------------------------------------------------------------- reporting


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_rows(rows: list[dict]) -> None:
    for r in rows:
        if "skipped" in r:
            print(f"  {r['case']:<22} {r['optimizer']:<13} {r['impl']:<15} skipped: {r['skipped']}")
            continue
        mem = None if r["memory_bytes"] is None else r["memory_bytes"] / r["params"]
        print(
            f"  {r['case']:<22} {r['optimizer']:<13} {r['impl']:<15} "
            f"{r['step_ms']:9.3f} ms  x_floor {r['x_floor']:6.2f}  "
            f"x_optax {_fmt(r['x_optax'], '5.2f')}  "
            f"x_torch_fused {_fmt(r['x_torch_fused'], '5.2f')}  "
            f"compile {r['compile_s']:7.2f} s  mem {_fmt(mem, '5.1f')} B/param",
            flush=True,
        )


def _cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux); ``None`` elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_description() -> dict:
    device = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": __import__("os").cpu_count(),
        "jax_backend": device.platform,
        "jax_device": device.device_kind,
        "jax": jax.__version__,
        "optax": getattr(optax, "__version__", None),
        "torch": getattr(torch, "__version__", None),
        "gradxform": gx.__version__,
    }


def _warm_up_compiler() -> None:
    """The first compile in a process pays one-time costs; keep them out of every case."""
    params = {f"p{i}": jnp.ones(4) for i in range(20)}
    opt = gx.adam(1e-3)
    jax.jit(lambda p, s: opt.update(p, s, p)).lower(params, opt.init(params)).compile()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small subset, under two minutes")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--tag", default=None, help="name of the result files")
    parser.add_argument("--optimizers", nargs="*", default=None)
    parser.add_argument("--cases", nargs="*", default=None, help="case names to keep")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=0, help="steps per round (0: by size)")
    parser.add_argument(
        "--per-leaf-limit",
        type=int,
        default=2000,
        help="skip per-leaf JAX implementations (gradxform tree, optax) above this many leaves: "
        "their compile time grows faster than linearly",
    )
    args = parser.parse_args(argv)
    names = args.optimizers or (["adam", "sgd_momentum"] if args.quick else list(FLOOR_BYTES))
    if args.quick:
        args.rounds = min(args.rounds, 3)
    impls = [
        "gradxform",
        "gradxform-flat",
        "optax",
        "torch-forloop",
        "torch-foreach",
        "torch-fused",
    ]
    cases = make_cases(args.quick)
    if args.cases:
        cases = [c for c in cases if c.name in args.cases]
    machine = machine_description()
    print(f"machine: {machine}")
    _warm_up_compiler()
    rows = []
    for case in cases:
        print(f"\n== {case.name}: {case.leaves} leaves, {case.size} params, {case.dtype}")
        rows += bench_case(case, names, impls, args)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or ("quick" if args.quick else "full") + f"-{machine['jax_backend']}"
    (args.out / f"{tag}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"wrote {args.out / (tag + '.json')}")
    report.plot({"machine": machine, "rows": rows}, args.out / f"{tag}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
