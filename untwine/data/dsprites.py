"""dSprites: a procedural renderer faithful to the published dataset, and a loader for the real ``.npz``.

The real archive (``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``) holds 737,280 binary 64x64 images of one
sprite, the full product of six factors in row-major order (posY fastest): color (1 value), shape (square,
ellipse, heart), scale ``linspace(0.5, 1, 6)``, orientation ``linspace(0, 2*pi, 40)``, posX and posY
``linspace(0, 1, 32)``. When the file is not at hand :class:`DSprites` renders the same grid.

The geometry below was fitted to real frames (the dataset's own traversal animation), not taken from the
original Love2D source, which was never published. In pixel units at scale 1, with pixel ``(row r, column c)``
centred at ``(x, y) = (c + 0.5, r + 0.5)``:

* the sprite centre is at ``x = 16 + 32 * posX``, ``y = 16 + 32 * posY`` (posX is the column);
* orientation turns the sprite counter-clockwise on screen about that centre;
* a pixel is on when its centre lies inside the scaled, rotated shape (no anti-aliasing);
* square: side 19.2 (0.3 of the canvas); ellipse: semi-axes 12.766 (horizontal at orientation 0) and 7.214;
* heart: the curve ``(16 sin^3 t, 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t)`` scaled by 0.6 across and 0.662 up,
  then raised by 1.44, lobes up at orientation 0 (19.2 wide, like the square).

Matched against the 320 frames of that animation, all 64 ellipse frames come out pixel-exact, the 64 square
frames exact but for 4 corner pixels in two of them, and the 192 heart frames at IoU 0.999 on average (0.98 at
worst, a few boundary pixels).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from untwine.data.base import DataError, FactorDataset, cache_dir
from untwine.io import atomic_write

FACTOR_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (1, 3, 6, 40, 32, 32)
FACTOR_STRIDES = (737280, 245760, 40960, 1024, 32, 1)
NUM_IMAGES = 737280
IMAGE_SIZE = 64
SHAPES = ("square", "ellipse", "heart")

# Geometry in pixels at scale 1 (see the module docstring for how it was measured).
POSITION_OFFSET = 16.0
POSITION_RANGE = 32.0
SQUARE_HALF_SIDE = 9.6
ELLIPSE_SEMI_AXES = (12.766, 7.214)
HEART_SCALE = (0.6, 0.662)
HEART_RAISE = 1.44

# Every sprite fits in a 29x29 window around its rounded-down centre: no shape reaches farther than the square's
# corner (9.6 * sqrt(2) < 13.6 px), and the window's pixel centres span floor(c) - 13.5 .. floor(c) + 14.5.
_HALF_WINDOW = 14
# Farthest a pixel inside each shape lies from the sprite centre at scale 1: the square's corner, the ellipse's
# semi-major axis, and the heart's point farthest from its centre (measured on the curve: 11.2561 px).
_REACH = (SQUARE_HALF_SIDE * math.sqrt(2.0), ELLIPSE_SEMI_AXES[0], 11.26)
_REACH_MARGIN = 0.05
_CHUNK = 256
_CACHE_VERSION = 1
_PACKED_WIDTH = IMAGE_SIZE * IMAGE_SIZE // 8
_UNPACK_CHUNK = 4096
# The 8 pixels of each packed byte (most significant bit first, as np.packbits writes them) as one int64 word.
_BYTE_PIXELS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).view(np.int64).ravel()


def possible_values() -> dict[str, np.ndarray]:
    """The values of each factor, keyed by factor name (the real file's ``latents_possible_values``).

    :returns: ``{name: float64 array}`` in :data:`FACTOR_NAMES` order; shape is 1, 2, 3 as in the real file.
    """
    return {
        "color": np.array([1.0]),
        "shape": np.array([1.0, 2.0, 3.0]),
        "scale": np.linspace(0.5, 1.0, 6),
        "orientation": np.linspace(0.0, 2 * np.pi, 40),
        "posX": np.linspace(0.0, 1.0, 32),
        "posY": np.linspace(0.0, 1.0, 32),
    }


def _as_classes(classes) -> torch.Tensor:
    """``classes`` as an ``(N, 6)`` long tensor on the CPU, checked against :data:`FACTOR_SIZES`."""
    if isinstance(classes, torch.Tensor):
        t = classes.detach().cpu()
    else:
        t = torch.as_tensor(np.asarray(classes))
    if t.dim() != 2 or t.shape[1] != len(FACTOR_SIZES):
        raise DataError(f"factor classes must have shape (N, {len(FACTOR_SIZES)}), got {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise DataError(f"factor classes must be integers, got {t.dtype}")
    t = t.long()
    sizes = torch.tensor(FACTOR_SIZES)
    bad = (t < 0) | (t >= sizes)
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise DataError(
            f"factor class {int(t[row, col])} of {FACTOR_NAMES[col]!r} (row {row}) "
            f"is outside 0..{FACTOR_SIZES[col] - 1}"
        )
    return t


def _inside(shape: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Whether sprite-frame points ``(u, v)`` (pixels at scale 1, v up) lie inside each image's ``shape`` class."""
    inside = torch.zeros(u.shape, dtype=torch.bool)
    for k in range(len(SHAPES)):
        sel = shape == k
        if not sel.any():
            continue
        # Whole-chunk tensors when a chunk holds one shape (the usual case for grids), to skip the copies.
        us, vs = (u, v) if sel.all() else (u[sel], v[sel])
        if k == 0:
            hit = (us.abs() <= SQUARE_HALF_SIDE) & (vs.abs() <= SQUARE_HALF_SIDE)
        elif k == 1:
            ue, ve = us / ELLIPSE_SEMI_AXES[0], vs / ELLIPSE_SEMI_AXES[1]
            hit = ue * ue + ve * ve <= 1.0
        else:
            hit = _inside_heart(us, vs)
        if sel.all():
            return hit
        inside[sel] = hit
    return inside


def _inside_heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside test for the heart curve, exact and without a polygon.

    For ``t`` in ``[0, pi]`` the curve's x = 16 sin^3 t is single-valued on each of the upper (``cos t >= 0``)
    and lower branch, so a point at ``|x|`` is inside iff its y lies between the two branches there. With
    ``c = cos t`` the curve's y is the quartic ``-8c^4 - 8c^3 - 2c^2 + 19c + 4`` (Chebyshev expansion of
    ``13 cos t - 5 cos 2t - 2 cos 3t - cos 4t``), and ``c = +-sqrt(1 - (|x| / 16)^(2/3))``.
    """
    x = u.abs() / HEART_SCALE[0]
    y = (v - HEART_RAISE) / HEART_SCALE[1]
    s = (x / 16.0).clamp(max=1.0).pow(1.0 / 3.0)
    c = (1.0 - s * s).clamp(min=0.0).sqrt()
    c2 = c * c
    even = -8.0 * c2 * c2 - 2.0 * c2 + 4.0
    odd = (-8.0 * c2 + 19.0) * c
    return (x <= 16.0) & (y <= even + odd) & (y >= even - odd)


def _render_chunk(classes: torch.Tensor, out: torch.Tensor) -> None:
    """Render ``classes`` into ``out``, a zeroed ``uint8`` view ``(N, 64 * 64)``.

    Only a square window around each sprite centre is tested, the smallest that holds the largest sprite of the
    chunk (see :data:`_REACH`): pixels outside it are off, so the result is that of the 29x29 window.
    """
    values = possible_values()
    scale = torch.as_tensor(values["scale"])[classes[:, 2]]
    theta = torch.as_tensor(values["orientation"])[classes[:, 3]]
    cx = POSITION_OFFSET + POSITION_RANGE * torch.as_tensor(values["posX"])[classes[:, 4]]
    cy = POSITION_OFFSET + POSITION_RANGE * torch.as_tensor(values["posY"])[classes[:, 5]]
    reach = float((torch.as_tensor(_REACH, dtype=torch.float64)[classes[:, 1]] * scale).max())
    # A pixel outside floor(c) +- half is at least half + 0.5 px from the centre on one axis; the margin covers
    # the float32 rounding of the rotated coordinates (~1e-5 px).
    half = min(_HALF_WINDOW, math.ceil(reach - 0.5 + _REACH_MARGIN))
    width = 2 * half + 1
    # Integer corner of each sprite's window; the sub-pixel remainder goes into the float32 coordinates. A pixel's
    # coordinates depend only on its column and row, not on the window it sits in.
    col0 = torch.floor(cx).long() - half
    row0 = torch.floor(cy).long() - half
    offs = torch.arange(width, dtype=torch.float64) + 0.5
    dx = (col0.double()[:, None] + offs[None, :] - cx[:, None]).float()[:, None, :]  # (N, 1, W), x right
    dy = (cy[:, None] - row0.double()[:, None] - offs[None, :]).float()[:, :, None]  # (N, W, 1), y up
    cos = (torch.cos(theta) / scale).float().view(-1, 1, 1)
    sin = (torch.sin(theta) / scale).float().view(-1, 1, 1)
    # Rotating the pixel grid clockwise by theta puts it in the frame of a sprite turned counter-clockwise.
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    window = _inside(classes[:, 1], u, v).to(torch.uint8)
    n = len(classes)
    lin = torch.arange(width)
    idx = (row0 * IMAGE_SIZE + col0)[:, None, None] + (lin[:, None] * IMAGE_SIZE + lin[None, :])
    out.scatter_(1, idx.view(n, -1), window.view(n, -1))


def _parallel_map(fn, items: list) -> list:
    """``[fn(item) for item in items]`` on as many Python threads as torch has intra-op threads, each running its
    torch ops on one thread.

    A chunk's tensors are small, so splitting every op across threads costs a synchronisation per op (and on a busy
    CPU a wait for a descheduled thread); whole chunks per thread keep the cores busy without any. OpenMP keeps the
    thread count per thread, which lets a worker drop to one without slowing the caller; other backends share one
    count, so they run the chunks in order with the usual intra-op parallelism.
    """
    threads = torch.get_num_threads()
    workers = min(threads, len(items))
    if workers <= 1 or "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return [fn(item) for item in items]

    def single_threaded(item):
        torch.set_num_threads(1)
        return fn(item)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(single_threaded, items))
    finally:
        # torch also keeps the last count set by any thread for threads started later; put the caller's back
        torch.set_num_threads(threads)


def render(classes) -> torch.Tensor:
    """Render dSprites images from factor classes.

    :param classes: integer array or tensor ``(N, 6)`` of factor classes in :data:`FACTOR_NAMES` order.
    :returns: ``uint8`` tensor ``(N, 1, 64, 64)`` of 0/1 pixels.
    :raises DataError: on a wrong shape, a non-integer type or a class out of range.
    """
    classes = _as_classes(classes)
    n = len(classes)
    out = torch.zeros(n, IMAGE_SIZE * IMAGE_SIZE, dtype=torch.uint8)
    # Rows of one shape and scale share a window size; a stable sort keeps grid rows (already sorted) in place.
    key = classes[:, 1] * FACTOR_SIZES[2] + classes[:, 2]
    in_order = n < 2 or bool((key[1:] >= key[:-1]).all())
    order = torch.arange(n) if in_order else torch.sort(key, stable=True).indices
    stops = torch.unique_consecutive(key[order], return_counts=True)[1].cumsum(0).tolist()
    spans = [
        (start, min(start + _CHUNK, stop))
        for lo, stop in zip([0, *stops[:-1]], stops)
        for start in range(lo, stop, _CHUNK)
    ]

    def run(span: tuple[int, int]) -> None:
        start, stop = span
        if in_order:
            _render_chunk(classes[start:stop], out[start:stop])
        else:
            rows = order[start:stop]
            part = torch.zeros(stop - start, IMAGE_SIZE * IMAGE_SIZE, dtype=torch.uint8)
            _render_chunk(classes[rows], part)
            out[rows] = part

    _parallel_map(run, spans)
    return out.view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)


def _parse_subgrid(subgrid: Mapping[str, Iterable[int] | int] | None) -> dict[int, np.ndarray]:
    """The class indices a sub-grid keeps, by factor position, for the factors it names."""
    if subgrid is None:
        return {}
    if not isinstance(subgrid, Mapping):
        raise DataError(f"subgrid must map factor names to class indices, got {type(subgrid).__name__}")
    chosen = {}
    for name, classes in subgrid.items():
        if name not in FACTOR_NAMES:
            raise DataError(f"unknown dSprites factor {name!r} in subgrid; factors are {', '.join(FACTOR_NAMES)}")
        k = FACTOR_NAMES.index(name)
        if isinstance(classes, torch.Tensor):
            classes = classes.detach().cpu().numpy()
        if isinstance(classes, Iterable) and not isinstance(classes, (str, bytes, np.ndarray)):
            classes = list(classes)
        arr = np.atleast_1d(np.asarray(classes))
        if arr.size == 0:
            raise DataError(f"subgrid for {name!r} is empty; give at least one class index")
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"subgrid for {name!r} must be a sequence of integer class indices, got {classes!r}")
        out = arr[(arr < 0) | (arr >= FACTOR_SIZES[k])]
        if out.size:
            raise DataError(
                f"subgrid for {name!r} has class indices outside 0..{FACTOR_SIZES[k] - 1}: {sorted(set(out.tolist()))}"
            )
        if np.any(np.diff(arr) <= 0):
            raise DataError(f"subgrid for {name!r} must list distinct class indices in increasing order")
        chosen[k] = arr.astype(np.int64)
    return chosen


def _resolve_subgrid(subgrid: Mapping[str, Iterable[int] | int] | None) -> tuple[np.ndarray, ...]:
    """Class indices kept for each factor (all of them for factors the sub-grid does not name)."""
    chosen = _parse_subgrid(subgrid)
    return tuple(chosen.get(k, np.arange(s)) for k, s in enumerate(FACTOR_SIZES))


def _grid_rows(grid: tuple[np.ndarray, ...]) -> np.ndarray:
    """Original factor classes ``(N, 6)`` of the product ``grid`` in row-major order."""
    mesh = np.meshgrid(*grid, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def _cache_path(grid: tuple[np.ndarray, ...]) -> Path:
    """Cache file of a procedural grid: one fixed name for the full dataset, a content hash for sub-grids."""
    if all(len(g) == s for g, s in zip(grid, FACTOR_SIZES)):
        return cache_dir() / f"dsprites-procedural-v{_CACHE_VERSION}.npy"
    key = hashlib.sha1(repr([g.tolist() for g in grid]).encode()).hexdigest()[:16]
    return cache_dir() / f"dsprites-procedural-v{_CACHE_VERSION}-sub-{key}.npy"


def _pack(images: torch.Tensor) -> np.ndarray:
    return np.packbits(images.numpy().reshape(len(images), -1), axis=1)


def _unpack(packed: np.ndarray) -> torch.Tensor:
    """Images ``(N, 1, 64, 64)`` from packed rows (``np.unpackbits`` order), read chunk by chunk on all threads.

    Each packed byte indexes a table of its 8 pixels as one ``int64``, so unpacking is one gather per chunk;
    ``packed`` may be a memory map, whose pages are then read as the chunks need them.
    """
    n = len(packed)
    out = torch.empty(n, IMAGE_SIZE * IMAGE_SIZE, dtype=torch.uint8)
    words = out.view(torch.int64)
    table = torch.from_numpy(_BYTE_PIXELS)

    def run(start: int) -> None:
        stop = min(start + _UNPACK_CHUNK, n)
        # a copy: the chunk is small, and a memory-mapped file is read-only
        index = torch.from_numpy(np.array(packed[start:stop])).int()
        torch.index_select(table, 0, index.view(-1), out=words[start:stop].view(-1))

    _parallel_map(run, list(range(0, n, _UNPACK_CHUNK)))
    return out.view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)


def _read_packed(path: Path, n: int, rows: np.ndarray | None = None) -> np.ndarray | None:
    """Packed rows from a cache file (memory-mapped when all rows are read), or ``None`` when it is missing or not
    what it should be."""
    try:
        data = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if data.dtype != np.uint8 or data.shape != (n, _PACKED_WIDTH):
        return None
    return data if rows is None else data[rows]


def _write_packed(path: Path, packed: np.ndarray) -> None:
    """Cache ``packed`` at ``path`` atomically; a cache that cannot be written is a warning, not an error."""
    try:
        atomic_write(path, lambda f: np.save(f, packed))
    except OSError as err:
        warnings.warn(f"could not cache dSprites renders at {path}: {err}", RuntimeWarning, stacklevel=3)


def _procedural_images(grid: tuple[np.ndarray, ...], cache: bool) -> torch.Tensor:
    rows = _grid_rows(grid)
    if not cache:
        return render(rows)
    path = _cache_path(grid)
    full_path = _cache_path(_resolve_subgrid(None))
    packed = _read_packed(path, len(rows))
    if packed is None and path != full_path:
        # A sub-grid is a row selection of the full dataset, so a full cache already holds it.
        packed = _read_packed(full_path, NUM_IMAGES, rows @ np.asarray(FACTOR_STRIDES))
    if packed is not None:
        return _unpack(packed)
    images = render(rows)
    _write_packed(path, _pack(images))
    return images


def _load_npz(path: Path, chosen: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Images, factor values and kept class indices from a real (or same-format) dSprites ``.npz``.

    The file must hold a full factor grid in row-major order; the real one holds all 737,280 rows, but a
    smaller grid in the same format (e.g. a test fixture) is read the same way. ``chosen`` (from
    :func:`_parse_subgrid`) narrows the factors it names; the others keep every class the file has.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"dSprites file {path} not found; download dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz "
            "from github.com/deepmind/dsprites-dataset, or leave out --data-root (path=None) to render the dataset"
        )
    # No pickle: the three arrays read here are plain arrays in the real file (only its unread ``metadata`` member is
    # a pickle), so a file that would need unpickling (a pickle renamed .npz, an object array) is refused unread.
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise DataError(f"{path} is not a dSprites archive (expected an .npz file)")
        with data:
            missing = {"imgs", "latents_values", "latents_classes"} - set(data.files)
            if missing:
                raise DataError(f"{path} is not a dSprites archive: missing arrays {sorted(missing)}")
            imgs = data["imgs"]
            values = np.asarray(data["latents_values"], dtype=np.float64)
            classes = np.asarray(data["latents_classes"])
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # not an .npz, pickled data, a broken zip
        message = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"could not read dSprites archive {path}: {message}") from err
    k = len(FACTOR_NAMES)
    n = len(imgs)
    if imgs.ndim != 3 or imgs.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or imgs.dtype != np.uint8:
        raise DataError(f"{path}: imgs must be uint8 (N, 64, 64), got {imgs.dtype} {imgs.shape}")
    if values.shape != (n, k) or classes.shape != (n, k):
        raise DataError(
            f"{path}: latents_values and latents_classes must be ({n}, {k}), got {values.shape} and {classes.shape}"
        )
    if n == 0 or not np.issubdtype(classes.dtype, np.integer):
        raise DataError(f"{path}: latents_classes must be a non-empty integer array")
    file_grid = tuple(np.unique(classes[:, j]) for j in range(k))
    sizes = tuple(len(g) for g in file_grid)
    local = np.stack([np.searchsorted(file_grid[j], classes[:, j]) for j in range(k)], axis=1)
    strides = np.cumprod((1,) + sizes[:0:-1])[::-1]
    if math.prod(sizes) != n or not np.array_equal(local @ strides, np.arange(n)):
        raise DataError(f"{path}: latents_classes are not a full factor grid in row-major order (posY fastest)")
    if any(g.min() < 0 or g.max() >= s for g, s in zip(file_grid, FACTOR_SIZES)):
        raise DataError(f"{path}: latents_classes fall outside the dSprites factor sizes {FACTOR_SIZES}")
    pos = []
    for j, (name, have) in enumerate(zip(FACTOR_NAMES, file_grid)):
        want = chosen.get(j, have)
        where = np.searchsorted(have, want)
        if np.any(where >= len(have)) or np.any(have[np.minimum(where, len(have) - 1)] != want):
            raise DataError(f"{path} lacks some {name!r} classes of the requested subgrid: {want.tolist()}")
        pos.append(where)
    if all(len(p) == s for p, s in zip(pos, sizes)):
        rows = None
    else:
        rows = _grid_rows(tuple(pos)) @ strides
    if imgs.max(initial=0) > 1:
        raise DataError(f"{path}: imgs must be binary (0/1)")
    if rows is not None:
        imgs, values = imgs[rows], values[rows]
    return imgs, values, tuple(file_grid[j][pos[j]] for j in range(k))


class DSprites(FactorDataset):
    """dSprites, rendered procedurally or read from the real ``.npz``, optionally on a factor sub-grid.

    :param path: the real ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``; ``None`` renders the dataset.
    :param subgrid: ``{factor name: class indices}`` (increasing), e.g. ``{"orientation": range(0, 40, 4)}``;
        unnamed factors keep all values. The dataset is then the product sub-grid in row-major order:
        ``factor_sizes`` are its sizes, ``targets`` re-index classes ``0..size-1`` within it, and
        :attr:`grid_classes` keeps the original class indices of each factor.
    :param cache: read and write rendered images under :func:`~untwine.data.base.cache_dir` (bit-packed; the
        full dataset is 377 MB there). A sub-grid is read from the full cache when that exists.
    :raises DataError: on a missing or malformed file, or a bad sub-grid.

    ``ds[i]`` is ``(float image (1, 64, 64) in {0, 1}, long factor classes (6,))``.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        subgrid: Mapping[str, Iterable[int] | int] | None = None,
        cache: bool = True,
    ):
        if path is None:
            grid = _resolve_subgrid(subgrid)
            images = _procedural_images(grid, cache)
            all_values = possible_values()
            values = _grid_rows(tuple(all_values[name][g] for name, g in zip(FACTOR_NAMES, grid)))
        else:
            imgs, values, grid = _load_npz(Path(path), _parse_subgrid(subgrid))
            images = torch.from_numpy(imgs).unsqueeze(1)
        sizes = tuple(len(g) for g in grid)
        #: original dSprites class indices kept for each factor (in :data:`FACTOR_NAMES` order)
        self.grid_classes = tuple(torch.as_tensor(g, dtype=torch.long) for g in grid)
        classes = torch.from_numpy(_grid_rows(tuple(np.arange(s) for s in sizes)))
        super().__init__(images, classes, values, FACTOR_NAMES, sizes, 1, "dsprites")

    def original_classes(self, classes: torch.Tensor) -> torch.Tensor:
        """Map sub-grid classes ``(..., 6)`` back to the dSprites class indices (what :func:`render` takes)."""
        classes = torch.as_tensor(classes, dtype=torch.long)
        cols = [g.to(classes.device)[classes[..., j]] for j, g in enumerate(self.grid_classes)]
        return torch.stack(cols, dim=-1)
