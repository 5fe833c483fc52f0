"""State bytes per parameter of every optimizer, measured from ``init``.

    python -m benchmarks.state_memory            # rewrites docs/state_memory.md

Each optimizer of ``gradxform`` is built with its defaults (a learning rate of 1e-3 where it has
none) and initialised, under ``jax.eval_shape`` (nothing is allocated), on one block of a
transformer: four 256x256 attention matrices, a 256x1024 and a 1024x256 MLP matrix, their
biases and two layer-norm scales (789,760 parameters). The table gives the bytes of the state
(every array leaf, counts included) divided by the number of parameters, for float32 and for
bfloat16 params. Optimizers that take matrices only (Muon) are measured on the block's
matrices. ``tests/test_state_memory.py`` checks that the table in the docs is the one this
script writes.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx

DOC = Path(__file__).resolve().parent.parent / "docs" / "state_memory.md"
WIDTH = 256
MATRICES_ONLY = {"muon"}

HEADER = """# Optimizer state: bytes per parameter

Measured from `init` (the shapes and dtypes of the state, under `jax.eval_shape`) by
`python -m benchmarks.state_memory`, not computed by hand; `tests/test_state_memory.py` fails
when this table and the library disagree. The params are one transformer block (four 256x256
attention matrices, 256x1024 and 1024x256 MLP matrices, their biases, two layer-norm scales:
789,760 parameters); every optimizer runs with its defaults (learning rate 1e-3 where it has
no default). Muon takes matrices only and is measured on the block's matrices. The matrix
optimizers' numbers depend on the shapes: a Kronecker factor of an n-by-n matrix costs n^2
per side whatever the other dimension.

| optimizer | float32 params | bfloat16 params |
|---|---:|---:|
"""


def block(dtype: jnp.dtype, *, matrices_only: bool = False) -> dict[str, jax.ShapeDtypeStruct]:
    """One transformer block's params as shapes (nothing allocated)."""
    shapes = {
        "attention": {name: (WIDTH, WIDTH) for name in ("query", "key", "value", "out")},
        "mlp": {"up": (WIDTH, 4 * WIDTH), "down": (4 * WIDTH, WIDTH)},
    }
    if not matrices_only:
        shapes["mlp"] |= {"up_bias": (4 * WIDTH,), "down_bias": (WIDTH,)}
        shapes["norm"] = {"attention": (WIDTH,), "mlp": (WIDTH,)}
    return jax.tree.map(
        lambda shape: jax.ShapeDtypeStruct(shape, dtype),
        shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def _bytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def optimizers() -> dict[str, gx.GradientTransformation]:
    """Every optimizer that ``gradxform`` exports, built with its defaults."""
    built = {}
    for name in gx.__all__:
        factory = getattr(gx, name)
        module = getattr(factory, "__module__", "") or ""
        if not module.startswith("gradxform.optimizers") or not inspect.isfunction(factory):
            continue
        parameters = inspect.signature(factory).parameters
        needs_rate = (
            "learning_rate" in parameters
            and parameters["learning_rate"].default is inspect.Parameter.empty
        )
        built[name] = factory(1e-3) if needs_rate else factory()
    return built


def measure() -> dict[str, tuple[float, float]]:
    """``{optimizer: (bytes per float32 param, bytes per bfloat16 param)}``."""
    rows = {}
    for name, optimizer in optimizers().items():
        per_param = []
        for dtype in (jnp.float32, jnp.bfloat16):
            params = block(dtype, matrices_only=name in MATRICES_ONLY)
            state = jax.eval_shape(optimizer.init, params)
            per_param.append(_bytes(state) / sum(x.size for x in jax.tree.leaves(params)))
        rows[name] = (per_param[0], per_param[1])
    return rows


def table(rows: dict[str, tuple[float, float]]) -> str:
    """The markdown page: the header and one line per optimizer, sorted by name."""
    lines = [f"| `{name}` | {f32:.2f} | {bf16:.2f} |" for name, (f32, bf16) in sorted(rows.items())]
    return HEADER + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOC)
    args = parser.parse_args()
    args.out.write_text(table(measure()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
