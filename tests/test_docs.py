"""The documentation site builds without warnings from the docstrings, and its pages render as a reader sees them.

The notebooks are executed by ``make docs`` (which CI runs); here they are built without execution, since
``test_notebooks.py`` already runs each one, so the build checks every docstring, page and cross-reference.
"""

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import browser  # docs/browser.py, on the path by conftest.py
import pytest

import untwine
from untwine.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    env = {**os.environ, "UNTWINE_DOCS_EXECUTE": "off"}
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", "-d", str(out / "doctrees")]
    proc = subprocess.run([*cmd, str(DOCS), str(out / "html")], env=env, capture_output=True, text=True, cwd=REPO)
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0, "the docs build warned:\n" + "\n".join(warnings or proc.stderr.splitlines()[-20:])
    return out / "html"


@pytest.mark.slow
def test_every_public_module_has_an_api_page(built):
    modules = [m.name for m in pkgutil.walk_packages(untwine.__path__, "untwine.") if "._" not in m.name]
    pages = built / "api" / "generated"
    missing = [m for m in modules if m != "untwine.__main__" and not (pages / f"{m}.html").exists()]
    assert modules and not missing, missing


@pytest.mark.slow
def test_cli_reference_lists_every_subcommand(built):
    page = (built / "cli.html").read_text()
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(commands) >= {"train", "eval", "plot", "sweep", "compare", "list"}
    assert all(f'id="untwine-{name}"' in page for name in commands), "a subcommand is missing from the CLI reference"


@pytest.mark.slow
def test_docstring_math_reaches_the_api_pages(built):
    page = (built / "api" / "generated" / "untwine.distributions.lp_nested.html").read_text()
    assert page.count('class="math') >= 5
    assert "cdn.jsdelivr" not in page and "mathjax" in page.lower(), "MathJax must be served from the build"


@pytest.mark.slow
def test_paper_pages_and_notebooks_are_in_the_site(built):
    for page in ("papers/beta_tcvae", "papers/isa_vae", "papers/n_vae", "papers/ug_vae", "guide/write_your_own"):
        assert (built / f"{page}.html").exists(), page
    for notebook in (REPO / "notebooks").glob("*.ipynb"):
        assert (built / "notebooks" / f"{notebook.stem}.html").exists(), notebook.stem


@pytest.mark.slow
@pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))
def test_formulas_render_offline_in_chromium(built, tmp_path):
    with browser.chromium() as driver:
        browser.open_page(driver, built / "api" / "generated" / "untwine.distributions.lp_nested.html")
        assert browser.typeset_formulas(driver) >= 5
        assert all(ok for _, ok in browser.image_states(driver))
        assert browser.screenshot(driver, tmp_path / "api.png").stat().st_size > 10_000
