"""No loader runs code from a data file: a file whose unpickling would create a marker file is refused with a one-line
DataError, and the marker never appears."""

import pickle
import shutil

import numpy as np
import pytest
import torch
from benchmark_fixtures import grid, write_celeba, write_norb

from untwine.data import DataError, DSprites, load_dataset, mnist, mpi3d
from untwine.data.dsprites import FACTOR_NAMES


class Plant:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): what a tampered data file could run instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_file(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Plant(marker)))
    return path


def refuses(call, marker, fragment):
    with pytest.raises(DataError) as err:
        call()
    assert "\n" not in str(err.value) and str(fragment) in str(err.value), str(err.value)
    assert not marker.exists(), "the data file ran code"


def test_the_payload_does_run_code_when_a_loader_unpickles_it(tmp_path):
    path = pickle_file(tmp_path / "x.npz", tmp_path / "marker")
    np.load(path, allow_pickle=True).close()  # what DSprites did before: the file ran code (and opened a file)
    assert (tmp_path / "marker").exists()


def object_array(marker):
    array = np.empty(1, dtype=object)
    array[0] = Plant(marker)
    return array


# --- .npz: dSprites and MPI3D ---------------------------------------------------------------------------------------

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"


def test_dsprites_refuses_a_pickle_renamed_npz(tmp_path):
    marker = tmp_path / "marker"
    path = pickle_file(tmp_path / DSPRITES_FILE, marker)
    refuses(lambda: DSprites(path=path), marker, path)
    refuses(lambda: load_dataset("dsprites", tmp_path), marker, path)


def test_dsprites_refuses_an_object_array_of_images(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / DSPRITES_FILE
    classes = np.zeros((1, len(FACTOR_NAMES)), dtype=np.int64)
    np.savez(path, imgs=object_array(marker), latents_values=classes.astype(float), latents_classes=classes)
    assert not marker.exists()
    refuses(lambda: DSprites(path=path), marker, path)


def test_dsprites_reads_a_real_format_file_without_touching_its_pickled_metadata(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / DSPRITES_FILE
    classes = grid((1, 1, 1, 1, 2, 2))
    metadata = object_array(marker)  # the real file's metadata member is a pickled dict
    np.savez(path, imgs=np.zeros((4, 64, 64), np.uint8), latents_values=classes.astype(float),
             latents_classes=classes, metadata=metadata)  # fmt: skip
    ds = DSprites(path=path)
    assert len(ds) == 4 and ds.factor_sizes == (1, 1, 1, 1, 2, 2) and not marker.exists()


def test_mpi3d_refuses_a_pickle_renamed_npz_and_an_object_array(tmp_path):
    marker = tmp_path / "marker"
    path = pickle_file(tmp_path / "mpi3d_toy.npz", marker)
    refuses(lambda: load_dataset("mpi3d", tmp_path), marker, path)
    for save in (np.savez, np.savez_compressed):
        save(path, images=object_array(marker))
        refuses(lambda: mpi3d(tmp_path, factor_sizes=(1, 1, 1, 1, 1, 1, 1)), marker, path)
        refuses(lambda: load_dataset("mpi3d", tmp_path), marker, path)


# --- .pth: 3D Faces -------------------------------------------------------------------------------------------------


def test_faces3d_refuses_a_torch_save_or_a_pickle_of_an_object(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "basel_face_renders.pth"
    torch.save(Plant(marker), path)
    refuses(lambda: load_dataset("faces3d", tmp_path), marker, path)
    torch.save({"images": torch.zeros(1), "extra": Plant(marker)}, path)
    refuses(lambda: load_dataset("faces3d", tmp_path), marker, path)
    pickle_file(path, marker)  # a plain pickle (torch's legacy format has no zip around it)
    refuses(lambda: load_dataset("faces3d", tmp_path), marker, path)


# --- .h5, NORB binary matrices, MATLAB files, CelebA's text and JPEG files ------------------------------------------


def test_shapes3d_refuses_a_pickle_renamed_h5(tmp_path):
    marker = tmp_path / "marker"
    path = pickle_file(tmp_path / "3dshapes.h5", marker)
    refuses(lambda: load_dataset("shapes3d", tmp_path), marker, path)


@pytest.mark.parametrize("part", ["dat", "cat", "info"])
def test_smallnorb_refuses_a_pickle_renamed_mat(tmp_path, part):
    marker = tmp_path / "marker"
    write_norb(tmp_path)
    path = pickle_file(tmp_path / f"smallnorb-5x46789x9x18x6x2x96x96-training-{part}.mat", marker)
    refuses(lambda: load_dataset("smallnorb", tmp_path), marker, path)


def test_cars3d_and_yaleb_refuse_a_pickle_renamed_mat(tmp_path):
    marker = tmp_path / "marker"
    path = pickle_file(tmp_path / "cars" / "car_001_mesh.mat", marker)
    refuses(lambda: load_dataset("cars3d", tmp_path / "cars"), marker, path)
    path = pickle_file(tmp_path / "yale" / "YaleB_32x32_ori.mat", marker)
    refuses(lambda: load_dataset("yaleb", tmp_path / "yale"), marker, path)


@pytest.mark.parametrize("name", ["celeba/img_align_celeba/000001.jpg", "celeba/list_attr_celeba.txt"])
def test_celeba_refuses_a_pickle_in_place_of_its_files(tmp_path, name):
    marker = tmp_path / "marker"
    write_celeba(tmp_path)
    path = pickle_file(tmp_path / name, marker)
    refuses(lambda: load_dataset("celeba", tmp_path), marker, path)


# --- MNIST through torchvision --------------------------------------------------------------------------------------


def _mnist_with_a_pickle(shared_data, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    shutil.copyfile(shared_data / "mnist/MNIST/raw/t10k-labels-idx1-ubyte.gz", raw / "t10k-labels-idx1-ubyte.gz")
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):  # present, never read for the test split
        (raw / name).write_bytes(b"")
    return pickle_file(raw / "t10k-images-idx3-ubyte", tmp_path / "marker")


def test_mnist_runs_no_code_from_its_files(shared_data, tmp_path):
    _mnist_with_a_pickle(shared_data, tmp_path)
    with pytest.raises(Exception):
        mnist(tmp_path, train=False, download=False)
    assert not (tmp_path / "marker").exists()


def test_mnist_refuses_a_foreign_idx_file_with_a_data_error(shared_data, tmp_path):
    _mnist_with_a_pickle(shared_data, tmp_path)
    refuses(lambda: mnist(tmp_path, train=False, download=False), tmp_path / "marker", "MNIST/raw")
