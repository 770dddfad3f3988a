"""Every notebook is user documentation: it must run top to bottom (quick mode) without errors."""

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "the notebooks folder is empty"


@pytest.fixture(scope="session")
def default_data_root(torchvision_root):
    """MNIST and Fashion-MNIST where ``load_dataset`` looks by default (the test cache), as after a download."""
    from untwine.data import cache_dir

    shutil.copytree(torchvision_root, cache_dir() / "torchvision", dirs_exist_ok=True)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch, default_data_root):
    monkeypatch.setenv("UNTWINE_QUICK", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "a notebook should show its figures"
    assert os.environ.get("UNTWINE_CACHE"), "renders go to the test cache"
