"""Sphinx configuration of gradxform's documentation site.

Build (warnings are errors, as in CI):

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

Pages are Markdown (MyST); the API reference is generated from the docstrings by autodoc and
autosummary (one page per public name, written under ``docs/api/_generated`` at build time).
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's gradxform, installed or not

import gradxform  # noqa: E402

project = "gradxform"
author = "the gradxform authors"
copyright = "the gradxform authors"
release = gradxform.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: $...$ and $$...$$ math in the pages, ::: fences, anchors for ## and ### headings.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Docstrings are Google style (Args:, Returns:); the formulas are literal blocks.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autosummary_generate = True
autosummary_imported_members = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
add_module_names = False

html_theme = "furo"
html_title = f"gradxform {release}"
html_static_path: list[str] = []


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """A NamedTuple field's docstring is Python's "Alias for field number i": the class's own
    docstring names the fields, so the field entries are left out."""
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
