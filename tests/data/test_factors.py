"""Your own factors: FactorDataset.from_arrays (a full grid in any row order), LabelledFactors (no grid needed), and
what subsets and sub-grids keep."""

import numpy as np
import pytest
import torch
from benchmark_fixtures import grid

from untwine.data import DataError, FactorDataset, ImageDataset, LabelledFactors, load_dataset

SIZES = (2, 3, 4)
VALUES = (np.array([-1.5, 2.0]), np.array([10.0, 20.0, 30.0]), np.array([0.0, 0.25, 0.5, 1.0]))


def _grid_arrays(seed=0):
    """Images whose first pixel encodes their row of the row-major grid, with the factor values, shuffled."""
    classes = grid(SIZES)
    values = np.stack([VALUES[k][classes[:, k]] for k in range(3)], axis=1)
    images = np.zeros((len(classes), 5, 6, 3), dtype=np.uint8)  # (N, H, W, C)
    images[:, 0, 0, 0] = np.arange(len(classes))
    perm = np.random.default_rng(seed).permutation(len(classes))
    return images[perm], values[perm], classes


def test_from_arrays_sorts_a_shuffled_grid_into_row_major_order():
    images, values, classes = _grid_arrays()
    ds = FactorDataset.from_arrays(images, values, names=["a", "b", "c"], name="mine")
    assert isinstance(ds, FactorDataset) and isinstance(ds, LabelledFactors)
    assert ds.name == "mine" and ds.factor_names == ("a", "b", "c") and ds.factor_sizes == SIZES
    assert ds.images.dtype == torch.uint8 and ds.image_shape == (3, 5, 6) and ds.max_value == 255
    assert torch.equal(ds.targets, torch.from_numpy(classes))
    assert torch.equal(ds.images[:, 0, 0, 0], torch.arange(24, dtype=torch.uint8))  # each image went with its row
    np.testing.assert_array_equal(ds.factor_values, np.stack([VALUES[k][classes[:, k]] for k in range(3)], 1))
    assert torch.equal(ds.index_of(ds.targets), torch.arange(24))
    assert torch.equal(ds.images_for(torch.tensor([[1, 2, 3]]))[0], ds.batch(torch.tensor([23]))[0][0])


@pytest.mark.parametrize("layout", ["nhw", "nchw", "nhwc", "torch-float"])
def test_from_arrays_reads_every_image_layout(layout):
    images, values, _ = _grid_arrays()
    x = {
        "nhw": images[..., 0],
        "nchw": images.transpose(0, 3, 1, 2),
        "nhwc": images,
        "torch-float": torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).float() / 255,
    }[layout]
    ds = FactorDataset.from_arrays(x, values)
    channels = 1 if layout == "nhw" else 3
    assert ds.image_shape == (channels, 5, 6) and ds.factor_names == ("factor_0", "factor_1", "factor_2")
    first = ds.batch(torch.arange(24))[0][:, 0, 0, 0]
    torch.testing.assert_close(first, torch.arange(24.0) / 255)
    assert ds.images.dtype == (torch.float32 if layout == "torch-float" else torch.uint8)


@pytest.mark.parametrize(
    "drop, repeat, message",
    [(5, None, "1 combinations missing"), (None, 5, "1 combinations repeated"), (5, 6, "missing")],
)
def test_rows_that_are_not_a_full_grid_point_to_labelled_factors(drop, repeat, message):
    images, values, _ = _grid_arrays()
    keep = [i for i in range(24) if i != drop] + ([repeat] if repeat is not None else [])
    with pytest.raises(DataError, match=message) as err:
        FactorDataset.from_arrays(images[keep], values[keep])
    assert "LabelledFactors.from_arrays" in str(err.value) and "\n" not in str(err.value)
    labelled = LabelledFactors.from_arrays(images[keep], values[keep], names=["a", "b", "c"])
    assert type(labelled) is LabelledFactors and len(labelled) == len(keep)
    assert labelled.factor_sizes == SIZES
    np.testing.assert_array_equal(labelled.factor_values, values[keep])  # rows kept in the order given
    ranks = np.stack([np.searchsorted(VALUES[k], values[keep][:, k]) for k in range(3)], 1)
    assert torch.equal(labelled.targets, torch.from_numpy(ranks))


def test_labelled_factors_subsets_keep_their_classes_values_and_sizes():
    images, values, _ = _grid_arrays()
    labelled = LabelledFactors.from_arrays(images[:10], values[:10], names=["a", "b", "c"], name="notes")
    sub = labelled.subset([7, 2])
    assert type(sub) is LabelledFactors and sub.name == "notes" and sub.factor_names == ("a", "b", "c")
    assert sub.factor_sizes == labelled.factor_sizes and torch.equal(sub.targets, labelled.targets[[7, 2]])
    np.testing.assert_array_equal(sub.factor_values, values[[7, 2]])
    rand = labelled.random_subset(4, seed=1)
    assert type(rand) is LabelledFactors and len(rand) == 4
    first, second = labelled.split(0.5)
    assert type(first) is LabelledFactors and type(second) is LabelledFactors


def test_a_subset_of_a_factor_grid_keeps_its_factors_and_a_subgrid_keeps_the_grid():
    images, values, _ = _grid_arrays()
    ds = FactorDataset.from_arrays(images, values, names=["a", "b", "c"])
    sub = ds.random_subset(5, seed=0)
    assert type(sub) is LabelledFactors and sub.factor_names == ds.factor_names and sub.factor_sizes == SIZES
    rows = ds.images[:, 0, 0, 0].long()
    assert torch.equal(sub.targets, ds.targets[sub.images[:, 0, 0, 0].long()])
    np.testing.assert_array_equal(sub.factor_values, ds.factor_values[sub.images[:, 0, 0, 0].numpy()])
    part = ds.subgrid({"b": [0, 2], "c": range(1, 4, 2)})
    assert type(part) is FactorDataset and part.factor_sizes == (2, 2, 2)
    assert torch.equal(part.targets, torch.from_numpy(grid((2, 2, 2))))
    kept = [a * 12 + b * 4 + c for a in range(2) for b in (0, 2) for c in (1, 3)]
    assert part.images[:, 0, 0, 0].tolist() == rows[kept].tolist()
    np.testing.assert_array_equal(part.factor_values, ds.factor_values[kept])
    with pytest.raises(DataError, match="unknown factors"):
        ds.subgrid({"z": [0]})
    with pytest.raises(DataError, match="must increase"):
        ds.subgrid({"b": [2, 0]})


def test_a_dsprites_subset_is_labelled_factors():
    ds = load_dataset("dsprites", quick=True, subset=50)
    assert type(ds) is LabelledFactors and ds.factor_names[1] == "shape" and ds.targets.shape == (50, 6)
    assert ds.factor_sizes == load_dataset("dsprites", quick=True).factor_sizes


@pytest.mark.parametrize(
    "images, factors, match",
    [
        (np.zeros((4, 2, 2), np.uint8), np.zeros((3, 1)), r"shape \(4, K\)"),
        (np.zeros((4, 2, 2), np.uint8), np.array([[0.0], [np.nan], [1], [2]]), "NaN"),
        (np.zeros((4, 2, 2), np.uint8), np.array([["a"], ["b"], ["c"], ["d"]]), "must be numbers"),
        (np.full((4, 2, 2), 2.0), np.arange(4.0), r"lie in \[0, 1\]"),
        (np.zeros((4, 5, 2, 2), np.uint8), np.arange(4.0), "cannot tell the channel axis"),
        (np.zeros((4, 2), np.uint8), np.arange(4.0), r"\(N, H, W\)"),
        (np.full((4, 2, 2), 300), np.arange(4.0), "0..255"),
    ],
)
def test_bad_arrays_are_one_line_data_errors(images, factors, match):
    for cls in (FactorDataset, LabelledFactors):
        with pytest.raises(DataError, match=match) as err:
            cls.from_arrays(images, factors)
        assert "\n" not in str(err.value)


def test_labelled_factors_check_their_classes():
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(DataError, match="must lie in 0..1"):
        LabelledFactors(images, torch.tensor([[0], [1], [2]]), np.zeros((3, 1)), ["a"], [2], 255, "x")
    with pytest.raises(DataError, match="distinct factor names"):
        LabelledFactors(images, torch.zeros(3, 2, dtype=torch.long), np.zeros((3, 2)), ["a", "a"], None, 255, "x")
    with pytest.raises(DataError, match="integers"):
        LabelledFactors(images, torch.zeros(3, 1), np.zeros((3, 1)), ["a"], None, 255, "x")
    ok = LabelledFactors(images, torch.tensor([[0], [3], [1]]), np.zeros((3, 1)), ["a"], None, 255, "x")
    assert ok.factor_sizes == (4,) and isinstance(ok, ImageDataset) and not isinstance(ok, FactorDataset)
