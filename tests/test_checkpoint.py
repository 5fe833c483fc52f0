"""Tests of save_state / load_state: bitwise round trips, clear errors, atomic writes, and an
interrupted training run resumed in a fresh process that ends bitwise where an uninterrupted
run ends."""

import hashlib
import io
import json
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
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
# Subprocesses import the gradxform under test, not whichever one is installed.
REPO = Path(gx.__file__).resolve().parents[1]


def _subprocess_env():
    env = os.environ.copy()  # the same XLA flags as this process
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


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
    "join_transforms": (
        lambda: gx.join_transforms([gx.sgd(0.1, 0.9), gx.adam(1e-3)], boundaries=[1]),
        {},
    ),
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
    ml_dtypes.float8_e5m2,
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


@pytest.mark.parametrize("dtype", [ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.float4_e2m1fn])
def test_sub_byte_dtypes_round_trip(tmp_path, dtype):
    # Every value the type has (NumPy keeps one per byte), in NumPy and in JAX leaves.
    if dtype is ml_dtypes.float4_e2m1fn:
        host = np.arange(16, dtype=np.uint8).view(dtype)  # every bit pattern
    else:
        host = np.arange(ml_dtypes.iinfo(dtype).min, ml_dtypes.iinfo(dtype).max + 1).astype(dtype)
    tree = {"numpy": host, "jax": jnp.asarray(host)}
    gx.save_state(tmp_path / "s.npz", tree)
    loaded = gx.load_state(tmp_path / "s.npz", like=tree)
    _assert_bitwise_equal(loaded, tree)
    assert loaded["jax"].dtype == dtype and isinstance(loaded["jax"], jax.Array)


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


def test_64_bit_leaves_never_round_into_32_bit_jax_arrays(tmp_path):
    # Values that float32, int32 and complex64 cannot hold.
    path = tmp_path / "x64.npz"
    with jax.enable_x64(True):
        tree = {
            "f": jnp.asarray([1 + 2**-40, 3.0], jnp.float64),
            "i": jnp.asarray([2**40, -1], jnp.int64),
            "u": jnp.asarray([2**40], jnp.uint64),
            "c": jnp.asarray([1 + 2**-40 + 1j], jnp.complex128),
        }
        gx.save_state(path, tree)
        host = jax.tree.map(np.asarray, tree)
    # x64 is off here: JAX would make float64 float32, and int64 int32.
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), host)
    for like in (abstract, tree):  # `tree` holds 64-bit JAX arrays made while x64 was on
        message = _mismatch_message(path, like)
        assert "4 differences" in message
        for name, dtype, canonical in [
            ("f", "float64", "float32"),
            ("i", "int64", "int32"),
            ("u", "uint64", "uint32"),
            ("c", "complex128", "complex64"),
        ]:
            expected = (
                f"['{name}']: a JAX array of dtype {dtype} is {canonical} while jax_enable_x64"
            )
            assert expected in message
    # NumPy leaves hold them whatever x64 says.
    _assert_bitwise_equal(gx.load_state(path, like=host), host)
    with jax.enable_x64(True):  # and with x64 on, JAX arrays do
        _assert_bitwise_equal(gx.load_state(path, like=abstract), host)


@pytest.mark.parametrize(
    ("saved", "like"),
    [
        (np.float32(1.5), 1.5),
        (jnp.asarray(3, jnp.int32), 3),
        (np.float64(1.5), np.float32(1.5)),
        (1.5, np.float32(0.0)),
        (True, 1),
        (1, True),
        (3, 3.0),
        (1 + 0j, 1.0),
        (np.zeros(2), np.zeros(2, np.float32)),
        (np.zeros(2, np.int8), jnp.zeros(2, jnp.uint8)),
    ],
)
def test_like_leaves_of_another_dtype_raise(tmp_path, saved, like):
    gx.save_state(tmp_path / "x.npz", {"x": saved})
    assert "['x']: dtype: expected" in _mismatch_message(tmp_path / "x.npz", {"x": like})


# ----------------------------------------------------------------------------------------------
# Damaged and foreign files raise CheckpointError, never load as a wrong state.


def _small_checkpoint(tmp_path):
    tree = {"mu": jnp.asarray([1.0, 2.0, 3.0]), "count": jnp.asarray(5, jnp.int32)}
    path = tmp_path / "small.npz"
    gx.save_state(path, tree)
    return path, tree


# Crafting files as an attacker could: the metadata's checksum is a SHA-256 anyone recomputes.
_META = "__gradxform_meta__.npy"
_DIGEST = "__gradxform_meta_sha256__.npy"


def _npy(array, allow_pickle=False):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=allow_pickle)
    return buffer.getvalue()


def _members(path):
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _write_members(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _rewrite(path, edit=None, members=None):
    """Rewrites the checkpoint at ``path``: ``members`` replace entries, ``edit`` changes the
    metadata in place (or returns new metadata, as a dict or raw JSON bytes); the metadata's
    digest is recomputed."""
    members = _members(path) | (members or {})
    if edit is not None:
        meta = json.loads(np.load(io.BytesIO(members[_META])).tobytes())
        result = edit(meta)
        meta = meta if result is None else result
        raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
        digest = hashlib.sha256(raw).hexdigest().encode()
        members[_META] = _npy(np.frombuffer(raw, np.uint8))
        members[_DIGEST] = _npy(np.frombuffer(digest, np.uint8))
    _write_members(path, members)


def _set(keys, value):
    def edit(meta):
        for key in keys[:-1]:
            meta = meta[key]
        meta[keys[-1]] = value

    return edit


def _delete(keys):
    def edit(meta):
        for key in keys[:-1]:
            meta = meta[key]
        del meta[keys[-1]]

    return edit


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


def test_checksum_mismatch_without_zip_crc(tmp_path):
    # The zip CRC would catch a flipped byte first; a leaf written with a valid CRC but other
    # values than the ones saved must still fail, on the SHA-256 recorded in the metadata.
    path, tree = _small_checkpoint(tmp_path)
    _rewrite(path, members={"leaf_1.npy": _npy(np.asarray([1.0, 2.0, 3.5], np.float32))})
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


def test_newer_format_version_raises(tmp_path):
    gx.save_state(tmp_path / "future.npz", {"x": jnp.zeros(2)})
    _rewrite(tmp_path / "future.npz", _set(["version"], 99))
    with pytest.raises(gx.CheckpointError, match="format version 99; this gradxform reads"):
        gx.load_state(tmp_path / "future.npz")


@pytest.mark.parametrize("leaf", ["text", object(), jax.ShapeDtypeStruct((2,), jnp.float32)])
def test_unsupported_leaves_are_rejected_by_path(tmp_path, leaf):
    with pytest.raises(TypeError, match=r"\['a'\]\[1\]"):
        gx.save_state(tmp_path / "bad.npz", {"a": [jnp.zeros(1), leaf]})
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# Untrusted files: nothing in a file selects code or inflates without bound, and every
# malformed file raises CheckpointError saying what is wrong.


@pytest.mark.parametrize(
    "leaf",
    [
        np.array(["text"]),
        np.array([object()], dtype=object),
        np.zeros(2, [("a", "<f4")]),
        np.zeros(2, ">f4"),
    ],
    ids=["unicode", "object", "structured", "big_endian"],
)
def test_arrays_of_other_dtypes_are_refused_by_path(tmp_path, leaf):
    with pytest.raises(TypeError, match=r"save_state: the tree's leaf \['a'\]\[1\] has dtype"):
        gx.save_state(tmp_path / "bad.npz", {"a": [jnp.zeros(1), leaf]})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("builtin", ["exec", "eval"])
def test_a_file_cannot_name_a_function_to_run(tmp_path, builtin):
    # The leaf record names a builtin as the Python type of a number, and the entry holds
    # code as a NumPy string, which np.load(allow_pickle=False) reads.
    marker = tmp_path / "code_ran"
    payload = np.asarray(f"open({str(marker)!r}, 'w').close()")
    path = tmp_path / "crafted.npz"
    gx.save_state(path, {"x": 1.5})

    def name_a_builtin(meta):
        record = meta["leaves"][0]
        record.update(dtype=payload.dtype.name, python=builtin, shape=[])
        record["sha256"] = hashlib.sha256(payload.tobytes()).hexdigest()

    _rewrite(path, name_a_builtin, members={"leaf_0.npy": _npy(payload)})
    for like in (None, {"x": 1.5}):
        with pytest.raises(gx.CheckpointError, match=r"leaves\[0\] \(\['x'\]\)"):
            gx.load_state(path, like=like)
    assert not marker.exists()


def test_node_type_names_in_a_file_are_only_compared(tmp_path):
    path, tree = _small_checkpoint(tmp_path)
    _rewrite(path, _set(["structure", "node"], "os.system"))
    plain = gx.load_state(path)  # the name selects nothing: the tree loads as data
    assert sorted(plain) == ["count", "mu"]
    np.testing.assert_array_equal(plain["mu"], [1.0, 2.0, 3.0])
    assert "<root>: expected dict, found system" in _mismatch_message(path, tree)


@pytest.mark.parametrize(
    "entry",
    [
        np.array(["abc"]),  # as many bytes as mu's three float32s
        np.zeros(3, [("a", "<f4")]),
        np.zeros(3, ">f4"),
        np.zeros(3, np.float64),
        np.zeros((3, 1), np.float32, order="F"),
    ],
    ids=["unicode", "structured", "big_endian", "float64", "fortran"],
)
def test_entries_of_other_dtypes_or_shapes_raise(tmp_path, entry):
    path, tree = _small_checkpoint(tmp_path)
    _rewrite(path, members={"leaf_1.npy": _npy(entry)})
    for like in (None, tree):
        with pytest.raises(gx.CheckpointError, match="'leaf_1'"):
            gx.load_state(path, like=like)


def test_object_entries_are_never_unpickled(tmp_path):
    path, tree = _small_checkpoint(tmp_path)
    entry = _npy(np.array([None, None, None], dtype=object), allow_pickle=True)
    _rewrite(path, members={"leaf_1.npy": entry})
    for like in (None, tree):
        with pytest.raises(gx.CheckpointError, match="'leaf_1'"):
            gx.load_state(path, like=like)


def _rich_checkpoint(tmp_path):
    # Leaves, in order: 0 count, 1 key, 2 mu, 3 n.
    tree = {
        "count": jnp.asarray(5, jnp.int32),
        "key": jax.random.key(0),
        "mu": jnp.asarray([1.0, 2.0, 3.0]),
        "n": 3,
    }
    path = tmp_path / "rich.npz"
    gx.save_state(path, tree)
    return path, tree


def _nest(levels):
    def edit(meta):
        node = meta["structure"]
        for _ in range(levels):
            node = {"node": "dict", "mapping": True, "keys": ["['a']"], "names": ["a"]} | {
                "children": [node]
            }
        meta["structure"] = node

    return edit


def _json_nested_past_its_parser(meta):
    deep = "[" * 100_000 + "]" * 100_000
    text = json.dumps(meta | {"structure": None})
    return text.replace('"structure": null', f'"structure": {deep}').encode()


_LEAVES = ["leaves"]
_ROOT = ["structure"]
_CHILD = ["structure", "children"]
# (id, edit of the metadata, what the error must say)
_CORRUPTIONS = [
    ("meta_a_list", lambda meta: [meta], "unknown format"),
    ("no_format", _delete(["format"]), "unknown format None"),
    ("version_a_string", _set(["version"], "1"), "format version '1'"),
    ("version_true", _set(["version"], True), "format version True"),
    ("no_treedef", _delete(["treedef"]), "has no `treedef`"),
    ("no_leaves", _delete(_LEAVES), "has no `leaves`"),
    ("leaves_a_dict", _set(_LEAVES, {"0": {}}), "`leaves` must be a list, found dict"),
    ("record_a_list", _set([*_LEAVES, 0], []), r"leaves\[0\] must be an object"),
    ("no_path", _delete([*_LEAVES, 2, "path"]), r"leaves\[2\] has no `path`"),
    ("path_an_int", _set([*_LEAVES, 2, "path"], 5), "`path` must be a string, found int"),
    ("no_dtype", _delete([*_LEAVES, 2, "dtype"]), r"\['mu'\]\) has no `dtype`"),
    ("dtype_an_int", _set([*_LEAVES, 2, "dtype"], 5), "`dtype` must be a string"),
    ("dtype_object", _set([*_LEAVES, 2, "dtype"], "object"), "unsupported dtype 'object'"),
    ("dtype_unicode", _set([*_LEAVES, 2, "dtype"], "<U10"), "unsupported dtype '<U10'"),
    ("dtype_void", _set([*_LEAVES, 2, "dtype"], "V8"), "unsupported dtype 'V8'"),
    ("dtype_unknown", _set([*_LEAVES, 2, "dtype"], "float128"), "unsupported dtype"),
    ("dtype_key_no_impl", _delete([*_LEAVES, 1, "impl"]), "unsupported dtype 'key<fry>'"),
    ("shape_a_string", _set([*_LEAVES, 2, "shape"], "3"), "`shape` must be a list"),
    ("shape_negative", _set([*_LEAVES, 2, "shape"], [-3]), r"non-negative ints, found \[-3\]"),
    ("shape_float", _set([*_LEAVES, 2, "shape"], [3.0]), "non-negative ints"),
    ("shape_bool", _set([*_LEAVES, 2, "shape"], [True]), "non-negative ints"),
    ("shape_65_dims", _set([*_LEAVES, 2, "shape"], [1] * 65), "at most 64"),
    ("shape_absurd", _set([*_LEAVES, 2, "shape"], [2**62, 2**62]), "too large for any array"),
    (
        "shape_wrong_bytes",
        _set([*_LEAVES, 2, "shape"], [4]),
        r"'leaf_2'.*record implies|\['mu'\]: shape: expected \(3,\), found \(4,\)",
    ),
    ("no_sha256", _delete([*_LEAVES, 2, "sha256"]), "has no `sha256`"),
    ("sha256_short", _set([*_LEAVES, 2, "sha256"], "abc"), "64 hex digits"),
    ("python_unknown", _set([*_LEAVES, 3, "python"], "print"), "`python` must be one of"),
    ("python_on_array", _set([*_LEAVES, 2, "python"], "float"), "a Python float is a 0-d"),
    ("impl_unknown", _set([*_LEAVES, 1, "impl"], "mod.Impl"), "unknown PRNG implementation"),
    ("impl_other_dtype", _set([*_LEAVES, 1, "dtype"], "key<rbg>"), "key has dtype key<fry>"),
    ("path_another_leaf", _set([*_LEAVES, 2, "path"], "['nu']"), r"record has the path \['nu'\]"),
    ("fewer_records", lambda meta: meta["leaves"].pop() and None, "more leaves than the 3"),
    (
        "more_records",
        lambda meta: meta["leaves"].append(meta["leaves"][0]),
        "has 4 leaves, `leaves` has 5",
    ),
    ("no_structure", _delete(_ROOT), "has no `structure`"),
    ("structure_a_list", _set(_ROOT, []), "`structure` must be an object"),
    ("node_missing", _delete([*_ROOT, "node"]), "at <root> has no `node`"),
    ("node_an_int", _set([*_ROOT, "node"], 5), "`node` must be a string"),
    ("mapping_a_string", _set([*_ROOT, "mapping"], "yes"), "`mapping` must be a bool"),
    ("children_a_dict", _set(_CHILD, {}), "`children` must be a list"),
    ("child_a_string", _set([*_CHILD, 0], "leaf"), r"at \['count'\] must be an object"),
    ("keys_one_short", lambda meta: meta["structure"]["keys"].pop() and None, "3 keys, 4 names"),
    ("key_an_int", _set([*_ROOT, "keys", 0], 0), "`keys` must be distinct strings"),
    ("keys_repeated", _set([*_ROOT, "keys", 1], "['count']"), "`keys` must be distinct"),
    ("name_a_list", _set([*_ROOT, "names", 0], [1]), "`names` must hold strings and numbers"),
    ("names_repeated", _set([*_ROOT, "names", 1], "count"), "`names` must be distinct"),
    ("index_missing", _delete([*_CHILD, 0, "index"]), "has no `index`"),
    ("index_a_string", _set([*_CHILD, 0, "index"], "0"), "`index` must be an int, found str"),
    ("index_false", _set([*_CHILD, 0, "index"], False), "`index` must be an int, found bool"),
    ("index_out_of_range", _set([*_CHILD, 3, "index"], 99), "has `index` 99"),
    ("index_negative", _set([*_CHILD, 3, "index"], -1), "has `index` -1"),
    ("index_repeated", _set([*_CHILD, 1, "index"], 0), "has `index` 0; .* leaf number 1"),
    ("nested_past_the_bound", _nest(300), "nests more than 256 levels"),
    ("nested_past_json", _json_nested_past_its_parser, "too deeply for the JSON parser"),
]


@pytest.mark.parametrize(
    ("edit", "message"), [pytest.param(e, m, id=name) for name, e, m in _CORRUPTIONS]
)
def test_malformed_metadata_raises_checkpoint_error(tmp_path, edit, message):
    path, tree = _rich_checkpoint(tmp_path)
    _rewrite(path, edit)
    for like in (None, tree):
        with pytest.raises(gx.CheckpointError, match=message) as error:
            gx.load_state(path, like=like)
        assert "rich.npz" in str(error.value)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"evil.npy": _npy(np.zeros(1))}, r"unexpected: \['evil.npy'\]"),
        ({"leaf_1": b"no suffix"}, r"unexpected: \['leaf_1'\]"),
        ({_DIGEST: _npy(np.zeros(63, np.uint8))}, "'__gradxform_meta_sha256__'"),
    ],
    ids=["extra_entry", "entry_without_suffix", "short_digest"],
)
def test_entries_must_match_the_metadata(tmp_path, members, message):
    path, tree = _small_checkpoint(tmp_path)
    _rewrite(path, members=members)
    for like in (None, tree):
        with pytest.raises(gx.CheckpointError, match=message):
            gx.load_state(path, like=like)


def test_missing_leaf_entry_raises(tmp_path):
    path, tree = _small_checkpoint(tmp_path)
    members = _members(path)
    del members["leaf_1.npy"]
    _write_members(path, members)
    for like in (None, tree):
        with pytest.raises(gx.CheckpointError, match=r"missing: \['leaf_1.npy'\]"):
            gx.load_state(path, like=like)


def _swap_leaves(path, *, renumber):
    """Swaps the two leaves' entries and records (each record still matching its entry's
    bytes), and with ``renumber`` the structure's indices too, as a crafted file could."""
    members = _members(path)
    swapped = {"leaf_0.npy": members["leaf_1.npy"], "leaf_1.npy": members["leaf_0.npy"]}

    def edit(meta):
        meta["leaves"].reverse()
        if renumber:
            for child in meta["structure"]["children"]:
                child["index"] = 1 - child["index"]

    _rewrite(path, edit, members=swapped)


@pytest.mark.parametrize(
    ("renumber", "message"),
    [(True, r"\['a'\] has `index` 1; depth-first, it is leaf number 0"), (False, "the path")],
    ids=["indices_permuted", "records_permuted"],
)
def test_loading_with_and_without_like_reads_the_same_places(tmp_path, renumber, message):
    tree = {"a": np.asarray([1.0, 2.0], np.float32), "b": np.asarray([3.0, 4.0], np.float32)}
    path = tmp_path / "swapped.npz"
    gx.save_state(path, tree)
    _swap_leaves(path, renumber=renumber)
    for like in (None, tree):
        with pytest.raises(gx.CheckpointError, match=message):
            gx.load_state(path, like=like)


def test_deflated_entries_load(tmp_path):
    # Saving stores entries; other zip tools may deflate them, and those load too.
    tree = _varied_tree()
    path = tmp_path / "deflated.npz"
    gx.save_state(path, tree)
    _write_members(path, _members(path), compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    loaded = gx.load_state(path, like=tree)
    assert jnp.array_equal(*(jax.random.key_data(t["key"]) for t in (tree, loaded)))
    del tree["key"], loaded["key"]
    _assert_bitwise_equal(loaded, tree)


_BOMB_BYTES = 200 << 20
_TWO_ZEROS = _npy(np.zeros(2, np.float32))  # what leaf 0 below truly is: a header and 8 bytes


def _zip_bomb(path, *, header_shape, declared_size=None, declared_crc=None):
    """Replaces leaf 0 (two float32 zeros) with a deflated entry of a .npy header of
    ``header_shape`` and 200 MB of zeros (about 200 kB on disk); ``declared_size`` and
    ``declared_crc`` overwrite what the zip's central directory says of it. Returns the
    header's length."""
    members = _members(path)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            if name != "leaf_0.npy":
                archive.writestr(name, data)
                continue
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as entry:
                header = io.BytesIO()
                fields = {"descr": "<f4", "fortran_order": False, "shape": header_shape}
                np.lib.format.write_array_header_1_0(header, fields)
                entry.write(header.getvalue())
                zeros = bytes(1 << 20)
                for _ in range(_BOMB_BYTES // len(zeros)):
                    entry.write(zeros)
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02" + bytes(12))  # zipfile zeroes version, flags and time
    while data[central + 46 : central + 46 + len(b"leaf_0.npy")] != b"leaf_0.npy":
        central = data.find(b"PK\x01\x02", central + 4)
    if declared_crc is not None:
        data[central + 16 : central + 20] = declared_crc.to_bytes(4, "little")
    if declared_size is not None:
        data[central + 24 : central + 28] = declared_size.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return len(header.getvalue())


@pytest.mark.parametrize("variant", ["true_size", "false_size", "false_size_and_crc"])
def test_zip_bomb_is_refused_without_inflating_it(tmp_path, variant):
    path = tmp_path / "bomb.npz"
    gx.save_state(path, {"x": np.zeros(2, np.float32)})  # the record says 8 bytes of data
    if variant == "true_size":
        header = _zip_bomb(path, header_shape=(_BOMB_BYTES // 4,))
        message = (
            f"'leaf_0' declares {header + _BOMB_BYTES} bytes uncompressed; its record implies "
            "8 bytes of data"
        )
    elif variant == "false_size":
        # zipfile stops at the declared size, so the CRC fails while reading the header.
        _zip_bomb(path, header_shape=(_BOMB_BYTES // 4,), declared_size=len(_TWO_ZEROS))
        message = "'leaf_0' is truncated or corrupted"
    else:
        # The declared bytes (header and two zeros) agree with every record and checksum; the
        # 200 MB after them must never be inflated.
        crc = zlib.crc32(_TWO_ZEROS)
        _zip_bomb(path, header_shape=(2,), declared_size=len(_TWO_ZEROS), declared_crc=crc)
        message = None
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        try:
            loaded, error = gx.load_state(path), None
        except gx.CheckpointError as caught:
            loaded, error = None, caught
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # far below the 200 MB the entry inflates to
    if message is None:
        assert error is None
        np.testing.assert_array_equal(loaded["x"], np.zeros(2, np.float32))
    else:
        assert error is not None and re.search(message, str(error)), error


# ----------------------------------------------------------------------------------------------
# Atomic writes.


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    old = gx.adam(1e-3).init(_params())
    gx.save_state(path, old)
    before = path.read_bytes()

    real_write = checkpoint.write._write_entry
    written = []

    def write_then_crash(archive, name, array):
        if len(written) == 2:
            raise OSError("disk full (simulated)")
        real_write(archive, name, array)
        written.append(name)

    monkeypatch.setattr(checkpoint.write, "_write_entry", write_then_crash)
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


def test_interrupted_save_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    gx.save_state(path, {"x": jnp.zeros(2)})
    before = path.read_bytes()
    real_write = checkpoint.write._write_entry

    def write_then_interrupt(archive, name, array):
        real_write(archive, name, array)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.write, "_write_entry", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        gx.save_state(path, {"x": jnp.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]
    assert path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604, 0o444])
def test_overwrite_keeps_the_permission_bits(tmp_path, mode):
    path = tmp_path / "state.npz"
    gx.save_state(path, {"x": jnp.zeros(2)})
    os.chmod(path, mode)
    gx.save_state(path, {"x": jnp.ones(2)})
    assert stat.S_IMODE(path.stat().st_mode) == mode
    np.testing.assert_array_equal(gx.load_state(path, like={"x": jnp.zeros(2)})["x"], [1, 1])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027])
def test_new_file_gets_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        gx.save_state(tmp_path / "state.npz", {"x": jnp.zeros(2)})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "state.npz").stat().st_mode) == 0o666 & ~umask


# A save that stops for good after writing its first entry, until it is killed.
_HANGING_SAVE = """
import sys, time
import jax.numpy as jnp
import numpy as np
import gradxform as gx

real_write = np.lib.format.write_array

def write_then_hang(*args, **kwargs):
    real_write(*args, **kwargs)
    print("writing", flush=True)
    time.sleep(300)

np.lib.format.write_array = write_then_hang
gx.save_state(sys.argv[1], {"a": jnp.zeros(1000), "b": jnp.ones(3)})
"""


def _start_hanging_save(path):
    process = subprocess.Popen(
        [sys.executable, "-c", _HANGING_SAVE, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=_subprocess_env(),
    )
    assert process.stdout.readline() == "writing\n"
    return process


def _kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    process.stdout.close()


def test_next_save_removes_temporaries_of_killed_saves(tmp_path):
    path = tmp_path / "state.npz"
    gx.save_state(path, {"x": jnp.zeros(2)})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "target").write_text("not a temporary")
    hexes = iter(f"{i:032x}" for i in range(1, 100))
    # Names that are not state.npz's temporaries, or not regular files: all must stay.
    kept = [
        f".other.npz.gradxform-tmp.{next(hexes)}",  # another target's
        f"state.npz.gradxform-tmp.{next(hexes)}",  # no leading dot
        f".state.npz.gradxform-tmp.{next(hexes)}.bak",
        ".state.npz.gradxform-tmp.notes",
        f".state.npz.gradxform-tmp.{'AB' * 16}",  # not as uuid4().hex writes it
        "unrelated.txt",
    ]
    for name in kept:
        (tmp_path / name).write_text("keep")
    link = tmp_path / f".state.npz.gradxform-tmp.{next(hexes)}"
    link.symlink_to(elsewhere / "target")
    directory = tmp_path / f".state.npz.gradxform-tmp.{next(hexes)}"
    directory.mkdir()
    # Leftovers of killed saves: two made by hand, one by a save killed mid-write.
    stale = [tmp_path / f".state.npz.gradxform-tmp.{next(hexes)}" for _ in range(2)]
    for leftover in stale:
        leftover.write_bytes(b"\0" * 1000)
    before = {p.name for p in tmp_path.iterdir()}
    process = _start_hanging_save(path)
    try:
        (killed,) = {p.name for p in tmp_path.iterdir()} - before
    finally:
        _kill(process)
    assert killed.startswith(".state.npz.")

    gx.save_state(path, {"x": jnp.ones(2)})
    remaining = {p.name for p in tmp_path.iterdir()}
    assert killed not in remaining
    assert not any(leftover.name in remaining for leftover in stale)
    assert remaining == {"state.npz", "elsewhere", link.name, directory.name, *kept}
    assert link.is_symlink() and (elsewhere / "target").read_text() == "not a temporary"
    np.testing.assert_array_equal(gx.load_state(path, like={"x": jnp.zeros(2)})["x"], [1, 1])


def test_save_in_progress_keeps_its_temporary(tmp_path):
    path = tmp_path / "state.npz"
    process = _start_hanging_save(path)
    try:
        (in_progress,) = [p.name for p in tmp_path.iterdir()]
        gx.save_state(path, {"x": jnp.ones(2)})  # the other save is alive: its file stays
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([in_progress, "state.npz"])
    finally:
        _kill(process)
    gx.save_state(path, {"x": jnp.ones(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]


def test_temporaries_of_long_names_stay_within_255_bytes(tmp_path):
    long_name = "é" * 120 + ".npz"  # 244 bytes in UTF-8
    prefix = checkpoint.write.temporary_prefix(long_name)
    assert len(os.fsencode(prefix)) + 32 <= 255
    assert prefix != checkpoint.write.temporary_prefix("é" * 121 + ".npz")
    stale = tmp_path / f"{prefix}{'0' * 32}"
    stale.write_bytes(b"left by a killed save")
    gx.save_state(tmp_path / long_name, {"x": jnp.zeros(2)})
    assert [p.name for p in tmp_path.iterdir()] == [long_name]


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
        env=_subprocess_env(),
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
