r"""Dataset augmentation with class-conditional samples (N-VAE paper, section IV-C and fig. 9).

A classifier is trained on the real training set in which every example is, independently with probability
``fraction``, replaced by an artificial one: an image drawn from a trained class-conditional generative model with
the **same label**, decoded from :math:`z \sim \mathcal{N}(0, \sigma^2 I)`. It is then scored on the real test set.
The more of the data's variability the samples carry, the lower the test error; ``fraction = 1`` trains on
artificial data only. Larger :math:`\sigma` reaches codes that are rare under the prior, which helps only a model
whose latent space extrapolates to plausible images.

Choices (the paper leaves them open):

* **Classifier**: an MLP 784-512-256-10 (ReLU; for other image sizes the input is the number of pixels), trained
  with Adam (learning rate ``1e-3``, batch 128) and cross-entropy, plain PyTorch (it is a discriminative model, not
  a Pyro pair). No dropout or weight decay, so any regularising effect of the artificial data is visible.
* **Artificial images are the decoder's mean images** (Bernoulli means for the paper's models), stored in the
  data's own compact format (``uint8`` for MNIST: rounded to 1/255). Real MNIST and Fashion-MNIST are greyscale,
  not binary; drawing pixels from the Bernoulli would add salt-and-pepper noise the test images never show.
  ``binarize=True`` draws them instead.
* **The replacement is drawn once per repeat**: each repeat builds its own augmented training set (seed
  ``seed + r``) and trains a fresh classifier on it (same seed for the initialisation and the batch order), so the
  baseline and every (model, fraction, σ) cell of one repeat share the classifier's initialisation.
* The standard deviation over repeats is the sample standard deviation (``ddof = 1``); ``nan`` for one repeat.

The generative model only needs ``sample(n, y=labels, sigma=...)`` returning images in ``[0, 1]`` of the data's
shape (:meth:`~untwine.pyro_models.nvae.NVAE.sample`, :meth:`~untwine.pyro_models.cvae.CVAE.sample`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from untwine.data.base import ImageDataset
from untwine.metrics.utils import batches, eval_mode, integer_labels, model_device, seeded

BASELINE = "baseline"


def _resolve(device: torch.device | str) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _num_classes(train: ImageDataset, test: ImageDataset) -> int:
    """One more than the largest label of either set."""
    return max(int(integer_labels(train, "augmentation").max()), int(integer_labels(test, "augmentation").max())) + 1


class MLPClassifier(nn.Sequential):
    """Flatten, 512 and 256 ReLU units, then ``num_classes`` logits."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int = 10):
        super().__init__(
            nn.Flatten(),
            nn.Linear(math.prod(image_shape), 512), nn.ReLU(),
            nn.Linear(512, 256), nn.ReLU(),
            nn.Linear(256, num_classes),
        )  # fmt: skip


@torch.no_grad()
def classifier_error(
    classifier: nn.Module, test: ImageDataset, device: torch.device | str = "auto", batch_size: int = 1000
) -> float:
    """Fraction of ``test`` images whose arg-max class under ``classifier`` differs from the label."""
    device = _resolve(device)
    y_all = integer_labels(test, "augmentation")
    classifier.eval()
    wrong = torch.zeros((), dtype=torch.long, device=device)
    for x, y in batches(test, batch_size, device):
        wrong += (classifier(x).argmax(-1) != y).sum()
    return int(wrong) / len(y_all)


def train_classifier(
    train: ImageDataset,
    test: ImageDataset,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "auto",
    num_classes: int | None = None,
) -> float:
    """Train a fresh :class:`MLPClassifier` on ``train`` and return its error rate on ``test``.

    The stored (compact) images are moved to ``device`` once and converted one batch at a time. ``seed`` fixes the
    initialisation and the batch order without touching the caller's random streams.

    :param num_classes: number of logits (default: one more than the largest label in ``train`` and ``test``).
    """
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs and batch_size must be positive and lr > 0, got {epochs}, {batch_size}, {lr}")
    device = _resolve(device)
    y_train = integer_labels(train, "augmentation")
    if num_classes is None:
        num_classes = _num_classes(train, test)
    images = train.images.to(device)
    targets = y_train.to(device)
    scale = 1.0 / train.max_value
    with seeded(seed, device):
        classifier = MLPClassifier(train.image_shape, num_classes).to(device)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        classifier.train()
        for _ in range(epochs):
            perm = torch.randperm(len(train), generator=generator).to(device)
            for idx in perm.split(batch_size):
                x = images[idx].float().mul_(scale)
                loss = F.cross_entropy(classifier(x), targets[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return classifier_error(classifier, test, device)


@torch.no_grad()
def augmented_training_set(
    model: nn.Module,
    data: ImageDataset,
    fraction: float,
    sigma: float = 1.0,
    seed: int = 0,
    batch_size: int = 1000,
    binarize: bool = False,
) -> ImageDataset:
    r"""``data`` with each image replaced, independently with probability ``fraction``, by a sample of ``model``.

    A replacement is ``model.sample(n, y=labels, sigma=sigma)`` for the replaced images' own labels, i.e. decoded
    from :math:`z \sim \mathcal{N}(0, \sigma^2 I)`; samples are generated in batches of ``batch_size`` on the model's
    device. Labels are kept, so the returned dataset has the same ``targets``; images keep the data's storage type
    (``uint8`` data are rounded to the nearest level). ``data`` itself is not modified.

    :param binarize: store Bernoulli draws from the mean images instead of the means.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    labels = integer_labels(data, "augmentation")
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    replaced = torch.nonzero(torch.rand(len(data), generator=generator) < fraction).squeeze(1)
    images = data.images.clone()
    with eval_mode(model):
        with seeded(seed, device):
            for idx in replaced.split(batch_size):
                y = labels[idx].to(device)
                x = model.sample(len(idx), y=y, sigma=sigma)
                if tuple(x.shape) != (len(idx), *data.image_shape):
                    raise ValueError(
                        f"{type(model).__name__}.sample returned shape {tuple(x.shape)}, "
                        f"expected {(len(idx), *data.image_shape)}"
                    )
                if binarize:
                    x = torch.bernoulli(x.clamp(0, 1))
                x = x.clamp(0, 1) * data.max_value
                if not images.is_floating_point():
                    x = x.round()
                images[idx] = x.to(images.device, images.dtype)
    return ImageDataset(images, data.targets.clone(), data.max_value, data.name)


def _summary(errors: list[float]) -> tuple[float, float]:
    return statistics.fmean(errors), statistics.stdev(errors) if len(errors) > 1 else math.nan


def augmentation_table(
    models: Mapping[str, nn.Module],
    train: ImageDataset,
    test: ImageDataset,
    fractions: Sequence[float] = (0.4, 1.0),
    sigmas: Sequence[float] = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0),
    repeats: int = 3,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "auto",
    binarize: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Test error of classifiers trained on augmented data, for every (model, fraction, σ), plus a baseline.

    :param models: name -> trained generative model with ``sample(n, y=..., sigma=...)``.
    :param repeats: classifiers per cell; repeat ``r`` uses seed ``seed + r`` for the replacement draw and the
        classifier, so cells of one repeat share the classifier's initialisation and batch order.
    :param progress: called with a one-line message after each cell (e.g. ``print``).
    :returns: rows ``{"model", "fraction", "sigma", "mean", "std", "errors"}``; the first row is the baseline
        (``model="baseline"``, ``fraction=0.0``, ``sigma=nan``), trained on the real data only.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be positive, got {repeats}")
    num_classes = _num_classes(train, test)
    settings = dict(epochs=epochs, batch_size=batch_size, lr=lr, device=device, num_classes=num_classes)

    def row(name: str, fraction: float, sigma: float, errors: list[float]) -> dict:
        mean, std = _summary(errors)
        if progress is not None:
            progress(f"{name:>10s}  fraction {fraction:.2f}  sigma {sigma:.2f}  error {mean:.4f} +- {std:.4f}")
        return {"model": name, "fraction": fraction, "sigma": sigma, "mean": mean, "std": std, "errors": errors}

    baseline = [train_classifier(train, test, seed=seed + r, **settings) for r in range(repeats)]
    rows = [row(BASELINE, 0.0, math.nan, baseline)]
    for name, model in models.items():
        for fraction in fractions:
            for sigma in sigmas:
                errors = []
                for r in range(repeats):
                    augmented = augmented_training_set(model, train, fraction, sigma, seed=seed + r, binarize=binarize)
                    errors.append(train_classifier(augmented, test, seed=seed + r, **settings))
                rows.append(row(name, float(fraction), float(sigma), errors))
    return rows


def format_augmentation_table(rows: Sequence[dict], percent: bool = True) -> str:
    """Rows of :func:`augmentation_table` as text: one line per (model, fraction), one column per σ, mean ± std."""
    unit = 100.0 if percent else 1.0
    sigmas = sorted({r["sigma"] for r in rows if not math.isnan(r["sigma"])})

    def cell(r: dict) -> str:
        return f"{r['mean'] * unit:.2f} ± {r['std'] * unit:.2f}"

    head = f"{'model':<10s} {'fraction':>8s}  " + "  ".join(f"{'σ=' + format(s, 'g'):>13s}" for s in sigmas)
    lines = [f"test error ({'%' if percent else 'fraction'}), mean ± std over repeats", head]
    groups: dict[tuple[str, float], dict[float, dict]] = {}
    for r in rows:
        if r["model"] == BASELINE:
            lines.append(f"{BASELINE:<10s} {0.0:>8.1f}  {cell(r):>13s}  (real data only, any σ)")
        else:
            groups.setdefault((r["model"], r["fraction"]), {})[r["sigma"]] = r
    for (name, fraction), cells in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        values = "  ".join(f"{cell(cells[s]) if s in cells else '-':>13s}" for s in sigmas)
        lines.append(f"{name:<10s} {fraction:>8.1f}  {values}")
    return "\n".join(lines)
