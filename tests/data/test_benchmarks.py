"""The field's benchmarks, read from small files written in exactly their published formats: shapes, dtypes, factor
names and sizes, row-major order, quick versions, damaged files, and an RGB run end to end."""

import json
import math
import zipfile

import numpy as np
import pytest
import torch
from benchmark_fixtures import (
    CELEBA_ATTRIBUTES,
    NORB_TESTING,
    NORB_TRAINING,
    SHAPES3D_VALUES,
    grid,
    norb_bytes,
    write_cars,
    write_celeba,
    write_faces,
    write_mpi3d,
    write_norb,
    write_shapes3d,
)

from untwine.data import DATASETS, DataError, FactorDataset, LabelledFactors, load_dataset, mpi3d
from untwine.data.benchmarks import (
    CARS3D_FACTORS,
    FACES3D_FACTORS,
    MPI3D_FACTORS,
    NORB_FACTORS,
    SHAPES3D_FACTORS,
)


def raises_one_line(call, *fragments):
    """``call()`` raises a one-line DataError holding every fragment (e.g. the file's name)."""
    with pytest.raises(DataError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


def chw(images_nhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)


def test_every_benchmark_is_registered_and_needs_a_data_root():
    for name in ("shapes3d", "smallnorb", "cars3d", "mpi3d", "celeba", "faces3d"):
        assert name in DATASETS
        raises_one_line(lambda: load_dataset(name), "--data-root")
    assert DATASETS["smallnorb"].has_test and DATASETS["celeba"].has_test and not DATASETS["mpi3d"].has_test


def test_quick_versions_hold_a_few_thousand_images_of_the_published_grids():
    from untwine.data import benchmarks as b

    quick = {
        "shapes3d": (b.SHAPES3D_FACTORS, b.SHAPES3D_SIZES, b.SHAPES3D_QUICK, 4096),
        "smallnorb": (b.NORB_FACTORS, b.NORB_SIZES, b.NORB_QUICK, 3375),
        "cars3d": (b.CARS3D_FACTORS, b.CARS3D_SIZES, b.CARS3D_QUICK, 2208),
        "mpi3d": (b.MPI3D_FACTORS, b.MPI3D_SIZES, b.MPI3D_QUICK, 4050),
        "faces3d": (b.FACES3D_FACTORS, b.FACES3D_SIZES, b.FACES3D_QUICK, 3960),
    }
    assert math.prod(b.MPI3D_SIZES) == 1_036_800 and math.prod(b.SHAPES3D_SIZES) == 480_000
    for name, (factors, sizes, steps, expected) in quick.items():
        assert set(steps) <= set(factors), name
        assert math.prod(len(k) for k in b._steps_keep(factors, sizes, steps)) == expected, name


# --- 3D Shapes ------------------------------------------------------------------------------------------------------


def test_shapes3d_reads_the_h5_grid_in_row_major_order(tmp_path):
    sizes = (2, 2, 1, 2, 3, 2)
    written = write_shapes3d(tmp_path / "3dshapes.h5", sizes)
    ds = load_dataset("shapes3d", tmp_path)
    assert type(ds) is FactorDataset and ds.name == "shapes3d" and len(ds) == math.prod(sizes)
    assert ds.images.dtype == torch.uint8 and ds.image_shape == (3, 64, 64) and ds.max_value == 255
    assert ds.factor_names == SHAPES3D_FACTORS and ds.factor_sizes == sizes
    assert torch.equal(ds.targets, torch.from_numpy(grid(sizes)))
    assert torch.equal(ds.images, chw(written["images"]))
    np.testing.assert_array_equal(ds.factor_values, written["labels"])
    row = [1, 0, 0, 1, 2, 1]  # floor_hue 0.1, scale 0.82..., shape 2, orientation -27.9...: one known image
    index = np.ravel_multi_index(row, sizes)
    assert torch.equal(ds.images_for(torch.tensor([row]))[0], chw(written["images"])[index] / 255)
    assert ds.factor_values[index, 4] == SHAPES3D_VALUES[4][2] and ds.factor_values[index, 0] == SHAPES3D_VALUES[0][1]
    # the file itself may be given, and the quick version is a sub-grid (every 3rd hue, 2nd scale, 4th orientation)
    quick = load_dataset("shapes3d", tmp_path / "3dshapes.h5", quick=True)
    assert type(quick) is FactorDataset and quick.factor_sizes == (1, 1, 1, 1, 3, 1)
    assert torch.equal(quick.images, ds.images[[0, 2, 4]])


def test_damaged_shapes3d_files_are_one_line_errors_naming_the_file(tmp_path):
    raises_one_line(lambda: load_dataset("shapes3d", tmp_path), "3dshapes.h5", "not found")
    path = tmp_path / "3dshapes.h5"
    written = write_shapes3d(path)
    write_shapes3d(path, labels=None)
    raises_one_line(lambda: load_dataset("shapes3d", tmp_path), path, "no labels")
    write_shapes3d(path, images=written["images"][..., 0])
    raises_one_line(lambda: load_dataset("shapes3d", tmp_path), path, "images must be uint8 (N, 64, 64, 3)")
    write_shapes3d(path, labels=written["labels"][:, :5])
    raises_one_line(lambda: load_dataset("shapes3d", tmp_path), path, "labels must be numbers")
    write_shapes3d(path, labels=written["labels"][::-1].copy())
    raises_one_line(lambda: load_dataset("shapes3d", tmp_path), path, "row-major order")
    write_shapes3d(path, labels=np.concatenate([written["labels"][:-1], written["labels"][:1]]))
    raises_one_line(lambda: load_dataset("shapes3d", tmp_path), path, "1 combinations missing")
    write_shapes3d(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    raises_one_line(lambda: load_dataset("shapes3d", tmp_path), path, "could not read")


# --- smallNORB ------------------------------------------------------------------------------------------------------


def test_smallnorb_sorts_each_split_into_the_full_grid_with_left_images(tmp_path):
    rows, value = write_norb(tmp_path, train=True, instances=(4, 6))
    write_norb(tmp_path, train=False, instances=(0, 1), offset=1)
    ds = load_dataset("smallnorb", tmp_path)
    sizes = (2, 2, 2, 3, 2)
    assert type(ds) is FactorDataset and ds.name == "smallnorb" and ds.factor_names == NORB_FACTORS
    assert ds.factor_sizes == sizes and ds.image_shape == (1, 64, 64) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.targets, torch.from_numpy(grid(sizes)))
    # the file row of each grid row: instances renumbered within the category, azimuth 0, 2, 4 -> class 0, 1, 2
    renumbered = np.stack([rows[:, 0], (rows[:, 1] == 6), rows[:, 2], rows[:, 3] // 2, rows[:, 4]], 1)
    file_row = np.argsort(np.ravel_multi_index(renumbered.T, sizes))
    # 96x96 left images resized to 64x64: each is the constant written for its row (the right image is 255 - it)
    expected = torch.from_numpy(value[file_row]).to(torch.uint8).view(-1, 1, 1, 1)
    assert torch.equal(ds.images, expected.expand_as(ds.images))
    np.testing.assert_array_equal(ds.factor_values[:, 1], rows[file_row, 1])  # the original instance id
    np.testing.assert_array_equal(ds.factor_values[:, 2], 30 + 5 * rows[file_row, 2])  # degrees
    np.testing.assert_array_equal(ds.factor_values[:, 3], 10 * rows[file_row, 3])
    test = load_dataset("smallnorb", tmp_path, train=False)
    assert type(test) is FactorDataset and test.factor_sizes == sizes
    assert set(test.factor_values[:, 1]) == {0, 1} and not torch.equal(test.images, ds.images)
    quick = load_dataset("smallnorb", tmp_path, quick=True)
    assert quick.factor_sizes == (2, 2, 1, 2, 1)
    keep = np.ravel_multi_index(grid(quick.factor_sizes).T * np.array([[1], [1], [2], [2], [2]]), sizes)
    assert torch.equal(quick.images, ds.images[keep])


def test_smallnorb_without_a_full_grid_is_labelled_factors(tmp_path):
    rows, value = write_norb(tmp_path)
    pattern = NORB_TRAINING
    n = len(rows) - 1  # drop the last row of all three files
    dat = np.repeat(value[:n, None, None, None], 2, axis=1).repeat(96, 2).repeat(96, 3).astype(np.uint8)
    (tmp_path / pattern.format("dat")).write_bytes(norb_bytes(dat, 0x1E3D4C55))
    (tmp_path / pattern.format("cat")).write_bytes(norb_bytes(rows[:n, 0], 0x1E3D4C54))
    (tmp_path / pattern.format("info")).write_bytes(norb_bytes(rows[:n, 1:], 0x1E3D4C54))
    ds = load_dataset("smallnorb", tmp_path)
    assert type(ds) is LabelledFactors and len(ds) == n and ds.factor_sizes == (2, 2, 2, 3, 2)
    assert torch.equal(ds.images[:, 0, 0, 0], torch.from_numpy(value[:n]).to(torch.uint8))  # file order


def test_damaged_smallnorb_files_are_one_line_errors_naming_the_file(tmp_path):
    raises_one_line(lambda: load_dataset("smallnorb", tmp_path), NORB_TRAINING.format("dat"), "not found")
    rows, _ = write_norb(tmp_path)
    raises_one_line(lambda: load_dataset("smallnorb", tmp_path, train=False), NORB_TESTING.format("dat"))
    info = tmp_path / NORB_TRAINING.format("info")
    good = info.read_bytes()
    info.write_bytes(good[:-8])
    raises_one_line(lambda: load_dataset("smallnorb", tmp_path), info, "truncated")
    info.write_bytes(norb_bytes(rows[:, 1:], 0x1E3D4C55))  # the byte matrix magic where int32 belongs
    raises_one_line(lambda: load_dataset("smallnorb", tmp_path), info, "magic")
    info.write_bytes(norb_bytes(rows[:-1, 1:], 0x1E3D4C54))
    raises_one_line(lambda: load_dataset("smallnorb", tmp_path), info, "info must be")
    info.write_bytes(good)
    dat = tmp_path / NORB_TRAINING.format("dat")
    dat.write_bytes(dat.read_bytes()[:-100])
    raises_one_line(lambda: load_dataset("smallnorb", tmp_path), dat, "truncated")


# --- Cars3D ---------------------------------------------------------------------------------------------------------


def test_cars3d_reads_sorted_car_files_as_elevation_azimuth_object(tmp_path):
    ims = write_cars(tmp_path, cars=3, azimuths=3, elevations=2)
    ds = load_dataset("cars3d", tmp_path)
    sizes = (2, 3, 3)
    assert type(ds) is FactorDataset and ds.factor_names == CARS3D_FACTORS and ds.factor_sizes == sizes
    assert ds.images.dtype == torch.uint8 and ds.image_shape == (3, 64, 64) and ds.name == "cars3d"
    assert torch.equal(ds.targets, torch.from_numpy(grid(sizes)))
    for e, a, o in [(0, 0, 0), (1, 2, 0), (0, 1, 2), (1, 0, 1)]:
        expected = torch.from_numpy(ims[o][:, :, :, a, e]).permute(2, 0, 1)
        assert torch.equal(ds.images[np.ravel_multi_index((e, a, o), sizes)], expected), (e, a, o)
    quick = load_dataset("cars3d", tmp_path, quick=True)  # every 2nd azimuth, every 4th car
    assert quick.factor_sizes == (2, 2, 1)
    assert torch.equal(quick.images[3], torch.from_numpy(ims[0][:, :, :, 2, 1]).permute(2, 0, 1))
    np.testing.assert_array_equal(quick.factor_values[3], [1, 2, 0])  # original classes


def test_cars3d_resizes_128_pixel_renders_to_64(tmp_path):
    (tmp_path / "cars").mkdir()
    write_cars(tmp_path / "cars", cars=1, azimuths=2, elevations=1, size=128)
    ds = load_dataset("cars3d", tmp_path / "cars")
    assert ds.image_shape == (3, 64, 64) and ds.factor_sizes == (1, 2, 1)


def test_damaged_cars3d_folders_are_one_line_errors_naming_the_file(tmp_path):
    raises_one_line(lambda: load_dataset("cars3d", tmp_path), "no .mat files", tmp_path)
    from scipy.io import savemat

    ims = write_cars(tmp_path, cars=2)
    bad = tmp_path / "car_002_mesh.mat"
    savemat(bad, {"images": ims[1]})
    raises_one_line(lambda: load_dataset("cars3d", tmp_path), bad, "'im' must be uint8")
    savemat(bad, {"im": ims[1].astype(np.float64)})
    raises_one_line(lambda: load_dataset("cars3d", tmp_path), bad, "'im' must be uint8")
    savemat(bad, {"im": ims[1][:, :, :, :2]})
    raises_one_line(lambda: load_dataset("cars3d", tmp_path), bad, "car_001_mesh.mat has")
    savemat(bad, {"im": ims[1]})
    bad.write_bytes(bad.read_bytes()[:300])
    raises_one_line(lambda: load_dataset("cars3d", tmp_path), bad, "not a readable .mat")


# --- MPI3D ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "compressed"])
def test_mpi3d_reads_the_npz_grid_in_row_major_order(tmp_path, compressed):
    sizes = (2, 2, 1, 1, 1, 3, 2)
    images = write_mpi3d(tmp_path / "mpi3d_toy.npz", sizes, compressed=compressed)
    # the published format has no labels: through the registry the file must hold the published 1,036,800 images
    raises_one_line(lambda: load_dataset("mpi3d", tmp_path), "mpi3d_toy.npz", "1036800", "factor_sizes")
    ds = mpi3d(tmp_path, factor_sizes=sizes)
    assert type(ds) is FactorDataset and ds.factor_names == MPI3D_FACTORS and ds.factor_sizes == sizes
    assert ds.images.dtype == torch.uint8 and ds.image_shape == (3, 64, 64) and ds.name == "mpi3d"
    assert torch.equal(ds.targets, torch.from_numpy(grid(sizes))) and torch.equal(ds.images, chw(images))
    row = (1, 0, 0, 0, 0, 2, 1)
    assert torch.equal(ds.images[np.ravel_multi_index(row, sizes)], chw(images)[17])
    quick = mpi3d(tmp_path / "mpi3d_toy.npz", quick=True, factor_sizes=sizes)  # every 2nd colour and shape, 8th axis
    assert quick.factor_sizes == (1, 1, 1, 1, 1, 1, 1) and torch.equal(quick.images[0], chw(images)[0])


def test_damaged_mpi3d_files_are_one_line_errors_naming_the_file(tmp_path):
    sizes = (2, 1, 1, 1, 1, 2, 2)
    raises_one_line(lambda: mpi3d(tmp_path, factor_sizes=sizes), "no mpi3d_*.npz", tmp_path)
    path = tmp_path / "mpi3d_real.npz"
    images = write_mpi3d(path, sizes, images=None, labels=np.zeros(3))
    raises_one_line(lambda: mpi3d(tmp_path, factor_sizes=sizes), path, "no array 'images'")
    write_mpi3d(path, sizes, images=images.astype(np.float32))
    raises_one_line(lambda: mpi3d(tmp_path, factor_sizes=sizes), path, "images must be uint8")
    write_mpi3d(path, sizes, images=images[:, :, :, :1])
    raises_one_line(lambda: mpi3d(tmp_path, factor_sizes=sizes), path, "images must be uint8")
    write_mpi3d(path, sizes)
    raises_one_line(lambda: mpi3d(tmp_path, factor_sizes=(3, 1, 1, 1, 1, 2, 2)), path, "factor_sizes must multiply")
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    raises_one_line(lambda: mpi3d(tmp_path, factor_sizes=sizes), path, "not an .npz")
    write_mpi3d(path, sizes, compressed=True)
    with zipfile.ZipFile(path) as z:  # flip bytes inside the deflated member: a CRC or deflate error
        info = z.getinfo("images.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 500
    data[start : start + 200] = bytes(200)
    path.write_bytes(bytes(data))
    raises_one_line(lambda: mpi3d(tmp_path, factor_sizes=sizes), path)
    write_mpi3d(tmp_path / "mpi3d_toy.npz", sizes)
    raises_one_line(lambda: mpi3d(tmp_path, factor_sizes=sizes), "several files", "mpi3d_real.npz, mpi3d_toy.npz")


# --- CelebA ---------------------------------------------------------------------------------------------------------


def test_celeba_reads_torchvisions_layout_with_attributes_and_splits(tmp_path):
    partitions = (0, 0, 0, 1, 2, 2)
    colours, attrs = write_celeba(tmp_path, partitions)
    ds = load_dataset("celeba", tmp_path)
    assert type(ds) is LabelledFactors and ds.name == "celeba" and len(ds) == 3
    assert ds.images.dtype == torch.uint8 and ds.image_shape == (3, 64, 64)
    assert ds.factor_names == tuple(CELEBA_ATTRIBUTES) and ds.factor_sizes == (2,) * 40
    assert torch.equal(ds.targets, torch.from_numpy((attrs[:3] + 1) // 2))
    np.testing.assert_array_equal(ds.factor_values, (attrs[:3] + 1) // 2)
    # flat-colour JPEGs, centre-cropped and resized: the colour survives up to JPEG's rounding
    assert (ds.images.float().mean((2, 3)) - torch.from_numpy(colours[:3]).float()).abs().max() <= 3
    test = load_dataset("celeba", tmp_path / "celeba", train=False)  # celeba/ itself may be given
    assert len(test) == 2 and torch.equal(test.targets, torch.from_numpy((attrs[4:] + 1) // 2))
    assert len(load_dataset("celeba", tmp_path, quick=True)) == 3


def test_damaged_celeba_files_are_one_line_errors_naming_the_file(tmp_path):
    raises_one_line(lambda: load_dataset("celeba", tmp_path), "list_attr_celeba.txt", "not found")
    write_celeba(tmp_path)
    folder = tmp_path / "celeba"
    attr = folder / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    attr.write_text("\n".join(lines[:3] + [lines[3].replace("-1", "0", 1)] + lines[4:]) + "\n")
    raises_one_line(lambda: load_dataset("celeba", tmp_path), attr, "line 4")
    attr.write_text("\n".join(lines[:-4]) + "\n")
    raises_one_line(lambda: load_dataset("celeba", tmp_path), attr, "promises 6 rows")
    attr.write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").unlink()
    raises_one_line(lambda: load_dataset("celeba", tmp_path), "list_eval_partition.txt", "not found")
    write_celeba(tmp_path / "again")
    image = tmp_path / "again" / "celeba" / "img_align_celeba" / "000002.jpg"
    image.write_bytes(image.read_bytes()[:20])
    raises_one_line(lambda: load_dataset("celeba", tmp_path / "again"), image, "not a readable image")
    image.unlink()
    raises_one_line(lambda: load_dataset("celeba", tmp_path / "again"), image, "not found")


# --- 3D Faces -------------------------------------------------------------------------------------------------------


def test_faces3d_reads_the_tensor_grid_in_row_major_order(tmp_path):
    sizes = (2, 3, 2, 2)
    images = write_faces(tmp_path / "basel_face_renders.pth", sizes)
    ds = load_dataset("faces3d", tmp_path)
    assert type(ds) is FactorDataset and ds.factor_names == FACES3D_FACTORS and ds.factor_sizes == sizes
    assert ds.images.dtype == torch.uint8 and ds.image_shape == (1, 64, 64) and ds.name == "faces3d"
    assert torch.equal(ds.targets, torch.from_numpy(grid(sizes)))
    assert torch.equal(ds.images[np.ravel_multi_index((1, 2, 0, 1), sizes), 0], images[1, 2, 0, 1])
    quick = load_dataset("faces3d", tmp_path, quick=True)  # every 5th face, 2nd azimuth, elevation, lighting
    assert quick.factor_sizes == (1, 2, 1, 1) and torch.equal(quick.images[1, 0], images[0, 2, 0, 0])


def test_faces3d_float_and_other_sizes_become_uint8_64x64(tmp_path):
    path = tmp_path / "basel_face_renders.pth"
    images = write_faces(path, (1, 2, 1, 2), dtype=torch.float32)  # float in [0, 1], as beta-TCVAE's code reads it
    ds = load_dataset("faces3d", path)
    assert ds.images.dtype == torch.uint8 and torch.equal(ds.images[:, 0], images.mul(255).round().reshape(-1, 64, 64))
    small = write_faces(path, (1, 2, 1, 2), side=32)
    ds = load_dataset("faces3d", path)
    assert ds.image_shape == (1, 64, 64) and ds.factor_sizes == (1, 2, 1, 2)
    means = small.reshape(4, -1).float().mean(1)
    assert (ds.images.reshape(4, -1).float().mean(1) - means).abs().max() < 2  # resized, not cropped or tiled


def test_damaged_faces3d_files_are_one_line_errors_naming_the_file(tmp_path):
    path = tmp_path / "basel_face_renders.pth"
    raises_one_line(lambda: load_dataset("faces3d", tmp_path), path.name, "not found")
    write_faces(path, flat=True)
    raises_one_line(lambda: load_dataset("faces3d", tmp_path), path, "127050")
    torch.save({"images": torch.zeros(2, 64, 64, dtype=torch.uint8)}, path)
    raises_one_line(lambda: load_dataset("faces3d", tmp_path), path, "holds a dict")
    torch.save(torch.zeros(2, 3, 64, 64, 2, dtype=torch.uint8), path)
    raises_one_line(lambda: load_dataset("faces3d", tmp_path), path, "expected a tensor")
    torch.save(torch.full((1, 1, 1, 2, 64, 64), 2.0), path)
    raises_one_line(lambda: load_dataset("faces3d", tmp_path), path, "[0, 1]")
    write_faces(path)
    path.write_bytes(path.read_bytes()[:1000])
    raises_one_line(lambda: load_dataset("faces3d", tmp_path), path, "could not read")


# --- an RGB dataset end to end ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_quick_run_on_rgb_shapes3d_writes_its_figures(tmp_path):
    from untwine.cli import main

    # 480 images whose quick sub-grid holds 32; a random subset of 24 of them is labelled factors without the grid
    # (latent_vs_factors, drawn for any factor grid, still assumes dSprites' factor names)
    write_shapes3d(tmp_path / "3dshapes.h5", (4, 4, 1, 3, 2, 5))
    out = tmp_path / "run"
    argv = ["train", "vae", "--data", "shapes3d", "--data-root", str(tmp_path), "--quick", "--subset", "24"]
    assert main(argv + ["--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["image_shape"] == [3, 64, 64] and config["data"]["name"] == "shapes3d"
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert names == ["khat.png", "loss.png", "reconstructions.png", "samples.png", "traversals.png"]
    assert all((out / "figures" / n).read_bytes()[:4] == b"\x89PNG" for n in names)
