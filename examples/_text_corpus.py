"""A text corpus every machine has offline: the Python standard library's own source files.

The files are read from the running interpreter's installation (``sysconfig``'s ``stdlib``
path): every ``*.py`` below it, in sorted order, leaving out installed third-party packages
(``site-packages``, ``dist-packages``). Each file goes to validation or training by a hash of
its path relative to the library's root, so the split is the same on every machine with the
same Python version and no file is in both. The text is kept as bytes: the vocabulary is the
256 byte values, so nothing needs a tokenizer.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from pathlib import Path
from typing import NamedTuple

import numpy as np

VOCAB_SIZE = 256
THIRD_PARTY = frozenset({"site-packages", "dist-packages"})


class Corpus(NamedTuple):
    """The training and validation text as byte arrays (``uint8``), and where it came from."""

    train: np.ndarray
    validation: np.ndarray
    root: Path
    train_files: int
    validation_files: int


def stdlib_sources(root: Path | None = None) -> list[Path]:
    """Every ``*.py`` file below ``root`` (default: the stdlib), relative to it, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"]) if root is None else root
    found = []
    for directory, subdirectories, files in os.walk(root):
        # Pruned in place, so os.walk does not descend into installed packages.
        subdirectories[:] = [d for d in subdirectories if d not in THIRD_PARTY]
        found += [Path(directory, f).relative_to(root) for f in files if f.endswith(".py")]
    return sorted(found)


def is_validation(relative_path: Path, percent: int) -> bool:
    """Whether a file is held out: the first 4 bytes of its path's SHA-256, modulo 100."""
    digest = hashlib.sha256(relative_path.as_posix().encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < percent


def load_corpus(validation_percent: int = 10, root: Path | None = None) -> Corpus:
    """Reads the standard library's sources and splits them by file.

    Args:
      validation_percent: about this share of the files (by count) is held out.
      root: the directory to read (default: the running interpreter's stdlib).

    Returns:
      The concatenated bytes of the training files and of the validation files.
    """
    root = Path(sysconfig.get_paths()["stdlib"]) if root is None else root
    parts: dict[bool, list[bytes]] = {False: [], True: []}
    for path in stdlib_sources(root):
        parts[is_validation(path, validation_percent)].append((root / path).read_bytes())
    train, validation = (np.frombuffer(b"".join(parts[k]), np.uint8) for k in (False, True))
    return Corpus(train, validation, root, len(parts[False]), len(parts[True]))


def sample_windows(
    text: np.ndarray, rng: np.random.Generator, batch_size: int, length: int
) -> np.ndarray:
    """``batch_size`` windows of ``length + 1`` consecutive bytes at random offsets, ``int32``.

    A window's first ``length`` bytes are the model's input and its last ``length`` the targets.
    """
    starts = rng.integers(0, text.shape[0] - length - 1, size=batch_size)
    return text[starts[:, None] + np.arange(length + 1)].astype(np.int32)
