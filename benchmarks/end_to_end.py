"""End-to-end training step of a Flax NNX transformer: gradxform's tree and flat paths and Optax.

    python -m benchmarks.end_to_end            # 6 layers, ~4.8M params, 78 leaves
    python -m benchmarks.end_to_end --quick    # 2 layers, ~1.7M params, about a minute

The step is the whole of training: forward, backward, AdamW's update and ``apply_updates``,
under one ``jax.jit`` with params and state donated, on a decoder-only transformer written with
Flax NNX (split once into ``graphdef, params, rest``; ``nnx.merge`` in the loss). Four ways:

- ``gradxform``: ``gx.adamw`` on the ``nnx.State`` of params (one leaf per weight);
- ``gradxform-flat``: the same after ``gx.flatten_params`` (the two-line change of
  ``docs/guides/integrations.md``);
- ``optax``: ``optax.adamw`` in the same functional step;
- ``optax-nnx.Optimizer``: ``optax.adamw`` through ``nnx.Optimizer`` under ``nnx.jit``, the
  loop of Flax's own examples (no donation there: ``nnx.jit`` updates the model in place).

The update alone (``update`` + ``apply_updates`` on fixed gradients) is measured for the first
three in the same rounds, to show the optimizer's share of the step. Implementations run in
interleaved rounds (see ``benchmarks/run.py``), times are medians, and every number is also a
ratio to Optax's time in the same run. Each step's wall time and the process's CPU time (all
its threads) are both recorded: on a machine shared with other jobs the wall time includes
waiting for a core, the CPU time does not. After the rounds, the tree and flat paths have taken
the same steps on the same batch: their params are compared bit for bit.

Results: a table on stdout (Markdown with ``--markdown``) and the raw numbers as JSON under
``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx
from benchmarks.run import Runner, machine_description, measure

try:
    import optax
    from flax import nnx
except ImportError as error:  # pragma: no cover - optional
    raise SystemExit(f"benchmarks.end_to_end needs flax and optax: {error}") from error

LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-2


# ----------------------------------------------------------------------------- the model


class Block(nnx.Module):
    def __init__(self, width: int, heads: int, rngs: nnx.Rngs):
        self.heads = heads
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.proj = nnx.Linear(width, width, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, 4 * width, rngs=rngs)
        self.down = nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, x):
        batch, length, width = x.shape
        q, k, v = jnp.split(self.qkv(self.norm1(x)), 3, axis=-1)
        shape = (batch, length, self.heads, width // self.heads)
        mask = jnp.tril(jnp.ones((length, length), bool))
        attended = jax.nn.dot_product_attention(
            q.reshape(shape), k.reshape(shape), v.reshape(shape), mask=mask
        )
        x = x + self.proj(attended.reshape(batch, length, width))
        return x + self.down(jax.nn.gelu(self.up(self.norm2(x))))


class Transformer(nnx.Module):
    """Decoder-only: token and position embeddings, pre-norm blocks, a final norm, a head."""

    def __init__(self, vocab: int, length: int, width: int, depth: int, heads: int, rngs):
        self.embed = nnx.Embed(vocab, width, rngs=rngs)
        self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (length, width)))
        self.blocks = nnx.List([Block(width, heads, rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, vocab, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def loss_fn(model, tokens):
    logits = model(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


# ----------------------------------------------------------------------------- the steps


def functional_runner(impl, model, opt, tokens, flat: bool) -> tuple[Runner, dict]:
    """The functional NNX step (split once, merge in the loss), jitted with donation."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, params)  # the model's own arrays stay untouched
    layout = None
    if flat:
        params, layout = gx.flatten_params(params)
    state = opt.init(params)
    apply = gx.apply_updates if impl.startswith("gradxform") else optax.apply_updates

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, tokens):
        def loss(params):
            view = params if layout is None else layout.unflatten(params)
            return loss_fn(nnx.merge(graphdef, view, rest), tokens)

        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return apply(params, updates), state, value

    start = time.perf_counter()
    compiled = step.lower(params, state, tokens).compile()
    compile_s = time.perf_counter() - start
    live = {"params": params, "state": state}

    def run() -> None:
        live["params"], live["state"], value = compiled(live["params"], live["state"], tokens)
        value.block_until_ready()

    live["unflatten"] = (lambda p: p) if layout is None else layout.unflatten
    return Runner(impl, run, compile_s, None), live


def update_runner(impl, model, opt, flat: bool) -> Runner:
    """``update`` + ``apply_updates`` alone, on fixed gradients (0.01 * params)."""
    params = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
    if flat:
        params, _ = gx.flatten_params(params)
    grads = jax.tree.map(lambda p: 0.01 * p, params)
    apply = gx.apply_updates if impl.startswith("gradxform") else optax.apply_updates

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return apply(params, updates), state

    state = opt.init(params)
    start = time.perf_counter()
    compiled = step.lower(params, state, grads).compile()
    compile_s = time.perf_counter() - start
    live = {"params": params, "state": state}

    def run() -> None:
        live["params"], live["state"] = compiled(live["params"], live["state"], grads)
        jax.block_until_ready(live["params"])

    return Runner(f"{impl} (update only)", run, compile_s, None)


def nnx_optimizer_runner(model, tokens) -> Runner:
    """Flax's own loop: ``nnx.Optimizer`` with Optax, updated in place under ``nnx.jit``."""
    model = nnx.clone(model)  # this loop updates its variables in place
    optimizer = nnx.Optimizer(
        model, optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY), wrt=nnx.Param
    )

    @nnx.jit
    def step(model, optimizer, tokens):
        value, grads = nnx.value_and_grad(loss_fn)(model, tokens)
        optimizer.update(model, grads)
        return value

    start = time.perf_counter()
    step(model, optimizer, tokens).block_until_ready()  # compiles (nnx.jit has no .lower here)
    compile_s = time.perf_counter() - start
    return Runner(
        "optax-nnx.Optimizer",
        lambda: step(model, optimizer, tokens).block_until_ready(),
        compile_s,
        None,
    )


# ----------------------------------------------------------------------------- measuring


def bench(config: dict, batch: int, args) -> list[dict]:
    model = Transformer(
        config["vocab"],
        config["length"],
        config["width"],
        config["depth"],
        config["heads"],
        nnx.Rngs(0),
    )
    params = nnx.state(model, nnx.Param)
    leaves = len(jax.tree.leaves(params))
    size = sum(x.size for x in jax.tree.leaves(params))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, config["vocab"], (batch, config["length"] + 1)), jnp.int32)
    print(f"\n== batch {batch} x {config['length']} tokens: {leaves} leaves, {size:,} params")

    gx_opt = gx.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    optax_opt = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    tree, tree_live = functional_runner("gradxform", model, gx_opt, tokens, flat=False)
    flat, flat_live = functional_runner("gradxform-flat", model, gx_opt, tokens, flat=True)
    optax_step, _ = functional_runner("optax", model, optax_opt, tokens, flat=False)
    runners = [tree, flat, optax_step]
    if not args.no_nnx_optimizer:
        runners.append(nnx_optimizer_runner(model, tokens))
    if not args.no_update_only:
        runners += [
            update_runner("gradxform", model, gx_opt, flat=False),
            update_runner("gradxform-flat", model, gx_opt, flat=True),
            update_runner("optax", model, optax_opt, flat=False),
        ]
    reps = args.reps or max(2, min(20, int(2e9 / (6 * size * batch * config["length"]))))
    cpu = measure(runners, args.rounds, reps)
    # The same steps on the same batch: the flat path must have the tree path's params.
    same = jax.tree.map(
        lambda a, b: bool(np.array_equal(a, b)),
        tree_live["unflatten"](tree_live["params"]),
        flat_live["unflatten"](flat_live["params"]),
    )
    bitwise = all(jax.tree.leaves(same))
    medians = {r.impl: statistics.median(r.times) for r in runners}
    cpu_medians = {impl: statistics.median(times) for impl, times in cpu.items()}
    rows = []
    for r in runners:
        t = medians[r.impl]
        update_only = r.impl.endswith("(update only)")
        base = "optax (update only)" if update_only else "optax"
        tree_name = "gradxform (update only)" if update_only else "gradxform"
        rows.append(
            {
                "batch": batch,
                "tokens": batch * config["length"],
                "leaves": leaves,
                "params": size,
                "impl": r.impl,
                "step_ms": 1e3 * t,
                "spread_ms": [1e3 * min(r.times), 1e3 * max(r.times)],
                "x_optax": t / medians[base],
                "x_tree": t / medians[tree_name],
                "cpu_ms": 1e3 * cpu_medians[r.impl],
                "cpu_x_optax": cpu_medians[r.impl] / cpu_medians[base],
                "cpu_x_tree": cpu_medians[r.impl] / cpu_medians[tree_name],
                "compile_s": r.compile_s,
                "samples": len(r.times),
                "flat_equals_tree_bitwise": bitwise,
            }
        )
    for row in rows:
        print(
            f"  {row['impl']:<30} {row['step_ms']:9.2f} ms "
            f"[{row['spread_ms'][0]:.2f}, {row['spread_ms'][1]:.2f}]  "
            f"x_optax {row['x_optax']:5.2f}  x_tree {row['x_tree']:5.2f}  "
            f"cpu {row['cpu_ms']:8.2f} ms (x_optax {row['cpu_x_optax']:5.2f})  "
            f"compile {row['compile_s']:6.2f} s",
            flush=True,
        )
    print(f"  flat path's params equal the tree path's, bit for bit: {bitwise}")
    return rows


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"Machine: {machine['processor']}, {machine['cpu_count']} cores, jax {machine['jax']} "
        f"({machine['jax_backend']}, {machine['jax_device']}), flax {results['flax']}, optax "
        f"{machine['optax']}. Model: {results['rows'][0]['params']:,} params in "
        f"{results['rows'][0]['leaves']} leaves. Median wall time per step, then median CPU "
        "time (all threads of the process: on a shared machine it leaves out the waits for a "
        "core); in parentheses, the ratio to Optax's in the same run.",
        "",
        "| tokens per step | gradxform | gradxform-flat | optax | optax-nnx.Optimizer "
        "| update alone, CPU time: gradxform / flat / optax |",
        "|---|---|---|---|---|---|",
    ]
    for batch in dict.fromkeys(r["batch"] for r in results["rows"]):
        by = {r["impl"]: r for r in results["rows"] if r["batch"] == batch}

        def cell(impl, by=by):
            r = by.get(impl)
            if r is None:
                return "-"
            return (
                f"{r['step_ms']:.3g} ms ({r['x_optax']:.2f}x); "
                f"CPU {r['cpu_ms']:.3g} ms ({r['cpu_x_optax']:.2f}x)"
            )

        alone = " / ".join(
            "-"
            if by.get(f"{i} (update only)") is None
            else f"{by[f'{i} (update only)']['cpu_ms']:.3g} ms"
            for i in ("gradxform", "gradxform-flat", "optax")
        )
        tokens = next(iter(by.values()))["tokens"]
        cells = " | ".join(
            cell(i) for i in ("gradxform", "gradxform-flat", "optax", "optax-nnx.Optimizer")
        )
        lines.append(f"| {tokens} | {cells} | {alone} |")
    return "\n".join(lines)


CONFIGS = {
    "full": {"vocab": 256, "length": 64, "width": 256, "depth": 6, "heads": 4},
    "quick": {"vocab": 256, "length": 32, "width": 256, "depth": 2, "heads": 4},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model, about a minute")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--tag", default=None, help="name of the result file")
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=0, help="steps per round (0: by size)")
    parser.add_argument("--no-nnx-optimizer", action="store_true")
    parser.add_argument("--no-update-only", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="also print the docs' table")
    args = parser.parse_args(argv)
    config = CONFIGS["quick" if args.quick else "full"]
    if args.quick:
        args.rounds = min(args.rounds, 3)
    machine = machine_description()
    print(f"machine: {machine}\nmodel: {config}")
    rows = []
    for batch in args.batches:
        rows += bench(config, batch, args)
    import flax

    results = {"machine": machine, "flax": flax.__version__, "config": config, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    tag = (
        args.tag
        or "end_to_end-" + ("quick" if args.quick else "full") + f"-{machine['jax_backend']}"
    )
    (args.out / f"{tag}.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out / (tag + '.json')}")
    if args.markdown:
        print("\n" + markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
