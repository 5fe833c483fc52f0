"""Checkpoints: a tree of arrays (optimizer state, params) saved to one file, loaded back bitwise.

:func:`save_state` writes any pytree of arrays and numbers (NamedTuple states, dicts, lists,
tuples, ``None``, int32 counters, bool flags, bfloat16/float16/float32/float64/complex leaves,
typed PRNG keys) to a single ``.npz`` file; :func:`load_state` reads it back, rebuilt on a
template tree (``like``) or, for inspection, as plain dicts and lists.

The file (format version 1) is an ordinary NumPy ``.npz`` archive, readable without pickle
(``np.load(path, allow_pickle=False)``), its entries stored uncompressed:

- ``leaf_<i>``: the ``i``-th leaf, in ``jax.tree.leaves`` order. NumPy has no bfloat16 (nor
  the float8/int4 types), so leaves of those dtypes hold their raw bytes as unsigned integers
  of the same width (bfloat16 as uint16); PRNG keys hold their uint32 key data.
- ``__gradxform_meta__``: UTF-8 JSON, as uint8: ``format`` (``"gradxform.checkpoint"``),
  ``version``, ``structure`` (the tree's node types and keys, so that it can be compared with
  ``like`` and rebuilt without it; its leaves are numbered 0, 1, 2, ... depth first),
  ``treedef`` (``str`` of the treedef, for people reading the file), and ``leaves``: per leaf
  its ``path`` (``jax.tree_util.keystr``), ``dtype``, ``shape``, the ``sha256`` of its stored
  bytes, and ``python`` (the number type of a Python number) or ``impl`` (the PRNG
  implementation of a key array).
- ``__gradxform_meta_sha256__``: the SHA-256 of the JSON, as uint8 hex digits.

Every byte that decides the loaded values is covered by a checksum, so a truncated or
corrupted file raises :class:`CheckpointError`; it never loads as a wrong state. The file is
treated as untrusted input, since anyone can recompute the checksums: nothing in it selects
code (dtypes, number types and PRNG implementations are looked up in the fixed tables of
:mod:`gradxform.checkpoint.kinds`), its metadata is checked in full
(:mod:`gradxform.checkpoint.meta`), and no entry is inflated past the size its record implies
(:mod:`gradxform.checkpoint.archive`; deflated entries, which other zip tools may write, are
read too).

Writes are atomic: the archive goes to a temporary file in the target's directory, is flushed
to disk, and replaces the target in one ``os.replace``, so a crash while saving leaves the
previous checkpoint whole; the temporary it leaves behind is removed by the next save to the
same path (:mod:`gradxform.checkpoint.write`). Overwriting keeps the file's permission bits.

Arrays are gathered to the host of the calling process: this is for single-process training.
For multi-host checkpoints of arrays no process holds whole, use Orbax.
"""

from gradxform.checkpoint.read import load_state as load_state
from gradxform.checkpoint.schema import FORMAT_NAME as FORMAT_NAME
from gradxform.checkpoint.schema import FORMAT_VERSION as FORMAT_VERSION
from gradxform.checkpoint.schema import CheckpointError as CheckpointError
from gradxform.checkpoint.write import save_state as save_state

__all__ = ["CheckpointError", "load_state", "save_state"]
