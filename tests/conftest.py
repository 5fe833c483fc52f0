"""Test configuration shared by every test file.

Eight host CPU devices are requested before JAX starts, so that ``pmap``, ``shard_map`` and
sharded ``jit`` can be tested on an ordinary machine. The flag only takes effect if it is set
before the first JAX backend is created, which is why it lives here.
"""

import atexit
import os
import shutil
import tempfile

_DEVICES_FLAG = "--xla_force_host_platform_device_count=8"
if _DEVICES_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _DEVICES_FLAG).strip()

# Under pytest-xdist each core runs a worker process: torch's OpenMP pool (one thread per core by
# default) would then put two threads on each core, and its spinning threads slow every torch
# reference run (measured beside one busy process: 12.5 s with the default, 9.4 s with one thread,
# test_muon's bfloat16 comparisons and test_sparse_adam). Tensors this small are not split across
# threads anyway, so the references' numbers do not change.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import chex  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

# One persistent compilation cache per test session, shared by the xdist workers (they inherit
# the variable that the controller sets before it starts them): many tests compile the same
# program (an optimizer on the same problem, with and without a wrapper that adds nothing to
# it), and XLA keys the cache on the program itself, so a second compile becomes a read of the
# first executable, with the same numbers. Measured: 78 of the compiles of test_base.py and
# test_hyperparams.py were cache hits, 10% less CPU time. A directory given in the variable is
# used as it is and kept; the one made here is removed when the session ends.
_CACHE_VARIABLE = "GRADXFORM_TEST_COMPILATION_CACHE"
if not os.environ.get(_CACHE_VARIABLE):
    os.environ[_CACHE_VARIABLE] = tempfile.mkdtemp(prefix="gradxform-test-xla-cache-")
    atexit.register(shutil.rmtree, os.environ[_CACHE_VARIABLE], ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_VARIABLE])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


@pytest.fixture
def x64():
    """Runs the test with float64 enabled (``jax_enable_x64``), restoring it afterwards."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def torch64(x64):
    """float64 on both sides, JAX's x64 and torch's default dtype; yields the torch module.

    torch keeps some scalar state (NAdam's ``mu_product``, step counters) in its default dtype,
    so float64 tensors alone are not enough. Skips when torch is not installed.
    """
    from references import require_torch

    torch = require_torch()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield torch
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture(autouse=True)
def _no_leaked_precision():
    """A test that leaves float64 on (JAX's x64 or torch's default dtype) for the tests after it
    fails here, naming itself, instead of making an unrelated later test fail."""
    import sys

    jax_before = jax.config.jax_enable_x64
    torch = sys.modules.get("torch")
    torch_before = torch.get_default_dtype() if torch is not None else None
    yield
    assert jax.config.jax_enable_x64 == jax_before, (
        f"the test left jax_enable_x64={jax.config.jax_enable_x64} (was {jax_before})"
    )
    torch = sys.modules.get("torch")
    if torch is not None and torch_before is not None:
        assert torch.get_default_dtype() == torch_before, (
            f"the test left torch's default dtype {torch.get_default_dtype()} (was {torch_before})"
        )


@pytest.fixture(autouse=True)
def _fresh_trace_counter():
    """``chex.assert_max_traces`` counts traces per function across the whole session; each
    test starts from zero, so that a parametrized test does not count its other cases."""
    chex.clear_trace_counter()
