"""The one data interface of untwine: in-memory image tensors, with or without ground-truth factors.

Every loader returns an :class:`ImageDataset` or one of its subclasses: :class:`LabelledFactors` (images labelled
with ``K`` ground-truth factors, no grid needed) and :class:`FactorDataset` (a full product grid of factors in
row-major order, a special case of labelled factors). ``FactorDataset.from_arrays`` and
``LabelledFactors.from_arrays`` build either from your own images and factor values.

Images stay in their compact storage type (``uint8``) and are turned into float tensors one batch at a time on the
target device, so the 737,280 dSprites frames cost 3 GB, not 12 GB, and the training loop can draw a batch with one
indexing operation instead of a Python loop over items.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


class DataError(ValueError):
    """Bad data input (missing files, wrong shapes, empty subsets); the message says what to do."""


def cache_dir() -> Path:
    """Directory for rendered or extracted data: ``$UNTWINE_CACHE``, else ``$XDG_CACHE_HOME/untwine``."""
    env = os.environ.get("UNTWINE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "untwine"


class ImageDataset(Dataset):
    """Images ``(N, C, H, W)`` stored compactly, with integer targets.

    :param images: ``uint8`` (or float) tensor of shape ``(N, C, H, W)``.
    :param targets: ``long`` tensor of shape ``(N,)`` (class labels) or ``(N, K)`` (factor classes).
    :param max_value: value that maps to 1.0 (255 for 8-bit greyscale, 1 for binary images).
    :param name: short dataset name used in run folders and plots.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, max_value: float, name: str):
        if images.dim() != 4:
            raise DataError(f"{name}: images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if len(images) == 0:
            raise DataError(f"{name}: the dataset is empty; check the subset or factor sub-grid you asked for")
        if len(targets) != len(images):
            raise DataError(f"{name}: {len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = targets
        self.max_value = float(max_value)
        self.name = name

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].float().div_(self.max_value), self.targets[index]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])

    def batch(self, index: torch.Tensor, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``index`` as float in ``[0, 1]`` on ``device``, with their targets.

        The compact tensor is moved first and converted on the device, which moves 4x fewer bytes. Rows are
        gathered with ``index_select`` (whole-row copies; advanced indexing copies byte by byte, 4x slower), into
        pinned memory when they go from the CPU to a GPU, so that copy runs asynchronously.
        """
        if index.device != self.images.device:
            index = index.to(self.images.device)
        flat = index.reshape(-1)
        to_gpu = device is not None and self.images.device.type == "cpu" and torch.device(device).type == "cuda"
        shape = (len(flat), *self.images.shape[1:])
        x = torch.empty(shape, dtype=self.images.dtype, device=self.images.device, pin_memory=to_gpu)
        torch.index_select(self.images, 0, flat, out=x)
        y = self.targets.index_select(0, flat)
        if device is not None:
            x = x.to(device, non_blocking=to_gpu)
            y = y.to(device, non_blocking=to_gpu)
        x = x.view(*index.shape, *x.shape[1:]).float()
        y = y.view(*index.shape, *y.shape[1:])
        # images stored as 0/1 (dSprites) skip the division, which would not change a value
        return (x if self.max_value == 1 else x.div_(self.max_value)), y

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """The order in which the training loop visits the images in one epoch: a random permutation (datasets that
        must mix their parts in every batch override it)."""
        return torch.randperm(len(self), generator=generator)

    def to(self, device: torch.device | str) -> "ImageDataset":
        """Move the stored tensors (still compact) to ``device``, e.g. to keep all of dSprites on a GPU."""
        self.images = self.images.to(device)
        self.targets = self.targets.to(device)
        return self

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "ImageDataset":
        """A new dataset holding ``indices`` (copies only those rows)."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return ImageDataset(self.images[indices], self.targets[indices], self.max_value, self.name)

    def random_subset(self, n: int, seed: int = 0) -> "ImageDataset":
        """``n`` rows drawn without replacement with a seeded generator (``n >= len`` returns ``self``)."""
        if n <= 0:
            raise DataError(f"{self.name}: subset size must be positive, got {n}")
        if n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=g)[:n].sort().values)

    def split(self, fraction: float, seed: int = 0) -> tuple["ImageDataset", "ImageDataset"]:
        """Seeded random split into ``(first, second)`` with ``round(fraction * N)`` rows in the first."""
        if not 0.0 < fraction < 1.0:
            raise DataError(f"split fraction must lie in (0, 1), got {fraction}")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(self), generator=g)
        k = int(round(fraction * len(self)))
        return self.subset(perm[:k].sort().values), self.subset(perm[k:].sort().values)

    def hide_labels(self, labelled: int, seed: int = 0, labelled_share: float | None = None) -> "PartlyLabelledDataset":
        """A copy whose class labels are ``-1`` ("unlabelled") except for ``labelled`` seeded rows, for semi-supervised
        training (N-VAE with ``semi_supervised=True``); the images are shared, not copied.

        :param labelled_share: ``None``: an epoch visits the images in a random order, so with 100 labels in 60,000
            a batch of 128 holds none most of the time. A fraction in ``(0, 1)``: that share of every epoch's
            positions goes to labelled images, spread evenly (see :class:`PartlyLabelledDataset`).
        """
        if self.targets.dim() != 1 or self.targets.is_floating_point():
            raise DataError(f"{self.name}: only one integer class label per image can be hidden")
        if not 0 <= labelled <= len(self):
            raise DataError(f"{self.name}: labelled must lie in [0, {len(self)}], got {labelled}")
        keep = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:labelled]
        targets = torch.full_like(self.targets, -1)
        targets[keep] = self.targets[keep]
        return PartlyLabelledDataset(self.images, targets, self.max_value, self.name, labelled_share)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)}, image_shape={self.image_shape})"


class PartlyLabelledDataset(ImageDataset):
    """Images whose label ``-1`` means "unlabelled" (:meth:`ImageDataset.hide_labels`), with an epoch order that can
    put labelled images in every batch.

    With ``labelled_share`` :math:`s`, an epoch of :math:`N` positions holds :math:`m = \\max(n_l, \\lceil sN \\rceil)`
    labelled slots at evenly spaced positions (any :math:`\\lceil N/m \\rceil` consecutive positions hold one, so a
    batch of 128 at :math:`s = 1/4` holds 32 whatever its offset), filled by fresh random permutations of the
    :math:`n_l` labelled images one after another (each is visited at least once per epoch), and :math:`N - m`
    unlabelled images drawn without replacement. The epoch keeps the length the training loop expects
    (``len(self)``), so the repeated labelled images take the places of :math:`m - n_l` unlabelled ones: each
    unlabelled image is visited in a given epoch with probability :math:`(N - m)/(N - n_l)`, and every one of them
    over a few epochs.

    :param labelled_share: :math:`s` in ``(0, 1)``, or ``None`` for a plain random permutation.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        max_value: float,
        name: str,
        labelled_share: float | None = None,
    ):
        super().__init__(images, targets, max_value, name)
        if labelled_share is not None and not (
            isinstance(labelled_share, (int, float)) and not isinstance(labelled_share, bool) and 0 < labelled_share < 1
        ):
            raise DataError(f"{name}: labelled_share must lie in (0, 1) or be None, got {labelled_share!r}")
        self.labelled_share = labelled_share

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """All of the epoch's ``len(self)`` positions; labelled images spread evenly when ``labelled_share`` is set."""
        known = self.targets >= 0
        n, n_lab = len(self), int(known.sum())
        if self.labelled_share is None or n_lab in (0, n):
            return super().epoch_order(generator)
        labelled = torch.nonzero(known).squeeze(1).cpu()
        unlabelled = torch.nonzero(~known).squeeze(1).cpu()
        m = max(n_lab, math.ceil(self.labelled_share * n))
        # whole permutations of the labelled images, one after another, so that each appears before any repeats
        rounds = math.ceil(m / n_lab)
        cycled = torch.rand(rounds, n_lab, generator=generator).argsort(1).reshape(-1)[:m]
        order = torch.empty(n, dtype=torch.long)
        slots = torch.zeros(n, dtype=torch.bool)
        slots[torch.arange(m) * n // m] = True  # gaps of floor(n/m) or ceil(n/m) positions
        order[slots] = labelled[cycled]
        order[~slots] = unlabelled[torch.randperm(len(unlabelled), generator=generator)[: n - m]]
        return order

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "PartlyLabelledDataset":
        """A new dataset holding ``indices``, with the same ``labelled_share``."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return PartlyLabelledDataset(
            self.images[indices], self.targets[indices], self.max_value, self.name, self.labelled_share
        )


def _one_line(err: BaseException) -> str:
    """An exception's message on one line (some libraries put line breaks in theirs)."""
    return " ".join(str(err).split()) or type(err).__name__


def product_grid(sizes: Sequence[int]) -> np.ndarray:
    """Every class row of the product grid ``sizes`` in row-major order (last factor fastest), ``(prod, K)`` int64."""
    mesh = np.meshgrid(*[np.arange(int(s)) for s in sizes], indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1).astype(np.int64)


def grid_strides(sizes: Sequence[int]) -> np.ndarray:
    """Row-major strides of the grid ``sizes``: ``index = classes @ strides`` (last factor fastest)."""
    sizes = tuple(int(s) for s in sizes)
    return np.cumprod((1,) + sizes[:0:-1])[::-1].astype(np.int64)


def as_images(images, name: str, max_value: float | None = None) -> tuple[torch.Tensor, float]:
    """Images given as ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` (numpy or torch) as a compact
    ``(N, C, H, W)`` tensor, with the value that maps to 1.0.

    ``C`` is 1 or 3; a 4-D array whose second axis is 1 or 3 is read as channels-first, else one whose last axis is
    1 or 3 as channels-last. ``uint8`` (and other integer) images stay ``uint8`` (``max_value`` 255 unless given);
    float images are stored as ``float32`` and must lie in ``[0, max_value]`` (default 1).
    """
    if isinstance(images, torch.Tensor):
        t = images.detach().cpu()
    else:
        try:
            arr = np.asarray(images)
        except (TypeError, ValueError) as err:
            raise DataError(f"{name}: images must be an array, got {type(images).__name__} ({_one_line(err)})") from err
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise DataError(f"{name}: images must hold numbers (uint8 or float), got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype == torch.bool or t.is_complex():
        raise DataError(f"{name}: images must be uint8 or float, got {t.dtype}")
    if t.dim() == 3:
        t = t.unsqueeze(1)
    elif t.dim() == 4:
        if t.shape[1] not in (1, 3):
            if t.shape[3] not in (1, 3):
                raise DataError(
                    f"{name}: cannot tell the channel axis of images {tuple(t.shape)}; give (N, C, H, W) or "
                    "(N, H, W, C) with C = 1 or 3"
                )
            t = t.permute(0, 3, 1, 2)
    else:
        raise DataError(f"{name}: images must be (N, H, W), (N, C, H, W) or (N, H, W, C), got {tuple(t.shape)}")
    if len(t) == 0:
        raise DataError(f"{name}: no images given")
    if t.is_floating_point():
        top = 1.0 if max_value is None else float(max_value)
        t = t.float()
        if not bool(torch.isfinite(t).all()) or float(t.min()) < 0 or float(t.max()) > top:
            raise DataError(f"{name}: float images must lie in [0, {top:g}] without NaN; scale them or pass max_value")
        return t.contiguous(), top
    top = 255.0 if max_value is None else float(max_value)
    if t.dtype != torch.uint8:
        if int(t.min()) < 0 or int(t.max()) > 255:
            raise DataError(f"{name}: integer images must lie in 0..255, got {int(t.min())}..{int(t.max())}")
        t = t.to(torch.uint8)
    if int(t.max()) > top:
        raise DataError(f"{name}: images reach {int(t.max())}, above max_value {top:g}")
    return t.contiguous(), top


def _as_factor_values(factors, n: int, name: str, names: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Factor values ``(N, K)`` as float64, with one name per column (``factor_0``, ... by default)."""
    if isinstance(factors, torch.Tensor):
        factors = factors.detach().cpu().numpy()
    try:
        raw = np.asarray(factors)
    except (TypeError, ValueError) as err:
        raise DataError(f"{name}: factors must be an (N, K) array of numbers ({_one_line(err)})") from err
    if raw.ndim == 1:
        raw = raw[:, None]
    if raw.ndim != 2 or raw.shape[0] != n or raw.shape[1] == 0:
        raise DataError(f"{name}: factors must have shape ({n}, K) for {n} images, got {raw.shape}")
    if raw.dtype == object or not (np.issubdtype(raw.dtype, np.number) or raw.dtype == np.bool_):
        raise DataError(f"{name}: factors must be numbers, got dtype {raw.dtype}")
    values = raw.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise DataError(f"{name}: factors contain NaN or infinite values")
    names = tuple(f"factor_{k}" for k in range(values.shape[1])) if names is None else tuple(names)
    if len(names) != values.shape[1]:
        raise DataError(f"{name}: {len(names)} factor names for {values.shape[1]} factor columns")
    return values, names


def _classes_of(values: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Each column's class: the rank of its value among the column's sorted distinct values."""
    cols, sizes = [], []
    for k in range(values.shape[1]):
        levels, inverse = np.unique(values[:, k], return_inverse=True)
        cols.append(inverse.reshape(-1))
        sizes.append(len(levels))
    return np.stack(cols, axis=1).astype(np.int64), tuple(sizes)


def grid_order(classes: np.ndarray, sizes: Sequence[int]) -> tuple[np.ndarray | None, str | None]:
    """The permutation that puts the rows of ``classes`` into row-major order of the full grid ``sizes``.

    :returns: ``(order, None)`` (``order`` is ``None`` when the rows already are in that order), or
        ``(None, why)`` when the rows are not a full product grid (missing combinations or repeated rows).
    """
    n, total = len(classes), math.prod(int(s) for s in sizes)
    index = classes @ grid_strides(sizes)
    counts = np.bincount(index, minlength=total)
    missing, repeated = int((counts == 0).sum()), int((counts > 1).sum())
    if missing or repeated or n != total:
        parts = [f"{n} rows for a grid of {total} = {' x '.join(str(int(s)) for s in sizes)} combinations"]
        if missing:
            parts.append(f"{missing} combinations missing")
        if repeated:
            parts.append(f"{repeated} combinations repeated")
        return None, ", ".join(parts)
    if np.array_equal(index, np.arange(n)):
        return None, None
    return np.argsort(index, kind="stable"), None


class LabelledFactors(ImageDataset):
    """Images each labelled with ``K`` ground-truth factor values, with no full product grid behind them (an
    object x pose collection with gaps, CelebA's attributes, a user's own annotations).

    ``targets`` holds the factor *classes* ``(N, K)`` (long): class ``c`` of factor ``k`` is one of its
    ``factor_sizes[k]`` values. ``factor_values`` holds each image's values ``(N, K)`` (float64), so the values stay
    with their images through any subset. A subset keeps the classes and sizes of the dataset it came from (a class
    may then have no image left). :class:`FactorDataset` is the special case of a full grid in row-major order.

    :param factor_classes: integer ``(N, K)`` classes in ``0..factor_sizes[k] - 1``.
    :param factor_values: ``(N, K)`` values (the classes themselves where the data have no other values).
    :param factor_names: one distinct name per factor.
    :param factor_sizes: number of classes of each factor (default: the largest class + 1).
    """

    def __init__(
        self,
        images: torch.Tensor,
        factor_classes: torch.Tensor,
        factor_values: np.ndarray,
        factor_names: Sequence[str],
        factor_sizes: Sequence[int] | None,
        max_value: float,
        name: str,
    ):
        classes = torch.as_tensor(factor_classes)
        if classes.dim() != 2 or classes.shape[1] == 0:
            raise DataError(f"{name}: factor classes must have shape (N, K), got {tuple(classes.shape)}")
        if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
            raise DataError(f"{name}: factor classes must be integers, got {classes.dtype}")
        super().__init__(images, classes.long(), max_value, name)
        k = classes.shape[1]
        self.factor_names = tuple(str(f) for f in factor_names)
        if len(self.factor_names) != k or len(set(self.factor_names)) != k:
            raise DataError(f"{name}: need {k} distinct factor names, got {list(self.factor_names)}")
        values = np.asarray(factor_values, dtype=np.float64)
        if values.shape != (len(self), k):
            raise DataError(f"{name}: factor values must have shape ({len(self)}, {k}), got {values.shape}")
        self.factor_values = values
        lowest = self.targets.amin(0)
        highest = self.targets.amax(0)
        if factor_sizes is None:
            factor_sizes = (highest + 1).tolist()
        self.factor_sizes = tuple(int(s) for s in factor_sizes)
        if len(self.factor_sizes) != k:
            raise DataError(f"{name}: {len(self.factor_sizes)} factor sizes for {k} factors")
        bad = (lowest < 0) | (highest >= torch.tensor(self.factor_sizes, device=highest.device))
        if bool(bad.any()):
            j = int(bad.nonzero()[0])
            raise DataError(
                f"{name}: classes of factor {self.factor_names[j]!r} must lie in 0..{self.factor_sizes[j] - 1}, "
                f"got {int(lowest[j])}..{int(highest[j])}"
            )

    @property
    def factor_classes(self) -> torch.Tensor:
        """``(N, K)`` long tensor of factor classes (the same tensor as ``targets``)."""
        return self.targets

    def values_present(self) -> list[int]:
        """How many values of each factor these images hold: ``factor_sizes`` on a full grid, fewer where a subset
        lost some (a factor with one value left carries no information, so scores leave it out)."""
        return [len(torch.unique(self.targets[:, k])) for k in range(self.targets.shape[1])]

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "LabelledFactors":
        """A new :class:`LabelledFactors` holding ``indices``, with their classes, values, names and sizes."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return LabelledFactors(
            self.images[indices],
            self.targets[indices],
            self.factor_values[indices.cpu().numpy()],
            self.factor_names,
            self.factor_sizes,
            self.max_value,
            self.name,
        )

    @classmethod
    def from_arrays(
        cls,
        images,
        factors,
        names: Sequence[str] | None = None,
        max_value: float | None = None,
        name: str = "custom",
    ) -> "LabelledFactors":
        """Labelled factors from your own arrays, rows kept in the order given.

        :param images: ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` 1 or 3, numpy or torch,
            ``uint8`` (0..255) or float in ``[0, 1]`` (see :func:`as_images`).
        :param factors: ``(N, K)`` factor values (any numbers); each factor's classes are the ranks of its sorted
            distinct values, and ``factor_sizes`` their counts.
        :param names: one name per factor (default ``factor_0``, ``factor_1``, ...).
        :param max_value: the pixel value that maps to 1.0 (default 255 for integers, 1 for floats).
        :raises DataError: on shapes that do not fit, non-numeric or non-finite values.
        """
        tensor, top = as_images(images, name, max_value)
        values, names = _as_factor_values(factors, len(tensor), name, names)
        classes, sizes = _classes_of(values)
        return LabelledFactors(tensor, torch.from_numpy(classes), values, names, sizes, top, name)


class FactorDataset(LabelledFactors):
    """Images generated from a full product grid of ground-truth factors, stored in row-major order.

    ``targets`` holds the factor *classes* ``(N, K)`` (0-based indices into each factor's values), so that
    ``index = classes @ strides`` with the last factor varying fastest. ``factor_values`` holds the real
    values ``(N, K)``. Metrics that need ``q(z | v_k)`` reshape per-image quantities to ``factor_sizes``.
    A :meth:`subgrid` is again a :class:`FactorDataset`; any other subset (:meth:`subset`, :meth:`random_subset`)
    is a :class:`LabelledFactors`, which keeps the factors but not the grid.

    :param factor_names: one name per factor.
    :param factor_sizes: number of values of each factor; ``prod(factor_sizes) == N``.
    :param factor_values: float64 array ``(N, K)`` of factor values.
    """

    def __init__(
        self,
        images: torch.Tensor,
        factor_classes: torch.Tensor,
        factor_values: np.ndarray,
        factor_names: Sequence[str],
        factor_sizes: Sequence[int],
        max_value: float,
        name: str,
    ):
        super().__init__(images, factor_classes, factor_values, factor_names, factor_sizes, max_value, name)
        if math.prod(self.factor_sizes) != len(images):
            raise DataError(f"{name}: factor sizes {self.factor_sizes} do not multiply to {len(images)} images")
        self.factor_strides = torch.as_tensor(grid_strides(self.factor_sizes), dtype=torch.long)

    def index_of(self, classes: torch.Tensor) -> torch.Tensor:
        """Row index of each row of factor ``classes`` (shape ``(..., K)``)."""
        classes = torch.as_tensor(classes, dtype=torch.long)
        sizes = torch.as_tensor(self.factor_sizes)
        if classes.shape[-1] != len(sizes) or (classes < 0).any() or (classes >= sizes).any():
            raise DataError(f"factor classes must have {len(sizes)} columns within {self.factor_sizes}")
        return classes @ self.factor_strides.to(classes.device)

    def sample_factors(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` factor-class rows drawn uniformly from the grid, shape ``(n, K)``."""
        cols = [torch.randint(s, (n,), generator=generator) for s in self.factor_sizes]
        return torch.stack(cols, dim=1)

    def images_for(self, classes: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """Float images ``(n, C, H, W)`` for the factor-class rows ``classes`` (what factor metrics need)."""
        return self.batch(self.index_of(classes), device)[0]

    def subgrid(self, keep: Mapping[str, Sequence[int] | range]) -> "FactorDataset":
        """The product sub-grid that keeps, for each factor named in ``keep``, the classes listed (increasing);
        other factors keep all their classes. Classes are re-indexed ``0..size-1`` within it, values kept.

        :raises DataError: on an unknown factor, or classes that are empty, repeated, unordered or out of range.
        """
        chosen = []
        unknown = set(keep) - set(self.factor_names)
        if unknown:
            raise DataError(f"{self.name}: unknown factors {sorted(unknown)}; factors are {list(self.factor_names)}")
        for f, size in zip(self.factor_names, self.factor_sizes):
            c = np.asarray(list(keep[f]) if f in keep else range(size), dtype=np.int64)
            if c.size == 0 or np.any(np.diff(c) <= 0) or c[0] < 0 or c[-1] >= size:
                raise DataError(f"{self.name}: the classes kept of {f!r} must increase within 0..{size - 1}")
            chosen.append(c)
        local = product_grid([len(c) for c in chosen])
        original = np.stack([c[local[:, j]] for j, c in enumerate(chosen)], axis=1)
        rows = torch.from_numpy(original @ grid_strides(self.factor_sizes))
        return FactorDataset(
            self.images[rows.to(self.images.device)],
            torch.from_numpy(local).to(self.targets.device),
            self.factor_values[rows.numpy()],
            self.factor_names,
            [len(c) for c in chosen],
            self.max_value,
            self.name,
        )

    @classmethod
    def from_arrays(
        cls,
        images,
        factors,
        names: Sequence[str] | None = None,
        max_value: float | None = None,
        name: str = "custom",
    ) -> "FactorDataset":
        """A factor dataset from your own arrays whose rows form a full product grid, in any row order.

        Each factor's classes are the ranks of its sorted distinct values; the rows are sorted into row-major order
        (last factor fastest) and ``factor_values`` holds the values given.

        :param images: ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` 1 or 3, numpy or torch,
            ``uint8`` (0..255) or float in ``[0, 1]`` (see :func:`as_images`).
        :param factors: ``(N, K)`` factor values (any numbers).
        :param names: one name per factor (default ``factor_0``, ``factor_1``, ...).
        :param max_value: the pixel value that maps to 1.0 (default 255 for integers, 1 for floats).
        :raises DataError: when the rows are not a full grid (combinations missing or repeated): such data is a
            :meth:`LabelledFactors.from_arrays`.
        """
        tensor, top = as_images(images, name, max_value)
        values, names = _as_factor_values(factors, len(tensor), name, names)
        classes, sizes = _classes_of(values)
        order, why = grid_order(classes, sizes)
        if why is not None:
            raise DataError(
                f"{name}: the factor rows are not a full product grid ({why}); "
                "use LabelledFactors.from_arrays for labelled data without a grid"
            )
        if order is not None:
            index = torch.from_numpy(order)
            tensor, classes, values = tensor[index], classes[order], values[order]
        return FactorDataset(tensor, torch.from_numpy(classes), values, names, sizes, top, name)
