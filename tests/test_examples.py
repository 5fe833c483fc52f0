"""The examples run end to end, in-process: the quickstart reaches 95% test accuracy on
digits, deterministically, and every plotting example writes its PNG.

The examples need scikit-learn (the data set), tqdm (progress bars) and matplotlib (plots);
each test skips with the reason when one is missing.
"""

import importlib
import struct
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _require(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module, reason=f"{module} is not installed: the examples need it")


def _example(name: str):
    """Imports ``examples/<name>.py`` (which imports its sibling ``_digits``)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_quickstart_reaches_95_percent():
    _require("sklearn", "tqdm")
    quickstart = _example("quickstart")
    accuracy = quickstart.train(progress=False)
    assert accuracy >= quickstart.TARGET_ACCURACY


def test_quickstart_is_deterministic():
    _require("sklearn", "tqdm")
    quickstart = _example("quickstart")
    # Two short runs from the same seed must agree exactly: the seed fixes the initialization
    # and the minibatch order, and nothing else is random.
    first = quickstart.train(epochs=2, seed=3, progress=False)
    second = quickstart.train(epochs=2, seed=3, progress=False)
    assert first == second


@pytest.mark.parametrize(("accuracy", "status"), [(0.97, 0), (0.94, 1)])
def test_quickstart_exit_status(monkeypatch, capsys, accuracy, status):
    _require("sklearn", "tqdm")
    quickstart = _example("quickstart")
    monkeypatch.setattr(quickstart, "train", lambda **kwargs: accuracy)
    assert quickstart.main([]) == status
    assert f"test accuracy: {100 * accuracy:.1f}%" in capsys.readouterr().out


# The PNGs each example writes beside `--out`, besides `--out` itself.
ALSO_WRITTEN = {"compare_optimizers": ["compare_frontier.png"]}


@pytest.mark.parametrize("name", ["compare_optimizers", "trajectories", "lr_sweep"])
def test_plotting_example_writes_png(tmp_path, name):
    _require("sklearn", "tqdm", "matplotlib")
    example = _example(name)
    out = tmp_path / "nested" / f"{name}.png"
    assert example.main(["--quick", "--out", str(out)]) == 0
    for path in [out, *(out.with_name(other) for other in ALSO_WRITTEN.get(name, []))]:
        assert path.is_file() and path.stat().st_size > 0
        width, height = _png_size(path)
        assert width > 500 and height > 300


def test_lr_sweep_matches_separate_runs():
    """Each model of the vmapped sweep trains exactly as a plain ``gx.sgd(lr)`` run would."""
    _require("sklearn", "tqdm", "matplotlib")
    import jax
    import jax.numpy as jnp
    import numpy as np
    from tqdm import tqdm

    import gradxform as gx

    lr_sweep = _example("lr_sweep")
    digits = _example("_digits")
    data = digits.load_digits()
    learning_rates = jnp.asarray([0.01, 0.3], jnp.float32)
    swept_loss, swept_accuracy = lr_sweep.sweep(
        gx.sgd, learning_rates, data, epochs=1, seed=0, bar=tqdm(disable=True)
    )

    for i, learning_rate in enumerate([0.01, 0.3]):
        optimizer = gx.sgd(learning_rate)
        params = digits.init_mlp(jax.random.key(0))
        state = optimizer.init(params)
        (indices,) = digits.batch_schedule(0, data.x_train.shape[0], lr_sweep.BATCH_SIZE, 1)
        params, state, _ = jax.jit(digits.train_epoch, static_argnums=0)(
            optimizer, params, state, data, indices
        )
        # float32, 21 steps: batched (vmapped) and unbatched matmuls may sum in another order.
        np.testing.assert_allclose(
            swept_loss[i], digits.loss(params, data.x_train, data.y_train), rtol=1e-4
        )
        # Same tiny float noise: at most one test prediction may flip.
        separate_accuracy = float(digits.accuracy(params, data.x_test, data.y_test))
        assert abs(swept_accuracy[i] - separate_accuracy) <= 1.0 / data.y_test.shape[0]


def test_lbfgs_fit_reaches_the_noise_floor_and_writes_png(tmp_path, capsys):
    _require("matplotlib")
    example = _example("lbfgs_fit")
    out = tmp_path / "nested" / "lbfgs_fit.png"
    assert example.main(["--quick", "--out", str(out)]) == 0
    width, height = _png_size(out)
    assert width > 500 and height > 300
    printed = capsys.readouterr().out
    assert "step  3  loss" in printed and f"wrote {out}" in printed
    # Six steps of at most 4 iterations reach the noise floor: the mean squared error of the
    # true curve is the noise's variance, 0.01 (0.0092 on these samples), and the fit's a bit
    # below it; the frequency, which the data pin down best, is recovered to 0.1%.
    params, losses, evaluations, _ = example.fit(6)
    assert losses[-1] < 0.0095 < losses[0]
    assert abs(params["frequency"] - example.TRUE["frequency"]) < 2.5e-3
    assert evaluations == sorted(evaluations) and evaluations[-1] <= 6 * 5
