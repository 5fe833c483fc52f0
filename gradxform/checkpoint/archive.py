"""Reading the entries of a checkpoint archive with bounded memory.

A checkpoint is a zip archive of ``.npy`` entries. :class:`Archive` reads one entry into an
array of a dtype and shape known in advance (from the checked metadata), and refuses, before
inflating anything, an entry whose declared uncompressed size (``ZipInfo.file_size``) differs
from what that dtype and shape imply plus a ``.npy`` header of at most
:data:`~gradxform.checkpoint.schema.MAX_NPY_HEADER` bytes. The entry is then read in chunks of
at most :data:`CHUNK` bytes, so a header that lies about the size cannot make zlib inflate more
than one chunk past it: a small file cannot become a large allocation (a zip bomb).

Only stored and deflated entries are read (``zipfile`` inflates bzip2 and lzma data without a
bound), and never through ``np.load``: the ``.npy`` header is parsed here as a literal and must
describe exactly the array expected; its dtype description is compared as a string, so nothing
in the file is ever turned into a dtype.
"""

from __future__ import annotations

import ast
import zipfile
from typing import Any

import numpy as np

from gradxform.checkpoint.schema import (
    MAX_NPY_HEADER,
    SUFFIX,
    CheckpointError,
    shown,
    unreadable,
)

CHUNK = 1 << 20  # bytes asked of zipfile per read, hence the most it inflates per read
_NPY_MAGIC = b"\x93NUMPY"
_LENGTH_BYTES = {(1, 0): 2, (2, 0): 4}  # .npy versions 1.0 and 2.0; 3.0 (utf-8) is never written


class Archive:
    """An opened checkpoint archive (a context manager that closes it)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as error:  # BadZipFile, and whatever else a damaged directory raises
            if _starts_with(path, _NPY_MAGIC):
                raise unreadable(
                    path, "it is a single .npy array, not a checkpoint archive"
                ) from None
            raise unreadable(
                path, "the file is truncated, corrupted, or not a checkpoint", error
            ) from error
        infos = self._zip.infolist()
        self._infos = {info.filename: info for info in infos}
        if len(self._infos) != len(infos):
            self._zip.close()
            raise unreadable(path, "an entry name appears twice in the archive")

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def names(self) -> set[str]:
        """The entries' names, as the archive has them (with their ``.npy`` suffix)."""
        return set(self._infos)

    def read(
        self, name: str, dtype: np.dtype, shape: tuple[int, ...] | None, *, max_bytes: int = 0
    ) -> np.ndarray:
        """Entry ``name`` as a fresh writable array of exactly ``dtype`` and ``shape``.

        ``shape=None`` reads a 1-d array of any length up to ``max_bytes`` bytes.
        """
        info = self._infos.get(name + SUFFIX)
        if info is None:
            raise unreadable(self.path, f"the entry {name!r} is missing")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise unreadable(
                self.path,
                f"the entry {name!r} uses zip compression method {info.compress_type}; "
                "checkpoints are stored or deflated",
            )
        if shape is None:
            low, high = 0, max_bytes
        else:
            low = high = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if not low <= info.file_size <= high + MAX_NPY_HEADER:
            expected = (
                f"{low} bytes of data" if shape is not None else f"at most {high} bytes of data"
            )
            raise unreadable(
                self.path,
                f"the entry {name!r} declares {info.file_size} bytes uncompressed; its record "
                f"implies {expected} plus a header of at most {MAX_NPY_HEADER} bytes",
            )
        try:
            with self._zip.open(info) as stream:
                return self._read_npy(stream, name, info.file_size, dtype, shape)
        except CheckpointError:
            raise
        except Exception as error:  # BadZipFile (CRC), zlib.error, EOFError, OSError, ...
            raise unreadable(
                self.path, f"the entry {name!r} is truncated or corrupted", error
            ) from error

    def _read_npy(
        self, stream: Any, name: str, size: int, dtype: np.dtype, shape: tuple[int, ...] | None
    ) -> np.ndarray:
        magic = _read_exactly(stream, len(_NPY_MAGIC) + 2)
        version = tuple(magic[-2:])
        if magic[:-2] != _NPY_MAGIC or version not in _LENGTH_BYTES:
            raise unreadable(self.path, f"the entry {name!r} is not a .npy array of version 1 or 2")
        length_bytes = _read_exactly(stream, _LENGTH_BYTES[version])
        header_length = int.from_bytes(length_bytes, "little")
        header_size = len(magic) + len(length_bytes) + header_length
        if header_size > MAX_NPY_HEADER:
            raise unreadable(
                self.path,
                f"the entry {name!r} has a .npy header of {header_size} bytes; at most "
                f"{MAX_NPY_HEADER} are read",
            )
        fields = _header_fields(_read_exactly(stream, header_length))
        if fields is None:
            raise unreadable(self.path, f"the entry {name!r} has a malformed .npy header")
        descr, fortran_order, found_shape = fields
        expected_shape = "(n,)" if shape is None else str(shape)
        if shape is None and len(found_shape) == 1:
            shape = found_shape
        # The file's dtype description is compared as a string, never turned into a dtype.
        if descr != dtype.str or found_shape != shape or fortran_order is not False:
            raise unreadable(
                self.path,
                f"the entry {name!r} holds an array of dtype {shown(descr)}, shape "
                f"{shown(found_shape)}{' in Fortran order' if fortran_order else ''}; its "
                f"record implies dtype {dtype.str} and shape {expected_shape}",
            )
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if header_size + nbytes != size:  # checked before allocating: the header may lie
            raise unreadable(
                self.path,
                f"the entry {name!r} declares {size} bytes; its header and data take "
                f"{header_size + nbytes}",
            )
        array = np.empty(shape, dtype)
        out = array.reshape(-1).view(np.uint8)
        position = 0
        while position < nbytes:
            chunk = _read_some(stream, nbytes - position)
            out[position : position + len(chunk)] = np.frombuffer(chunk, np.uint8)
            position += len(chunk)
        if stream.read(1):  # nothing past the data; at the end, zipfile checks the CRC
            raise unreadable(self.path, f"the entry {name!r} is longer than its array")
        return array


def _header_fields(header: bytes) -> tuple[Any, Any, tuple[int, ...]] | None:
    """``(descr, fortran_order, shape)`` of a .npy header dict, or None if it is not one.

    ``ast.literal_eval`` (which NumPy uses too) builds only literals, never runs code; the
    header's length is bounded before this is called.
    """
    try:
        fields = ast.literal_eval(header.decode("latin1"))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
        return None
    shape = fields["shape"]
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        return None
    return fields["descr"], fields["fortran_order"], shape


def _starts_with(path: str, prefix: bytes) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(prefix)) == prefix
    except OSError:
        return False


def _read_some(stream: Any, remaining: int) -> bytes:
    """At most one chunk from ``stream``; EOFError at its end."""
    data = stream.read(min(remaining, CHUNK))
    if not data:
        raise EOFError(f"the entry ends {remaining} bytes early")
    return data


def _read_exactly(stream: Any, size: int) -> bytes:
    """``size`` bytes (a few: callers bound ``size``), or EOFError."""
    data = b""
    while len(data) < size:
        data += _read_some(stream, size - len(data))
    return data
