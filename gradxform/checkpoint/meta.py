"""Checking a checkpoint's metadata, which is untrusted input.

The metadata's SHA-256 only detects accidents: anyone can edit the JSON and recompute it. So
every field is checked for its type and range before use, and :func:`parse_meta` either
returns metadata that the rest of the package can use without further checks, or raises
:class:`CheckpointError` saying what is wrong and where.

Besides each field on its own, the checks tie the structure to the leaf records: the structure's
leaves, in depth-first order, are numbered 0, 1, 2, ... (so ``index`` is neither out of range,
repeated nor out of order); there are as many records as leaves; and record ``i``'s path is the
path at which the structure puts leaf ``i``. Loading with and without ``like`` therefore reads
the same entry into the same place.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NamedTuple

from gradxform.checkpoint.kinds import ARRAY_DTYPES, KEY_IMPLS, PYTHON_KINDS, Record
from gradxform.checkpoint.schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_ARRAY_BYTES,
    MAX_DEPTH,
    MAX_NDIM,
    display_path,
    shown,
    unreadable,
)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME_TYPES = (str, int, float, bool, type(None))  # what a plain dict's keys may be


class Meta(NamedTuple):
    structure: dict  # a checked description (see gradxform.checkpoint.tree)
    records: list[Record]  # one per leaf, in the structure's leaf order


class _MalformedError(Exception):
    """A problem found in the metadata; :func:`parse_meta` turns it into a CheckpointError."""


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _field(mapping: dict, key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in mapping:
        raise _MalformedError(f"{where} has no `{key}`")
    value = mapping[key]
    # bool is an int to isinstance; a count or a size must not be one.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise _MalformedError(
            f"{where}: `{key}` must be {_names(types)}, found {_type(value)} {shown(value)}"
        )
    return value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _names(types: type | tuple[type, ...]) -> str:
    words = {dict: "an object", list: "a list", str: "a string", int: "an int", bool: "a bool"}
    return " or ".join(words.get(t, t.__name__) for t in _tuple(types))


def _shape(value: Any, where: str) -> tuple[int, ...]:
    ok = isinstance(value, list) and len(value) <= MAX_NDIM
    ok = ok and all(type(d) is int and d >= 0 for d in value)
    if not ok:
        raise _MalformedError(
            f"{where}: `shape` must be a list of at most {MAX_NDIM} non-negative ints, "
            f"found {shown(value)}"
        )
    return tuple(value)


def _record(value: Any, i: int) -> Record:
    where = f"leaves[{i}]"
    if not isinstance(value, dict):
        raise _MalformedError(f"{where} must be an object, found {_type(value)}")
    path = _field(value, "path", str, where)
    where = f"leaves[{i}] ({display_path(path)})"
    dtype = _field(value, "dtype", str, where)
    shape = _shape(_field(value, "shape", list, where), where)
    sha256 = _field(value, "sha256", str, where)
    if not _SHA256.fullmatch(sha256):
        raise _MalformedError(f"{where}: `sha256` must be 64 hex digits, found {shown(sha256)}")
    python = _field(value, "python", str, where) if "python" in value else None
    impl = _field(value, "impl", str, where) if "impl" in value else None
    if impl is not None:
        if impl not in KEY_IMPLS:
            raise _MalformedError(
                f"{where}: unknown PRNG implementation {shown(impl)} (known: "
                f"{', '.join(KEY_IMPLS)})"
            )
        if dtype != KEY_IMPLS[impl].dtype:
            raise _MalformedError(
                f"{where}: a {impl} key has dtype {KEY_IMPLS[impl].dtype}, found {shown(dtype)}"
            )
    elif dtype not in ARRAY_DTYPES:
        raise _MalformedError(f"{where}: unknown or unsupported dtype {shown(dtype)}")
    if python is not None:
        kind = PYTHON_KINDS.get(python)
        if kind is None:
            raise _MalformedError(
                f"{where}: `python` must be one of {', '.join(PYTHON_KINDS)}, found {shown(python)}"
            )
        if shape != () or dtype not in kind.dtypes:
            raise _MalformedError(
                f"{where}: a Python {python} is a 0-d array of dtype "
                f"{' or '.join(sorted(kind.dtypes))}, found shape {shape} and dtype {dtype}"
            )
    record = Record(path, dtype, shape, sha256, python, impl)
    if math.prod(max(d, 1) for d in record.stored_shape) * record.stored_dtype.itemsize > (
        MAX_ARRAY_BYTES
    ):
        raise _MalformedError(f"{where}: the shape {shape} is too large for any array")
    return record


def _check_node(node: Any, where: str) -> list[tuple[str, Any]]:
    """The ``(key, child)`` pairs of a node, after checking the node's own fields (not its
    children's)."""
    if not isinstance(node, dict):
        raise _MalformedError(f"the structure at {where} must be an object, found {_type(node)}")
    kind = _field(node, "node", str, f"the structure at {where}")
    if kind in ("leaf", "None"):
        return []
    where = f"the structure at {where}"
    _field(node, "mapping", bool, where)
    keys = _field(node, "keys", list, where)
    names = _field(node, "names", list, where)
    children = _field(node, "children", list, where)
    if not len(keys) == len(names) == len(children):
        raise _MalformedError(
            f"{where}: {len(keys)} keys, {len(names)} names and {len(children)} children"
        )
    if not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise _MalformedError(f"{where}: `keys` must be distinct strings, found {shown(keys)}")
    if not all(isinstance(n, _NAME_TYPES) for n in names):
        raise _MalformedError(
            f"{where}: `names` must hold strings and numbers, found {shown(names)}"
        )
    if node["mapping"] and len(set(names)) != len(names):
        raise _MalformedError(f"{where}: `names` must be distinct, found {shown(names)}")
    return list(zip(keys, children, strict=True))


def _check_structure(structure: Any, records: list[Record]) -> None:
    """Checks every node, and that leaf ``i`` in depth-first order is record ``i``, at its path.

    Iterative, with an explicit depth bound: the JSON may nest as deep as its parser allows.
    """
    count = 0
    stack: list[tuple[Any, str, int]] = [(structure, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _MalformedError(f"the structure nests more than {MAX_DEPTH} levels deep")
        children = _check_node(node, display_path(path))
        if node["node"] == "leaf":
            where = f"the structure's leaf at {display_path(path)}"
            index = _field(node, "index", int, where)
            if index != count:
                raise _MalformedError(
                    f"{where} has `index` {index}; depth-first, it is leaf number {count} "
                    f"(indices must be 0, 1, 2, ... in order, each once, below {len(records)})"
                )
            if count >= len(records):
                raise _MalformedError(
                    f"the structure has more leaves than the {len(records)} in `leaves`"
                )
            if records[count].path != path:
                raise _MalformedError(
                    f"{where} is leaf {count}, whose record has the path "
                    f"{display_path(records[count].path)}"
                )
            count += 1
        stack.extend((child, path + key, depth + 1) for key, child in reversed(children))
    if count != len(records):
        raise _MalformedError(f"the structure has {count} leaves, `leaves` has {len(records)}")


def parse_meta(meta_bytes: bytes, path: str) -> Meta:
    """Checked metadata from the JSON bytes of the file at ``path``, or a CheckpointError."""
    try:
        meta = json.loads(meta_bytes)
    except RecursionError as cause:
        raise unreadable(path, "the metadata nests too deeply for the JSON parser") from cause
    except ValueError as cause:  # JSONDecodeError, UnicodeDecodeError, over-long int literals
        raise unreadable(path, "the metadata is not JSON", cause) from cause
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        format_name = meta.get("format") if isinstance(meta, dict) else None
        raise unreadable(path, f"unknown format {shown(format_name)}")
    version = meta.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise unreadable(
            path, f"format version {shown(version)}; this gradxform reads version {FORMAT_VERSION}"
        )
    try:
        _field(meta, "treedef", str, "the metadata")  # for people reading the file; unused
        leaves = _field(meta, "leaves", list, "the metadata")
        records = [_record(value, i) for i, value in enumerate(leaves)]
        structure = _field(meta, "structure", dict, "the metadata")
        _check_structure(structure, records)
    except _MalformedError as malformed:
        raise unreadable(path, f"malformed metadata: {malformed}") from None
    return Meta(structure, records)
