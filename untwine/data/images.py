"""Labelled image datasets: MNIST and Fashion-MNIST (torchvision) and Extended Yale B (``.mat``)."""

from __future__ import annotations

import contextlib
import gzip
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from untwine.data.base import DataError, ImageDataset, cache_dir
from untwine.io import atomic_write


def _torchvision(cls_name: str, name: str, root: str | Path | None, train: bool, download: bool) -> ImageDataset:
    import torchvision

    own = root is None
    if own:  # the default download folder is ours to create
        root = cache_dir() / "torchvision"
        root.mkdir(parents=True, exist_ok=True)
    root = Path(root).expanduser()
    if not root.is_dir():
        problem = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"data root {root} {problem}; pass the folder that holds {cls_name}/raw")
    cls = getattr(torchvision.datasets, cls_name)
    try:
        with _exclusive(root):
            if not own:
                download = _extract_missing(root / cls_name / "raw", cls.resources, cls_name) and download
            ds = cls(str(root), train=train, download=download)
    except (RuntimeError, OSError, ValueError, EOFError, AssertionError) as err:  # missing or foreign files
        raise DataError(
            f"could not load {cls_name} from {root} ({str(err) or 'a file is not in the idx format'}); put the four "
            f"{cls_name}/raw/*-ubyte.gz files "
            f"there, or allow the download"
        ) from err
    return ImageDataset(ds.data.unsqueeze(1).contiguous(), ds.targets.long(), 255.0, name)


def _extract_missing(raw: Path, resources: list[tuple[str, str]], cls_name: str) -> bool:
    """Decompress each missing ``raw/X`` from ``raw/X.gz`` and say whether a download may write into ``raw``.

    A user's data root gets only files that are not there yet: torchvision's own extraction would rewrite all four
    files when one is missing, and its download would replace an archive whose checksum differs. So extraction is
    done here, one missing file at a time, and a download is allowed only into a folder holding none of the
    dataset's files.
    """
    archives = [raw / url.rsplit("/", 1)[-1] for url, _ in resources]
    for archive in archives:
        target = archive.with_suffix("")
        if archive.is_file() and not target.exists():
            try:
                with gzip.open(archive) as f:
                    atomic_write(target, lambda out, f=f: shutil.copyfileobj(f, out))
            except (OSError, EOFError) as err:
                raise DataError(
                    f"could not extract {archive} ({err}); replace it with the official {cls_name} file"
                ) from err
    return not any(a.exists() or a.with_suffix("").exists() for a in archives)


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root`` while torchvision extracts into it: two runs started together on one folder
    would otherwise read each other's half-extracted files. Without ``fcntl`` or a writable ``root``, no lock."""
    try:
        import fcntl

        handle = open(root / ".untwine.lock", "a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def mnist(root: str | Path | None = None, train: bool = True, download: bool = True) -> ImageDataset:
    """MNIST, 28x28 greyscale, labels 0-9, via ``torchvision.datasets.MNIST(root)``.

    With the official ``MNIST/raw/*.gz`` files under ``root`` nothing is downloaded: each missing ``*-ubyte`` file is
    extracted beside its archive (so ``root`` must be writable), and no file already there is ever replaced. Without
    ``root``, the files are downloaded to the cache folder.
    """
    return _torchvision("MNIST", "mnist", root, train, download)


def fashion_mnist(root: str | Path | None = None, train: bool = True, download: bool = True) -> ImageDataset:
    """Fashion-MNIST, 28x28 greyscale, 10 classes, via ``torchvision.datasets.FashionMNIST(root)``."""
    return _torchvision("FashionMNIST", "fashion-mnist", root, train, download)


YALEB_FILE = "YaleB_32x32_ori.mat"


def yaleb(root: str | Path | None = None) -> ImageDataset:
    """Extended Yale B, 32x32 greyscale faces of 38 subjects (labels 0-37), from ``YaleB_32x32_ori.mat``.

    The N-VAE paper used 64x64 crops and kept only illumination angles below 100 degrees; this file has no
    illumination labels, so every image (up to 64 illuminations per subject, 2,414 in all) is kept, at 32x32.

    :param root: the ``.mat`` file or the folder holding it. The file stores images column-major.
    """
    if root is None:
        raise DataError(f"Extended Yale B is not downloadable here: pass --data-root pointing to {YALEB_FILE}")
    path = Path(root).expanduser()
    if path.is_dir():
        path = path / YALEB_FILE
    if not path.is_file():
        raise DataError(f"{path} not found; pass the path of {YALEB_FILE} or its folder")
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as err:  # scipy raises several types for non-.mat files
        raise DataError(f"{path} is not a readable .mat file ({err})") from err
    if "fea" not in mat or "gnd" not in mat:
        raise DataError(f"{path} lacks the 'fea' and 'gnd' arrays of the Yale B file")
    fea, gnd = np.asarray(mat["fea"]), np.asarray(mat["gnd"])
    if fea.ndim != 2 or fea.shape[0] == 0:
        raise DataError(f"{path}: 'fea' must hold one image per row, got shape {fea.shape}; is it the Yale B file?")
    if not (np.issubdtype(fea.dtype, np.integer) or np.issubdtype(fea.dtype, np.floating)):
        raise DataError(f"{path}: 'fea' must hold pixel numbers, got dtype {fea.dtype}")
    if not np.all(np.isfinite(fea)) or fea.min() < 0 or fea.max() > 255 or np.any(fea != np.round(fea)):
        raise DataError(f"{path}: 'fea' must hold whole pixel values in 0..255 (no NaN); the file is damaged")
    if gnd.size != fea.shape[0] or not np.issubdtype(gnd.dtype, np.number) or np.any(gnd != np.round(gnd)):
        raise DataError(f"{path}: 'gnd' must hold one whole-number subject label per row of 'fea'")
    if gnd.min() < 1:
        raise DataError(f"{path}: 'gnd' subject labels start at 1, got {gnd.min()}")
    side = int(round(fea.shape[1] ** 0.5))
    if side * side != fea.shape[1]:
        raise DataError(f"{path}: rows of {fea.shape[1]} pixels are not square images")
    images = fea.reshape(-1, side, side).transpose(0, 2, 1)
    labels = gnd.reshape(-1).astype(np.int64) - 1
    return ImageDataset(
        torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).unsqueeze(1),
        torch.from_numpy(labels),
        255.0,
        "yaleb",
    )
