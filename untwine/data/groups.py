"""Groups of images for models with a global latent (UG-VAE): structured batches and two-domain mixtures.

UG-VAE trains on random batches; its experiments then ask whether the global posterior of a batch tells batch
*types* apart (section 4.3 and the supplementary MNIST experiment) or data domains (section 4.2). This module builds
those batches as index tensors ``(G, B)`` into a dataset, with one vectorised draw:

* :func:`structured_batches`: digits following a series (even, odd, Fibonacci, primes), either as the series'
  single-digit members (``mode="digits"``) or as the series' numbers written out and split into digits
  (``mode="numbers"``: 10, 12, 14 become 1, 0, 1, 2, 1, 4), or random batches;
* :class:`DomainMixture`: two datasets concatenated with a domain label per image, whose epoch order puts the same
  number of images of each domain in every even-sized batch (the 50/50 training batches of section 4.2).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch

from untwine.data.base import DataError, ImageDataset


def _naturals(start: int, step: int) -> Iterator[int]:
    return itertools.count(start, step)


def _fibonacci() -> Iterator[int]:
    a, b = 0, 1
    while True:
        yield a
        a, b = b, a + b


def _primes() -> Iterator[int]:
    found: list[int] = []
    for n in itertools.count(2):
        if all(n % p for p in found if p * p <= n):
            found.append(n)
            yield n


SERIES = {
    "even": lambda: _naturals(0, 2),
    "odd": lambda: _naturals(1, 2),
    "fibonacci": _fibonacci,
    "primes": _primes,
}
BATCH_KINDS = (*SERIES, "random")
MODES = ("digits", "numbers")


def _check_series(name: str) -> None:
    if name not in SERIES:
        raise DataError(f"unknown series {name!r}; choose one of {', '.join(SERIES)} (or 'random' for batches)")


def series_members(name: str) -> list[int]:
    """The single-digit members of series ``name`` (e.g. ``[2, 3, 5, 7]`` for the primes)."""
    _check_series(name)
    return sorted({n for n in itertools.takewhile(lambda n: n < 10, SERIES[name]())})


def series_digits(name: str, count: int) -> list[int]:
    """The first ``count`` decimal digits of series ``name`` written out number after number (0, 2, ..., 8, 1, 0)."""
    _check_series(name)
    digits: list[int] = []
    for n in SERIES[name]():
        digits += [int(c) for c in str(n)]
        if len(digits) >= count:
            return digits[:count]
    raise AssertionError("unreachable: every series is infinite")


def label_batches(labels: torch.Tensor, wanted: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Indices of images whose labels are ``wanted`` ``(G, B)``: each position gets an independent uniformly drawn
    image with that label.

    :raises DataError: when a wanted label has no image.
    """
    labels = labels.cpu().long()
    if labels.dim() != 1:
        raise DataError(f"batches by label need one label per image, got labels of shape {tuple(labels.shape)}")
    if len(labels) == 0 or int(labels.min()) < 0 or int(wanted.min()) < 0:
        raise DataError("batches by label need non-negative labels (hidden labels of -1 cannot be drawn)")
    size = max(int(labels.max()), int(wanted.max())) + 1
    counts = torch.bincount(labels, minlength=size)
    missing = sorted({int(v) for v in wanted.unique() if counts[v] == 0})
    if missing:
        raise DataError(f"no image has label {missing}; these batches need every label they ask for")
    order = torch.argsort(labels, stable=True)
    offsets = counts.cumsum(0) - counts
    pick = (torch.rand(wanted.shape, generator=generator) * counts[wanted]).long()
    return order[offsets[wanted] + pick]


def structured_batches(
    labels: torch.Tensor,
    kind: str,
    num_batches: int,
    batch_size: int,
    mode: str = "digits",
    seed: int = 0,
) -> torch.Tensor:
    """Index tensor ``(num_batches, batch_size)`` of digit batches that follow a series, or random batches.

    :param labels: digit label of every image (MNIST targets).
    :param kind: ``"even"``, ``"odd"``, ``"fibonacci"``, ``"primes"`` or ``"random"`` (images drawn uniformly, like the
        training batches).
    :param mode: ``"digits"``: each position is a uniformly drawn single-digit member of the series;
        ``"numbers"``: ``batch_size`` consecutive digits of the written-out series (:func:`series_digits`), starting at
        a uniformly drawn position among the first ``batch_size`` digits, so batches of one series differ in where
        they start as well as in the images.
    """
    if kind not in BATCH_KINDS:
        raise DataError(f"unknown batch kind {kind!r}; choose one of {', '.join(BATCH_KINDS)}")
    if mode not in MODES:
        raise DataError(f"mode must be one of {MODES}, got {mode!r}")
    if num_batches < 1 or batch_size < 1:
        raise DataError(f"need at least one batch of one image, got {num_batches} batches of {batch_size}")
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randint(len(labels), (num_batches, batch_size), generator=g)
    if mode == "digits":
        members = torch.tensor(series_members(kind))
        wanted = members[torch.randint(len(members), (num_batches, batch_size), generator=g)]
    else:
        stream = torch.tensor(series_digits(kind, 2 * batch_size))
        start = torch.randint(batch_size, (num_batches, 1), generator=g)
        wanted = stream[start + torch.arange(batch_size)]
    return label_batches(labels, wanted, g)


class DomainMixture(ImageDataset):
    """Images of several domains in one dataset; ``targets`` keep each image's own labels, ``domains`` say where it
    came from (``domain_names[k]``).

    :meth:`epoch_order` interleaves the shuffled domains, so every run of ``len(domain_names)`` consecutive positions
    holds one image of each (while every domain still has images left): random training batches then mix the domains in
    equal parts, as in the UG-VAE paper's domain-alignment experiment.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        domains: torch.Tensor,
        domain_names: Sequence[str],
        max_value: float,
        name: str,
    ):
        super().__init__(images, targets, max_value, name)
        if domains.shape != (len(images),):
            raise DataError(f"{name}: need one domain per image, got domains of shape {tuple(domains.shape)}")
        self.domains = domains.long()
        self.domain_names = tuple(domain_names)

    @classmethod
    def of(cls, parts: Sequence[ImageDataset], name: str | None = None) -> "DomainMixture":
        """Concatenate ``parts`` (same image shape and value range), domain ``k`` being ``parts[k]``."""
        if len(parts) < 2:
            raise DataError("a domain mixture needs at least two datasets")
        shapes = {p.image_shape for p in parts}
        if len(shapes) > 1:
            raise DataError(f"datasets to mix must share an image shape, got {sorted(shapes)}; resize one of them")
        if len({p.max_value for p in parts}) > 1:
            raise DataError("datasets to mix must share a value range (max_value)")
        images = torch.cat([p.images for p in parts])
        targets = torch.cat([p.targets for p in parts])
        domains = torch.cat([torch.full((len(p),), k, dtype=torch.long) for k, p in enumerate(parts)])
        names = [p.name for p in parts]
        return cls(images, targets, domains, names, parts[0].max_value, name or "+".join(names))

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "DomainMixture":
        indices = torch.as_tensor(indices, dtype=torch.long)
        return DomainMixture(
            self.images[indices], self.targets[indices], self.domains[indices], self.domain_names, self.max_value,
            self.name,
        )  # fmt: skip

    def domain(self, k: int) -> ImageDataset:
        """The images of domain ``k`` as a plain dataset."""
        return ImageDataset.subset(self, torch.nonzero(self.domains == k).squeeze(1))

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        parts = [torch.nonzero(self.domains == k).squeeze(1) for k in range(len(self.domain_names))]
        parts = [p[torch.randperm(len(p), generator=generator)] for p in parts]
        common = min(len(p) for p in parts)
        interleaved = torch.stack([p[:common] for p in parts], 1).reshape(-1)
        rest = torch.cat([p[common:] for p in parts])
        return torch.cat([interleaved, rest[torch.randperm(len(rest), generator=generator)]])
