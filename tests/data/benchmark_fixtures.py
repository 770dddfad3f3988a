"""Small files in exactly the published formats of the field's benchmarks (the real ones cannot be downloaded here).

Each writer returns what it wrote, in the published row order, so a test can compare the loaded dataset with it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

SHAPES3D_VALUES = (
    np.linspace(0.0, 0.9, 10),  # floor_hue
    np.linspace(0.0, 0.9, 10),  # wall_hue
    np.linspace(0.0, 0.9, 10),  # object_hue
    np.linspace(0.75, 1.25, 8),  # scale
    np.arange(4.0),  # shape
    np.linspace(-30.0, 30.0, 15),  # orientation
)

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male "
    "Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
    "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()


def grid(sizes) -> np.ndarray:
    mesh = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def random_images(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- 3D Shapes: 3dshapes.h5 -----------------------------------------------------------------------------------------


def write_shapes3d(path: Path, sizes=(2, 2, 1, 2, 3, 2), seed=0, **override) -> dict[str, np.ndarray]:
    """``images`` (N, 64, 64, 3) uint8 and ``labels`` (N, 6) float64 in row-major order, as DeepMind's file."""
    import h5py

    classes = grid(sizes)
    labels = np.stack([SHAPES3D_VALUES[k][classes[:, k]] for k in range(6)], axis=1)
    arrays = {"images": random_images((len(classes), 64, 64, 3), seed), "labels": labels.astype(np.float64)}
    arrays.update(override)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if value is not None:
                f.create_dataset(key, data=value, chunks=True if np.ndim(value) > 1 else None, compression="gzip")
    return arrays


# --- smallNORB: binary matrices -------------------------------------------------------------------------------------

NORB_TRAINING = "smallnorb-5x46789x9x18x6x2x96x96-training-{}.mat"
NORB_TESTING = "smallnorb-5x01235x9x18x6x2x96x96-testing-{}.mat"
NORB_UINT8, NORB_INT32 = 0x1E3D4C55, 0x1E3D4C54


def norb_bytes(array: np.ndarray, magic: int) -> bytes:
    dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
    head = struct.pack(f"<ii{len(dims)}i", magic, array.ndim, *dims)
    return head + np.ascontiguousarray(array, dtype=np.uint8 if magic == NORB_UINT8 else "<i4").tobytes()


def write_norb(
    folder: Path, train=True, categories=2, instances=(4, 6), elevations=2, azimuths=3, lightings=2, size=96, offset=0
):
    """One split: ``-dat`` (N, 2, size, size) uint8 pairs whose left image is a constant unique to its row, ``-cat``
    (N,) and ``-info`` (N, 4) int32 (instance, elevation, azimuth 0, 2, 4, ..., lighting), rows shuffled as in the
    real files. Returns ``(classes, left pixel value)`` per row in the order written."""
    rows = []
    for c in range(categories):
        for i in instances:
            for e in range(elevations):
                for a in range(azimuths):
                    for li in range(lightings):
                        rows.append((c, i, e, 2 * a, li))
    rows = np.array(rows)[np.random.default_rng(1).permutation(len(rows))]
    n = len(rows)
    value = (np.arange(n) * 5 + 3 + offset) % 256
    dat = np.zeros((n, 2, size, size), dtype=np.uint8)
    dat[:, 0] = value[:, None, None]
    dat[:, 1] = 255 - value[:, None, None]  # the right image must not be read
    pattern = NORB_TRAINING if train else NORB_TESTING
    (folder / pattern.format("dat")).write_bytes(norb_bytes(dat, NORB_UINT8))
    (folder / pattern.format("cat")).write_bytes(norb_bytes(rows[:, 0], NORB_INT32))
    (folder / pattern.format("info")).write_bytes(norb_bytes(rows[:, 1:], NORB_INT32))
    return rows, value


# --- Cars3D: per-car .mat -------------------------------------------------------------------------------------------


def write_cars(folder: Path, cars=3, azimuths=3, elevations=2, size=64, seed=0) -> list[np.ndarray]:
    """``car_NNN_mesh.mat`` files with ``im`` (size, size, 3, azimuths, elevations) uint8."""
    from scipy.io import savemat

    ims = []
    for k in range(cars):
        im = random_images((size, size, 3, azimuths, elevations), seed + k)
        savemat(folder / f"car_{k + 1:03d}_mesh.mat", {"im": im})
        ims.append(im)
    return ims


# --- MPI3D: mpi3d_*.npz ---------------------------------------------------------------------------------------------


def write_mpi3d(path: Path, sizes=(2, 2, 1, 1, 1, 3, 2), compressed=False, seed=0, **override) -> np.ndarray:
    images = random_images((int(np.prod(sizes)), 64, 64, 3), seed)
    arrays = {"images": images, **override}
    (np.savez_compressed if compressed else np.savez)(path, **{k: v for k, v in arrays.items() if v is not None})
    return images


# --- CelebA: torchvision's celeba/ folder ---------------------------------------------------------------------------


def write_celeba(root: Path, partitions=(0, 0, 0, 1, 2, 2), size=(178, 218)) -> tuple[np.ndarray, np.ndarray]:
    """``celeba/img_align_celeba/NNNNNN.jpg`` (each one flat colour) and the five annotation files. Returns the
    colours and the attributes in {-1, 1}."""
    from PIL import Image

    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = len(partitions)
    colours = rng.integers(20, 236, (n, 3))
    attrs = rng.choice([-1, 1], (n, len(CELEBA_ATTRIBUTES)))
    names = [f"{k + 1:06d}.jpg" for k in range(n)]
    for name, colour in zip(names, colours):
        Image.new("RGB", size, tuple(int(c) for c in colour)).save(folder / "img_align_celeba" / name, quality=95)
    attr_lines = [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
    attr_lines += [name + " " + " ".join(f"{a:2d}" for a in row) for name, row in zip(names, attrs)]
    (folder / "list_attr_celeba.txt").write_text("\n".join(attr_lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{m} {p}\n" for m, p in zip(names, partitions)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{m} {k + 1}\n" for k, m in enumerate(names)))
    (folder / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{m} 95 71 226 313\n" for m in names)
    )
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x "
        "rightmouth_y\n" + "".join(f"{m} 69 109 106 113 77 142 73 152 108 154\n" for m in names)
    )
    return colours, attrs


# --- 3D Faces: basel_face_renders.pth -------------------------------------------------------------------------------


def write_faces(path: Path, sizes=(2, 3, 2, 2), side=64, dtype=torch.uint8, flat=False, seed=0) -> torch.Tensor:
    """A tensor (faces, azimuth, elevation, lighting, side, side), or its flat (N, side, side) view."""
    images = torch.from_numpy(random_images((*sizes, side, side), seed))
    if dtype.is_floating_point:
        images = images.to(dtype) / 255
    torch.save(images.reshape(-1, side, side) if flat else images, path)
    return images
