"""dSprites: factor order, renderer geometry, agreement with real frames, caching, sub-grids, the .npz loader."""

import hashlib
import math
import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from untwine.data import dsprites
from untwine.data.base import DataError
from untwine.data.dsprites import FACTOR_NAMES, FACTOR_SIZES, FACTOR_STRIDES, DSprites, possible_values, render

SMALL_GRID = {"scale": [0, 5], "orientation": [0, 13, 39], "posX": [0, 7, 31], "posY": [2, 30]}
ROWS = np.arange(64)


def _classes(shape=0, scale=5, orientation=0, pos_x=0, pos_y=0):
    return np.array([[0, shape, scale, orientation, pos_x, pos_y]])


def _one(**kw) -> np.ndarray:
    return render(_classes(**kw))[0, 0].numpy().astype(bool)


def _centroid(img: np.ndarray) -> tuple[float, float]:
    """(x, y) of the on pixels in the renderer's continuous frame (pixel centres at index + 0.5)."""
    rows, cols = np.nonzero(img)
    return cols.mean() + 0.5, rows.mean() + 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a & b).sum((-2, -1)) / (a | b).sum((-2, -1))


def _grid(sizes):
    return np.stack([m.reshape(-1) for m in np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")], axis=1)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("UNTWINE_CACHE", str(path))
    return path


def _no_render(classes):
    raise AssertionError("rendered although the images should come from the cache")


# --- factors and order --------------------------------------------------------------------------------------------


def test_factor_names_sizes_and_values_follow_the_published_definition():
    values = possible_values()
    assert FACTOR_NAMES == ("color", "shape", "scale", "orientation", "posX", "posY")
    assert FACTOR_SIZES == (1, 3, 6, 40, 32, 32)
    assert tuple(values) == FACTOR_NAMES
    assert tuple(len(v) for v in values.values()) == FACTOR_SIZES
    np.testing.assert_array_equal(values["color"], [1.0])
    np.testing.assert_array_equal(values["shape"], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(values["scale"], np.linspace(0.5, 1, 6))
    np.testing.assert_allclose(values["orientation"], np.linspace(0, 2 * np.pi, 40))
    assert values["orientation"][-1] == pytest.approx(2 * np.pi)
    np.testing.assert_allclose(values["posX"], np.linspace(0, 1, 32))
    np.testing.assert_allclose(values["posY"], np.linspace(0, 1, 32))
    assert math.prod(FACTOR_SIZES) == 737280
    assert FACTOR_STRIDES == (737280, 245760, 40960, 1024, 32, 1)


def test_full_grid_is_row_major_with_posy_fastest(monkeypatch):
    # Only the bookkeeping is under test here: an expanded zero image stands in for 3 GB of renders.
    blank = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    monkeypatch.setattr(dsprites, "render", lambda c: blank.expand(len(c), -1, -1, -1))
    ds = DSprites(cache=False)
    assert len(ds) == 737280 and ds.name == "dsprites" and ds.max_value == 1
    assert ds.factor_names == FACTOR_NAMES and ds.factor_sizes == FACTOR_SIZES
    assert ds.factor_strides.tolist() == list(FACTOR_STRIDES)
    assert torch.equal(ds.targets @ torch.tensor(FACTOR_STRIDES), torch.arange(737280))
    assert torch.equal(ds.index_of(ds.targets), torch.arange(737280))
    g = torch.Generator().manual_seed(0)
    for i in torch.randint(737280, (50,), generator=g).tolist():
        decoded = np.unravel_index(i, FACTOR_SIZES)
        assert ds.targets[i].tolist() == [int(d) for d in decoded]
        expected = [possible_values()[n][d] for n, d in zip(FACTOR_NAMES, decoded)]
        np.testing.assert_allclose(ds.factor_values[i], expected)
    assert [g.tolist() for g in ds.grid_classes] == [list(range(s)) for s in FACTOR_SIZES]


def test_subgrid_is_row_major_and_reindexes_classes(private_cache):
    ds = DSprites(subgrid=SMALL_GRID, cache=False)
    sizes = (1, 3, 2, 3, 3, 2)
    assert ds.factor_sizes == sizes and len(ds) == math.prod(sizes)
    assert [g.tolist() for g in ds.grid_classes] == [[0], [0, 1, 2], [0, 5], [0, 13, 39], [0, 7, 31], [2, 30]]
    # targets are sub-grid classes 0..size-1 in row-major order (posY fastest)
    assert torch.equal(ds.targets, torch.from_numpy(_grid(sizes)))
    assert torch.equal(ds.index_of(ds.targets), torch.arange(len(ds)))
    # back to dSprites classes: the published row indices increase, so the sub-grid keeps the file's order
    original = ds.original_classes(ds.targets)
    published = original @ torch.tensor(FACTOR_STRIDES)
    assert torch.all(published[1:] > published[:-1])
    values = possible_values()
    expected = np.stack([values[n][original[:, k].numpy()] for k, n in enumerate(FACTOR_NAMES)], axis=1)
    np.testing.assert_allclose(ds.factor_values, expected)
    assert ds.factor_values.dtype == np.float64 and ds.factor_values.shape == (len(ds), 6)
    # images are the renders of those classes, compact, and come out as float {0, 1} with long classes
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(ds), 1, 64, 64)
    assert torch.equal(ds.images, render(original))
    x, y = ds[7]
    assert x.shape == (1, 64, 64) and x.dtype == torch.float32 and set(x.unique().tolist()) <= {0.0, 1.0}
    assert y.dtype == torch.long and y.shape == (6,) and torch.equal(y, ds.targets[7])
    c = ds.sample_factors(16, torch.Generator().manual_seed(1))
    assert torch.equal(ds.images_for(c), render(ds.original_classes(c)).float())
    assert not private_cache.exists(), "cache=False must not write anything"


@pytest.mark.parametrize(
    "subgrid, message",
    [
        ({"rotation": [0]}, "unknown dSprites factor 'rotation'"),
        ({"orientation": [0, 40]}, "outside 0..39"),
        ({"posX": [-1, 3]}, "outside 0..31"),
        ({"shape": []}, "empty"),
        ({"scale": [3, 1]}, "increasing"),
        ({"scale": [1, 1]}, "increasing"),
        ({"scale": [0.5, 1.0]}, "integer class indices"),
        ([("scale", [0])], "must map factor names"),
    ],
)
def test_bad_subgrid_is_a_clear_error(subgrid, message):
    with pytest.raises(DataError, match=message):
        DSprites(subgrid=subgrid, cache=False)


def test_render_rejects_bad_classes():
    with pytest.raises(DataError, match="shape"):
        render(np.zeros((3, 5), dtype=int))
    with pytest.raises(DataError, match="integers"):
        render(np.zeros((3, 6)))
    with pytest.raises(DataError, match="'orientation'"):
        render(_classes(orientation=40))
    out = render(torch.tensor(_classes()))
    assert out.dtype == torch.uint8 and out.shape == (1, 1, 64, 64) and set(out.unique().tolist()) <= {0, 1}


# --- geometry -----------------------------------------------------------------------------------------------------


def _all_poses(shape: int, scale: int) -> np.ndarray:
    """Every orientation at a spread of positions, for one shape and scale."""
    pos = [0, 11, 22, 31]
    mesh = np.meshgrid([0], [shape], [scale], np.arange(40), pos, pos, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


@pytest.mark.parametrize(
    "shape, area_at_scale_1",
    # square side 19.2; ellipse semi-axes 12.766 x 7.214; heart curve (area 180 pi) scaled by 0.6 x 0.662
    [(0, 19.2**2), (1, math.pi * 12.766 * 7.214), (2, 180 * math.pi * 0.6 * 0.662)],
)
def test_sprite_areas_match_the_measured_sizes(shape, area_at_scale_1):
    for scale_class, scale in enumerate(possible_values()["scale"]):
        areas = render(_all_poses(shape, scale_class)).sum((1, 2, 3)).double()
        expected = area_at_scale_1 * scale**2
        # pixel counting is right on average, and off by a fraction of the boundary pixels for any one pose
        assert areas.mean().item() == pytest.approx(expected, rel=0.02)
        assert (areas - expected).abs().max().item() < 0.15 * expected


def test_square_and_ellipse_at_orientation_0():
    for scale_class, scale in enumerate(possible_values()["scale"]):
        sq = _one(shape=0, scale=scale_class)
        rows, cols = np.nonzero(sq)
        side = round(20 * scale)  # 19.2 * scale rounds to whole pixels on the pixel-centre grid
        assert sq.sum() == side * side and np.ptp(rows) + 1 == side and np.ptp(cols) + 1 == side
        el = _one(shape=1, scale=scale_class)
        rows, cols = np.nonzero(el)
        assert np.ptp(cols) + 1 > 1.4 * (np.ptp(rows) + 1)  # long axis horizontal
    assert np.array_equal(_one(shape=0, scale=5), np.pad(np.ones((20, 20), bool), ((6, 38), (6, 38))))


@pytest.mark.parametrize("shape", [0, 1])
def test_centres_follow_positions(shape):
    positions = possible_values()["posX"]
    errors = []
    for px in [0, 3, 17, 31]:
        for py in [0, 8, 30, 31]:
            for orientation in [0, 7, 22]:
                x, y = _centroid(_one(shape=shape, scale=3, orientation=orientation, pos_x=px, pos_y=py))
                errors += [x - (16 + 32 * positions[px]), y - (16 + 32 * positions[py])]
    # a symmetric sprite's pixels are centred on the true centre up to rounding to the pixel grid (< 0.5 px,
    # half a position step), and without bias
    errors = np.array(errors)
    assert np.abs(errors).max() < 0.5 and abs(errors.mean()) < 0.05
    # posX is the column: moving it moves the sprite right, not down
    x, y = _centroid(_one(shape=shape, pos_x=31))
    assert (x, y) == (pytest.approx(48, abs=0.2), pytest.approx(16, abs=0.2))


def test_orientation_turns_counter_clockwise_on_screen():
    theta = possible_values()["orientation"]
    for k in [3, 5, 8]:
        img = _one(shape=1, orientation=k)
        rows, cols = np.nonzero(img)
        x, y_up = cols - cols.mean(), -(rows - rows.mean())
        angle = 0.5 * math.atan2(2 * (x * y_up).mean(), (x * x).mean() - (y_up * y_up).mean())
        assert angle == pytest.approx(theta[k], abs=0.06)  # the long axis turns from +x towards +y (up)


def test_heart_lobes_up_and_both_orientation_ends_agree():
    heart = _one(shape=2)
    rows, cols = np.nonzero(heart)
    top, bottom = heart[rows.min()], heart[rows.max()]
    runs = lambda line: int(np.sum(np.diff(np.concatenate([[0], line.astype(int), [0]])) == 1))  # noqa: E731
    assert runs(top) == 2 and runs(bottom) == 1 and bottom.sum() <= 2  # two lobes up, the tip down
    assert np.ptp(cols) + 1 == 20 and np.ptp(rows) + 1 == 17
    assert np.array_equal(heart[:, :32], heart[:, 31::-1]) and not heart[:, 32:].any()  # symmetric about x = 16
    upside_down = _one(shape=2, orientation=20)  # orientation close to pi
    assert _centroid(heart)[1] < 16 < _centroid(upside_down)[1]
    for shape in range(3):
        for scale in [0, 5]:
            first, last = _one(shape=shape, scale=scale, orientation=0), _one(shape=shape, scale=scale, orientation=39)
            assert np.array_equal(first, last)


# --- the renderer's speed-ups change no pixel ---------------------------------------------------------------------

# sha256 of np.packbits of the renders of _SAMPLE_ROWS, taken from the renderer before its speed-ups (one 29x29 window
# per sprite, chunks in order); the full 737,280-image grid was compared the same way, and matched bit for bit.
_SAMPLE_DIGEST = "24d22ecfee24c029c958f4a949796932f6559d2ff67441bd6ba6b9ecbc490090"
_SAMPLE_ON_PIXELS = 720677


def _sample_rows() -> np.ndarray:
    """4096 grid rows drawn without replacement by a seeded generator, in random order (all shapes and scales)."""
    index = np.random.default_rng(2024).choice(737280, 4096, replace=False)
    return np.stack(np.unravel_index(index, FACTOR_SIZES), axis=1)


def test_seeded_sample_renders_as_before():
    images = render(_sample_rows())
    assert int(images.sum()) == _SAMPLE_ON_PIXELS
    assert hashlib.sha256(np.packbits(images.numpy()).tobytes()).hexdigest() == _SAMPLE_DIGEST


def _render_on(threads: int, rows) -> torch.Tensor:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return render(rows)
    finally:
        torch.set_num_threads(before)


def test_tight_windows_and_threads_change_no_pixel(monkeypatch):
    rows = _sample_rows()[:1024]
    fast = _render_on(2, rows)  # chunks spread over two threads
    # One row at a time in storage order: no sorting, no grouping and a window per row.
    assert torch.equal(torch.cat([render(r[None]) for r in rows[:64]]), fast[:64])
    # The full 29x29 window around every sprite, rendered on one thread: the result the tight windows must keep.
    monkeypatch.setattr(dsprites, "_REACH", (100.0, 100.0, 100.0))
    assert torch.equal(_render_on(1, rows), fast)


def test_threaded_render_leaves_the_thread_count_alone():
    before = torch.get_num_threads()
    seen = []
    torch.set_num_threads(2)
    try:
        render(_sample_rows()[:600])
        assert torch.get_num_threads() == 2
        # torch hands a thread started later the count last set anywhere; the workers' single thread must not leak
        worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        worker.start()
        worker.join()
    finally:
        torch.set_num_threads(before)
    assert seen == [2]


@pytest.mark.parametrize("shape, reach", [(0, 9.6 * math.sqrt(2)), (1, 12.766), (2, 11.2561)])
def test_no_pixel_lies_beyond_the_reach_of_its_shape(shape, reach):
    # Pixel centres of every on-pixel at every orientation and scale, measured from the sprite centre.
    rows = np.array([[0, shape, c, o, 5, 9] for c in range(6) for o in range(40)])
    images = render(rows)[:, 0].numpy()
    n, r, c = np.nonzero(images)
    cx = 16 + 32 * possible_values()["posX"][5]
    cy = 16 + 32 * possible_values()["posY"][9]
    dist = np.hypot(c + 0.5 - cx, r + 0.5 - cy) / possible_values()["scale"][rows[n, 2]]
    assert dist.max() <= reach and dsprites._REACH[shape] >= reach


def test_unpack_matches_numpy_unpackbits(tmp_path):
    packed = np.random.default_rng(3).integers(0, 256, (dsprites._UNPACK_CHUNK + 5, 512), dtype=np.uint8)
    expected = np.unpackbits(packed, axis=1).reshape(-1, 1, 64, 64)
    images = dsprites._unpack(packed)
    assert images.dtype == torch.uint8 and np.array_equal(images.numpy(), expected)
    np.save(tmp_path / "packed.npy", packed)
    mapped = np.load(tmp_path / "packed.npy", mmap_mode="r")  # read-only, as a cache is read
    assert np.array_equal(dsprites._unpack(mapped).numpy(), expected)
    assert dsprites._unpack(packed[:0]).shape == (0, 1, 64, 64)


# --- the renderer against real dSprites frames ----------------------------------------------------------------------


def _best_matches(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU over renders, and its shape, for each real frame.

    Candidates: every (shape, scale, orientation) whose area is within 15% of the frame's, at the four grid
    positions around the one that would line its centroid up with the frame's.
    """
    library = np.array([[0, s, c, o, 0, 0] for s in range(3) for c in range(6) for o in range(40)])
    lib = render(library)[:, 0].numpy().astype(bool)
    area = lib.sum((1, 2))
    lib_y = (lib.sum(2) * ROWS).sum(1) / area
    lib_x = (lib.sum(1) * ROWS).sum(1) / area
    best_iou, best_shape = [], []
    for frame in frames:
        a = frame.sum()
        fy, fx = (frame.sum(1) * ROWS).sum() / a, (frame.sum(0) * ROWS).sum() / a
        cand = np.nonzero(np.abs(area - a) <= 0.15 * a)[0]
        kx = np.floor((fx - lib_x[cand]) * 31 / 32).astype(int)
        ky = np.floor((fy - lib_y[cand]) * 31 / 32).astype(int)
        rows = []
        for dx in (0, 1):
            for dy in (0, 1):
                r = library[cand].copy()
                r[:, 4], r[:, 5] = kx + dx, ky + dy
                rows.append(r[(r[:, 4] >= 0) & (r[:, 4] < 32) & (r[:, 5] >= 0) & (r[:, 5] < 32)])
        rows = np.concatenate(rows)
        ious = _iou(render(rows)[:, 0].numpy().astype(bool), frame)
        best_iou.append(ious.max())
        best_shape.append(rows[ious.argmax(), 1])
    return np.array(best_iou), np.array(best_shape)


def test_renderer_matches_real_frames(shared_data):
    with Image.open(shared_data / "dsprites" / "dsprites.gif") as gif:
        frames = np.stack([np.asarray(f.convert("L")) > 127 for f in ImageSequence.Iterator(gif)])
    assert frames.shape == (320, 64, 64)
    ious, shapes = _best_matches(frames)
    # Measured: squares 0.9997 mean / 0.989 min (64 frames), ellipses 1.0 / 1.0 (64), hearts 0.9988 / 0.982
    # (192). A square of side 20, or hearts from discs and a triangle, fall below these floors.
    floors = {0: (0.99, 0.95), 1: (0.99, 0.95), 2: (0.98, 0.95)}
    for shape, (mean_floor, min_floor) in floors.items():
        got = ious[shapes == shape]
        assert len(got) >= 32, f"only {len(got)} frames matched shape {shape}"
        assert got.mean() >= mean_floor and got.min() >= min_floor, (shape, got.mean(), got.min())


# --- caching ------------------------------------------------------------------------------------------------------


def test_cache_file_names_depend_on_the_grid():
    full = dsprites._resolve_subgrid(None)
    assert dsprites._cache_path(full).name == "dsprites-procedural-v1.npy"
    sub = dsprites._cache_path(dsprites._resolve_subgrid(SMALL_GRID))
    assert sub.name.startswith("dsprites-procedural-v1-sub-") and sub != dsprites._cache_path(full)
    other = dsprites._cache_path(dsprites._resolve_subgrid({**SMALL_GRID, "posY": [2, 29]}))
    assert other != sub


def test_subgrid_cache_round_trip(private_cache, monkeypatch):
    first = DSprites(subgrid=SMALL_GRID)
    files = sorted(p.name for p in private_cache.iterdir())
    assert files == [dsprites._cache_path(dsprites._resolve_subgrid(SMALL_GRID)).name]  # no temp file left
    packed = np.load(private_cache / files[0])
    assert packed.dtype == np.uint8 and packed.shape == (len(first), 64 * 64 // 8)
    monkeypatch.setattr(dsprites, "render", _no_render)
    second = DSprites(subgrid=SMALL_GRID)
    assert torch.equal(second.images, first.images) and torch.equal(second.targets, first.targets)


def test_subgrid_reads_the_full_cache(private_cache, monkeypatch):
    # A sparse stand-in for the 377 MB full cache: only the sub-grid's rows hold renders.
    sub = {"shape": [2], "scale": [1, 4], "orientation": [5], "posX": [0, 9, 31], "posY": [4, 20]}
    expected = DSprites(subgrid=sub, cache=False)
    rows = expected.original_classes(expected.targets).numpy() @ np.asarray(FACTOR_STRIDES)
    private_cache.mkdir()
    full_path = private_cache / "dsprites-procedural-v1.npy"
    full = np.lib.format.open_memmap(full_path, mode="w+", dtype=np.uint8, shape=(737280, 512))
    full[rows] = np.packbits(expected.images.numpy().reshape(len(rows), -1), axis=1)
    full.flush()
    del full
    monkeypatch.setattr(dsprites, "render", _no_render)
    ds = DSprites(subgrid=sub)
    assert torch.equal(ds.images, expected.images)


def test_unusable_cache_is_rendered_again(private_cache):
    path = dsprites._cache_path(dsprites._resolve_subgrid(SMALL_GRID))
    private_cache.mkdir()
    np.save(path, np.zeros((3, 512), np.uint8))  # wrong row count, as after a grid change
    ds = DSprites(subgrid=SMALL_GRID)
    assert torch.equal(ds.images, DSprites(subgrid=SMALL_GRID, cache=False).images)
    assert np.load(path).shape == (len(ds), 512)


def test_failed_cache_write_leaves_nothing(private_cache, monkeypatch):
    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(dsprites.os, "replace", fail)
    with pytest.warns(RuntimeWarning, match="could not cache"):
        ds = DSprites(subgrid=SMALL_GRID)
    assert len(ds) == 108
    assert list(private_cache.iterdir()) == []  # neither a half-written cache nor its temp file


# --- the real .npz ------------------------------------------------------------------------------------------------


def _write_npz(path, grid, **override):
    """A small archive in the real file's format: a product grid of dSprites classes, row-major."""
    classes = dsprites._grid_rows(dsprites._resolve_subgrid(grid))
    values = possible_values()
    arrays = {
        "imgs": render(classes)[:, 0].numpy(),
        "latents_values": np.stack([values[n][classes[:, k]] for k, n in enumerate(FACTOR_NAMES)], axis=1),
        "latents_classes": classes.astype(np.int64),
        "metadata": np.array({"latents_names": FACTOR_NAMES, "latents_sizes": np.array(FACTOR_SIZES)}, dtype=object),
    }
    arrays.update(override)
    np.savez_compressed(path, **arrays)
    return arrays


def test_real_npz_format_loads_with_the_same_interface(tmp_path):
    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    grid = {"scale": [0, 5], "orientation": [0, 10], "posX": [0, 31], "posY": [3, 4]}
    arrays = _write_npz(path, grid)
    ds = DSprites(path=path)
    assert len(ds) == 48 and ds.factor_sizes == (1, 3, 2, 2, 2, 2) and ds.name == "dsprites"
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (48, 1, 64, 64)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(arrays["imgs"]))
    np.testing.assert_array_equal(ds.factor_values, arrays["latents_values"])
    assert torch.equal(ds.targets, torch.from_numpy(_grid(ds.factor_sizes)))
    assert [g.tolist() for g in ds.grid_classes] == [[0], [0, 1, 2], [0, 5], [0, 10], [0, 31], [3, 4]]
    # a sub-grid of the file: rows picked in order, classes re-indexed
    sub = DSprites(path=str(path), subgrid={"shape": [2], "posX": [31]})
    assert sub.factor_sizes == (1, 1, 2, 2, 1, 2)
    assert torch.equal(sub.images, render(sub.original_classes(sub.targets)))
    with pytest.raises(DataError, match="lacks some 'posX' classes"):
        DSprites(path=path, subgrid={"posX": [1]})


def test_malformed_npz_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        DSprites(path=tmp_path / "missing.npz")
    grid = {"shape": [0], "scale": [0], "orientation": [0, 1], "posX": [0, 1], "posY": [0, 1]}
    n = 8
    bad = tmp_path / "bad.npz"
    cases = [
        ({"imgs": np.zeros((n, 32, 32), np.uint8)}, "imgs must be uint8"),
        ({"imgs": np.zeros((n, 64, 64), np.float32)}, "imgs must be uint8"),
        ({"latents_values": np.zeros((n, 5))}, "latents_values and latents_classes"),
        ({"latents_classes": np.zeros((n - 1, 6), np.int64)}, "latents_values and latents_classes"),
        ({"imgs": np.full((n, 64, 64), 255, np.uint8)}, "binary"),
    ]
    for override, message in cases:
        _write_npz(bad, grid, **override)
        with pytest.raises(DataError, match=message):
            DSprites(path=bad)
    shuffled = dsprites._grid_rows(dsprites._resolve_subgrid(grid))[::-1].copy()
    _write_npz(bad, grid, latents_classes=shuffled)
    with pytest.raises(DataError, match="row-major"):
        DSprites(path=bad)
    np.savez(bad, imgs=np.zeros((n, 64, 64), np.uint8))
    with pytest.raises(DataError, match="missing arrays"):
        DSprites(path=bad)
    not_npz = tmp_path / "plain.npy"
    np.save(not_npz, np.zeros(3))
    with pytest.raises(DataError, match="expected an .npz"):
        DSprites(path=not_npz)


def test_batches_are_the_stored_images_as_float_for_any_index_shape(private_cache):
    ds = DSprites(subgrid=SMALL_GRID, cache=False)
    expected = ds.images.double()  # 0/1 pixels, max_value 1
    index = torch.tensor([[5, 0, 107], [3, 3, 60]])
    x, y = ds.batch(index, "cpu")
    assert x.dtype == torch.float32 and x.shape == (2, 3, 1, 64, 64) and y.shape == (2, 3, 6)
    assert torch.equal(x.double(), expected[index]) and torch.equal(y, ds.targets[index])
    x0, y0 = ds.batch(torch.tensor(7))
    assert x0.shape == (1, 64, 64) and torch.equal(x0.double(), expected[7]) and torch.equal(y0, ds.targets[7])
    grid = ds.targets[index]  # (2, 3, 6) factor classes
    assert torch.equal(ds.images_for(grid).double(), expected[index])
