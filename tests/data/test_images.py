import gzip

import numpy as np
import pytest
import torch

from untwine.data import DataError, ImageDataset, fashion_mnist, load_dataset, mnist, yaleb


def idx_images(path):
    return np.frombuffer(gzip.open(path).read(), np.uint8, offset=16).reshape(-1, 28, 28)


def test_mnist_matches_the_raw_idx_files(torchvision_root, shared_data):
    train = mnist(torchvision_root, train=True)
    test = mnist(torchvision_root, train=False)
    assert len(train) == 60_000 and len(test) == 10_000
    assert train.image_shape == (1, 28, 28) and train.images.dtype == torch.uint8
    raw = idx_images(shared_data / "mnist/MNIST/raw/t10k-images-idx3-ubyte.gz")
    assert np.array_equal(test.images[:, 0].numpy(), raw)
    raw_labels = gzip.open(shared_data / "mnist/MNIST/raw/t10k-labels-idx1-ubyte.gz").read()
    labels = np.frombuffer(raw_labels, np.uint8, offset=8)
    assert np.array_equal(test.targets.numpy(), labels)
    x, y = test[0]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and y.item() == labels[0]


def test_fashion_mnist_loads_ten_balanced_classes(torchvision_root):
    ds = fashion_mnist(torchvision_root, train=False)
    assert len(ds) == 10_000
    assert torch.bincount(ds.targets).tolist() == [1000] * 10


def test_yaleb_reads_the_mat_file_with_upright_faces(shared_data):
    ds = yaleb(shared_data / "yaleb")
    assert ds.image_shape == (1, 32, 32) and len(ds) == 2414
    assert ds.targets.min() == 0 and ds.targets.max() == 37
    # column-major storage: read correctly, a face is left-right symmetric on average (rows would not be)
    mean = ds.images.float().mean(0)[0]
    lr = (mean - mean.flip(1)).abs().mean()
    ud = (mean - mean.flip(0)).abs().mean()
    assert lr < 0.5 * ud


def test_batch_moves_compact_images_and_scales_to_unit_range(torchvision_root):
    ds = mnist(torchvision_root, train=False)
    x, y = ds.batch(torch.tensor([3, 1, 2]), "cpu")
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(x, ds.images[[3, 1, 2]].float() / 255)
    assert y.tolist() == ds.targets[[3, 1, 2]].tolist()


def test_subsets_and_splits_are_seeded_and_disjoint():
    ds = ImageDataset(torch.arange(100, dtype=torch.uint8).reshape(100, 1, 1, 1), torch.arange(100), 255, "toy")
    a, b = ds.random_subset(10, seed=4), ds.random_subset(10, seed=4)
    assert torch.equal(a.targets, b.targets) and not torch.equal(a.targets, ds.random_subset(10, seed=5).targets)
    first, second = ds.split(0.8, seed=1)
    assert len(first) == 80 and len(second) == 20
    assert set(first.targets.tolist()).isdisjoint(second.targets.tolist())
    with pytest.raises(DataError, match="positive"):
        ds.random_subset(0)
    with pytest.raises(DataError, match="split fraction"):
        ds.split(1.5)


def _partly_labelled(n=1000, labelled=10, share=0.25):
    ds = ImageDataset(torch.zeros(n, 1, 1, 1, dtype=torch.uint8), torch.arange(n) % 10, 255, "toy")
    return ds.hide_labels(labelled, seed=0, labelled_share=share)


@pytest.mark.parametrize("labelled", [1, 10, 400])
def test_a_labelled_share_puts_labelled_images_in_every_batch_and_visits_every_image(labelled):
    data = _partly_labelled(labelled=labelled)
    known = set(torch.nonzero(data.targets >= 0).squeeze(1).tolist())
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(8):
        order = data.epoch_order(g)
        assert len(order) == len(data)  # the length the training loop takes
        is_labelled = data.targets[order] >= 0
        # any 4 consecutive positions (1 / share) hold a labelled image, so every batch of 128 holds at least 32
        assert bool(is_labelled.unfold(0, 4, 1).any(1).all())
        assert all(int(batch.sum()) >= len(batch) // 4 for batch in is_labelled.split(128))
        assert set(order[is_labelled].tolist()) == known  # every labelled image in every epoch
        unlabelled = order[~is_labelled].tolist()
        assert len(unlabelled) == len(set(unlabelled)) == len(data) - max(labelled, 250)
        seen |= set(order.tolist())
    assert seen == set(range(len(data)))  # the unlabelled images left out of one epoch come up in the next ones


def test_without_a_labelled_share_an_epoch_is_a_plain_permutation():
    data = _partly_labelled(share=None)
    order = data.epoch_order(torch.Generator().manual_seed(0))
    assert torch.equal(order, torch.randperm(len(data), generator=torch.Generator().manual_seed(0)))
    everything = _partly_labelled(labelled=1000)  # nothing to spread: all images are labelled
    assert sorted(everything.epoch_order(torch.Generator()).tolist()) == list(range(1000))
    assert data.random_subset(100).labelled_share is None
    assert _partly_labelled().random_subset(100).labelled_share == 0.25


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, True])
def test_a_bad_labelled_share_is_refused(bad):
    with pytest.raises(DataError, match=r"labelled_share must lie in \(0, 1\)"):
        _partly_labelled(share=bad)


def test_load_dataset_quick_and_subset(torchvision_root):
    assert len(load_dataset("mnist", torchvision_root, quick=True)) == 5000
    assert len(load_dataset("fashion-mnist", torchvision_root, train=False, subset=123)) == 123


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda tmp: load_dataset("cifar"), "unknown dataset 'cifar'"),
        (lambda tmp: mnist(tmp / "nowhere"), "does not exist"),
        (lambda tmp: mnist(tmp, download=False), "could not load MNIST"),
        (lambda tmp: yaleb(None), "--data-root"),
        (lambda tmp: yaleb(tmp), "not found"),
        (lambda tmp: load_dataset("yaleb", tmp, train=False), "no test split"),
        (lambda tmp: ImageDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0), 1, "empty"), "empty"),
        (lambda tmp: ImageDataset(torch.zeros(3, 2, 2), torch.zeros(3), 1, "flat"), r"\(N, C, H, W\)"),
    ],
)
def test_bad_data_input_raises_a_clear_error(tmp_path, call, match):
    with pytest.raises(DataError, match=match):
        call(tmp_path)


def test_yaleb_rejects_a_file_that_is_not_a_mat_file(tmp_path):
    bad = tmp_path / "YaleB_32x32_ori.mat"
    bad.write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="not a readable .mat"):
        yaleb(bad)


def _writable_mnist(shared_data, root):
    import shutil

    shutil.copytree(shared_data / "mnist" / "MNIST", root / "MNIST")
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root / "MNIST" / "raw"


def test_a_data_root_gets_only_its_missing_extracted_files_and_nothing_is_replaced(shared_data, tmp_path):
    raw = _writable_mnist(shared_data, tmp_path)
    mnist(tmp_path, train=False)  # extracts the four files
    kept = raw / "train-images-idx3-ubyte"
    kept.write_bytes(kept.read_bytes())  # the user's own copy of an extracted file: same name, written by them
    before = {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in raw.iterdir() if p.name != "t10k-labels-idx1-ubyte"
    }
    (raw / "t10k-labels-idx1-ubyte").unlink()
    test = mnist(tmp_path, train=False)
    assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == gzip.open(raw / "t10k-labels-idx1-ubyte.gz").read()
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in raw.iterdir() if p.name in before} == before
    assert len(test) == 10_000


def test_a_damaged_archive_in_a_data_root_is_reported_and_left_as_it_is(shared_data, tmp_path):
    raw = _writable_mnist(shared_data, tmp_path)
    archive = raw / "t10k-images-idx3-ubyte.gz"
    archive.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="could not extract .*t10k-images-idx3-ubyte.gz .*official MNIST file"):
        mnist(tmp_path, train=False)
    assert archive.read_bytes() == b"not gzip" and not (raw / "t10k-images-idx3-ubyte").exists()
