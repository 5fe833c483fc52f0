"""docs/state_memory.md is the table ``benchmarks.state_memory`` measures from ``init``."""

import jax
import jax.numpy as jnp
import pytest

import gradxform as gx
from benchmarks import state_memory


@pytest.fixture(scope="module")
def rows():
    return state_memory.measure()


def test_the_docs_table_is_measured_from_init(rows):
    expected = state_memory.table(rows)
    assert state_memory.DOC.read_text() == expected, (
        "docs/state_memory.md is stale: run `python -m benchmarks.state_memory`"
    )


def test_every_optimizer_has_a_row(rows):
    exported = {name for name in gx.__all__ if name in state_memory.optimizers()}
    assert set(rows) == exported
    assert {"adam", "sgd", "adafactor", "lbfgs"} <= set(rows)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_adams_row_is_its_two_moments(rows, dtype):
    # A closed form: Adam keeps two moments in the param's dtype and one int32 count.
    params = state_memory.block(dtype)
    size = sum(x.size for x in jax.tree.leaves(params))
    expected = (2 * size * jnp.dtype(dtype).itemsize + 4) / size
    assert rows["adam"][dtype == jnp.bfloat16] == pytest.approx(expected)
