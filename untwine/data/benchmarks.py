"""The field's benchmark datasets, read from the files a user has, in their published formats.

None of these can be downloaded by untwine: each loader reads the files under ``--data-root`` (a folder or the file
itself) and returns the one data interface, :class:`~untwine.data.base.FactorDataset` for a full factor grid (rows
in row-major order, last factor fastest) or :class:`~untwine.data.base.LabelledFactors` otherwise. Images are stored
compactly (``uint8``, ``(N, C, 64, 64)``, ``C = 3`` for colour) and resized to 64x64 where the files hold another
size, with antialiased bilinear interpolation (``torch.nn.functional.interpolate``), a chunk of images at a time.

==========  =====================================  ==================================================  ============
name        files                                  factors (sizes)                                     images
==========  =====================================  ==================================================  ============
shapes3d    ``3dshapes.h5``                        floor_hue 10, wall_hue 10, object_hue 10, scale 8,  480,000 RGB
                                                   shape 4, orientation 15
smallnorb   ``smallnorb-*-{dat,cat,info}.mat``     category 5, instance 5, elevation 9, azimuth 18,    24,300 grey
                                                   lighting 6 (per split)                              per split
cars3d      a folder of ``*.mat`` (one per car)    elevation 4, azimuth 24, object 183                 17,568 RGB
mpi3d       ``mpi3d_{toy,realistic,real}.npz``     object_color 6, object_shape 6, object_size 2,      1,036,800 RGB
                                                   camera_height 3, background_color 3,
                                                   horizontal_axis 40, vertical_axis 40
celeba      torchvision's ``celeba/`` folder       the 40 binary attributes (labels, no grid)          202,599 RGB
faces3d     ``basel_face_renders.pth``             face 50, azimuth 21, elevation 11, lighting 11      127,050 grey
==========  =====================================  ==================================================  ============

Grid sizes are read from the file wherever its format records them (the ``labels`` of ``3dshapes.h5``, NORB's
``cat``/``info`` files, the shape of a cars ``.mat`` or of a 6-D faces tensor), so a smaller file in the same format
loads the same way. An mpi3d ``.npz`` and a flat faces tensor carry no labels: they must hold the published number
of images, unless the sizes are passed to :func:`mpi3d` (``factor_sizes=``) from Python.

No loader runs code from a data file: ``.npz`` members are read without pickle (an object array is refused unread),
``.pth`` with ``torch.load(..., weights_only=True)``, ``.h5`` with h5py, MATLAB files with scipy's ``loadmat``, and
the NORB and CelebA files are parsed as the binary and text formats they are.

Each ``quick=True`` version is a fixed factor sub-grid of a few thousand images (every second or third value of some
factors, see the ``*_QUICK`` step tables), or for CelebA a seeded subset chosen before any image is decoded.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from untwine.data.base import (
    DataError,
    FactorDataset,
    LabelledFactors,
    _classes_of,
    _one_line,
    grid_order,
    grid_strides,
    product_grid,
)

IMAGE_SIZE = 64
#: images read and resized at a time
CHUNK = 1024
#: size of the seeded random subset a quick run of labelled data without a grid keeps
QUICK_LABELLED = 5000


# --- shared helpers -------------------------------------------------------------------------------------------------


def _root(root: str | os.PathLike | None, dataset: str, expected: str) -> Path:
    """``root`` as an existing path, or a :class:`DataError` saying what to pass."""
    if root is None:
        raise DataError(f"{dataset} cannot be downloaded by untwine: pass --data-root pointing to {expected}")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"data root {path} does not exist; pass --data-root pointing to {expected}")
    return path


def _file_in(root: str | os.PathLike | None, filename: str, dataset: str) -> Path:
    """The file ``filename`` given as ``root`` itself or inside the folder ``root``."""
    path = _root(root, dataset, f"{filename} or its folder")
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise DataError(f"{dataset}: {path} not found; pass --data-root pointing to {filename} or its folder")
    return path


def _resize(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images ``(n, C, h, w)`` as ``uint8`` ``(n, C, 64, 64)``: antialiased bilinear, rounded."""
    if tuple(images.shape[-2:]) == (IMAGE_SIZE, IMAGE_SIZE):
        return images
    x = F.interpolate(images.float(), size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _collect(n: int, channels: int, blocks: Iterator[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """Fill ``(n, C, 64, 64)`` ``uint8`` images from ``(start, images (b, C, h, w))`` blocks, resizing each."""
    out = torch.empty(n, channels, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    filled = 0
    for start, block in blocks:
        out[start : start + len(block)] = _resize(block)
        filled += len(block)
    if filled != n:  # a reader that stopped early would leave garbage behind
        raise DataError(f"read {filled} of {n} images; the file is damaged")
    return out


def _steps_keep(names: Sequence[str], sizes: Sequence[int], steps: Mapping[str, int]) -> list[np.ndarray]:
    """Classes each factor keeps in a quick sub-grid: every ``steps[name]``-th class (all for unnamed factors)."""
    return [np.arange(0, s, steps.get(f, 1), dtype=np.int64) for f, s in zip(names, sizes)]


def _subgrid(
    sizes: Sequence[int], keep: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """The sub-grid ``keep`` of the full row-major grid ``sizes``: its rows there, its own (re-indexed) classes, the
    original classes, and its sizes."""
    new_sizes = tuple(len(k) for k in keep)
    local = product_grid(new_sizes)
    original = np.stack([k[local[:, j]] for j, k in enumerate(keep)], axis=1)
    return original @ grid_strides(sizes), local, original, new_sizes


def _grid_dataset(
    read: Callable[[np.ndarray], torch.Tensor],
    sizes: Sequence[int],
    names: Sequence[str],
    values: np.ndarray | None,
    name: str,
    quick_steps: Mapping[str, int] | None,
) -> FactorDataset:
    """A :class:`FactorDataset` of a full row-major grid whose images ``read(rows)`` returns (``(n, C, 64, 64)``
    ``uint8``); with ``quick_steps`` only the quick sub-grid's rows are read. ``values`` are the factor values
    ``(N, K)`` of the full grid (default: the original classes)."""
    rows, classes, original, new_sizes = _subgrid(sizes, _steps_keep(names, sizes, quick_steps or {}))
    vals = original.astype(np.float64) if values is None else values[rows]
    return FactorDataset(read(rows), torch.from_numpy(classes), vals, names, new_sizes, 255.0, name)


def _chunks(rows: np.ndarray, size: int = CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(rows), size):
        yield start, rows[start : start + size]


# --- 3D Shapes ------------------------------------------------------------------------------------------------------

SHAPES3D_FILE = "3dshapes.h5"
SHAPES3D_FACTORS = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
SHAPES3D_SIZES = (10, 10, 10, 8, 4, 15)
#: quick sub-grid: every third hue, every second scale, every fourth orientation, all shapes (4^6 = 4096 images)
SHAPES3D_QUICK = {"floor_hue": 3, "wall_hue": 3, "object_hue": 3, "scale": 2, "orientation": 4}


def _h5_rows(dataset, rows: np.ndarray) -> Iterator[tuple[int, torch.Tensor]]:
    """Images ``(b, 3, H, W)`` of the increasing ``rows`` of an h5py dataset ``(N, H, W, 3)``, a chunk at a time:
    one slice where the chunk's rows lie close together, h5py's point selection where they are spread out."""
    for start, chunk in _chunks(rows):
        first, last = int(chunk[0]), int(chunk[-1])
        if last - first + 1 <= 4 * len(chunk) + 64:
            block = dataset[first : last + 1][chunk - first]
        else:
            block = dataset[chunk]
        yield start, torch.from_numpy(np.ascontiguousarray(block)).permute(0, 3, 1, 2)


def shapes3d(root: str | os.PathLike | None, quick: bool = False) -> FactorDataset:
    """3D Shapes (Burgess & Kim 2018), the dataset of FactorVAE (Kim & Mnih 2018, "Disentangling by Factorising")
    and of Locatello et al.'s disentanglement_lib, from DeepMind's ``3dshapes.h5``.

    The file holds ``images`` ``(480000, 64, 64, 3)`` ``uint8`` and ``labels`` ``(480000, 6)`` float64, the full
    grid of floor_hue (10), wall_hue (10), object_hue (10), scale (8), shape (4) and orientation (15) in row-major
    order (orientation fastest). The sizes are read from ``labels`` (each factor's distinct values, in increasing
    order, are its classes; ``factor_values`` are the labels), and the rows must be that grid in row-major order.
    Images are read from the file a chunk at a time (64x64 already; another size would be resized).

    :param root: ``3dshapes.h5`` or its folder.
    :param quick: the sub-grid :data:`SHAPES3D_QUICK` (4,096 images of the real file); only its rows are read.
    :raises DataError: a missing file, a file that is not HDF5, missing ``images``/``labels``, wrong shapes or
        dtypes, or labels that are not a full row-major grid.
    """
    path = _file_in(root, SHAPES3D_FILE, "shapes3d")
    import h5py

    try:
        with h5py.File(path, "r", rdcc_nbytes=64 << 20) as f:
            missing = [k for k in ("images", "labels") if not isinstance(f.get(k), h5py.Dataset)]
            if missing:
                raise DataError(f"{path} is not the 3D Shapes file: no {' or '.join(missing)} dataset in it")
            images, labels = f["images"], f["labels"]
            n = images.shape[0] if images.ndim else 0
            if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8 or n == 0:
                raise DataError(f"{path}: images must be uint8 (N, 64, 64, 3), got {images.dtype} {images.shape}")
            if labels.shape != (n, len(SHAPES3D_FACTORS)) or labels.dtype.kind not in "fiu":
                raise DataError(
                    f"{path}: labels must be numbers of shape ({n}, {len(SHAPES3D_FACTORS)}), "
                    f"got {labels.dtype} {labels.shape}"
                )
            values = np.asarray(labels[()], dtype=np.float64)
            if not np.all(np.isfinite(values)):
                raise DataError(f"{path}: labels hold NaN or infinite values")
            classes, sizes = _classes_of(values)
            order, why = grid_order(classes, sizes)
            if why is not None or order is not None:
                problem = why or "rows out of order"
                raise DataError(
                    f"{path}: labels are not the full factor grid in row-major order (orientation fastest): {problem}"
                )

            def read(rows: np.ndarray) -> torch.Tensor:
                return _collect(len(rows), 3, _h5_rows(images, rows))

            return _grid_dataset(read, sizes, SHAPES3D_FACTORS, values, "shapes3d", SHAPES3D_QUICK if quick else None)
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:  # h5py's errors for foreign or cut files
        raise DataError(f"could not read {path} ({_one_line(err)}); expected DeepMind's {SHAPES3D_FILE}") from err


# --- smallNORB ------------------------------------------------------------------------------------------------------

NORB_FILES = {
    True: "smallnorb-5x46789x9x18x6x2x96x96-training-{}.mat",
    False: "smallnorb-5x01235x9x18x6x2x96x96-testing-{}.mat",
}
NORB_FACTORS = ("category", "instance", "elevation", "azimuth", "lighting")
NORB_SIZES = (5, 5, 9, 18, 6)
_NORB_MAGIC = {0x1E3D4C55: np.dtype(np.uint8), 0x1E3D4C54: np.dtype("<i4")}
#: quick sub-grid: every second elevation, azimuth and lighting (5 x 5 x 5 x 9 x 3 = 3,375 images per split)
NORB_QUICK = {"elevation": 2, "azimuth": 2, "lighting": 2}


def _norb_matrix(path: Path, magic: int) -> np.ndarray:
    """A NORB binary matrix (memory-mapped): int32 magic, int32 ndim, ``max(3, ndim)`` int32 dims, then the data,
    all little-endian."""
    if not path.is_file():
        raise DataError(f"smallnorb: {path} not found; put the six smallNORB .mat files (binary matrices) there")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DataError(f"{path} is truncated: {size} bytes, not even a NORB header")
        found, ndim = struct.unpack("<ii", head)
        if found != magic:
            raise DataError(f"{path} is not a NORB binary matrix of the right type (magic {found:#x}, want {magic:#x})")
        if not 1 <= ndim <= 8:
            raise DataError(f"{path}: a NORB header with {ndim} dimensions; the file is damaged")
        count = max(3, ndim)
        dims = f.read(4 * count)
        if len(dims) < 4 * count:
            raise DataError(f"{path} is truncated inside its NORB header")
    shape = struct.unpack(f"<{count}i", dims)[:ndim]
    if any(d <= 0 for d in shape):
        raise DataError(f"{path}: NORB dimensions {shape} must be positive; the file is damaged")
    offset = 8 + 4 * count
    need = offset + math.prod(shape) * _NORB_MAGIC[magic].itemsize
    if size < need:
        raise DataError(f"{path} is truncated: {size} bytes, its header says {need}")
    return np.memmap(path, dtype=_NORB_MAGIC[magic], mode="r", offset=offset, shape=shape)


def smallnorb(root: str | os.PathLike | None, train: bool = True, quick: bool = False) -> LabelledFactors:
    """smallNORB (LeCun et al. 2004, "Learning methods for generic object recognition with invariance to pose and
    lighting"), as disentanglement_lib (Locatello et al. 2019) uses it: the left image of each stereo pair, resized
    from 96x96 to 64x64, greyscale.

    Each split is three NORB binary matrices (despite ``.mat``, not MATLAB files): ``-dat`` ``uint8``
    ``(24300, 2, 96, 96)`` stereo pairs, ``-cat`` int32 ``(24300,)`` categories, ``-info`` int32 ``(24300, 4)``
    instance, elevation (0-8), azimuth (0, 2, ..., 34: 20-degree steps) and lighting (0-5). The factors are
    category (5), instance (renumbered 0-4 within its category: training holds instances 4, 6, 7, 8, 9 of each
    category, testing 0, 1, 2, 3, 5), elevation (9), azimuth (18) and lighting (6); each factor's classes are the
    ranks of its distinct values in the file. A complete split is the full grid 5 x 5 x 9 x 18 x 6 = 24,300 and
    loads as a :class:`FactorDataset` in row-major order (lighting fastest); a file with combinations missing or
    repeated loads as :class:`LabelledFactors` in file order. ``factor_values`` are category, the original instance
    id, elevation in degrees (30-70), azimuth in degrees (0-340) and lighting.

    :param root: the folder holding ``smallnorb-5x46789x9x18x6x2x96x96-training-{dat,cat,info}.mat`` and
        ``smallnorb-5x01235x9x18x6x2x96x96-testing-{dat,cat,info}.mat`` (unzipped).
    :param train: the training split (``False``: the testing split).
    :param quick: the sub-grid :data:`NORB_QUICK` (3,375 images; a seeded subset of 5,000 without a grid).
    """
    folder = _root(root, "smallnorb", "the folder of the smallNORB .mat files")
    if folder.is_file():
        folder = folder.parent
    pattern = NORB_FILES[bool(train)]
    dat = _norb_matrix(folder / pattern.format("dat"), 0x1E3D4C55)
    cat = np.asarray(_norb_matrix(folder / pattern.format("cat"), 0x1E3D4C54))
    info = np.asarray(_norb_matrix(folder / pattern.format("info"), 0x1E3D4C54))
    n = len(cat)
    if dat.ndim != 4 or dat.shape[0] != n or dat.shape[1] != 2:
        raise DataError(
            f"{folder / pattern.format('dat')}: images must be (N, 2, H, W) for {n} labels, got {dat.shape}"
        )
    if cat.ndim != 1 or info.shape != (n, 4):
        raise DataError(
            f"{folder / pattern.format('info')}: info must be ({n}, 4) and cat ({n},), got {info.shape} and {cat.shape}"
        )
    if np.any(info[:, 2] % 2):
        raise DataError(f"{folder / pattern.format('info')}: azimuths must be even (0, 2, ..., 34)")
    instance = np.empty(n, dtype=np.int64)
    for c in np.unique(cat):  # instance ids renumbered within each category
        mine = cat == c
        instance[mine] = np.searchsorted(np.unique(info[mine, 0]), info[mine, 0])
    raw = np.stack([cat, info[:, 1], info[:, 2] // 2, info[:, 3]], axis=1).astype(np.float64)
    ranks, (n_cat, n_el, n_az, n_li) = _classes_of(raw)
    classes = np.stack([ranks[:, 0], instance, ranks[:, 1], ranks[:, 2], ranks[:, 3]], axis=1)
    sizes = (n_cat, int(instance.max()) + 1, n_el, n_az, n_li)
    values = np.stack([cat, info[:, 0], 30 + 5 * info[:, 1], 10 * info[:, 2], info[:, 3]], axis=1).astype(np.float64)

    def read(rows: np.ndarray) -> torch.Tensor:
        blocks = ((s, torch.from_numpy(np.ascontiguousarray(dat[r, 0])).unsqueeze(1)) for s, r in _chunks(rows))
        return _collect(len(rows), 1, blocks)

    order, why = grid_order(classes, sizes)
    if why is None:
        file_rows = np.arange(n) if order is None else order

        def read_grid(rows: np.ndarray) -> torch.Tensor:
            picked = file_rows[rows]
            sort = np.argsort(picked, kind="stable")  # read the memory map in file order, then put rows in place
            images = torch.empty(len(rows), 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
            images[torch.from_numpy(sort)] = read(picked[sort])
            return images

        return _grid_dataset(
            read_grid, sizes, NORB_FACTORS, values[file_rows], "smallnorb", NORB_QUICK if quick else None
        )
    keep = np.arange(n)
    if quick and n > QUICK_LABELLED:
        keep = np.sort(torch.randperm(n, generator=torch.Generator().manual_seed(0))[:QUICK_LABELLED].numpy())
    return LabelledFactors(
        read(keep), torch.from_numpy(classes[keep]), values[keep], NORB_FACTORS, sizes, 255.0, "smallnorb"
    )


# --- Cars3D ---------------------------------------------------------------------------------------------------------

CARS3D_FACTORS = ("elevation", "azimuth", "object")
CARS3D_SIZES = (4, 24, 183)
#: quick sub-grid: every second azimuth and every fourth car (4 x 12 x 46 = 2,208 images); only those files are read
CARS3D_QUICK = {"azimuth": 2, "object": 4}


def _car(path: Path) -> np.ndarray:
    """The ``im`` array ``(H, W, 3, azimuths, elevations)`` ``uint8`` of one car's ``.mat`` file."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=["im"])
    except Exception as err:  # scipy raises many types for foreign or cut files
        raise DataError(f"{path} is not a readable .mat file ({_one_line(err)})") from err
    im = mat.get("im")
    if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 5 or im.shape[2] != 3:
        got = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else "none"
        raise DataError(f"{path}: 'im' must be uint8 (H, W, 3, azimuths, elevations), got {got}")
    return im


def cars3d(root: str | os.PathLike | None, quick: bool = False) -> FactorDataset:
    """Cars3D (Fidler et al. 2012, rendered by Reed et al. 2015, "Deep Visual Analogy-Making"), used by the
    ISA-VAE paper, the UG-VAE paper and disentanglement_lib.

    The data are a folder of ``.mat`` files, one per car model (``car_001_mesh.mat``, ...; every ``*.mat`` in the
    folder, in sorted name order, is a car), each holding ``im`` ``uint8`` ``(128, 128, 3, 24, 4)``: height, width,
    colour, 24 azimuths, 4 elevations. Factors follow disentanglement_lib's order, elevation (4), azimuth (24),
    object (183), in row-major order (object fastest): image ``(e, a, o)`` is ``im[:, :, :, a, e]`` of the ``o``-th
    file. (disentanglement_lib numbers cars in directory-listing order, which no file system fixes; sorted names
    make the order reproducible.) The sizes come from the files (``im``'s shape and the number of files); images are
    resized to 64x64. ``factor_values`` are the classes (the files record no angles).

    :param root: the folder of the cars ``.mat`` files.
    :param quick: the sub-grid :data:`CARS3D_QUICK` (2,208 images of the real data); only its cars are read.
    """
    folder = _root(root, "cars3d", "the folder of the cars .mat files")
    if not folder.is_dir():
        raise DataError(f"cars3d: {folder} is a file; pass the folder of the per-car .mat files")
    files = sorted(p for p in folder.glob("*.mat") if p.is_file())
    if not files:
        raise DataError(f"cars3d: no .mat files in {folder}; pass the folder of the per-car files (car_*_mesh.mat)")
    first = _car(files[0])
    n_az, n_el = first.shape[3], first.shape[4]
    sizes = (n_el, n_az, len(files))
    keep = _steps_keep(CARS3D_FACTORS, sizes, CARS3D_QUICK if quick else {})
    local_sizes = tuple(len(k) for k in keep)
    images = torch.empty(*local_sizes, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    for j, o in enumerate(keep[2]):
        im = first if o == 0 else _car(files[o])
        if im.shape != first.shape:
            raise DataError(f"{files[o]}: 'im' has shape {im.shape}, but {files[0].name} has {first.shape}")
        # (H, W, C, az, el) -> (el, az, C, H, W), the kept angles only
        cube = torch.from_numpy(im).permute(4, 3, 2, 0, 1)[torch.from_numpy(keep[0])][:, torch.from_numpy(keep[1])]
        images[:, :, j] = _resize(cube.reshape(-1, *cube.shape[2:])).view(*local_sizes[:2], 3, IMAGE_SIZE, IMAGE_SIZE)
    classes = product_grid(local_sizes)
    values = np.stack([keep[k][classes[:, k]] for k in range(3)], axis=1).astype(np.float64)
    flat = images.view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
    return FactorDataset(flat, torch.from_numpy(classes), values, CARS3D_FACTORS, local_sizes, 255.0, "cars3d")


# --- MPI3D ----------------------------------------------------------------------------------------------------------

MPI3D_FACTORS = (
    "object_color",
    "object_shape",
    "object_size",
    "camera_height",
    "background_color",
    "horizontal_axis",
    "vertical_axis",
)
MPI3D_SIZES = (6, 6, 2, 3, 3, 40, 40)
#: quick sub-grid: every second colour and shape, every eighth position on both axes (3x3x2x3x3x5x5 = 4,050 images)
MPI3D_QUICK = {"object_color": 2, "object_shape": 2, "horizontal_axis": 8, "vertical_axis": 8}


class _NpzMember:
    """One array of an ``.npz`` read without pickle and without loading it whole: memory-mapped when the archive
    stores it uncompressed (``np.savez``), streamed chunk by chunk when it is compressed (``np.savez_compressed``).

    The ``.npy`` header is parsed (a Python literal, never unpickled) before anything else is read, and an array
    whose dtype holds Python objects is refused.
    """

    def __init__(self, path: Path, key: str):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise DataError(f"{path} is not an .npz archive ({_one_line(err)})") from err
        try:
            self.info = self.zip.getinfo(f"{key}.npy")
        except KeyError:
            self.zip.close()
            raise DataError(f"{path} has no array {key!r} (it holds {sorted(self.zip.namelist())})") from None
        try:
            with self.zip.open(self.info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
                self.data_start = f.tell()
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            self.zip.close()
            raise DataError(f"{path}: the {key!r} member is not a readable .npy array ({_one_line(err)})") from err
        if dtype.hasobject:
            self.zip.close()
            raise DataError(f"{path}: {key!r} holds Python objects, which untwine never unpickles; expected uint8")
        self.shape, self.dtype, self.fortran = tuple(shape), dtype, fortran
        self.row_bytes = math.prod(self.shape[1:]) * dtype.itemsize
        total = self.data_start + (self.shape[0] if self.shape else 1) * self.row_bytes
        if self.info.file_size < total:
            self.zip.close()
            raise DataError(f"{path}: {key!r} is truncated ({self.info.file_size} of {total} bytes)")

    def close(self) -> None:
        self.zip.close()

    def _memmap(self) -> np.ndarray | None:
        """The array memory-mapped from the archive, when it is stored uncompressed."""
        if self.info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(self.path, "rb") as f:
            f.seek(self.info.header_offset)
            head = f.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise DataError(f"{self.path}: a damaged zip entry for {self.info.filename}")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        offset = self.info.header_offset + 30 + name_len + extra_len + self.data_start
        try:
            return np.memmap(self.path, dtype=self.dtype, mode="r", offset=offset, shape=self.shape)
        except (ValueError, OSError) as err:
            raise DataError(f"{self.path}: cannot map {self.info.filename} ({_one_line(err)}); truncated?") from err

    def rows(self, rows: np.ndarray, block: int = CHUNK) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, array)`` of the increasing ``rows``, ``block`` rows of the file at a time."""
        mapped = self._memmap()
        if mapped is not None:
            for start, chunk in _chunks(rows, block):
                yield start, np.asarray(mapped[chunk])
            return
        n = self.shape[0]
        done = 0
        try:
            with self.zip.open(self.info) as f:
                for lo in range(0, n, block):
                    hi = min(n, lo + block)
                    a, b = np.searchsorted(rows, [lo, hi])
                    if a == b:
                        continue
                    f.seek(self.data_start + lo * self.row_bytes)
                    buf = f.read((hi - lo) * self.row_bytes)
                    if len(buf) < (hi - lo) * self.row_bytes:
                        raise DataError(f"{self.path}: {self.info.filename} is truncated")
                    arr = np.frombuffer(buf, dtype=self.dtype).reshape(hi - lo, *self.shape[1:])
                    yield done, arr[rows[a:b] - lo]
                    done += b - a
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:  # a CRC mismatch, a broken deflate stream
            raise DataError(f"{self.path}: {self.info.filename} is damaged ({_one_line(err)})") from err


def _mpi3d_file(root: str | os.PathLike | None) -> Path:
    path = _root(root, "mpi3d", "mpi3d_toy.npz, mpi3d_realistic.npz or mpi3d_real.npz, or their folder")
    if path.is_file():
        return path
    found = sorted(p for p in path.glob("mpi3d_*.npz") if p.is_file())
    if not found:
        raise DataError(
            f"mpi3d: no mpi3d_*.npz in {path}; put mpi3d_toy.npz, mpi3d_realistic.npz or mpi3d_real.npz there"
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(f"mpi3d: several files in {path} ({names}); pass --data-root pointing to the one to use")
    return found[0]


def mpi3d(
    root: str | os.PathLike | None, quick: bool = False, factor_sizes: Sequence[int] | None = None
) -> FactorDataset:
    """MPI3D (Gondal et al. 2019, "On the Transfer of Inductive Bias from Simulation to the Real World"), the
    NeurIPS 2019 disentanglement challenge's data: ``mpi3d_toy.npz``, ``mpi3d_realistic.npz`` or ``mpi3d_real.npz``.

    Each archive holds one array ``images`` ``uint8`` ``(1036800, 64, 64, 3)``, the full grid of object_color (6),
    object_shape (6), object_size (2), camera_height (3), background_color (3), horizontal_axis (40) and
    vertical_axis (40) in row-major order (vertical_axis fastest). The file carries no labels, so it must hold the
    published 1,036,800 images; a file of another grid (a test fixture, a subset you cut) loads from Python with
    ``factor_sizes=``. ``factor_values`` are the classes. The array is memory-mapped when the archive stores it
    uncompressed and streamed otherwise, and only the rows a quick run keeps are copied.

    :param root: the ``.npz`` or a folder holding exactly one ``mpi3d_*.npz``.
    :param quick: the sub-grid :data:`MPI3D_QUICK` (4,050 images of the real file).
    :param factor_sizes: the grid of a file that is not the published size (7 sizes, product = its images).
    """
    path = _mpi3d_file(root)
    sizes = MPI3D_SIZES if factor_sizes is None else tuple(int(s) for s in factor_sizes)
    if len(sizes) != len(MPI3D_FACTORS) or min(sizes) < 1:
        raise DataError(f"mpi3d: factor_sizes must be {len(MPI3D_FACTORS)} positive sizes, got {factor_sizes}")
    member = _NpzMember(path, "images")
    try:
        shape = member.shape
        if member.dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or member.fortran:
            raise DataError(f"{path}: images must be uint8 (N, 64, 64, 3) in C order, got {member.dtype} {shape}")
        if shape[0] != math.prod(sizes):
            grid = " x ".join(map(str, sizes))
            hint = (
                "the published mpi3d files hold that many (the file has no labels); "
                "a file of another grid loads from Python with mpi3d(path, factor_sizes=...)"
                if factor_sizes is None
                else "factor_sizes must multiply to the number of images"
            )
            raise DataError(f"{path}: images holds {shape[0]} images, not {math.prod(sizes)} = {grid}; {hint}")

        def read(rows: np.ndarray) -> torch.Tensor:
            blocks = ((s, torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)) for s, a in member.rows(rows))
            return _collect(len(rows), 3, blocks)

        return _grid_dataset(read, sizes, MPI3D_FACTORS, None, "mpi3d", MPI3D_QUICK if quick else None)
    finally:
        member.close()


# --- CelebA ---------------------------------------------------------------------------------------------------------

CELEBA_ATTR = "list_attr_celeba.txt"
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBA_IMAGES = "img_align_celeba"
#: side of the centre crop taken before resizing to 64x64
CELEBA_CROP = 148


def _celeba_folder(root: str | os.PathLike | None) -> Path:
    path = _root(root, "celeba", "the folder holding celeba/ (torchvision's layout)")
    for folder in (path / "celeba", path):
        if (folder / CELEBA_ATTR).is_file() or (folder / CELEBA_IMAGES).is_dir():
            return folder
    raise DataError(
        f"celeba: {path / 'celeba' / CELEBA_ATTR} not found; pass the folder holding celeba/ with {CELEBA_ATTR}, "
        f"{CELEBA_PARTITION} and {CELEBA_IMAGES}/"
    )


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"celeba: {path} not found; it is one of the files of torchvision's celeba/ folder")
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"celeba: {path} is not a readable text file ({_one_line(err)})") from err


def _celeba_attributes(path: Path) -> tuple[tuple[str, ...], dict[str, int], np.ndarray]:
    """Attribute names, row of each file name, and the ``(N, 40)`` attributes in ``{-1, 1}``."""
    lines = _read_lines(path)
    try:
        n = int(lines[0])
        names = tuple(lines[1].split())
    except (IndexError, ValueError):
        raise DataError(f"{path}: expected the image count and the attribute names on its first two lines") from None
    rows = [line.split() for line in lines[2 : 2 + n]]
    if len(rows) != n or not names:
        raise DataError(f"{path}: the header promises {n} rows, the file has {len(rows)}")
    files = {}
    values = np.empty((n, len(names)), dtype=np.int8)
    for i, parts in enumerate(rows):
        ok = len(parts) == len(names) + 1 and all(p in ("1", "-1") for p in parts[1:])
        if not ok:
            raise DataError(f"{path}: line {i + 3} must be a file name and {len(names)} values of -1 or 1")
        files[parts[0]] = i
        values[i] = [int(p) for p in parts[1:]]
    return names, files, values


def _celeba_crop(path: Path) -> np.ndarray:
    """The centred square crop (side 148, or the image's shorter side if smaller) ``(3, s, s)`` ``uint8``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(CELEBA_CROP, w, h)
            left, top = int(round((w - s) / 2.0)), int(round((h - s) / 2.0))  # as torchvision's CenterCrop
            crop = np.asarray(im.crop((left, top, left + s, top + s)))
            return np.ascontiguousarray(crop.transpose(2, 0, 1))
    except FileNotFoundError:
        raise DataError(f"celeba: image {path} not found (listed in {CELEBA_PARTITION})") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"celeba: {path} is not a readable image ({_one_line(err)})") from err


def celeba(root: str | os.PathLike | None, train: bool = True, quick: bool = False) -> LabelledFactors:
    """CelebA (Liu et al. 2015, aligned and cropped faces), the main dataset of the UG-VAE paper, at 64x64.

    Reads the folder layout of ``torchvision.datasets.CelebA``: ``celeba/img_align_celeba/*.jpg`` (178x218),
    ``celeba/list_attr_celeba.txt`` and ``celeba/list_eval_partition.txt``. It reads them itself rather than through
    torchvision, whose ``CelebA`` checks the MD5 sums of all five annotation files (so a partial copy, or any file
    but the originals, is refused) and needs the identity, box and landmark files untwine does not use. Each image
    is centre-cropped to 148x148 and resized to 64x64 (antialiased bilinear), the usual preprocessing of VAEs on
    CelebA. Labels are the 40 binary attributes as :class:`LabelledFactors` (classes 0/1, ``factor_values`` the
    same, sizes 2), named as in the file; the identities are not read. ``train`` selects partition 0 (162,770
    images), ``train=False`` partition 2 (19,962 test images); the validation partition is not used.

    :param root: the folder holding ``celeba/`` (or ``celeba/`` itself).
    :param quick: a seeded random subset of :data:`QUICK_LABELLED` images, chosen before any image is decoded.
    """
    folder = _celeba_folder(root)
    names, rows_of, attributes = _celeba_attributes(folder / CELEBA_ATTR)
    want = "0" if train else "2"
    files = []
    partition = folder / CELEBA_PARTITION
    for i, line in enumerate(_read_lines(partition)):
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{partition}: line {i + 1} must be a file name and a partition 0, 1 or 2")
        if parts[1] == want:
            files.append(parts[0])
    if not files:
        raise DataError(f"{partition} lists no images of the {'training' if train else 'test'} partition")
    if quick and len(files) > QUICK_LABELLED:
        pick = torch.randperm(len(files), generator=torch.Generator().manual_seed(0))[:QUICK_LABELLED]
        files = [files[i] for i in sorted(pick.tolist())]
    missing = [f for f in files if f not in rows_of]
    if missing:
        raise DataError(f"{folder / CELEBA_ATTR} has no attributes for {missing[0]} ({len(missing)} images)")
    labels = attributes[[rows_of[f] for f in files]].astype(np.int64)
    labels = (labels + 1) // 2
    images = torch.empty(len(files), 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    paths = [folder / CELEBA_IMAGES / f for f in files]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        for start in range(0, len(paths), CHUNK):
            crops = list(pool.map(_celeba_crop, paths[start : start + CHUNK]))
            if len({c.shape for c in crops}) == 1:
                block = _resize(torch.from_numpy(np.stack(crops)))
            else:
                block = torch.cat([_resize(torch.from_numpy(c).unsqueeze(0)) for c in crops])
            images[start : start + len(crops)] = block
    return LabelledFactors(
        images, torch.from_numpy(labels), labels.astype(np.float64), names, (2,) * len(names), 255.0, "celeba"
    )


# --- 3D Faces -------------------------------------------------------------------------------------------------------

FACES3D_FILE = "basel_face_renders.pth"
FACES3D_FACTORS = ("face", "azimuth", "elevation", "lighting")
FACES3D_SIZES = (50, 21, 11, 11)
#: quick sub-grid: every fifth face, every second azimuth, elevation and lighting (10 x 11 x 6 x 6 = 3,960 images)
FACES3D_QUICK = {"face": 5, "azimuth": 2, "elevation": 2, "lighting": 2}


def faces3d(root: str | os.PathLike | None, quick: bool = False) -> FactorDataset:
    """3D Faces: renders of the Basel face model (Paysan et al. 2009) as Chen et al. (2018, β-TCVAE) distribute and
    use them, also the ISA-VAE paper's second dataset and UG-VAE's second domain; greyscale 64x64.

    ``basel_face_renders.pth`` holds one tensor (``uint8``, or float in ``[0, 1]``): either
    ``(50, 21, 11, 11, 64, 64)`` (face x azimuth x elevation x lighting x H x W; the sizes are read from the shape,
    so any such 6-D grid loads) or the flat ``(127050, 64, 64)`` (or ``(127050, 1, 64, 64)``) that β-TCVAE's code
    reads, in that grid's row-major order (lighting fastest), which must hold the published 127,050 images. It is
    read with ``torch.load(..., weights_only=True)``, which refuses anything but tensors. Float images are stored as
    ``round(255 x)``; images of another size are resized to 64x64. ``factor_values`` are the classes.

    :param root: ``basel_face_renders.pth`` or its folder.
    :param quick: the sub-grid :data:`FACES3D_QUICK` (3,960 images of the real file).
    """
    path = _file_in(root, FACES3D_FILE, "faces3d")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and storage errors of every kind: the file is refused, never run
        raise DataError(f"could not read {path} as a tensor file ({_one_line(err)}); expected {FACES3D_FILE}") from err
    if not isinstance(data, torch.Tensor):
        raise DataError(f"{path} holds a {type(data).__name__}, not the tensor of {FACES3D_FILE}")
    if data.dim() == 6:
        sizes, flat = tuple(data.shape[:4]), data.reshape(-1, 1, *data.shape[4:])
    elif data.dim() in (3, 4) and (data.dim() == 3 or data.shape[1] == 1):
        if len(data) != math.prod(FACES3D_SIZES):
            raise DataError(
                f"{path}: a flat tensor of {len(data)} images, but the published file holds "
                f"{math.prod(FACES3D_SIZES)} = 50 x 21 x 11 x 11; save another grid as a 6-D tensor (F, A, E, L, H, W)"
            )
        sizes, flat = FACES3D_SIZES, data.reshape(len(data), 1, *data.shape[-2:])
    else:
        raise DataError(
            f"{path}: expected a tensor (50, 21, 11, 11, 64, 64) or (127050, 64, 64), got {tuple(data.shape)}"
        )
    if min(flat.shape) == 0:
        raise DataError(f"{path}: the tensor {tuple(data.shape)} holds no images")
    if data.is_floating_point():
        if not bool(torch.isfinite(data).all()) or float(data.min()) < 0 or float(data.max()) > 1:
            raise DataError(f"{path}: float images must lie in [0, 1]")
    elif data.dtype != torch.uint8:
        raise DataError(f"{path}: images must be uint8 or float in [0, 1], got {data.dtype}")

    def read(rows: np.ndarray) -> torch.Tensor:
        def blocks() -> Iterator[tuple[int, torch.Tensor]]:
            for start, chunk in _chunks(rows):
                block = flat[torch.from_numpy(chunk)]
                if block.is_floating_point():
                    block = block.mul(255).round_().to(torch.uint8)
                yield start, block

        return _collect(len(rows), 1, blocks())

    return _grid_dataset(read, sizes, FACES3D_FACTORS, None, "faces3d", FACES3D_QUICK if quick else None)


__all__ = [
    "CARS3D_FACTORS",
    "FACES3D_FACTORS",
    "MPI3D_FACTORS",
    "NORB_FACTORS",
    "SHAPES3D_FACTORS",
    "cars3d",
    "celeba",
    "faces3d",
    "mpi3d",
    "shapes3d",
    "smallnorb",
]
