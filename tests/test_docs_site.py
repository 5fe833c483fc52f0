"""The documentation site's API reference (docs/api/) covers gradxform's public surface.

Every name in ``gradxform.__all__`` has an entry on an API page (an autosummary line, or a
``py:data`` directive for a type alias), and every one has an example that the test suite
runs: a ``>>>`` block in the docstring of the function, class or module, which pytest's
``--doctest-modules`` collects from its defining module, or, for a type alias (an object of
``typing`` that cannot carry a docstring of ours), a code block after its entry on the types
page, which this file runs. No Sphinx build happens here; ``.ci/run`` builds the site.
"""

from __future__ import annotations

import doctest
import inspect
import pathlib
import re
import sys

import gradxform as gx

API = pathlib.Path(__file__).parents[1] / "docs" / "api"
_AUTOSUMMARY = re.compile(r"^\.\. autosummary::\n((?:   .*\n|\n)*)", re.M)
_ALIAS = re.compile(r"^```\{py:data\} (\w+)\n.*?^```\n\n```python\n(.*?)^```$", re.S | re.M)


def _autosummary_entries() -> list[str]:
    names = []
    for page in sorted(API.glob("*.md")):
        for body in _AUTOSUMMARY.findall(page.read_text()):
            names += [line.strip() for line in body.splitlines() if line.strip()[:1].isalpha()]
    return names


def _alias_examples() -> dict[str, str]:
    """``{alias: its example's code}``, in the order of the types page."""
    return dict(_ALIAS.findall((API / "types.md").read_text()))


def _is_alias(obj) -> bool:
    # Params, Updates, OptState (typing.Any), Schedule, ScalarOrSchedule, MaskOrFn: objects
    # of typing / collections.abc / types, whose docstrings are Python's.
    return not getattr(obj, "__module__", "").startswith("gradxform") and not inspect.ismodule(obj)


def test_every_public_name_has_one_api_entry():
    entries = _autosummary_entries() + list(_alias_examples())
    public = set(gx.__all__)
    missing = sorted(public - set(entries))
    unknown = sorted(set(entries) - public)
    repeated = sorted({name for name in entries if entries.count(name) > 1})
    assert not missing, f"{len(missing)} public names without an API entry in docs/api: {missing}"
    assert not unknown, f"API entries that are not in gradxform.__all__: {unknown}"
    assert not repeated, f"names with more than one API entry: {repeated}"


def test_the_type_alias_entries_are_the_aliases():
    aliases = sorted(name for name in gx.__all__ if _is_alias(getattr(gx, name)))
    assert sorted(_alias_examples()) == aliases


def test_the_type_alias_examples_run():
    namespace: dict = {"__name__": "docs.api.types"}
    for name, code in _alias_examples().items():
        assert f"gx.{name}" in code, f"the example after {name}'s entry does not use gx.{name}"
        try:
            exec(compile(code, f"docs/api/types.md, {name}'s example", "exec"), namespace)
        except Exception as error:
            message = f"{name}'s example on docs/api/types.md failed: {error!r}"
            raise AssertionError(message) from error


def _doctested_names() -> set[str]:
    """Qualified names (``module.qualname``) whose docstrings hold examples that pytest's
    ``--doctest-modules`` runs: doctest's own finder, over each defining module."""
    modules = {getattr(getattr(gx, name), "__module__", "") for name in gx.__all__}
    modules = {m for m in modules if m.startswith("gradxform")} | {gx.tree_utils.__name__}
    finder = doctest.DocTestFinder()
    return {
        test.name
        for module in sorted(modules)
        for test in finder.find(sys.modules[module])
        if test.examples
    }


def test_every_public_function_and_class_has_a_tested_example():
    doctested = _doctested_names()
    missing = []
    for name in gx.__all__:
        obj = getattr(gx, name)
        if _is_alias(obj):
            continue  # its example is on the API page (above)
        if inspect.ismodule(obj):
            qualified = obj.__name__
        else:
            qualified = f"{obj.__module__}.{obj.__qualname__}"
        if qualified not in doctested:
            missing.append(name)
    assert not missing, (
        f"{len(missing)} of {len(gx.__all__)} public names have no >>> example that pytest runs "
        f"(in the docstring of the object, in its defining module): {missing}"
    )
