"""Optional imports of the reference libraries, skipping tests with a clear reason."""

import pytest


def require_torch():
    """Imports torch or skips: the PyTorch reference tests need the `compare` extra."""
    return pytest.importorskip(
        "torch", reason="torch is not installed: install gradxform[compare] for the reference tests"
    )


def require_optax():
    """Imports optax or skips: the Optax comparisons need the `compare` extra."""
    return pytest.importorskip(
        "optax", reason="optax is not installed: install gradxform[compare] for the comparisons"
    )
