"""Sphinx configuration: API reference from the docstrings, the notebooks executed in quick mode, the CLI reference
from the parser, and MathJax served from the build itself so that pages render without a network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import untwine
from untwine.data import cache_dir

project = "untwine"
author = "the untwine developers"
release = version = untwine.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "sphinxarg.ext",
    "myst_nb",
    # MathJax 3 copied into _static: the default CDN address leaves formulas unrendered offline
    "sphinx-mathjax-offline",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "notebooks/.ipynb_checkpoints", "**/.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# API reference: one page per module, generated from the docstrings
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
# torch.distributions docstrings are not written for docutils; untwine documents its own overrides
autodoc_inherit_docstrings = False
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autoclass_content = "both"
nitpicky = False

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks run during the build in quick mode (the tests' setting), cached between builds; a cell that raises
# fails the build. UNTWINE_DOCS_EXECUTE=off skips execution (the test suite's fast docstring check).
nb_execution_mode = os.environ.get("UNTWINE_DOCS_EXECUTE", "cache")
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_in_temp = True
nb_execution_show_tb = True
nb_merge_streams = True
# progress bars and library warnings on stderr are noise on a rendered page; errors still fail the build
nb_output_stderr = "remove"
os.environ.setdefault("UNTWINE_QUICK", "1")


def _seed_torchvision_cache() -> None:
    """Copy MNIST and Fashion-MNIST into untwine's cache from the shared data folder beside the clone (or
    ``$UNTWINE_SHARED_DATA``) when it exists, as the tests do, so the MNIST notebooks run without a download."""
    shared = Path(os.environ.get("UNTWINE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    for folder, raw in (("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")):
        source, target = shared / folder / raw, cache_dir() / "torchvision" / raw
        if not source.is_dir():
            continue
        for file in source.rglob("*"):  # only what the cache lacks: an interrupted download leaves empty folders
            copy = target / file.relative_to(source)
            if file.is_file() and not copy.exists():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, copy)  # contents only: the shared files are read-only, the cache must not be


if nb_execution_mode != "off":
    _seed_torchvision_cache()

html_theme = "furo"
html_title = f"untwine {release}"
html_static_path: list[str] = []
templates_path = ["_templates"]
