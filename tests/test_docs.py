"""Every ```python block of the guides runs, in order, in one namespace per guide."""

from __future__ import annotations

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).parents[1] / "docs"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
# Guides whose code needs other libraries, and the modules they need (separated by spaces).
NEEDS = {
    "migrating_from_torch.md": "torch",
    "migrating_from_optax.md": "optax",
    "checkpoints.md": "orbax.checkpoint",
    "integrations.md": "flax equinox",
}


# The guides whose code is complete programs, run in this order. The multi-device guide runs on
# the 8 host CPU devices that conftest.py asks for.
GUIDES = [
    "guides/getting_started.md",
    "guides/composing.md",
    "migrating_from_torch.md",
    "guides/migrating_from_optax.md",
    "guides/multi_device.md",
    "frontier_optimizers.md",
    "guides/performance.md",
    "guides/checkpoints.md",
    "guides/integrations.md",
]
# Pages with ```python blocks that this file does not run, and why.
NOT_RUN = {
    "scaling.md": "fragments of a script (the multi-device guide runs complete programs)",
    "api/types.md": "the type aliases' examples, run by tests/test_docs_site.py",
}


def _guides():
    return [DOCS / name for name in GUIDES]


def test_the_guides_have_code():
    assert all(_BLOCK.search(p.read_text()) for p in _guides())


def test_every_page_with_code_is_run():
    pages = {
        str(p.relative_to(DOCS))
        for p in DOCS.rglob("*.md")
        if "_build" not in p.parts and "_generated" not in p.parts
    }
    with_code = {page for page in pages if _BLOCK.search((DOCS / page).read_text())}
    assert sorted(with_code - set(GUIDES) - set(NOT_RUN)) == []


@pytest.mark.parametrize("guide", _guides(), ids=lambda p: p.name)
def test_every_code_block_runs(guide):
    for module in NEEDS.get(guide.name, "").split():
        pytest.importorskip(module, reason=f"{guide.name} uses {module}")
    namespace: dict = {"__name__": f"docs.{guide.stem}"}
    for number, block in enumerate(_BLOCK.findall(guide.read_text()), start=1):
        try:
            exec(compile(block, f"{guide.name} block {number}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{guide.name}, code block {number} failed: {error!r}") from error
