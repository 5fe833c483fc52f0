"""What every part of the checkpoint package agrees on: the format's name and version, the
names of the archive's entries, the bounds a file must stay within, and the error raised for
any file that cannot be read.

The bounds exist because a file is untrusted input: its metadata is covered by a SHA-256 that
anyone can recompute, so nothing in it may make loading recurse, allocate or inflate without
limit.
"""

from __future__ import annotations

from typing import Any

FORMAT_NAME = "gradxform.checkpoint"
FORMAT_VERSION = 1

META = "__gradxform_meta__"
META_DIGEST = "__gradxform_meta_sha256__"
SUFFIX = ".npy"  # every entry of the archive is one .npy array

# Tree levels a checkpoint may nest. The stdlib JSON parser and writer recurse about twice per
# tree level, and Python's default recursion limit is 1000; 256 levels stay well inside it
# (optimizer states nest a dozen levels at most).
MAX_DEPTH = 256
MAX_NDIM = 64  # NumPy's own limit on an array's dimensions
MAX_META_BYTES = 256 << 20  # the JSON metadata: about a million leaves
MAX_NPY_HEADER = 4096  # magic, version, length and header dict of one .npy entry
MAX_ARRAY_BYTES = 1 << 62  # beyond what NumPy can allocate; rejects absurd shapes early

MAX_LISTED = 20  # differences listed in a mismatch error; the rest are counted
_MAX_SHOWN = 80  # characters of a value read from a file shown in an error


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (truncated, corrupted, malformed, not a checkpoint), or
    whose tree does not match the ``like`` tree it is loaded into.

    Example:
      >>> import os, tempfile, gradxform as gx
      >>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
      >>> with open(path, "wb") as f:
      ...     _ = f.write(b"not a checkpoint")
      >>> try:
      ...     gx.load_state(path)
      ... except gx.CheckpointError as error:
      ...     print(type(error).__name__, isinstance(error, ValueError))
      CheckpointError True
    """


def leaf_entry(index: int) -> str:
    """The archive entry (without its ``.npy`` suffix) holding leaf ``index``."""
    return f"leaf_{index}"


def display_path(path: str) -> str:
    """A leaf path for messages (``jax.tree_util.keystr`` form; the root has an empty one)."""
    return path or "<root>"


def shown(value: Any) -> str:
    """``repr`` of a value read from a file, cut short: a file may hold huge strings."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def unreadable(path: str, what: str, error: BaseException | None = None) -> CheckpointError:
    """The error for a file that is not a readable checkpoint, saying why."""
    detail = f" ({type(error).__name__}: {error})" if error is not None else ""
    return CheckpointError(
        f"load_state: {path!r} is not a readable gradxform checkpoint: {what}{detail}"
    )
