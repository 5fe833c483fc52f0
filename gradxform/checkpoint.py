"""Checkpoints: a tree of arrays (optimizer state, params) saved to one file, loaded back bitwise.

:func:`save_state` writes any pytree of arrays and numbers (NamedTuple states, dicts, lists,
tuples, ``None``, int32 counters, bool flags, bfloat16/float16/float32/float64/complex leaves,
typed PRNG keys) to a single ``.npz`` file; :func:`load_state` reads it back, rebuilt on a
template tree (``like``) or, for inspection, as plain dicts and lists.

The file is an ordinary NumPy ``.npz`` archive, readable without pickle
(``np.load(path, allow_pickle=False)``):

- ``leaf_<i>``: the ``i``-th leaf, in ``jax.tree.leaves`` order. NumPy has no bfloat16 (nor
  the float8/int4 types), so leaves of those dtypes hold their raw bytes as unsigned integers
  of the same width (bfloat16 as uint16); PRNG keys hold their key data.
- ``__gradxform_meta__``: UTF-8 JSON, as uint8: the format name and version, the tree's
  structure (node types and keys, so that it can be compared with ``like`` and rebuilt
  without it), ``str`` of the treedef (for reading), and per leaf its path
  (``jax.tree_util.keystr``), dtype, shape and the SHA-256 of its stored bytes.
- ``__gradxform_meta_sha256__``: the SHA-256 of the JSON, as uint8 hex digits.

Every byte that decides the loaded values is covered by a checksum, so a truncated or
corrupted file raises :class:`CheckpointError`; it never loads as a wrong state. Writes are
atomic: the archive goes to a temporary file in the target's directory, is flushed to disk,
and replaces the target in one ``os.replace``, so a crash while saving leaves the previous
checkpoint whole (at worst a stray ``.<name>.<random>.tmp`` file next to it).

Arrays are gathered to the host of the calling process: this is for single-process training.
For multi-host checkpoints of arrays no process holds whole, use Orbax.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import uuid
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CheckpointError", "load_state", "save_state"]

FORMAT_NAME = "gradxform.checkpoint"
FORMAT_VERSION = 1

_META = "__gradxform_meta__"
_META_DIGEST = "__gradxform_meta_sha256__"
_PYTHON_SCALARS = (bool, int, float, complex)  # bool first: it is also an int
_MAX_LISTED = 20  # differences listed in a mismatch error; the rest are counted


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (truncated, corrupted, not a checkpoint), or whose
    tree does not match the ``like`` tree it is loaded into."""


# ----------------------------------------------------------------------------------------------
# Describing a tree: its structure as JSON, and its leaves in ``jax.tree.leaves`` order.


def _type_name(cls: type) -> str:
    if cls in (dict, list, tuple):
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _short_type_name(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _json_key(key: Any) -> Any:
    """A dict key as JSON can hold it: strings and numbers as they are, others as ``repr``."""
    if key is None or isinstance(key, str | bool | int | float):
        return key
    return repr(key)


def _child_name(key: Any) -> Any:
    if isinstance(key, jax.tree_util.DictKey):
        return _json_key(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return key.idx
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return key.key
    return repr(key)


def _is_mapping_node(node: Any, keys: list) -> bool:
    if isinstance(node, dict) or hasattr(type(node), "_fields"):
        return True
    return any(isinstance(k, jax.tree_util.DictKey | jax.tree_util.GetAttrKey) for k in keys)


def _describe(tree: Any) -> tuple[dict, list[tuple[str, Any]]]:
    """The structure of ``tree`` as a JSON-able dict, and its ``(path, leaf)`` pairs.

    Leaves are numbered depth first in the order JAX flattens children, which is
    ``jax.tree.leaves`` order. ``None`` is a node without children, as in JAX.
    """
    leaves: list[tuple[str, Any]] = []

    def visit(node: Any, path: tuple) -> dict:
        if node is None:
            return {"node": "None"}
        # One level of flattening: every child is a leaf to this call.
        children, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
        if len(children) == 1 and children[0][0] == ():
            leaves.append((jax.tree_util.keystr(path), node))
            return {"node": "leaf", "index": len(leaves) - 1}
        keys = [key_path[0] for key_path, _ in children]
        return {
            "node": _type_name(type(node)),
            "mapping": _is_mapping_node(node, keys),
            "keys": [jax.tree_util.keystr((k,)) for k in keys],
            "names": [_child_name(k) for k in keys],
            "children": [visit(child, (*path, key_path[0])) for key_path, child in children],
        }

    return visit(tree, ()), leaves


def _display_path(path: str) -> str:
    return path or "<root>"


def _display_node(description: dict) -> str:
    node = description["node"]
    if node == "leaf":
        return "a leaf"
    if node == "None":
        return "None"
    return _short_type_name(node)


def _structure_differences(expected: dict, found: dict, path: str, out: list[str]) -> None:
    """Appends to ``out`` where ``found`` (the file) departs from ``expected`` (``like``)."""
    if expected["node"] != found["node"]:
        out.append(
            f"{_display_path(path)}: expected {_display_node(expected)}, "
            f"found {_display_node(found)}"
        )
        return
    if expected["node"] in ("leaf", "None"):
        return
    found_children = dict(zip(found["keys"], found["children"], strict=True))
    expected_keys = set(expected["keys"])
    for key, child in zip(expected["keys"], expected["children"], strict=True):
        if key in found_children:
            _structure_differences(child, found_children[key], path + key, out)
        else:
            out.append(f"{path + key}: in `like` but missing from the checkpoint")
    for key in found["keys"]:
        if key not in expected_keys:
            out.append(f"{path + key}: in the checkpoint but not in `like`")
    if set(found_children) == expected_keys and found["keys"] != expected["keys"]:
        # Leaves are matched by position, so the children's order must agree too.
        out.append(
            f"{_display_path(path)}: children in another order: expected "
            f"{expected['keys']}, found {found['keys']}"
        )


# ----------------------------------------------------------------------------------------------
# Leaves: what is stored for each, and how it comes back.


def _is_key_dtype(dtype: Any) -> bool:
    return jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _is_key_array(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and _is_key_dtype(leaf.dtype)


def _leaf_signature(path: str, leaf: Any, role: str, *, abstract_ok: bool = False) -> dict:
    """``{"dtype", "shape"}`` of a leaf (plus ``"python"`` for a Python number), or a
    TypeError naming the path. ``abstract_ok`` also accepts ``jax.ShapeDtypeStruct`` s (and
    other objects with a shape and a dtype), which describe a leaf without holding one."""
    if _is_python_number(leaf):
        python = _python_type_name(leaf)
        try:
            dtype = np.asarray(leaf).dtype
        except OverflowError:
            raise TypeError(
                f"{role} leaf {_display_path(path)} is the int {leaf}, too large for int64"
            ) from None
        return {"dtype": dtype.name, "shape": [], "python": python}
    dtype = getattr(leaf, "dtype", None)
    shape = getattr(leaf, "shape", None)
    is_array = isinstance(leaf, jax.Array | np.ndarray | np.generic)
    if dtype is None or shape is None or not (is_array or abstract_ok):
        raise TypeError(
            f"{role} leaf {_display_path(path)} is a {type(leaf).__name__}; checkpoints hold "
            "arrays and Python numbers only"
        )
    if _is_key_dtype(dtype):
        return {"dtype": str(dtype), "shape": list(shape)}
    dtype = np.dtype(dtype)
    if not _storable_dtype(dtype):
        raise TypeError(
            f"{role} leaf {_display_path(path)} has dtype {dtype}, which checkpoints do not "
            "hold (they hold booleans, integers, floats including bfloat16, and complex)"
        )
    return {"dtype": dtype.name, "shape": list(shape)}


def _storable_dtype(dtype: np.dtype) -> bool:
    if dtype.kind in "biufc" and dtype.isbuiltin == 1:
        return True
    return _is_raw_dtype(dtype)


def _is_raw_dtype(dtype: np.dtype) -> bool:
    """Dtypes JAX adds to NumPy (bfloat16, float8_*, int4, ...): stored as their raw bytes."""
    if dtype.kind != "V" or dtype.names is not None:
        return False
    try:
        return jnp.dtype(dtype.name) == dtype
    except TypeError:
        return False


def _to_stored(leaf: Any) -> np.ndarray:
    """The host array written for a leaf: NumPy-native, C-contiguous."""
    if _is_key_array(leaf):
        array = np.asarray(jax.random.key_data(leaf))
    else:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            raise ValueError(
                "save_state: a leaf is sharded over several processes and no process holds it "
                "whole; save multi-host arrays with Orbax"
            )
        array = np.asarray(leaf)
        if _is_raw_dtype(array.dtype):
            array = array.view(np.dtype(f"u{array.dtype.itemsize}"))
    # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
    return np.array(array, order="C", copy=None)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(
        np.array(array, order="C", copy=None).reshape(-1).view(np.uint8)
    ).hexdigest()


def _from_stored(array: np.ndarray, record: dict) -> Any:
    """The stored array with the dtype it was saved with (a PRNG key array for keys)."""
    if "impl" in record:
        return jax.random.wrap_key_data(array, impl=record["impl"])
    if array.dtype.name != record["dtype"]:
        array = array.view(jnp.dtype(record["dtype"]))
    return array


def _is_python_number(leaf: Any) -> bool:
    # np.float64 and np.complex128 subclass float and complex, but are NumPy scalars.
    return isinstance(leaf, _PYTHON_SCALARS) and not isinstance(leaf, np.generic)


def _python_type_name(number: Any) -> str:
    return next(t.__name__ for t in _PYTHON_SCALARS if isinstance(number, t))


def _python_number(value: np.ndarray, python: str) -> Any:
    return getattr(builtins, python)(value.item())


# ----------------------------------------------------------------------------------------------
# Saving.


def _write_entry(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    """Writes one array to the archive as ``name.npy``, as ``np.savez`` does."""
    with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
        np.lib.format.write_array(entry, array, allow_pickle=False)


def _fsync_directory(directory: str) -> None:
    """Makes a rename durable; best effort (directories cannot be opened on every OS)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def save_state(path: str | os.PathLike, tree: Any) -> None:
    """Saves a tree of arrays (an optimizer state, params, or both) to one file, atomically.

    The file is a NumPy ``.npz`` archive (see the module docstring for its layout) holding
    each leaf's exact bytes, the tree's structure, and SHA-256 checksums. It is written to a
    temporary file in the same directory, flushed and fsynced, then moved onto ``path`` with
    ``os.replace``: readers see either the old file or the new one, never a partial one.

    Args:
      path: the file to write (no suffix is added).
      tree: a pytree whose leaves are arrays (JAX or NumPy, any of bool, integer, float
        including bfloat16, complex, and typed PRNG keys) or Python numbers. ``None`` and
        empty nodes (``EmptyState()``, ``{}``) are kept.

    Raises:
      TypeError: a leaf that is not an array or a number (the error names its path).

    Example:
      >>> import os, tempfile, jax.numpy as jnp, gradxform as gx
      >>> opt = gx.adam(1e-3)
      >>> params = {"w": jnp.ones(3, jnp.bfloat16)}
      >>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
      >>> gx.save_state(path, opt.init(params))
      >>> gx.load_state(path, like=opt.init(params))[0].mu["w"].dtype
      dtype(bfloat16)
    """
    path = os.fspath(path)
    structure, leaves = _describe(tree)
    signatures = [_leaf_signature(p, leaf, "save_state: the tree's") for p, leaf in leaves]
    directory = os.path.dirname(os.path.abspath(path))
    # Truncated so that the temporary name stays within the usual 255-byte limit.
    prefix = os.path.basename(path)[:120]
    temporary = os.path.join(directory, f".{prefix}.{uuid.uuid4().hex}.tmp")
    # 0o666 and the process umask give the permissions of any newly created file.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            records = []
            with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for index, ((leaf_path, leaf), signature) in enumerate(
                    zip(leaves, signatures, strict=True)
                ):
                    # One leaf on the host at a time, so saving needs little extra memory.
                    stored = _to_stored(leaf)
                    _write_entry(archive, f"leaf_{index}", stored)
                    record = {"path": leaf_path, **signature, "sha256": _digest(stored)}
                    if _is_key_array(leaf):
                        record["impl"] = str(jax.random.key_impl(leaf))
                    records.append(record)
                meta = {
                    "format": FORMAT_NAME,
                    "version": FORMAT_VERSION,
                    "treedef": str(jax.tree.structure(tree)),
                    "structure": structure,
                    "leaves": records,
                }
                meta_bytes = json.dumps(meta, sort_keys=True).encode()
                _write_entry(archive, _META, np.frombuffer(meta_bytes, np.uint8))
                meta_digest = hashlib.sha256(meta_bytes).hexdigest().encode()
                _write_entry(archive, _META_DIGEST, np.frombuffer(meta_digest, np.uint8))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


# ----------------------------------------------------------------------------------------------
# Loading.


def _unreadable(path: str, what: str, error: BaseException | None = None) -> CheckpointError:
    detail = f" ({type(error).__name__}: {error})" if error is not None else ""
    return CheckpointError(f"{path!r} is not a readable gradxform checkpoint: {what}{detail}")


class _Archive:
    """An opened checkpoint: its verified metadata, and verified leaves on demand."""

    def __init__(self, path: str):
        self.path = path
        try:
            archive = np.load(path, allow_pickle=False)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as error:
            raise _unreadable(
                path, "the file is truncated, corrupted, or not a checkpoint", error
            ) from error
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise _unreadable(path, "it is a single .npy array, not a checkpoint archive")
        self._archive = archive
        try:
            self.meta = self._read_meta()
        except BaseException:
            archive.close()
            raise

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._archive.close()

    def _entry(self, name: str) -> np.ndarray:
        if name not in self._archive.files:
            raise _unreadable(self.path, f"the entry {name!r} is missing")
        try:
            array = self._archive[name]
        except Exception as error:
            raise _unreadable(
                self.path, f"the entry {name!r} is truncated or corrupted", error
            ) from error
        if not isinstance(array, np.ndarray):  # NumPy returns raw bytes when the header is bad
            raise _unreadable(self.path, f"the entry {name!r} is not an array (corrupted)")
        return array

    def _read_meta(self) -> dict:
        if _META not in self._archive.files:
            raise _unreadable(self.path, "it is an .npz archive without gradxform metadata")
        meta_bytes = self._entry(_META).tobytes()
        expected = self._entry(_META_DIGEST).tobytes()
        if hashlib.sha256(meta_bytes).hexdigest().encode() != expected:
            raise _unreadable(self.path, "the metadata does not match its checksum (corrupted)")
        try:
            meta = json.loads(meta_bytes)
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            raise _unreadable(self.path, "the metadata is not JSON", error) from error
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            format_name = meta.get("format") if isinstance(meta, dict) else None
            raise _unreadable(self.path, f"unknown format {format_name!r}")
        if meta.get("version") != FORMAT_VERSION:
            raise _unreadable(
                self.path,
                f"format version {meta.get('version')!r}; this gradxform reads version "
                f"{FORMAT_VERSION}",
            )
        return meta

    def leaf(self, index: int) -> Any:
        """Leaf ``index``, checked against its checksum, as an array of its saved dtype."""
        record = self.meta["leaves"][index]
        array = self._entry(f"leaf_{index}")
        if _digest(array) != record["sha256"]:
            raise _unreadable(
                self.path,
                f"the leaf {_display_path(record['path'])} does not match its checksum (corrupted)",
            )
        value = _from_stored(array, record)
        if list(np.shape(value)) != record["shape"]:
            raise _unreadable(
                self.path,
                f"the leaf {_display_path(record['path'])} has shape {np.shape(value)}, its "
                f"record says {tuple(record['shape'])}",
            )
        return value


def _plain(description: dict, archive: _Archive) -> Any:
    node = description["node"]
    if node == "None":
        return None
    if node == "leaf":
        index = description["index"]
        value = archive.leaf(index)
        python = archive.meta["leaves"][index].get("python")
        return value if python is None else _python_number(value, python)
    children = [_plain(child, archive) for child in description["children"]]
    if description["mapping"]:
        return dict(zip(description["names"], children, strict=True))
    return children


def _as_like(value: Any, like_leaf: Any) -> Any:
    """A loaded leaf in the form of ``like``'s leaf, on its devices."""
    if _is_python_number(like_leaf):
        return _python_number(value, _python_type_name(like_leaf))
    if isinstance(like_leaf, np.generic):
        return value[()]
    if isinstance(like_leaf, np.ndarray):
        return value
    sharding = getattr(like_leaf, "sharding", None)
    if sharding is None or (isinstance(like_leaf, jax.Array) and not like_leaf.committed):
        return jax.device_put(value)  # the default device, uncommitted like `like_leaf`
    return jax.device_put(value, sharding)


def _mismatch(path: str, differences: list[str]) -> CheckpointError:
    listed = "\n  ".join(differences[:_MAX_LISTED])
    more = len(differences) - _MAX_LISTED
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return CheckpointError(
        f"the checkpoint {path!r} does not match `like` ({len(differences)} "
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

    The file's structure, leaf shapes and dtypes must equal ``like``'s; nothing is cast.

    Without ``like``, the tree comes back as plain Python containers, for inspection:
    NamedTuples, dicts and other nodes with named children as dicts, tuples and lists as
    lists, leaves as NumPy arrays (bfloat16 through ``ml_dtypes``), Python numbers, or JAX
    PRNG key arrays.

    Args:
      path: a file written by :func:`save_state`.
      like: a template tree, or ``None`` for the plain form.

    Returns:
      The saved tree.

    Raises:
      CheckpointError: the file is truncated, corrupted (a checksum fails) or not a gradxform
        checkpoint; or, with ``like``, its structure, shapes or dtypes differ from ``like``'s
        (the message lists each difference as ``path: expected ..., found ...``).
      FileNotFoundError: there is no file at ``path``.
    """
    path = os.fspath(path)
    with _Archive(path) as archive:
        meta = archive.meta
        if like is None:
            return _plain(meta["structure"], archive)

        expected_structure, like_leaves = _describe(like)
        differences: list[str] = []
        _structure_differences(expected_structure, meta["structure"], "", differences)
        if not differences:
            # The same structure numbers the leaves alike in both trees.
            for (leaf_path, like_leaf), record in zip(like_leaves, meta["leaves"], strict=True):
                expected = _leaf_signature(
                    leaf_path, like_leaf, "load_state: `like`'s", abstract_ok=True
                )
                for field in ("dtype", "shape"):
                    if expected[field] != record[field]:
                        shown = (
                            (tuple(expected[field]), tuple(record[field]))
                            if field == "shape"
                            else (expected[field], record[field])
                        )
                        differences.append(
                            f"{_display_path(leaf_path)}: {field}: expected {shown[0]}, "
                            f"found {shown[1]}"
                        )
        if differences:
            raise _mismatch(path, differences)
        values = [
            _as_like(archive.leaf(index), like_leaf)
            for index, (_, like_leaf) in enumerate(like_leaves)
        ]
        return jax.tree.unflatten(jax.tree.structure(like), values)
