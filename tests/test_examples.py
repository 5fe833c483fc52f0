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


def _layer_norm(x, norm):
    centered = x - x.mean(-1, keepdims=True)
    return centered / (centered.var(-1, keepdims=True) + 1e-6) ** 0.5 * norm["scale"] + norm["bias"]


def _transformer_features(params, heads, tokens):
    """examples/transformer_lm.py's ``TransformerLM.features``, in float64 numpy."""
    import numpy as np

    x = params["embed"]["embedding"][tokens] + params["pos_embed"][: tokens.shape[1]]
    batch, length = tokens.shape
    causal = np.tril(np.ones((length, length), bool))
    for block in params["blocks"].values():
        qkv = _layer_norm(x, block["attention_norm"]) @ block["qkv"]["kernel"]
        q, k, v = qkv.reshape(batch, length, 3, heads, -1).transpose(2, 0, 3, 1, 4)
        scores = np.where(causal, q @ k.swapaxes(-1, -2) / q.shape[-1] ** 0.5, -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        attended = (weights / weights.sum(-1, keepdims=True)) @ v
        x = x + attended.transpose(0, 2, 1, 3).reshape(x.shape) @ block["out"]["kernel"]
        u = _layer_norm(x, block["mlp_norm"]) @ block["up"]["kernel"]
        gelu = 0.5 * u * (1 + np.tanh((2 / np.pi) ** 0.5 * (u + 0.044715 * u**3)))
        x = x + gelu @ block["down"]["kernel"]
    return _layer_norm(x, params["norm"])


def test_transformer_lm_first_steps_match_a_float64_rederivation(tmp_path):
    """Two AdamW steps of examples/transformer_lm.py's model, the first re-derived in float64.

    The head starts at zero, so the fresh model's logits are 0 and its loss is log(256); the
    first step's gradient reaches only the head, ``G = h^T (1/256 - onehot(y)) / N`` for the
    normalized features ``h`` (computed here by a numpy forward pass), and AdamW's first step
    (bias-corrected moments ``G`` and ``G^2``) sets the head to ``-lr_0 G / (|G| + eps)`` and
    decays every other param by ``1 - lr_0 weight_decay``.
    One optimizer only: each is one more compile, 3 to 7 s of CPU.
    """
    pytest.importorskip("flax", reason="flax is not installed: examples/transformer_lm.py needs it")
    _require("tqdm", "matplotlib")
    import jax
    import numpy as np
    from flax import nnx

    lm = _example("transformer_lm")
    text = _example("_text_corpus")
    config = lm.Config(
        width=32, depth=1, heads=2, context=16, batch_size=4, steps=2, eval_every=1, val_windows=8
    )
    table = lm.make_table(1)
    curves = lm.compare(config, ["adamw"], seed=0, progress=False)
    adamw = curves["adamw", table["adamw"].learning_rate]
    assert list(adamw.steps) == [0, 1, 2] and np.all(np.isfinite(adamw.losses))
    # logsumexp of 256 zeros in float32: log(256) to an ulp.
    assert adamw.losses[0] == pytest.approx(np.log(256), rel=2e-7)
    assert adamw.losses[2] < adamw.losses[1] < adamw.losses[0]

    # The same initialization, batch and validation windows as the run's (seed 0).
    model = lm.TransformerLM(config, nnx.Rngs(0))
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), nnx.to_pure_dict(nnx.state(model)))
    corpus = text.load_corpus()
    batch = text.sample_windows(corpus.train, np.random.default_rng(0), 4, 16)
    validation = text.sample_windows(corpus.validation, np.random.default_rng(1), 8, 16)

    def features(params, windows):
        h = _transformer_features(params, config.heads, windows[:, :-1])
        return h.reshape(-1, config.width), windows[:, 1:].reshape(-1)

    h, y = features(params, batch)
    softmax_minus_onehot = np.full((y.size, 256), 1 / 256)
    softmax_minus_onehot[np.arange(y.size), y] -= 1
    gradient = h.T @ softmax_minus_onehot / y.size
    lr_0 = table["adamw"].learning_rate / 10  # the warmup's first rate
    head = -lr_0 * gradient / (np.abs(gradient) + 1e-8)
    decayed = jax.tree.map(lambda p: (1 - lr_0 * 1e-2) * p, params)  # adamw's weight_decay
    h, y = features(decayed, validation)
    logits = h @ head
    peak = logits.max(axis=1)
    logsumexp = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))
    expected = np.mean(logsumexp - logits[np.arange(y.size), y])
    # The first step moves the loss by 2.0e-2 and the float32 run matches this float64 value to
    # 1.0e-7 (seen); the bound is an ulp of float32 at 5.5, 4.8e-7.
    assert adamw.losses[1] == pytest.approx(expected, abs=5e-7)

    out = tmp_path / "transformer_lm.png"
    lm.plot(curves, out, lm.describe(config))
    width, height = _png_size(out)
    assert width > 500 and height > 300
