"""Shared fixtures: where the real datasets live, and a private cache so tests never touch the user's."""

import os
import sys
from pathlib import Path

import pyro
import pytest

REPO = Path(__file__).resolve().parents[1]
# docs/browser.py drives headless Chromium for the tests that look at report.html and the built docs
sys.path.insert(0, str(REPO / "docs"))


def _shared_data() -> Path:
    env = os.environ.get("UNTWINE_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Read-only folder of real datasets (``../shared/data`` beside the repository)."""
    path = _shared_data()
    if not (path / "README.md").exists():
        pytest.fail(f"real test data not found at {path}; set UNTWINE_SHARED_DATA to the shared data folder")
    return path


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Renders and extractions go to a per-session temporary cache."""
    os.environ["UNTWINE_CACHE"] = str(tmp_path_factory.mktemp("untwine-cache"))
    yield


@pytest.fixture(autouse=True)
def _fresh_pyro():
    """Each test starts with an empty param store and validation on (training turns it off itself)."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def torchvision_root(shared_data, tmp_path_factory) -> Path:
    """Writable copy of the MNIST and Fashion-MNIST raw files (torchvision extracts them in place)."""
    import shutil

    root = tmp_path_factory.mktemp("torchvision")
    shutil.copytree(shared_data / "mnist" / "MNIST", root / "MNIST")
    shutil.copytree(shared_data / "fashion-mnist" / "FashionMNIST", root / "FashionMNIST")
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@pytest.fixture(scope="session")
def mnist_train(torchvision_root):
    from untwine.data import mnist

    return mnist(torchvision_root, train=True)
