r"""Plumbing shared by the metrics: where a model lives, eval mode, batches of a dataset, posteriors of a whole
dataset, seeded subsets, label checks and the diagonal-Gaussian KL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from untwine.data.base import DataError, ImageDataset


def model_device(model: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """``device`` if given, else the device of the model's first parameter or buffer (CPU for a model with neither)."""
    if device is not None:
        return torch.device(device)
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Draw from torch's global streams seeded with ``seed`` inside the block, leaving the caller's streams (the CPU's
    and, on a GPU, that device's) as they were."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a metric with ``model`` in eval mode (batch norm on running statistics) and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def batches(
    data: ImageDataset,
    batch_size: int,
    device: torch.device | str | None = None,
    index: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` of consecutive runs of ``batch_size`` images of ``index`` (default: every image in dataset order),
    as :meth:`~untwine.data.base.ImageDataset.batch` gives them on ``device``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if index is None:
        index = torch.arange(len(data))
    for chunk in index.split(batch_size):
        yield data.batch(chunk, device)


@torch.no_grad()
def encode_dataset(
    model: nn.Module,
    data: ImageDataset,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior parameters ``model.encode(x)`` of every image of ``data`` (or of images ``index``), in that order.

    The model is put in eval mode for the pass (batch-norm statistics, dropout) and restored afterwards.

    :param device: where images are sent; the model must already live there (default: the model's device).
    :param index: images to encode, repeats allowed (default: every image in dataset order).
    :returns: ``(loc, scale)``, each ``(N, D)`` on ``device``.
    """
    device = model_device(model, device)
    locs, scales = [], []
    with eval_mode(model):
        for x, _ in batches(data, batch_size, device, index):
            loc, scale = model.encode(x)
            locs.append(loc)
            scales.append(scale)
    return torch.cat(locs), torch.cat(scales)


def random_subset(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``min(size, n)`` distinct positions in ``range(n)``, in random order.

    Drawn on the CPU from ``generator`` (a private, seeded one), so a seed picks the same subset on every device and
    the global random state is left alone.
    """
    return torch.randperm(n, generator=generator)[:size]


def integer_labels(data: ImageDataset, purpose: str, num_classes: int | None = None) -> torch.Tensor:
    """``data.targets`` if they are one integer label per image (and, with ``num_classes``, lie in
    ``[0, num_classes)``); a :class:`~untwine.data.base.DataError` naming ``purpose`` and the problem otherwise."""
    y = data.targets
    if y.dim() != 1 or y.is_floating_point():
        raise DataError(
            f"{data.name}: one integer label per image is needed for {purpose}, got targets of shape {tuple(y.shape)}"
        )
    if num_classes is not None and len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"{data.name}: labels run from {int(y.min())} to {int(y.max())}, but the model has {num_classes} classes"
        )
    return y


def normal_kl(
    loc: torch.Tensor,
    scale: torch.Tensor,
    prior_loc: torch.Tensor | float = 0.0,
    prior_scale: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    r"""KL divergence of each coordinate of a diagonal Gaussian from a Normal (the standard one by default),

    .. math::

        \mathrm{KL}\big(\mathcal{N}(\mu, \sigma^2) \,\|\, \mathcal{N}(m, s^2)\big)
        = \tfrac12 \Big( \frac{\sigma^2}{s^2} + \frac{(\mu - m)^2}{s^2} - 1 - \log \frac{\sigma^2}{s^2} \Big),

    elementwise in the inputs' dtype (the caller sums over coordinates and picks the precision).
    """
    ratio = (scale / prior_scale) ** 2
    return 0.5 * (ratio + ((loc - prior_loc) / prior_scale) ** 2 - 1.0 - ratio.log())
