"""Loading: :func:`load_state`, on a template tree (``like``) or as plain containers.

Both forms read the checked metadata (:mod:`gradxform.checkpoint.meta`), so they put the same
entry at the same path. Nothing is cast: a leaf whose dtype differs from ``like``'s, or that a
JAX array could not hold without changing it (float64 while ``jax_enable_x64`` is off), is an
error.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import jax
import numpy as np

from gradxform.checkpoint.archive import Archive
from gradxform.checkpoint.kinds import (
    ARRAY_DTYPES,
    digest,
    from_stored,
    is_python_number,
    leaf_signature,
    python_kind,
    python_number,
)
from gradxform.checkpoint.meta import Meta, parse_meta
from gradxform.checkpoint.schema import (
    MAX_LISTED,
    MAX_META_BYTES,
    META,
    META_DIGEST,
    SUFFIX,
    CheckpointError,
    display_path,
    leaf_entry,
    unreadable,
)
from gradxform.checkpoint.tree import describe, plain, structure_differences

_UINT8 = np.dtype(np.uint8)


def _read_meta(archive: Archive, path: str) -> Meta:
    names = archive.names()
    if META + SUFFIX not in names:
        raise unreadable(path, "it is an .npz archive without gradxform metadata")
    expected = archive.read(META_DIGEST, _UINT8, (64,)).tobytes()
    meta_bytes = archive.read(META, _UINT8, None, max_bytes=MAX_META_BYTES).tobytes()
    if hashlib.sha256(meta_bytes).hexdigest().encode() != expected:
        raise unreadable(path, "the metadata does not match its checksum (corrupted)")
    meta = parse_meta(meta_bytes, path)
    entries = {META, META_DIGEST, *(leaf_entry(i) for i in range(len(meta.records)))}
    entries = {name + SUFFIX for name in entries}
    if names != entries:
        extra = sorted(names - entries)[:5]
        missing = sorted(entries - names)[:5]
        raise unreadable(
            path,
            f"the archive's entries do not match its metadata (unexpected: {extra}, "
            f"missing: {missing})",
        )
    return meta


def _leaf(archive: Archive, meta: Meta, path: str, index: int) -> Any:
    """Leaf ``index``, checked against its checksum, with its saved dtype (NumPy arrays, or
    JAX arrays for PRNG keys)."""
    record = meta.records[index]
    array = archive.read(leaf_entry(index), record.stored_dtype, record.stored_shape)
    if digest(array) != record.sha256:
        raise unreadable(
            path, f"the leaf {display_path(record.path)} does not match its checksum (corrupted)"
        )
    return from_stored(array, record)


def _into_jax(like_leaf: Any) -> bool:
    return not (is_python_number(like_leaf) or isinstance(like_leaf, np.ndarray | np.generic))


def _as_like(value: Any, like_leaf: Any) -> Any:
    """A loaded leaf in the form of ``like``'s leaf, on its devices."""
    if is_python_number(like_leaf):
        return python_number(value, python_kind(like_leaf))
    if isinstance(like_leaf, np.generic):
        return value[()]
    if isinstance(like_leaf, np.ndarray):
        return value
    sharding = getattr(like_leaf, "sharding", None)
    if sharding is None or (isinstance(like_leaf, jax.Array) and not like_leaf.committed):
        return jax.device_put(value)  # the default device, uncommitted like `like_leaf`
    return jax.device_put(value, sharding)


def _leaf_differences(meta: Meta, like_leaves: list[tuple[str, Any]]) -> list[str]:
    """Where the (structurally equal) file's leaves differ from ``like``'s in dtype or shape,
    or could not become the JAX arrays ``like`` asks for without a change of dtype."""
    differences = []
    for (leaf_path, like_leaf), record in zip(like_leaves, meta.records, strict=True):
        expected = leaf_signature(leaf_path, like_leaf, "load_state: `like`'s", abstract_ok=True)
        shown = display_path(leaf_path)
        if expected["dtype"] != record.dtype:
            differences.append(
                f"{shown}: dtype: expected {expected['dtype']}, found {record.dtype}"
            )
        if tuple(expected["shape"]) != record.shape:
            differences.append(
                f"{shown}: shape: expected {tuple(expected['shape'])}, found {record.shape}"
            )
        if _into_jax(like_leaf) and record.impl is None:
            dtype = ARRAY_DTYPES[expected["dtype"]].dtype
            canonical = jax.dtypes.canonicalize_dtype(dtype)
            if canonical != dtype:
                differences.append(
                    f"{shown}: a JAX array of dtype {dtype} is {canonical} while "
                    "jax_enable_x64 is off, which would change the saved values; enable x64, "
                    "or give a NumPy array as this leaf of `like`"
                )
    return differences


def _check_loaded(path: str, leaf_path: str, value: Any, dtype: str) -> Any:
    """``value``, once it is sure that nothing on the way changed its dtype."""
    dtype_of = getattr(value, "dtype", None)  # not `or`: a dtype's truth is its field count
    found = str(np.asarray(value).dtype if dtype_of is None else dtype_of)
    if found != dtype:
        raise CheckpointError(
            f"load_state: the leaf {display_path(leaf_path)} of {path!r} came out as {found}, "
            f"not the {dtype} saved; nothing may change the saved values"
        )
    return value


def _mismatch(path: str, differences: list[str]) -> CheckpointError:
    listed = "\n  ".join(differences[:MAX_LISTED])
    more = len(differences) - MAX_LISTED
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return CheckpointError(
        f"load_state: the checkpoint {path!r} does not match `like` ({len(differences)} "
        f"difference{'s' if len(differences) != 1 else ''}):\n  {listed}{tail}\n"
        "Was it saved from another optimizer, other hyperparameters that change the state "
        "(e.g. momentum=0 keeps no buffer), or other params?"
    )


def load_state(path: str | os.PathLike, like: Any = None) -> Any:
    """Loads a tree saved by :func:`save_state`, bitwise.

    With ``like`` (say ``opt.init(params)`` for a fresh optimizer, or
    ``jax.eval_shape(opt.init, params)``), the result has ``like``'s tree structure (its
    NamedTuple classes, dicts, ``None`` s) and each leaf takes the form of ``like``'s leaf:

    - a JAX array (or a ``jax.ShapeDtypeStruct``) gives a JAX array, placed with that leaf's
      sharding (an uncommitted array gives an uncommitted array on the default device);
    - a NumPy array or scalar gives the same NumPy type; a Python number, a Python number.

    The file's structure, leaf shapes and dtypes must equal ``like``'s; nothing is cast. A
    64-bit leaf loads into a JAX array only while ``jax_enable_x64`` is on (otherwise JAX would
    round it to 32 bits); a NumPy ``like`` leaf takes it either way.

    Without ``like``, the tree comes back as plain Python containers, for inspection:
    NamedTuples, dicts and other nodes with named children as dicts, tuples and lists as
    lists, leaves as NumPy arrays (bfloat16 through ``ml_dtypes``), Python numbers, or JAX
    PRNG key arrays.

    The file is untrusted input: its metadata is checked in full, nothing it names selects code
    (dtypes, number types and PRNG implementations come from fixed tables), and no entry is
    inflated beyond the size its record implies.

    Args:
      path: a file written by :func:`save_state`.
      like: a template tree, or ``None`` for the plain form.

    Returns:
      The saved tree.

    Raises:
      CheckpointError: the file is truncated, corrupted (a checksum fails), malformed or not a
        gradxform checkpoint; or, with ``like``, its structure, shapes or dtypes differ from
        ``like``'s (the message lists each difference as ``path: expected ..., found ...``).
      FileNotFoundError: there is no file at ``path``.

    Example:
      >>> import os, tempfile, jax.numpy as jnp, gradxform as gx
      >>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
      >>> gx.save_state(path, {"count": 3, "w": jnp.array([1.0, 2.0])})
      >>> gx.load_state(path)  # without `like`: plain containers, NumPy leaves
      {'count': 3, 'w': array([1., 2.], dtype=float32)}
      >>> gx.load_state(path, like={"count": 0, "w": jnp.zeros(2)})["w"]  # like's forms
      Array([1., 2.], dtype=float32)
    """
    path = os.fspath(path)
    with Archive(path) as archive:
        meta = _read_meta(archive, path)
        if like is None:

            def plain_leaf(index: int) -> Any:
                value = _leaf(archive, meta, path, index)
                kind = meta.records[index].python
                return value if kind is None else python_number(value, kind)

            return plain(meta.structure, plain_leaf)

        expected_structure, like_leaves = describe(like, "load_state: `like`")
        differences = structure_differences(expected_structure, meta.structure)
        if not differences:
            # Equal structures number their leaves alike, and the file's records follow its
            # structure's leaf order (checked when its metadata was read).
            differences = _leaf_differences(meta, like_leaves)
        if differences:
            raise _mismatch(path, differences)
        values = []
        for index, ((leaf_path, like_leaf), record) in enumerate(
            zip(like_leaves, meta.records, strict=True)
        ):
            value = _as_like(_leaf(archive, meta, path, index), like_leaf)
            values.append(_check_loaded(path, leaf_path, value, record.dtype))
        return jax.tree.unflatten(jax.tree.structure(like), values)
