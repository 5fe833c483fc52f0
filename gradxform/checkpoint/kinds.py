"""The fixed table of what a checkpoint leaf may be, and how each kind is stored and rebuilt.

A leaf is one of:

- an array of a dtype in :data:`ARRAY_DTYPES`: bool, int8 to int64, uint8 to uint64, float16,
  float32, float64, complex64, complex128, and the dtypes JAX adds to NumPy (bfloat16, the
  float8 and float4 types, int4, uint4, int2, uint2), which are stored as their raw bytes in
  unsigned integers of the same width;
- a Python number (:data:`PYTHON_KINDS`), stored as a 0-d array of the dtype NumPy gives it;
- a typed PRNG key array of an implementation in :data:`KEY_IMPLS`, stored as its key data.

Loading looks the names a file records up in these tables and nowhere else: no name read from
a file is ever passed to ``getattr``, ``import``, ``np.dtype`` or JAX's PRNG registry. Anything
else (strings, objects, structured arrays, custom PRNG implementations) is refused on save and
on load.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.checkpoint.schema import display_path

_NATIVE_TYPES = (
    *(np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64),
    *(np.float16, np.float32, np.float64, np.complex64, np.complex128),
)
# JAX's additions to NumPy (from ml_dtypes), where this JAX version has them.
_RAW_NAMES = (
    *("bfloat16", "float8_e3m4", "float8_e4m3", "float8_e4m3b11fnuz", "float8_e4m3fn"),
    *("float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn"),
    *("int2", "int4", "uint2", "uint4"),
)


class ArrayKind(NamedTuple):
    dtype: np.dtype  # the leaf's dtype
    stored: np.dtype  # the dtype of the .npy entry holding it


def _array_kinds() -> dict[str, ArrayKind]:
    kinds = {np.dtype(t).name: ArrayKind(np.dtype(t), np.dtype(t)) for t in _NATIVE_TYPES}
    for name in _RAW_NAMES:
        scalar_type = getattr(jnp, name, None)  # a name from the tuple above, not from a file
        if scalar_type is not None:
            dtype = np.dtype(scalar_type)
            kinds[name] = ArrayKind(dtype, np.dtype(f"u{dtype.itemsize}"))
    return kinds


ARRAY_DTYPES: dict[str, ArrayKind] = _array_kinds()


class PythonKind(NamedTuple):
    type: type
    dtypes: frozenset[str]  # what np.asarray gives a number of this type


# bool first: a bool is also an int.
PYTHON_KINDS: dict[str, PythonKind] = {
    "bool": PythonKind(bool, frozenset({"bool"})),
    "int": PythonKind(int, frozenset({"int32", "int64", "uint64"})),
    "float": PythonKind(float, frozenset({"float64"})),
    "complex": PythonKind(complex, frozenset({"complex128"})),
}


class KeyKind(NamedTuple):
    name: str  # the implementation's name in JAX
    dtype: str  # str() of a key array's dtype
    data_shape: tuple[int, ...]  # trailing shape of its uint32 key data


KEY_IMPLS: dict[str, KeyKind] = {
    "threefry2x32": KeyKind("threefry2x32", "key<fry>", (2,)),
    "rbg": KeyKind("rbg", "key<rbg>", (4,)),
    "unsafe_rbg": KeyKind("unsafe_rbg", "key<urbg>", (4,)),
}
_KEY_DATA = np.dtype(np.uint32)


class Record(NamedTuple):
    """One leaf's entry in the metadata, checked against the tables above."""

    path: str
    dtype: str  # a key of ARRAY_DTYPES, or a KeyKind's dtype
    shape: tuple[int, ...]
    sha256: str
    python: str | None = None  # a key of PYTHON_KINDS
    impl: str | None = None  # a key of KEY_IMPLS

    @property
    def stored_dtype(self) -> np.dtype:
        return _KEY_DATA if self.impl is not None else ARRAY_DTYPES[self.dtype].stored

    @property
    def stored_shape(self) -> tuple[int, ...]:
        trailing = KEY_IMPLS[self.impl].data_shape if self.impl is not None else ()
        return (*self.shape, *trailing)

    def to_json(self) -> dict:
        record = {"path": self.path, "dtype": self.dtype, "shape": list(self.shape)}
        record["sha256"] = self.sha256
        if self.python is not None:
            record["python"] = self.python
        if self.impl is not None:
            record["impl"] = self.impl
        return record


# ----------------------------------------------------------------------------------------------
# Leaves of a tree in memory.


def is_python_number(leaf: Any) -> bool:
    # np.float64 and np.complex128 subclass float and complex, but are NumPy scalars.
    return isinstance(leaf, bool | int | float | complex) and not isinstance(leaf, np.generic)


def python_kind(number: Any) -> str:
    return next(name for name, kind in PYTHON_KINDS.items() if isinstance(number, kind.type))


def is_key_dtype(dtype: Any) -> bool:
    return jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _refused(role: str, path: str, what: str) -> TypeError:
    return TypeError(
        f"{role} leaf {display_path(path)} {what}; checkpoints hold arrays of bool, integer, "
        "float (including bfloat16 and float8), complex, typed PRNG keys of the threefry2x32, "
        "rbg or unsafe_rbg implementations, and Python numbers"
    )


def leaf_signature(path: str, leaf: Any, role: str, *, abstract_ok: bool = False) -> dict:
    """``{"dtype", "shape"}`` of a leaf (plus ``"python"`` for a Python number, ``"impl"`` for a
    PRNG key array), or a TypeError naming its path. ``abstract_ok`` also accepts
    ``jax.ShapeDtypeStruct`` s (and other objects with a shape and a dtype), which describe a
    leaf without holding one."""
    if is_python_number(leaf):
        try:
            number_dtype = np.asarray(leaf).dtype
        except OverflowError:
            raise TypeError(
                f"{role} leaf {display_path(path)} is the int {leaf}, too large for 64 bits"
            ) from None
        return {"dtype": number_dtype.name, "shape": (), "python": python_kind(leaf)}
    dtype = getattr(leaf, "dtype", None)
    shape = getattr(leaf, "shape", None)
    is_array = isinstance(leaf, jax.Array | np.ndarray | np.generic)
    if dtype is None or shape is None or not (is_array or abstract_ok):
        raise _refused(role, path, f"is a {type(leaf).__name__}")
    if is_key_dtype(dtype):
        if str(dtype) not in {kind.dtype for kind in KEY_IMPLS.values()}:
            raise _refused(role, path, f"is a PRNG key of dtype {dtype}")
        signature = {"dtype": str(dtype), "shape": tuple(shape)}
        if isinstance(leaf, jax.Array):
            name = str(jax.random.key_impl(leaf))
            if KEY_IMPLS.get(name, KeyKind("", "", ())).dtype != str(dtype):
                raise _refused(role, path, f"is a PRNG key of implementation {name}")
            signature["impl"] = name
        return signature
    dtype = np.dtype(dtype)
    kind = ARRAY_DTYPES.get(dtype.name)
    if kind is None or kind.dtype != dtype:  # != also refuses non-native byte orders
        raise _refused(role, path, f"has dtype {dtype.str} ({dtype})")
    return {"dtype": dtype.name, "shape": tuple(shape)}


def to_stored(leaf: Any) -> np.ndarray:
    """The host array written for a leaf: NumPy-native, C-contiguous."""
    if isinstance(leaf, jax.Array) and is_key_dtype(leaf.dtype):
        array = np.asarray(jax.random.key_data(leaf))
    else:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            raise ValueError(
                "save_state: a leaf is sharded over several processes and no process holds it "
                "whole; save multi-host arrays with Orbax"
            )
        array = np.asarray(leaf)
        stored = ARRAY_DTYPES[array.dtype.name].stored
        if stored != array.dtype:
            array = array.view(stored)
    # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
    return np.array(array, order="C", copy=None)


def digest(array: np.ndarray) -> str:
    """SHA-256 of an array's bytes in C order."""
    data = np.array(array, order="C", copy=None).reshape(-1).view(np.uint8)
    # numpy declares the buffer protocol to type checkers for Python >= 3.12 only (PEP 688).
    return hashlib.sha256(data).hexdigest()  # type: ignore[arg-type]


def from_stored(array: np.ndarray, record: Record) -> Any:
    """A stored array with the dtype it was saved with: a PRNG key array for keys, a NumPy
    array otherwise (Python numbers are made by :func:`python_number`)."""
    if record.impl is not None:
        return jax.random.wrap_key_data(jnp.asarray(array), impl=KEY_IMPLS[record.impl].name)
    dtype = ARRAY_DTYPES[record.dtype].dtype
    return array if array.dtype == dtype else array.view(dtype)


def python_number(value: np.ndarray, kind: str) -> Any:
    """A 0-d array as the Python number of ``kind`` (a key of :data:`PYTHON_KINDS`)."""
    return PYTHON_KINDS[kind].type(value.item())
