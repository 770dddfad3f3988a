"""Datasets behind one interface (:class:`ImageDataset`), and the registry the CLI uses.

``load_dataset(name, root=None, ...)`` is the single entry point: it applies the seeded subset and, in quick
mode, the small version of each dataset (a dSprites factor sub-grid, 5000 MNIST images, 2500 + 2500 images of the
MNIST/Fashion-MNIST mixture, a factor sub-grid or seeded subset of a few thousand images of the field's benchmarks).

The benchmarks of :mod:`untwine.data.benchmarks` (``shapes3d``, ``smallnorb``, ``cars3d``, ``mpi3d``, ``celeba``,
``faces3d``) cannot be downloaded here: they read the published files under ``--data-root``. Your own images with
factor values become a dataset with :meth:`FactorDataset.from_arrays` (a full grid) or
:meth:`LabelledFactors.from_arrays` (any labelled images).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from untwine.data.base import DataError, FactorDataset, ImageDataset, LabelledFactors, cache_dir
from untwine.data.benchmarks import cars3d, celeba, faces3d, mpi3d, shapes3d, smallnorb
from untwine.data.dsprites import DSprites
from untwine.data.groups import DomainMixture, structured_batches
from untwine.data.images import fashion_mnist, mnist, yaleb

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
# dSprites sub-grid used by quick runs: every shape and scale, 10 orientations, 8x8 positions (11,520 images).
QUICK_DSPRITES_GRID = {"orientation": range(0, 40, 4), "posX": range(0, 32, 4), "posY": range(0, 32, 4)}


def _dsprites(root: str | Path | None, train: bool, quick: bool) -> ImageDataset:
    path = None
    if root is not None:
        root = Path(root).expanduser()
        if not root.exists():
            raise DataError(
                f"data root {root} does not exist; give the dSprites .npz or its folder, or leave out --data-root "
                "to render dSprites"
            )
        path = root / DSPRITES_FILE if root.is_dir() else root
    return DSprites(path=path, subgrid=QUICK_DSPRITES_GRID if quick else None)


def _mnist_fashion(root: str | Path | None, train: bool, quick: bool) -> ImageDataset:
    parts = [mnist(root, train), fashion_mnist(root, train)]
    if quick:
        parts = [p.random_subset(QUICK_MIXTURE_PART, seed=k) for k, p in enumerate(parts)]
    return DomainMixture.of(parts, "mnist+fashion-mnist")


QUICK_MIXTURE_PART = 2500


@dataclass(frozen=True)
class DataSpec:
    """A registered dataset: ``load(root, train, quick)``, training batch size, and whether it has a test split."""

    load: Callable[[str | Path | None, bool, bool], ImageDataset]
    batch_size: int
    has_test: bool
    quick_size: int | None
    summary: str


DATASETS: dict[str, DataSpec] = {
    "dsprites": DataSpec(
        _dsprites, 2048, False, None,
        "dSprites 64x64 with 6 ground-truth factors; procedural, or the real .npz under --data-root",
    ),
    "mnist": DataSpec(lambda r, t, q: mnist(r, t), 128, True, 5000, "MNIST 28x28 digits (torchvision)"),
    "fashion-mnist": DataSpec(
        lambda r, t, q: fashion_mnist(r, t), 128, True, 5000, "Fashion-MNIST 28x28 (torchvision)"
    ),
    "mnist+fashion-mnist": DataSpec(
        _mnist_fashion, 128, True, None,
        "MNIST and Fashion-MNIST mixed 50/50 in every batch, domain per image (UG-VAE's domain alignment)",
    ),
    "yaleb": DataSpec(lambda r, t, q: yaleb(r), 64, False, None, "Extended Yale B 32x32 faces, 38 subjects (.mat)"),
    # the field's benchmarks, read from the files under --data-root (batch sizes: disentanglement_lib's 64; UG-VAE's
    # 128 on CelebA; beta-TCVAE's 2048 on 3D faces)
    "shapes3d": DataSpec(
        lambda r, t, q: shapes3d(r, quick=q), 64, False, None,
        "3D Shapes 64x64 RGB, 6 factors, 480,000 images (3dshapes.h5 under --data-root)",
    ),
    "smallnorb": DataSpec(
        lambda r, t, q: smallnorb(r, train=t, quick=q), 64, True, None,
        "smallNORB 64x64 grey, category x instance x elevation x azimuth x lighting (the .mat files under --data-root)",
    ),
    "cars3d": DataSpec(
        lambda r, t, q: cars3d(r, quick=q), 64, False, None,
        "Cars3D 64x64 RGB, elevation x azimuth x 183 cars (the folder of per-car .mat files as --data-root)",
    ),
    "mpi3d": DataSpec(
        lambda r, t, q: mpi3d(r, quick=q), 64, False, None,
        "MPI3D 64x64 RGB, 7 factors, 1,036,800 images (mpi3d_toy/realistic/real.npz under --data-root)",
    ),
    "celeba": DataSpec(
        lambda r, t, q: celeba(r, train=t, quick=q), 128, True, None,
        "CelebA 64x64 RGB (centre crop 148), 40 binary attributes (torchvision's celeba/ folder under --data-root)",
    ),
    "faces3d": DataSpec(
        lambda r, t, q: faces3d(r, quick=q), 2048, False, None,
        "3D Faces 64x64 grey, face x azimuth x elevation x lighting (basel_face_renders.pth under --data-root)",
    ),
}  # fmt: skip


def data_spec(name: str) -> DataSpec:
    """Registry entry for ``name`` or a :class:`DataError` listing the known datasets."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def _checked(ds: ImageDataset, name: str) -> ImageDataset:
    """What every loader must hand over: integer labels, and finite values when images are stored as floats."""
    targets = ds.targets
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise DataError(f"{name}: labels must be integers, got {targets.dtype}; convert them to int64 when loading")
    if ds.images.is_floating_point() and not bool(torch.isfinite(ds.images).all()):
        raise DataError(f"{name}: the images contain NaN or infinite values; clean or drop those images")
    return ds


def load_dataset(
    name: str,
    root: str | Path | None = None,
    train: bool = True,
    quick: bool = False,
    subset: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """Load dataset ``name``.

    :param root: where the files are (dSprites: the real ``.npz`` or its folder, none means procedural; the
        benchmarks of :mod:`untwine.data.benchmarks`: their file or folder, required).
    :param train: training split (``False``: test split, for datasets that have one).
    :param quick: the small version used by ``--quick`` runs.
    :param subset: keep a seeded random subset of this many images (a :class:`FactorDataset` then becomes a
        :class:`LabelledFactors`: the factors stay with their images, but a random subset is no longer a full grid).
    """
    spec = data_spec(name)
    if not train and not spec.has_test:
        raise DataError(f"dataset {name!r} has no test split")
    ds = _checked(spec.load(root, train, quick), name)
    if quick and spec.quick_size is not None:
        ds = ds.random_subset(spec.quick_size, seed)
    if subset is not None:
        if train and subset > len(ds):
            raise DataError(
                f"subset {subset} is larger than the {len(ds)} images of {name}{' (quick)' if quick else ''}; "
                f"give at most {len(ds)}"
            )
        ds = ds.random_subset(subset, seed)
    return ds


__all__ = [
    "DATASETS",
    "DSprites",
    "DataError",
    "DataSpec",
    "DomainMixture",
    "FactorDataset",
    "ImageDataset",
    "LabelledFactors",
    "cache_dir",
    "cars3d",
    "celeba",
    "data_spec",
    "faces3d",
    "fashion_mnist",
    "load_dataset",
    "mnist",
    "mpi3d",
    "shapes3d",
    "smallnorb",
    "structured_batches",
    "yaleb",
]
