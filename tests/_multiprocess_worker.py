"""One process of the two-process data-parallel run in tests/test_multiprocess.py.

Run as ``python _multiprocess_worker.py PORT PROCESS_ID OUT.npz``: it joins the job coordinated
at ``127.0.0.1:PORT`` (process 0 hosts the coordinator), trains the small model below on its
half of every batch, and writes its final params to ``OUT.npz``. Two ways of training are run,
both on a mesh of the two processes' CPU devices, with gradients averaged across processes
through Gloo:

- ``jit``: params replicated and batches split with ``NamedSharding``; the compiler inserts the
  gradient all-reduce.
- ``zero``: a ``shard_map`` body with :func:`gradxform.shard_optimizer_state`, each process
  keeping half of Adam's state and reduce-scattering the gradients itself.

Imported (by the test), it only provides the problem and the single-process reference.
"""

from __future__ import annotations

import sys

import numpy as np

NUM_PROCESSES = 2
STEPS = 12
BATCH = 16  # per step, over both processes
SEED = 0


def make_problem():
    """Float64 NumPy params of a small tanh MLP and the batches of every step."""
    rng = np.random.default_rng(SEED)
    params = {
        "w1": rng.normal(size=(4, 8)) / 2.0,
        "b1": np.zeros(8),
        "w2": rng.normal(size=(8, 1)) / 3.0,
        "b2": np.zeros(1),
    }
    x = rng.normal(size=(STEPS, BATCH, 4))
    y = np.sin(x.sum(axis=-1, keepdims=True))
    return params, x, y


def loss(params, x, y):
    """Mean squared error of ``tanh(x w1 + b1) w2 + b2`` against ``y``."""
    import jax.numpy as jnp

    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)


def make_optimizer(axis_name=None):
    """Clipping by the global norm, then Adam; ``axis_name`` when run on slices of the model."""
    import gradxform as gx

    return gx.chain(gx.clip_by_global_norm(0.5, axis_name=axis_name), gx.adam(0.05))


def train_single(params, x, y):
    """The reference: one process, one device, the whole batch of every step."""
    import jax

    import gradxform as gx

    opt = make_optimizer()

    @jax.jit
    def step(params, state, x, y):
        updates, state = opt.update(jax.grad(loss)(params, x, y), state, params)
        return gx.apply_updates(params, updates), state

    params = jax.tree.map(jax.numpy.asarray, params)
    state = opt.init(params)
    for t in range(STEPS):
        params, state = step(params, state, x[t], y[t])
    return params


def _train_jit(mesh, params, x_local, y_local):
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import gradxform as gx

    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    opt = make_optimizer()

    @jax.jit
    def step(params, state, x, y):
        updates, state = opt.update(jax.grad(loss)(params, x, y), state, params)
        return gx.apply_updates(params, updates), state

    params = jax.make_array_from_process_local_data(replicated, params)
    with jax.set_mesh(mesh):
        state = jax.jit(opt.init)(params)
        for t in range(STEPS):
            x = jax.make_array_from_process_local_data(split, x_local[t])
            y = jax.make_array_from_process_local_data(split, y_local[t])
            params, state = step(params, state, x, y)
    return params


def _train_zero(mesh, params, x_local, y_local):
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import gradxform as gx

    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    opt = gx.shard_optimizer_state(make_optimizer("data"), axis_name="data", average_updates=True)

    def body(params, state, x, y):
        # The gradient at params marked as varying is this process's own (of its half batch).
        grads = jax.grad(loss)(jax.lax.pcast(params, "data", to="varying"), x, y)
        updates, state = opt.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    init = jax.jit(jax.shard_map(opt.init, mesh=mesh, in_specs=P(), out_specs=P("data")))
    step = jax.jit(
        jax.shard_map(
            body,
            mesh=mesh,
            in_specs=(P(), P("data"), P("data"), P("data")),
            out_specs=(P(), P("data")),
        )
    )
    params = jax.make_array_from_process_local_data(replicated, params)
    state = init(params)
    for t in range(STEPS):
        x = jax.make_array_from_process_local_data(split, x_local[t])
        y = jax.make_array_from_process_local_data(split, y_local[t])
        params, state = step(params, state, x, y)
    return params


def main(port: int, process_id: int, out_path: str) -> None:
    import jax

    # Before anything creates a backend: CPU collectives across processes go through Gloo.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # This is a process of its own, so float64 can be on for all of it: the comparison with the
    # single-process run is then not blurred by float32 rounding.
    jax.config.update("jax_enable_x64", True)
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=NUM_PROCESSES,
        process_id=process_id,
        initialization_timeout=60,
    )
    try:
        assert jax.process_count() == NUM_PROCESSES and jax.device_count() == NUM_PROCESSES
        mesh = jax.make_mesh((NUM_PROCESSES,), ("data",))
        params, x, y = make_problem()
        half = slice(process_id * BATCH // 2, (process_id + 1) * BATCH // 2)
        results = {
            "jit": _train_jit(mesh, params, x[:, half], y[:, half]),
            "zero": _train_zero(mesh, params, x[:, half], y[:, half]),
        }
        arrays = {
            f"{how}/{name}": np.asarray(leaf.addressable_data(0))
            for how, trained in results.items()
            for name, leaf in trained.items()
        }
        np.savez(out_path, **arrays)
        print(f"process {process_id}: done", flush=True)
    finally:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
