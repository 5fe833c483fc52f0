"""Every ```python block of the guides runs, in order, in one namespace per guide."""

from __future__ import annotations

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).parents[1] / "docs"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
# Guides whose code needs a reference library, and the module it needs.
NEEDS = {"migrating_from_torch.md": "torch"}


# The guides whose code is complete programs (docs/scaling.md shows fragments of a script).
GUIDES = ["migrating_from_torch.md", "frontier_optimizers.md", "guides/performance.md"]


def _guides():
    return [DOCS / name for name in GUIDES]


def test_the_guides_have_code():
    assert all(_BLOCK.search(p.read_text()) for p in _guides())


@pytest.mark.parametrize("guide", _guides(), ids=lambda p: p.name)
def test_every_code_block_runs(guide):
    if guide.name in NEEDS:
        pytest.importorskip(NEEDS[guide.name], reason=f"{guide.name} uses {NEEDS[guide.name]}")
    namespace: dict = {"__name__": f"docs.{guide.stem}"}
    for number, block in enumerate(_BLOCK.findall(guide.read_text()), start=1):
        try:
            exec(compile(block, f"{guide.name} block {number}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{guide.name}, code block {number} failed: {error!r}") from error
