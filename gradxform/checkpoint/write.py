"""Saving: :func:`save_state`, and the temporary files that make its writes atomic.

A save writes ``.<name>.gradxform-tmp.<32 hex digits>`` next to the target ``<name>`` (a long
name is cut, with a digest of the whole name, so the temporary's name stays under 255 bytes),
holds an exclusive ``flock`` on it while writing, and renames it onto the target. A save killed
before the rename (SIGKILL, power loss) leaves its temporary behind; the next save to the same
target removes every temporary of that target whose lock it can take, that is, whose writer
has died. It only removes regular files with exactly that target's pattern, never follows a
symlink, and leaves a temporary alone while a live save holds its lock. Where ``fcntl`` is
missing (Windows), it removes what the operating system lets it: a file that another process
holds open cannot be removed there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import uuid
import zipfile
from typing import Any

import jax
import numpy as np

from gradxform.checkpoint.kinds import Record, digest, leaf_signature, to_stored
from gradxform.checkpoint.schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    META,
    META_DIGEST,
    SUFFIX,
    leaf_entry,
)
from gradxform.checkpoint.tree import describe

try:
    import fcntl
except ImportError:  # Windows
    # The module's name bound to None: mypy types the name as the module, not an optional.
    fcntl = None  # type: ignore[assignment]

_TEMP_MARK = ".gradxform-tmp."
_TEMP_TAIL = re.compile(r"[0-9a-f]{32}")  # uuid4().hex
_MAX_NAME_BYTES = 180  # longer target names are cut to 120 bytes plus a digest


def temporary_prefix(name: str) -> str:
    """The start of every temporary file name of the target named ``name``."""
    if len(os.fsencode(name)) <= _MAX_NAME_BYTES:
        return f".{name}{_TEMP_MARK}"
    short = name
    while len(os.fsencode(short)) > 120:
        short = short[:-1]
    return f".{short}~{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}{_TEMP_MARK}"


def _lock(fd: int) -> bool | None:
    """Takes an exclusive lock without waiting: True if taken, False if another open file
    holds it, None where files cannot be locked."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks
        return None
    return True


def _remove_if_abandoned(path: str, seen: os.stat_result) -> None:
    """Removes the temporary ``path`` unless a live save holds it."""
    if fcntl is None:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or not os.path.samestat(opened, seen):
            return  # replaced since it was listed
        if _lock(fd):  # its writer is gone; the lock is released when `fd` is closed
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)


def _remove_stale_temporaries(directory: str, prefix: str) -> None:
    """Removes the temporaries of killed saves to the target whose ``prefix`` is given."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and _TEMP_TAIL.fullmatch(name[len(prefix) :])):
            continue
        try:
            seen = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(seen.st_mode):
            _remove_if_abandoned(entry.path, seen)


def _target_mode(path: str) -> int | None:
    """The permission bits of the file at ``path``, or None when there is none."""
    try:
        existing = os.stat(path)
    except OSError:
        return None
    return stat.S_IMODE(existing.st_mode) & 0o777 if stat.S_ISREG(existing.st_mode) else None


def _create_temporary(directory: str, prefix: str, mode: int | None) -> tuple[int, str]:
    """A new, locked temporary file: its descriptor and path.

    A file that replaces an existing one starts at 0o600 and takes the existing file's bits, so
    the data is never more readable than before; a new file gets 0o666 less the umask.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    for _ in range(8):
        temporary = os.path.join(directory, prefix + uuid.uuid4().hex)
        fd = os.open(temporary, flags, 0o666 if mode is None else 0o600)
        try:
            if mode is not None:
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, mode)  # not subject to the umask
                else:
                    os.chmod(temporary, mode)
            locked = _lock(fd)
            # Another save's cleanup may have taken the file between its creation and the lock.
            if locked is None or (locked and os.path.samestat(os.fstat(fd), os.lstat(temporary))):
                return fd, temporary
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        os.close(fd)
    raise OSError(f"save_state: could not create a temporary file in {directory!r}")


def _write_entry(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    """Writes one array to the archive as ``name.npy``, as ``np.savez`` does."""
    with archive.open(name + SUFFIX, "w", force_zip64=True) as entry:
        np.lib.format.write_array(entry, array, allow_pickle=False)


def _write_archive(file: Any, tree: Any, structure: dict, leaves: list, signatures: list) -> None:
    records = []
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for index, ((leaf_path, leaf), signature) in enumerate(
            zip(leaves, signatures, strict=True)
        ):
            # One leaf on the host at a time, so saving needs little extra memory.
            stored = to_stored(leaf)
            _write_entry(archive, leaf_entry(index), stored)
            record = Record(
                leaf_path,
                signature["dtype"],
                signature["shape"],
                digest(stored),
                python=signature.get("python"),
                impl=signature.get("impl"),
            )
            records.append(record.to_json())
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "treedef": str(jax.tree.structure(tree)),
            "structure": structure,
            "leaves": records,
        }
        meta_bytes = json.dumps(meta, sort_keys=True).encode()
        _write_entry(archive, META, np.frombuffer(meta_bytes, np.uint8))
        meta_digest = hashlib.sha256(meta_bytes).hexdigest().encode()
        _write_entry(archive, META_DIGEST, np.frombuffer(meta_digest, np.uint8))


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

    The file is a NumPy ``.npz`` archive (see :mod:`gradxform.checkpoint` for its layout)
    holding each leaf's exact bytes, the tree's structure, and SHA-256 checksums. It is written
    to a temporary file in the same directory, flushed and fsynced, then moved onto ``path``
    with ``os.replace``: readers see either the old file or the new one, never a partial one.
    An existing file's permission bits are kept; a new file gets ``0o666`` less the umask.
    Temporary files left by earlier saves to ``path`` that were killed are removed.

    Args:
      path: the file to write (no suffix is added).
      tree: a pytree whose leaves are arrays (JAX or NumPy, any of bool, integer, float
        including bfloat16, complex, and typed PRNG keys) or Python numbers. ``None`` and
        empty nodes (``EmptyState()``, ``{}``) are kept.

    Raises:
      TypeError: a leaf that is not an array or a number, or an array of a dtype checkpoints
        do not hold (strings, objects, structured); the error names its path.
      ValueError: a tree nested more than 256 levels deep.

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
    structure, leaves = describe(tree, "save_state: the tree")
    signatures = [leaf_signature(p, leaf, "save_state: the tree's") for p, leaf in leaves]
    directory = os.path.dirname(os.path.abspath(path))
    prefix = temporary_prefix(os.path.basename(path))
    _remove_stale_temporaries(directory, prefix)
    fd, temporary = _create_temporary(directory, prefix, _target_mode(path))
    try:
        with os.fdopen(fd, "wb") as file:
            _write_archive(file, tree, structure, leaves, signatures)
            file.flush()
            os.fsync(file.fileno())
            if fcntl is not None:
                # Still open, hence still locked: no other save's cleanup can remove it.
                os.replace(temporary, path)
        if fcntl is None:
            os.replace(temporary, path)  # Windows renames closed files only
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)
