"""The one data interface of untwine: in-memory image tensors, with or without ground-truth factors.

Every loader (dSprites, MNIST, Fashion-MNIST, Yale B) returns an :class:`ImageDataset` or its subclass
:class:`FactorDataset`. Images stay in their compact storage type (``uint8``) and are turned into float
tensors one batch at a time on the target device, so the 737,280 dSprites frames cost 3 GB, not 12 GB, and
the training loop can draw a batch with one indexing operation instead of a Python loop over items.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
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


class FactorDataset(ImageDataset):
    """Images generated from a full product grid of ground-truth factors, stored in row-major order.

    ``targets`` holds the factor *classes* ``(N, K)`` (0-based indices into each factor's values), so that
    ``index = classes @ strides`` with the last factor varying fastest. ``factor_values`` holds the real
    values ``(N, K)``. Metrics that need ``q(z | v_k)`` reshape per-image quantities to ``factor_sizes``.

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
        super().__init__(images, factor_classes, max_value, name)
        self.factor_names = tuple(factor_names)
        self.factor_sizes = tuple(int(s) for s in factor_sizes)
        self.factor_values = factor_values
        if math.prod(self.factor_sizes) != len(images):
            raise DataError(f"{name}: factor sizes {self.factor_sizes} do not multiply to {len(images)} images")
        strides = np.cumprod((1,) + self.factor_sizes[:0:-1])[::-1].copy()
        self.factor_strides = torch.as_tensor(strides, dtype=torch.long)

    @property
    def factor_classes(self) -> torch.Tensor:
        """``(N, K)`` long tensor of factor classes (the same tensor as ``targets``)."""
        return self.targets

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
