"""Train a small byte-level transformer (Flax NNX) on the Python standard library's sources.

Run from the repository root; the first line makes ``docs/transformer_lm.png``::

    python examples/transformer_lm.py

    python examples/transformer_lm.py --quick    # 100 steps instead of 300
    python examples/transformer_lm.py --sweep    # reruns the learning-rate sweep, no plot

The model is a decoder-only transformer written with Flax NNX (pre-norm blocks of causal
self-attention and a GELU MLP, learned positions, an untied head) whose vocabulary is the 256
byte values. The text is every ``*.py`` file of the running interpreter's standard library,
split into training and validation files by a hash of their paths (``_text_corpus.py``), so
nothing is downloaded. Every optimizer starts from the same initialization and sees the same
minibatches (random windows of the training text); the validation loss is the mean
cross-entropy, in nats per byte, over the same fixed windows of the validation files. The whole
step (forward, backward, update) is one ``jax.jit`` that donates the params and the state.

The optimizers: AdamW; Muon for the hidden matrices with AdamW for the embeddings, the head and
the vectors (``gx.muon_with_adamw`` with ``adjust_lr_fn="match_rms_adamw"``, so one learning
rate serves both, as Liu et al. do); schedule-free AdamW, evaluated at its averaged params
(``gx.schedule_free_eval_params``); Prodigy, whose learning rate multiplies its own estimated
step; and SOAP. All but schedule-free AdamW follow a linear warmup over the first 10% of the
steps (from a tenth of the peak) and a cosine decay to a tenth of the peak; schedule-free AdamW
warms up over the same steps and then keeps its rate, as its authors intend. Every other
hyperparameter is gradxform's default (the authors', or torch's).

The model is small (width 64, 2 blocks, 4 heads, context 64: 136k params) so that the five
runs fit a 2-core CPU. Measured on a 2-core x86_64 machine shared with other jobs (load average
about 7): the default run (300 steps of 16 x 64 bytes each) took 3 min 1 s (2 min 4 s of CPU),
``--quick`` 1 min 10 s (48 s of CPU), compilation included.

How the learning rates were tuned: ``--sweep --quick`` trains each optimizer at every rate of
its grid for a short budget, 100 steps (the schedule spread over those 100 steps), seed 0, and
prints the final validation loss; the plotted rate is the grid's best. Validation loss after
100 steps, nats per byte (* = plotted)::

    AdamW                 3e-3: 2.969   *1e-2: 2.799    3e-2: 2.897
    Muon + AdamW          3e-3: 2.822    1e-2: 2.473   *3e-2: 2.350     0.1: 2.541
    Schedule-free AdamW   3e-3: 2.873   *1e-2: 2.631    3e-2: 2.958
    Prodigy               0.03: 5.530   *0.1: 3.027      0.3: 3.032       1: 3.259
                             3: 3.306     10: 3.324
    SOAP                  3e-3: 4.004   *1e-2: 2.545    3e-2: 2.564     0.1: 2.952

Every winner has a worse rate on each side. Prodigy's rate multiplies its estimated step,
which starts at ``d0 = 1e-6``: at 0.03 the loss has barely moved after 100 steps, and its
authors' setting, 1, ends higher than 0.1. Muon's rate is shared with the AdamW of the
embeddings, the head and the vectors. Checked at the plotted budget (300 steps), the winners'
neighbours end at: AdamW 3e-3: 2.459, 3e-2: 2.703 (1e-2: 2.463, a tie); Muon 1e-2: 2.017,
0.1: 2.437 (3e-2: 1.994); schedule-free AdamW 3e-3: 2.473, 3e-2: 2.486 (1e-2: 2.299); Prodigy
0.3: 2.854, 1: 2.917 (0.1: 2.636); SOAP 3e-2: 2.071 (1e-2: 2.044). The plot keeps the
100-step winners.

Wall-clock seconds count the training steps only: compilation (printed, per optimizer) and the
evaluations are left out. On this small model a SOAP step costs several AdamW steps (its bases
are refreshed every 10 steps), hence the logarithmic time axis. The figure in ``docs/`` was
made on a machine shared with other jobs, so its seconds are perturbed; the loss against steps
is not (the runs are deterministic: a rerun gives the same losses).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import _text_corpus
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from flax import nnx
from tqdm import tqdm

import gradxform as gx

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "transformer_lm.png"
WARMUP_FRACTION = 0.1


class Config(NamedTuple):
    """The model's shape and the run's length; ``--quick`` and the flags override it."""

    width: int = 64
    depth: int = 2
    heads: int = 4
    context: int = 64
    batch_size: int = 16
    steps: int = 300
    eval_every: int = 20
    val_windows: int = 64


# The same model for 100 steps: the budget the learning rates were tuned on.
QUICK = Config(steps=100, eval_every=10)


class Block(nnx.Module):
    """A pre-norm transformer block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, width: int, heads: int, rngs: nnx.Rngs):
        self.heads = heads
        self.attention_norm = nnx.LayerNorm(width, rngs=rngs)
        # One (width, 3 width) matrix for the queries, keys and values: a 2-D kernel, which
        # Muon orthogonalises as one matrix (nnx.MultiHeadAttention's kernels are 3-D).
        self.qkv = nnx.Linear(width, 3 * width, use_bias=False, rngs=rngs)
        self.out = nnx.Linear(width, width, use_bias=False, rngs=rngs)
        self.mlp_norm = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, 4 * width, use_bias=False, rngs=rngs)
        self.down = nnx.Linear(4 * width, width, use_bias=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, width = x.shape
        qkv = self.qkv(self.attention_norm(x)).reshape(batch, length, 3 * self.heads, -1)
        q, k, v = jnp.split(qkv, 3, axis=2)
        attended = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attended.reshape(batch, length, width))
        return x + self.down(jax.nn.gelu(self.up(self.mlp_norm(x))))


class TransformerLM(nnx.Module):
    """Bytes in, next-byte logits out: embeddings, ``depth`` blocks, a final norm, a head."""

    def __init__(self, config: Config, rngs: nnx.Rngs):
        vocab, width = _text_corpus.VOCAB_SIZE, config.width
        self.embed = nnx.Embed(vocab, width, rngs=rngs)
        self.pos_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (config.context, width)))
        self.blocks = nnx.List([Block(width, config.heads, rngs) for _ in range(config.depth)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        # A zero head, as in modded-nanogpt: the fresh model's logits are all 0, its loss is
        # exactly log(256), and only the head has a gradient at the first step.
        zeros = nnx.initializers.zeros_init()
        self.lm_head = nnx.Linear(width, vocab, use_bias=False, kernel_init=zeros, rngs=rngs)

    def features(self, tokens: jax.Array) -> jax.Array:
        """The normalized last hidden states, which the head maps to logits."""
        x = self.embed(tokens) + self.pos_embed[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self.lm_head(self.features(tokens))


def cross_entropy(graphdef: nnx.GraphDef, params: nnx.State, windows: jax.Array) -> jax.Array:
    """Mean next-byte cross-entropy (nats) of the model ``merge(graphdef, params)``."""
    logits = nnx.merge(graphdef, params)(windows[:, :-1]).astype(jnp.float32)
    targets = windows[:, 1:]
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)


class Entry(NamedTuple):
    """An optimizer as the comparison runs it.

    Attributes:
      label: the legend's name.
      make: the optimizer from its learning rate (a number or a schedule).
      learning_rate: the rate plotted, the best of ``sweep``.
      sweep: the rates ``--sweep`` tries.
      scheduled: give it the warmup + cosine schedule (else ``make`` gets the peak rate).
      eval_params: ``(state, params) -> params`` to evaluate at, or ``None`` for the params.
    """

    label: str
    make: Callable[..., gx.GradientTransformation]
    learning_rate: float
    sweep: tuple[float, ...]
    scheduled: bool = True
    eval_params: Callable[[Any, Any], Any] | None = None


def make_table(warmup_steps: int) -> dict[str, Entry]:
    """The five optimizers, keyed by their ``--optimizers`` names."""
    return {
        "adamw": Entry("AdamW", gx.adamw, 1e-2, (3e-3, 1e-2, 3e-2)),
        "muon": Entry(
            "Muon + AdamW",
            functools.partial(gx.muon_with_adamw, adjust_lr_fn="match_rms_adamw"),
            3e-2,
            (3e-3, 1e-2, 3e-2, 0.1),
        ),
        "schedule_free_adamw": Entry(
            "Schedule-free AdamW",
            functools.partial(gx.schedule_free_adamw, warmup_steps=warmup_steps),
            1e-2,
            (3e-3, 1e-2, 3e-2),
            scheduled=False,
            eval_params=gx.schedule_free_eval_params,
        ),
        "prodigy": Entry("Prodigy", gx.prodigy, 0.1, (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)),
        "soap": Entry("SOAP", gx.soap, 1e-2, (3e-3, 1e-2, 3e-2, 0.1)),
    }


class Curve(NamedTuple):
    """One run: the validation loss after ``steps[i]`` steps and ``seconds[i]`` of training."""

    steps: np.ndarray
    seconds: np.ndarray
    losses: np.ndarray
    compile_seconds: float


def train(
    entry: Entry,
    learning_rate: float,
    config: Config,
    corpus: _text_corpus.Corpus,
    seed: int,
    bar: tqdm,
) -> Curve:
    """Trains a fresh model with ``entry``'s optimizer at ``learning_rate`` and evaluates it.

    The validation loss is taken before the first step and every ``config.eval_every`` steps.
    """
    graphdef, params = nnx.split(TransformerLM(config, nnx.Rngs(seed)))
    warmup = max(1, round(WARMUP_FRACTION * config.steps))
    rate = learning_rate
    if entry.scheduled and config.steps > warmup:
        rate = gx.warmup_cosine_decay_schedule(
            learning_rate / 10, learning_rate, warmup, config.steps, learning_rate / 10
        )
    optimizer = entry.make(rate)
    opt_state = optimizer.init(params)
    loss = functools.partial(cross_entropy, graphdef)

    def step(params, opt_state, windows):
        batch_loss, grads = jax.value_and_grad(loss)(params, windows)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return gx.apply_updates(params, updates), opt_state, batch_loss

    @jax.jit
    def validation_loss(params, opt_state, windows):
        at = params if entry.eval_params is None else entry.eval_params(opt_state, params)
        return loss(at, windows)

    batches = np.random.default_rng(seed)
    validation = _text_corpus.sample_windows(
        corpus.validation, np.random.default_rng(seed + 1), config.val_windows, config.context
    )
    windows = _text_corpus.sample_windows(corpus.train, batches, config.batch_size, config.context)
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, windows).compile()
    compile_seconds = time.perf_counter() - start

    record = [(0, 0.0, float(validation_loss(params, opt_state, validation)))]
    # The clock runs over the training loop (host sampling included) less the evaluations.
    started, evaluating = time.perf_counter(), 0.0
    for k in range(1, config.steps + 1):
        params, opt_state, batch_loss = compiled(params, opt_state, windows)
        if k % config.eval_every == 0 or k == config.steps:
            batch_loss.block_until_ready()
            paused = time.perf_counter()
            value = float(validation_loss(params, opt_state, validation))
            record.append((k, paused - started - evaluating, value))
            evaluating += time.perf_counter() - paused
            bar.set_postfix(val_loss=f"{value:.3f}")
        bar.update()
        if k < config.steps:
            windows = _text_corpus.sample_windows(
                corpus.train, batches, config.batch_size, config.context
            )
    steps, times, losses = (np.asarray(column) for column in zip(*record, strict=True))
    return Curve(steps, times, losses, compile_seconds)


def compare(
    config: Config,
    names: list[str],
    seed: int = 0,
    sweep: bool = False,
    progress: bool = True,
    rates: list[float] | None = None,
) -> dict[tuple[str, float], Curve]:
    """Trains every optimizer of ``names`` at its tuned rate, at each of its grid's (``sweep``)
    or at each of ``rates``."""
    table = make_table(max(1, round(WARMUP_FRACTION * config.steps)))
    corpus = _text_corpus.load_corpus()

    def rates_of(entry: Entry) -> list[float]:
        return rates or list(entry.sweep if sweep else [entry.learning_rate])

    runs = [(name, rate) for name in names for rate in rates_of(table[name])]
    curves = {}
    with tqdm(total=len(runs) * config.steps, disable=not progress) as bar:
        for name, rate in runs:
            bar.set_description(f"{table[name].label}, lr {rate:g}")
            curves[name, rate] = curve = train(table[name], rate, config, corpus, seed, bar)
            bar.write(
                f"{table[name].label:20s} lr {rate:<6g} validation loss {curve.losses[0]:.4f} -> "
                f"{curve.losses[-1]:.4f} after {curve.steps[-1]} steps; "
                f"{curve.seconds[-1]:.1f} s training, {curve.compile_seconds:.1f} s compiling"
            )
    return curves


def parameter_count(config: Config) -> int:
    params = nnx.state(nnx.eval_shape(lambda: TransformerLM(config, nnx.Rngs(0))))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def describe(config: Config) -> str:
    """The model, the data and the machine, for the figure's title."""
    machine = f"{jax.devices()[0].platform.upper()}: {platform.machine()}, {os.cpu_count()} cores"
    return (
        f"{parameter_count(config) / 1e3:.0f}k-param byte-level transformer "
        f"(width {config.width}, {config.depth} blocks, context {config.context}) "
        f"on the Python {platform.python_version()} stdlib sources\n"
        f"batch {config.batch_size} x {config.context} = {config.batch_size * config.context} "
        f"bytes/step, {config.steps} steps, seed 0; {machine}"
    )


def plot(curves: dict[tuple[str, float], Curve], out: Path, title: str) -> None:
    """Validation loss against steps and against training seconds, one legend below both."""
    table = make_table(1)
    fig, (ax_steps, ax_time) = plt.subplots(1, 2, figsize=(13, 6), layout="constrained")
    colors = plt.get_cmap("tab10")
    for i, ((name, rate), curve) in enumerate(curves.items()):
        label = (
            f"{table[name].label}, lr {rate:g}: {curve.losses[-1]:.3f} nats/byte "
            f"(compile {curve.compile_seconds:.0f} s)"
        )
        style = dict(color=colors(i), lw=1.6, marker="o", ms=2.5)
        ax_steps.plot(curve.steps, curve.losses, label=label, **style)
        # The time axis is logarithmic (SOAP's steps cost several of the others'): it starts at
        # the first evaluation after step 0.
        ax_time.plot(curve.seconds[1:], curve.losses[1:], **style)
    floor = min(c.losses.min() for c in curves.values())
    for ax in (ax_steps, ax_time):
        ax.set_ylim(floor - 0.05, math.log(_text_corpus.VOCAB_SIZE) + 0.05)
        ax.grid(True, alpha=0.3)
        ax.set_ylabel("validation cross-entropy (nats/byte)")
    ax_steps.set(xlabel="step", title="Validation loss against steps")
    ax_time.set(
        xscale="log",
        xlabel="training seconds, log scale (compilation and evaluation excluded)",
        title="Validation loss against wall-clock time",
    )
    fig.legend(loc="outside lower center", ncols=3, fontsize=8.5, frameon=False)
    fig.suptitle(title, fontsize=10.5)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG to write")
    parser.add_argument("--quick", action="store_true", help=f"a smaller, shorter run: {QUICK}")
    parser.add_argument("--sweep", action="store_true", help="each optimizer at its grid's rates")
    parser.add_argument("--rates", help="comma-separated learning rates to run each optimizer at")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--optimizers", default=",".join(make_table(1)), help="comma-separated, of the default"
    )
    for field, default in Config()._asdict().items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, help=f"default {default}")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    config = config._replace(
        **{f: getattr(args, f) for f in Config._fields if getattr(args, f) is not None}
    )
    names = args.optimizers.split(",")
    unknown = sorted(set(names) - set(make_table(1)))
    if unknown:
        parser.error(f"unknown optimizers {unknown}; choose from {sorted(make_table(1))}")

    rates = [float(rate) for rate in args.rates.split(",")] if args.rates else None
    curves = compare(config, names, args.seed, args.sweep, not args.no_progress, rates)
    if not (args.no_plot or args.sweep):
        plot(curves, args.out, describe(config))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
