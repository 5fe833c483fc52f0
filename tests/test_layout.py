"""The package's shape: small modules, one-way imports, a public surface that is a choice."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import pathlib
import tomllib
import types

import pytest

import gradxform as gx

PACKAGE = pathlib.Path(gx.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_passes_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in MODULES
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, long


def test_every_module_opens_with_a_docstring():
    missing = [
        str(p.relative_to(PACKAGE))
        for p in MODULES
        if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert not missing, missing


def test_modules_do_not_import_each_others_underscored_names():
    # What several modules share lives in the core under a name without an underscore.
    offenders = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gradxform"):
                for alias in node.names:
                    if alias.name.startswith("_") and node.module != "gradxform":
                        offenders.append(
                            f"{_module_name(path)}: from {node.module} import {alias.name}"
                        )
                    if node.module == "gradxform" and alias.name.startswith("_"):
                        # `from gradxform import _tree` imports a core module, not a private name.
                        core = {"_tree", "_validate", "_masks", "_checks"}
                        assert alias.name in core, (path, alias.name)
    assert not offenders, offenders


def test_the_core_does_not_import_what_is_built_on_it():
    core = {"_base", "_tree", "_types", "_validate", "_masks", "_checks"}
    for path in MODULES:
        if path.stem not in core or path.parent != PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gradxform"):
                module = node.module.split(".")
                imported = module[1] if len(module) > 1 else None
                names = [a.name for a in node.names] if imported is None else [imported]
                assert all(n in core for n in names), (path.name, node.module, names)


SUBPACKAGES = ("optimizers", "schedules", "transforms", "wrappers")


@pytest.mark.parametrize("init", ["__init__.py", *(f"{s}/__init__.py" for s in SUBPACKAGES)])
def test_init_only_reexports(init):
    """The package's and its families' ``__init__`` import and list names, nothing else; the
    top level's ``__all__`` is its own names plus each family's ``__all__``."""
    tree = ast.parse((PACKAGE / init).read_text())
    for node in tree.body:
        assert isinstance(
            node, ast.ImportFrom | ast.Import | ast.Expr | ast.Assign | ast.AugAssign
        ), ast.dump(node)[:80]
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            assert targets in (["__version__"], ["__all__"]), targets
        if isinstance(node, ast.AugAssign):
            assert isinstance(node.target, ast.Name) and node.target.id == "__all__"
            assert ast.unparse(node.value) in {f"{s}.__all__" for s in SUBPACKAGES}


@pytest.mark.parametrize("family", SUBPACKAGES)
def test_each_family_lists_exactly_its_public_names(family):
    module = getattr(gx, family)
    public = {
        n
        for n in dir(module)
        if not n.startswith("_") and not isinstance(getattr(module, n), types.ModuleType)
    }
    assert set(module.__all__) == public
    assert len(module.__all__) == len(set(module.__all__))
    assert set(module.__all__) <= set(gx.__all__)


def test_all_lists_exactly_the_public_names():
    public = {n for n in dir(gx) if not n.startswith("_")}
    submodules = {n for n in public if isinstance(getattr(gx, n), types.ModuleType)}
    assert set(gx.__all__) == public - (submodules - {"tree_utils"})
    assert len(gx.__all__) == len(set(gx.__all__))


def test_tree_utils_exports_only_its_functions():
    names = {n for n in dir(gx.tree_utils) if not n.startswith("_")}
    assert names == set(gx.tree_utils.__all__)
    assert all(callable(getattr(gx.tree_utils, n)) for n in names)
    assert not {"jax", "jnp", "np", "math"} & names


def test_typed_package_and_license_are_shipped():
    assert (PACKAGE / "py.typed").exists()
    assert (PACKAGE.parent / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_version_is_the_projects():
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    assert gx.__version__ == project["version"]


def _installed_copy(dist: importlib.metadata.Distribution) -> pathlib.Path:
    """Where the installed distribution's package is: its source directory for an editable
    install (PEP 610's ``direct_url.json``), else the installed files."""
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct.get("dir_info", {}).get("editable") and direct["url"].startswith("file://"):
        return pathlib.Path(direct["url"].removeprefix("file://")) / "gradxform"
    return pathlib.Path(str(dist.locate_file("gradxform")))


def test_version_is_the_installed_metadatas():
    try:
        dist = importlib.metadata.distribution("gradxform")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gradxform is not installed (imported from a source tree)")
    if _installed_copy(dist).resolve() != PACKAGE.resolve():
        pytest.skip(f"the installed gradxform is another copy ({_installed_copy(dist)})")
    assert gx.__version__ == dist.version, (
        f"gradxform.__version__ is {gx.__version__}, the installed metadata says "
        f"{dist.version}: reinstall with `pip install -e .`"
    )


@pytest.mark.parametrize("family", SUBPACKAGES)
def test_no_exported_name_hides_a_module(family):
    """``gx.optimizers.adam`` would be the function and hide the module ``adam.py`` (patching
    and ``import gradxform.optimizers.adam as m`` would reach the function)."""
    import pkgutil

    package = getattr(gx, family)
    modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    assert not modules & set(package.__all__)
