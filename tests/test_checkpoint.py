"""Tests of save_state / load_state: bitwise round trips, clear errors, atomic writes, and an
interrupted training run resumed in a fresh process that ends bitwise where an uninterrupted
run ends."""

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import _resume_worker as worker
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import gradxform as gx
from gradxform import checkpoint

WORKER = Path(__file__).with_name("_resume_worker.py")


def _params():
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(4), jnp.bfloat16),
        "head": {"v": jnp.asarray(rng.standard_normal(2), jnp.float32)},
    }


def _grads(step):
    rng = np.random.default_rng(100 + step)
    return jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), _params())


def _bits(tree):
    """Each leaf as (dtype, shape, raw bytes): equal exactly when the leaves are bitwise equal."""
    return [
        (str(x.dtype), np.shape(x), np.asarray(x).tobytes())
        for x in jax.tree.leaves(jax.tree.map(lambda x: np.asarray(x), tree))
    ]


def _assert_bitwise_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    assert _bits(actual) == _bits(expected)


_LABELS = {"w": "adam", "b": "sgd", "head": {"v": "adam"}}

# Every optimizer and state-carrying wrapper, with the extra arguments its update needs.
_OPTIMIZERS = {
    "sgd": (lambda: gx.sgd(0.1), {}),
    "sgd_nesterov": (lambda: gx.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=1e-2), {}),
    "adagrad": (lambda: gx.adagrad(0.1), {}),
    "rmsprop_centered": (lambda: gx.rmsprop(0.01, momentum=0.9, centered=True), {}),
    "adam": (lambda: gx.adam(1e-3), {}),
    "adamw_bf16_mu": (lambda: gx.adamw(1e-3, mu_dtype=jnp.bfloat16), {}),
    "amsgrad": (lambda: gx.amsgrad(1e-3), {}),
    "adamax": (lambda: gx.adamax(1e-3), {}),
    "nadam": (lambda: gx.nadam(1e-3), {}),
    "lion": (lambda: gx.lion(1e-4), {}),
    "chain": (lambda: gx.chain(gx.zero_nans(), gx.clip_by_global_norm(1.0), gx.adam(1e-3)), {}),
    "named_chain": (
        lambda: gx.named_chain(("clip", gx.clip_by_global_norm(1.0)), ("sgd", gx.sgd(0.1, 0.9))),
        {},
    ),
    "masked": (lambda: gx.masked(gx.adam(1e-3), {"w": True, "b": False, "head": True}), {}),
    "multi_transform": (
        lambda: gx.multi_transform({"adam": gx.adam(1e-3), "sgd": gx.sgd(0.1, 0.9)}, _LABELS),
        {},
    ),
    "inject_hyperparams": (
        lambda: gx.inject_hyperparams(gx.adamw)(
            learning_rate=gx.cosine_decay_schedule(1e-2, 10), weight_decay=1e-3
        ),
        {},
    ),
    "scale_by_schedule": (lambda: gx.scale_by_schedule(gx.exponential_decay(1.0, 5, 0.5)), {}),
    "multi_steps": (lambda: gx.MultiSteps(gx.adam(1e-3), every_k_schedule=3), {}),
    "lookahead": (lambda: gx.lookahead(gx.adam(1e-3), sync_period=2), {}),
    "ema_params": (lambda: gx.chain(gx.sgd(0.1), gx.ema_params(0.9)), {}),
    "join_transforms": (lambda: gx.join_transforms([gx.sgd(0.1, 0.9), gx.adam(1e-3)], [1]), {}),
    "reduce_on_plateau": (
        lambda: gx.chain(gx.adam(1e-3), gx.reduce_on_plateau(patience=0)),
        {"value": jnp.float32(1.0)},
    ),
}


@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
def test_optimizer_states_round_trip_bitwise(name, tmp_path):
    make, extra_args = _OPTIMIZERS[name]
    opt = make()
    params = _params()
    state = opt.init(params)
    for step in range(2):  # non-trivial moments and counters
        updates, state = opt.update(_grads(step), state, params, **extra_args)
        params = gx.apply_updates(params, updates)
    path = tmp_path / "state.npz"
    gx.save_state(path, state)
    # `like` is a fresh state, so every value must come from the file.
    _assert_bitwise_equal(gx.load_state(path, like=opt.init(_params())), state)


class _Inner(NamedTuple):
    count: jax.Array
    flags: dict


def _varied_tree():
    return {
        "state": _Inner(jnp.asarray(7, jnp.int32), {"done": jnp.asarray([True, False])}),
        "seq": [jnp.arange(3, dtype=jnp.int8), (jnp.ones((), jnp.float16), None)],
        "empty": (gx.EmptyState(), {}, [], ()),
        "none": None,
        "numbers": (3, 2.5, True, 1 + 2j),
        "numpy": np.arange(4, dtype=np.uint16).reshape(2, 2),
        "bf16": jnp.asarray([1.5, -0.0, jnp.inf], jnp.bfloat16),
        "key": jax.random.key(42),
    }


def test_varied_tree_round_trips_with_like(tmp_path):
    tree = _varied_tree()
    gx.save_state(tmp_path / "t.npz", tree)
    loaded = gx.load_state(tmp_path / "t.npz", like=tree)
    keys = (tree["key"], loaded["key"])
    assert jnp.array_equal(*(jax.random.key_data(k) for k in keys))
    assert str(loaded["key"].dtype) == str(tree["key"].dtype)
    del tree["key"], loaded["key"]
    _assert_bitwise_equal(loaded, tree)
    # Leaves take the form of `like`'s: JAX arrays, NumPy arrays, Python numbers.
    assert isinstance(loaded["bf16"], jax.Array)
    assert type(loaded["numpy"]) is np.ndarray
    assert [type(x) for x in loaded["numbers"]] == [int, float, bool, complex]


def test_load_without_like_gives_plain_containers(tmp_path):
    tree = _varied_tree()
    gx.save_state(tmp_path / "t.npz", tree)
    plain = gx.load_state(tmp_path / "t.npz")
    key_data = jax.random.key_data(plain.pop("key"))
    np.testing.assert_array_equal(key_data, jax.random.key_data(tree["key"]))
    expected = {
        "state": {"count": np.array(7, np.int32), "flags": {"done": np.array([True, False])}},
        "seq": [np.arange(3, dtype=np.int8), [np.ones((), np.float16), None]],
        "empty": [{}, {}, [], []],
        "none": None,
        "numbers": [3, 2.5, True, 1 + 2j],
        "numpy": np.arange(4, dtype=np.uint16).reshape(2, 2),
        "bf16": np.asarray([1.5, -0.0, np.inf], ml_dtypes.bfloat16),
    }
    assert jax.tree.structure(plain) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(plain), jax.tree.leaves(expected), strict=True):
        assert type(got) is type(want)  # NumPy arrays, or the Python numbers saved
        assert np.asarray(got).dtype == np.asarray(want).dtype
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


_DTYPES = [
    np.bool_,
    np.int8,
    np.uint8,
    np.int16,
    np.int32,
    np.uint32,
    np.int64,
    np.float16,
    ml_dtypes.bfloat16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
    ml_dtypes.float8_e4m3fn,
]


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_bit_pattern_round_trips(dtype, tmp_path, x64):
    # Random bytes cover NaN payloads, -0.0, subnormals and infinities.
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, size=5 * 3 * dtype.itemsize, dtype=np.uint8)
    if dtype == np.bool_:
        raw = raw % 2
    host = raw.view(dtype).reshape(5, 3)
    tree = {"numpy": host, "jax": jax.device_put(host), "scalar": host[0, 0]}
    gx.save_state(tmp_path / "bits.npz", tree)
    loaded = gx.load_state(tmp_path / "bits.npz", like=tree)
    for name in tree:
        assert loaded[name].dtype == dtype
        assert np.asarray(loaded[name]).tobytes() == np.asarray(tree[name]).tobytes(), name


def test_bfloat16_is_stored_as_its_raw_uint16_bits(tmp_path):
    values = jnp.asarray([1.0, -2.5, jnp.nan], jnp.bfloat16)
    gx.save_state(tmp_path / "b.npz", {"x": values})
    with np.load(tmp_path / "b.npz", allow_pickle=False) as archive:  # a plain .npz, no pickle
        stored = archive["leaf_0"]
    assert stored.dtype == np.uint16
    # bfloat16 is the top half of float32: 1.0 = 0x3F80, -2.5 = 0xC020.
    assert stored[:2].tolist() == [0x3F80, 0xC020]
    np.testing.assert_array_equal(stored, np.asarray(values).view(np.uint16))


def test_like_leaves_keep_their_sharding(tmp_path):
    mesh = jax.make_mesh((8,), ("data",), devices=jax.devices()[:8])
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    tree = {
        "sharded": jax.device_put(jnp.arange(16.0), sharded),
        "replicated": jax.device_put(jnp.ones(3, jnp.bfloat16), replicated),
        "plain": jnp.zeros(2),
    }
    gx.save_state(tmp_path / "s.npz", tree)
    loaded = gx.load_state(tmp_path / "s.npz", like=tree)
    _assert_bitwise_equal(loaded, tree)
    assert loaded["sharded"].sharding == sharded
    assert loaded["replicated"].sharding == replicated
    assert not loaded["plain"].committed  # an uncommitted template stays uncommitted
    # Abstract templates (no arrays allocated) work too, with their shardings.
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree
    )
    loaded = gx.load_state(tmp_path / "s.npz", like=abstract)
    _assert_bitwise_equal(loaded, tree)
    assert loaded["sharded"].sharding == sharded


def test_eval_shape_state_is_a_valid_like(tmp_path):
    opt = gx.adamw(1e-3)
    params = _params()
    state = opt.update(_grads(0), opt.init(params), params)[1]
    gx.save_state(tmp_path / "s.npz", state)
    like = jax.eval_shape(opt.init, params)
    _assert_bitwise_equal(gx.load_state(tmp_path / "s.npz", like=like), state)


# ----------------------------------------------------------------------------------------------
# Mismatches with `like`: every difference is listed with its path.


def _saved_adam_state(tmp_path):
    state = gx.adam(1e-3).init(_params())
    gx.save_state(tmp_path / "adam.npz", state)
    return tmp_path / "adam.npz", state


def _mismatch_message(path, like):
    with pytest.raises(gx.CheckpointError) as error:
        gx.load_state(path, like=like)
    return str(error.value)


def test_shape_and_dtype_mismatches_are_listed(tmp_path):
    path, _ = _saved_adam_state(tmp_path)
    params = _params()
    params["w"] = jnp.zeros((3, 5))  # shape
    params["head"]["v"] = params["head"]["v"].astype(jnp.bfloat16)  # dtype
    message = _mismatch_message(path, gx.adam(1e-3).init(params))
    assert "4 differences" in message
    for moment in ("mu", "nu"):
        assert f"[0].{moment}['w']: shape: expected (3, 5), found (3, 4)" in message
        assert f"[0].{moment}['head']['v']: dtype: expected bfloat16, found float32" in message


def test_counter_dtype_mismatch_is_listed(tmp_path):
    path, state = _saved_adam_state(tmp_path)
    like = (state[0]._replace(count=jnp.zeros([], jnp.uint8)), state[1])
    assert "[0].count: dtype: expected uint8, found int32" in _mismatch_message(path, like)


def test_structure_mismatches_are_listed(tmp_path):
    path, _ = _saved_adam_state(tmp_path)
    params = _params()
    del params["b"]
    params["extra"] = jnp.zeros(1)
    message = _mismatch_message(path, gx.adam(1e-3).init(params))
    for moment in ("mu", "nu"):
        assert f"[0].{moment}['extra']: in `like` but missing from the checkpoint" in message
        assert f"[0].{moment}['b']: in the checkpoint but not in `like`" in message


def test_other_optimizer_state_is_named(tmp_path):
    path, _ = _saved_adam_state(tmp_path)
    message = _mismatch_message(path, gx.amsgrad(1e-3).init(_params()))
    assert "[0]: expected ScaleByAmsgradState, found ScaleByAdamState" in message
    # sgd without momentum is chain(scale_by_learning_rate): one state where adam has two.
    message = _mismatch_message(path, gx.sgd(0.1).init(_params()))
    assert "2 differences" in message
    assert "[0]: expected EmptyState, found ScaleByAdamState" in message
    assert "[1]: in the checkpoint but not in `like`" in message


def test_none_versus_array_is_a_mismatch(tmp_path):
    gx.save_state(tmp_path / "n.npz", {"a": None, "b": jnp.zeros(2)})
    message = _mismatch_message(tmp_path / "n.npz", {"a": jnp.zeros(2), "b": None})
    assert "['a']: expected a leaf, found None" in message
    assert "['b']: expected None, found a leaf" in message


def test_long_difference_lists_are_cut(tmp_path):
    tree = {f"x{i:02d}": jnp.zeros(2) for i in range(30)}
    gx.save_state(tmp_path / "many.npz", tree)
    message = _mismatch_message(tmp_path / "many.npz", {k: jnp.zeros(3) for k in tree})
    assert "30 differences" in message and "... and 10 more" in message


# ----------------------------------------------------------------------------------------------
# Damaged and foreign files raise CheckpointError, never load as a wrong state.


def _small_checkpoint(tmp_path):
    tree = {"mu": jnp.asarray([1.0, 2.0, 3.0]), "count": jnp.asarray(5, jnp.int32)}
    path = tmp_path / "small.npz"
    gx.save_state(path, tree)
    return path, tree


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file_raises(tmp_path, keep):
    path, _ = _small_checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(gx.CheckpointError, match="truncated, corrupted"):
        gx.load_state(path)


def test_flipped_payload_byte_raises(tmp_path):
    path, tree = _small_checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    payload = np.asarray(tree["mu"]).tobytes()
    offset = data.find(payload)
    assert offset > 0 and data.find(payload, offset + 1) == -1
    data[offset + 5] ^= 0x01  # one bit of mu[1]'s mantissa
    path.write_bytes(data)
    with pytest.raises(gx.CheckpointError, match=r"'leaf_1'.*corrupted|\['mu'\].*checksum"):
        gx.load_state(path, like=tree)


def test_any_flipped_byte_raises_or_loads_the_same_bits(tmp_path):
    # Zip headers hold some bytes no reader uses (timestamps, say); flipping one of those
    # loads the same state. Any other flip must raise CheckpointError.
    path, tree = _small_checkpoint(tmp_path)
    original = path.read_bytes()
    expected = _bits(tree)
    failures = 0
    for position in range(len(original)):
        damaged = bytearray(original)
        damaged[position] ^= 0x10
        path.write_bytes(damaged)
        try:
            loaded = gx.load_state(path, like=tree)
        except gx.CheckpointError:
            failures += 1
            continue
        assert _bits(loaded) == expected, f"flipping byte {position} loaded a different state"
    assert failures > len(original) // 2  # most bytes matter


def test_checksum_mismatch_without_zip_crc(tmp_path, monkeypatch):
    # The zip CRC would catch a flipped byte first; a leaf written with a valid CRC but other
    # values than the ones saved must still fail, on the SHA-256 recorded in the metadata.
    path, tree = _small_checkpoint(tmp_path)
    real_write = checkpoint._write_entry

    def write_other_value(archive, name, array):
        if name == "leaf_1":
            array = np.asarray([1.0, 2.0, 3.5], array.dtype)
        real_write(archive, name, array)

    monkeypatch.setattr(checkpoint, "_write_entry", write_other_value)
    gx.save_state(path, tree)
    monkeypatch.undo()
    with pytest.raises(gx.CheckpointError, match=r"\['mu'\] does not match its checksum"):
        gx.load_state(path, like=tree)


def test_plain_npz_file_raises(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(gx.CheckpointError, match="without gradxform metadata"):
        gx.load_state(tmp_path / "plain.npz")


def test_npy_file_raises(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(gx.CheckpointError, match=r"single \.npy array"):
        gx.load_state(tmp_path / "one.npy")


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint\n", pickle.dumps({"mu": [1.0, 2.0]}), b"PK\x03\x04garbage"],
    ids=["empty", "text", "pickle", "zip_magic"],
)
def test_foreign_files_raise(tmp_path, content):
    path = tmp_path / "foreign.npz"
    path.write_bytes(content)
    with pytest.raises(gx.CheckpointError, match="not a readable gradxform checkpoint"):
        gx.load_state(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        gx.load_state(tmp_path / "nothing.npz")


def test_newer_format_version_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 99)
    gx.save_state(tmp_path / "future.npz", {"x": jnp.zeros(2)})
    monkeypatch.undo()
    with pytest.raises(gx.CheckpointError, match="format version 99; this gradxform reads"):
        gx.load_state(tmp_path / "future.npz")


@pytest.mark.parametrize("leaf", ["text", object(), jax.ShapeDtypeStruct((2,), jnp.float32)])
def test_unsupported_leaves_are_rejected_by_path(tmp_path, leaf):
    with pytest.raises(TypeError, match=r"\['a'\]\[1\]"):
        gx.save_state(tmp_path / "bad.npz", {"a": [jnp.zeros(1), leaf]})
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# Atomic writes.


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    old = gx.adam(1e-3).init(_params())
    gx.save_state(path, old)
    before = path.read_bytes()

    real_write = checkpoint._write_entry
    written = []

    def write_then_crash(archive, name, array):
        if len(written) == 2:
            raise OSError("disk full (simulated)")
        real_write(archive, name, array)
        written.append(name)

    monkeypatch.setattr(checkpoint, "_write_entry", write_then_crash)
    new = gx.adam(1e-3).update(_grads(0), old, _params())[1]
    with pytest.raises(OSError, match="simulated"):
        gx.save_state(path, new)
    monkeypatch.undo()

    assert written == ["leaf_0", "leaf_1"]  # the crash came mid-file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]  # no temporary left
    assert path.read_bytes() == before
    _assert_bitwise_equal(gx.load_state(path, like=new), old)


def test_save_replaces_an_existing_checkpoint(tmp_path):
    path = tmp_path / "state.npz"
    gx.save_state(path, {"x": jnp.zeros(2)})
    gx.save_state(path, {"x": jnp.ones(2)})
    np.testing.assert_array_equal(gx.load_state(path, like={"x": jnp.zeros(2)})["x"], [1.0, 1.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]


# ----------------------------------------------------------------------------------------------
# The proof: stop after 50 steps, resume in a fresh process, end bitwise where 100 steps end.


def test_resume_in_fresh_process_is_bitwise_exact(tmp_path):
    total, half = worker.TOTAL_STEPS, worker.TOTAL_STEPS // 2
    init = worker.init_params()
    full_params, full_state = worker.train(init, worker.OPTIMIZER.init(init), 0, total)

    params, state = worker.train(init, worker.OPTIMIZER.init(init), 0, half)
    halfway = tmp_path / "halfway.npz"
    gx.save_state(halfway, {"params": params, "opt_state": state, "step": half})
    final = tmp_path / "final.npz"
    result = subprocess.run(
        [sys.executable, str(WORKER), str(halfway), str(final), str(total - half)],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ.copy(),  # the same XLA flags as this process
    )
    assert result.returncode == 0, result.stderr

    like = {"params": init, "opt_state": worker.OPTIMIZER.init(init), "step": 0}
    resumed = gx.load_state(final, like=like)
    assert resumed["step"] == total
    _assert_bitwise_equal(resumed["params"], full_params)
    _assert_bitwise_equal(resumed["opt_state"], full_state)

    # The schedule lives in the injected state: its count and current learning rate came back.
    injected = full_state[1]
    assert int(injected.count) == total
    np.testing.assert_allclose(
        injected.hyperparams["learning_rate"], worker.SCHEDULE(total - 1), rtol=0
    )
    # The state matters: resuming with a fresh optimizer state ends elsewhere.
    restarted, _ = worker.train(params, worker.OPTIMIZER.init(params), half, total)
    assert _bits(restarted) != _bits(full_params)
    assert _bits(params) != _bits(full_params)


# ----------------------------------------------------------------------------------------------
# Other serialisers accept gradxform states as they are (optional dependencies).


def test_flax_serialization_round_trip():
    serialization = pytest.importorskip(
        "flax.serialization", reason="flax is not installed (optional interoperability test)"
    )
    opt = gx.chain(gx.clip_by_global_norm(1.0), gx.adam(1e-3))
    params = jax.tree.map(lambda x: x.astype(jnp.float32), _params())
    state = opt.update(jax.tree.map(jnp.ones_like, params), opt.init(params), params)[1]
    restored = serialization.from_bytes(opt.init(params), serialization.to_bytes(state))
    _assert_bitwise_equal(restored, state)


def test_orbax_round_trip(tmp_path):
    ocp = pytest.importorskip(
        "orbax.checkpoint",
        reason="orbax-checkpoint is not installed (optional interoperability test)",
    )
    # A state with every kind of node gradxform produces: NamedTuples, a tuple chain, a dict of
    # injected hyperparameters, int32 counters and float32 moments.
    opt = gx.chain(
        gx.clip_by_global_norm(1.0),
        gx.inject_hyperparams(gx.adamw)(learning_rate=gx.cosine_decay_schedule(1e-3, 100)),
    )
    params = jax.tree.map(lambda x: x.astype(jnp.float32), _params())
    state = opt.init(params)
    for _ in range(2):
        state = opt.update(jax.tree.map(jnp.ones_like, params), state, params)[1]
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "state", state)
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / "state", opt.init(params))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    _assert_bitwise_equal(restored, state)
