"""Data-parallel training of the digits MLP on several devices, matching one device step by step.

Run from the repository root::

    python examples/data_parallel.py             # 8 host CPU devices; writes docs/data_parallel.png

Every step, each device computes the gradient of its share of the minibatch; the shares'
gradients are averaged across devices and every device applies the same update. Trained so,
the model follows the same path as on one device with the whole minibatch, up to rounding (the
sums run in another order), which the script prints and plots. Two ways are shown:

- ``jit``: params replicated and the batch split with ``NamedSharding``; ``jax.jit`` inserts the
  gradient all-reduce itself. The optimizer is written as for one device.
- ``zero``: a ``jax.shard_map`` body and ``gradxform.shard_optimizer_state`` (ZeRO stage 1): each
  device averages its slice of the gradient (reduce-scatter), keeps and updates Adam's moments
  for that slice only, and gathers the update.

On a machine without accelerators the script asks XLA for 8 host CPU devices (when XLA_FLAGS
is not set already). On GPUs it uses every GPU, and across hosts every GPU of every host: start
the same script on each host with ``--coordinator HOST:PORT --num-processes N --process-id I``
(or ``--distributed`` where JAX detects the cluster, e.g. under SLURM). See docs/scaling.md.
"""

from __future__ import annotations

import os

# Before JAX starts: 8 devices on the host CPU. Ignored by GPU and TPU backends.
if "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import argparse
import functools
import sys
from pathlib import Path

import _digits
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gradxform as gx

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "data_parallel.png"
BATCH_SIZE = 64  # the global minibatch, split over the devices
LEARNING_RATE = 3e-3
AXIS = "data"


def make_optimizer(axis_name: str | None = None) -> gx.GradientTransformation:
    """Clipping by the global norm, then Adam.

    ``axis_name`` is for the ZeRO run, where each device holds slices of the gradient and the
    norm must also sum over the devices.
    """
    return gx.chain(gx.clip_by_global_norm(1.0, axis_name=axis_name), gx.adam(LEARNING_RATE))


def to_host(tree):
    """NumPy copies of (replicated) arrays; works when other processes hold copies too."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)


def global_batches(mesh, x: np.ndarray, y: np.ndarray, indices: np.ndarray):
    """An epoch's minibatches, ``(steps, batch, ...)``, split over the devices on the batch axis.

    Each process hands over only its own share of every minibatch (with one process, all of it).
    """
    sharding = NamedSharding(mesh, P(None, AXIS))
    share = indices.shape[1] // jax.process_count()
    mine = indices[:, jax.process_index() * share : (jax.process_index() + 1) * share]
    xb = jax.make_array_from_process_local_data(sharding, x[mine], (*indices.shape, x.shape[1]))
    yb = jax.make_array_from_process_local_data(sharding, y[mine], indices.shape)
    return xb, yb


def train_single(data: _digits.Digits, epochs: int, seed: int) -> tuple[np.ndarray, dict]:
    """The reference: one device, the whole minibatch every step."""
    optimizer = make_optimizer()
    params = _digits.init_mlp(jax.random.key(seed))
    opt_state = optimizer.init(params)
    epoch = jax.jit(functools.partial(_digits.train_epoch, optimizer))
    losses = []
    for indices in _digits.batch_schedule(seed, data.x_train.shape[0], BATCH_SIZE, epochs):
        params, opt_state, epoch_losses = epoch(params, opt_state, data, indices)
        losses.append(np.asarray(epoch_losses))
    return np.concatenate(losses), to_host(params)


def _step_losses(optimizer, loss_and_grads):
    """A scan step applying ``optimizer``; ``loss_and_grads(params, x, y)`` gives both."""

    def step(carry, batch):
        params, opt_state = carry
        loss, grads = loss_and_grads(params, *batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (gx.apply_updates(params, updates), opt_state), loss

    return step


def train_jit(mesh, data_np, epochs: int, seed: int) -> tuple[np.ndarray, dict]:
    """Data parallel with ``jit``: replicated params, the batch split over the devices."""
    optimizer = make_optimizer()
    replicated = NamedSharding(mesh, P())
    params = to_host(_digits.init_mlp(jax.random.key(seed)))
    params = jax.tree.map(lambda a: jax.make_array_from_process_local_data(replicated, a), params)
    opt_state = jax.jit(optimizer.init)(params)  # sharded like the params: replicated
    step = _step_losses(optimizer, jax.value_and_grad(_digits.loss))

    @jax.jit
    def epoch(params, opt_state, xb, yb):
        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (xb, yb))
        return params, opt_state, losses

    losses = []
    x, y = data_np
    for indices in _digits.batch_schedule(seed, x.shape[0], BATCH_SIZE, epochs):
        params, opt_state, epoch_losses = epoch(
            params, opt_state, *global_batches(mesh, x, y, indices)
        )
        losses.append(to_host(epoch_losses))
    return np.concatenate(losses), to_host(params)


def train_zero(mesh, data_np, epochs: int, seed: int) -> tuple[np.ndarray, dict]:
    """Data parallel in a ``shard_map`` body, each device keeping 1/n of Adam's moments."""
    optimizer = gx.shard_optimizer_state(make_optimizer(AXIS), axis_name=AXIS, average_updates=True)
    replicated = NamedSharding(mesh, P())
    params = to_host(_digits.init_mlp(jax.random.key(seed)))
    params = jax.tree.map(lambda a: jax.make_array_from_process_local_data(replicated, a), params)
    init = jax.shard_map(optimizer.init, mesh=mesh, in_specs=P(), out_specs=P(AXIS))
    opt_state = jax.jit(init)(params)

    def local_loss_and_grads(params, x, y):
        # The gradient at params marked as varying over the axis is this device's own; the
        # optimizer averages it. (At the replicated params, autodiff would sum it instead.)
        loss, grads = jax.value_and_grad(_digits.loss)(
            jax.lax.pcast(params, AXIS, to="varying"), x, y
        )
        return jax.lax.pmean(loss, AXIS), grads

    step = _step_losses(optimizer, local_loss_and_grads)

    def epoch_body(params, opt_state, xb, yb):
        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (xb, yb))
        return params, opt_state, losses

    epoch = jax.jit(
        jax.shard_map(
            epoch_body,
            mesh=mesh,
            in_specs=(P(), P(AXIS), P(None, AXIS), P(None, AXIS)),
            out_specs=(P(), P(AXIS), P()),
        )
    )
    losses = []
    x, y = data_np
    for indices in _digits.batch_schedule(seed, x.shape[0], BATCH_SIZE, epochs):
        params, opt_state, epoch_losses = epoch(
            params, opt_state, *global_batches(mesh, x, y, indices)
        )
        losses.append(to_host(epoch_losses))
    return np.concatenate(losses), to_host(params)


def plot(results: dict[str, np.ndarray], out: Path, num_devices: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_diff) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    reference = results["1 device"]
    steps = np.arange(1, len(reference) + 1)
    styles = {"1 device": ("black", "-", 3.0), "jit": ("tab:blue", "--", 1.5)}
    for label, losses in results.items():
        color, style, width = styles.get(label, ("tab:orange", ":", 1.5))
        ax_loss.plot(steps, losses, color=color, ls=style, lw=width, label=label)
        if label != "1 device":
            difference = np.abs(losses - reference) / reference
            equal = difference == 0  # a log scale cannot show these: counted in the legend
            ax_diff.plot(
                steps[~equal],
                difference[~equal],
                color=color,
                ls="",
                marker=".",
                ms=4,
                label=f"{label} (equal at {equal.sum()} of {len(steps)} steps)",
            )
    ax_loss.set(yscale="log", xlabel="step", ylabel="minibatch loss", title="Training loss")
    ax_loss.legend()
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_diff.set(
        yscale="log",
        xlabel="step",
        ylabel="|loss - loss on 1 device| / loss on 1 device",
        title="Difference from one device (rounding)",
    )
    ax_diff.legend()
    ax_diff.grid(True, which="both", alpha=0.3)
    fig.suptitle(
        f"Digits MLP, Adam with clipping, minibatch {BATCH_SIZE} split over {num_devices} devices"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the PNG")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 epochs (for tests)")
    parser.add_argument("--coordinator", help="HOST:PORT of process 0, to run on several hosts")
    parser.add_argument("--num-processes", type=int, help="with --coordinator")
    parser.add_argument("--process-id", type=int, help="with --coordinator")
    parser.add_argument(
        "--distributed", action="store_true", help="join a job JAX detects (SLURM, MPI, TPU)"
    )
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else args.epochs

    if args.coordinator or args.distributed:
        # Host CPUs talk to each other through Gloo; GPUs ignore this setting.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    leader = jax.process_index() == 0
    num_devices = jax.device_count()
    if BATCH_SIZE % num_devices:
        raise SystemExit(f"the minibatch of {BATCH_SIZE} does not split over {num_devices} devices")
    # Automatic axes: jit decides the layout of every intermediate value from the inputs'.
    mesh = jax.make_mesh((num_devices,), (AXIS,), axis_types=(AxisType.Auto,))

    data = _digits.load_digits()
    data_np = (np.asarray(data.x_train), np.asarray(data.y_train))
    results, params = {}, {}
    if leader:
        results["1 device"], params["1 device"] = train_single(data, epochs, args.seed)
    results["jit"], params["jit"] = train_jit(mesh, data_np, epochs, args.seed)
    results["zero"], params["zero"] = train_zero(mesh, data_np, epochs, args.seed)
    if not leader:
        return 0

    print(f"{num_devices} devices in {jax.process_count()} process(es), {epochs} epochs")
    reference = results["1 device"]
    for label, losses in results.items():
        accuracy = float(_digits.accuracy(params[label], data.x_test, data.y_test))
        difference = np.max(np.abs(losses - reference) / reference)
        print(
            f"{label:9s} final loss {losses[-1]:.5f}  test accuracy {100 * accuracy:.1f}%  "
            f"max relative loss difference from 1 device {difference:.1e}"
        )
    plot(results, args.out, num_devices)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
