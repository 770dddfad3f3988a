"""Groups of images for models with a global latent (UG-VAE): structured batches and two-domain mixtures.

UG-VAE trains on random batches; its experiments then ask whether the global posterior of a batch tells batch
*types* apart (section 4.3 and the supplementary MNIST experiment) or data domains (section 4.2). This module builds
those batches as index tensors ``(G, B)`` into a dataset, with one vectorised draw:

* :func:`structured_batches`: digits following a series (even, odd, Fibonacci, primes), either as the series'
  single-digit members (``mode="digits"``) or as the series' numbers written out and split into digits
  (``mode="numbers"``: 10, 12, 14 become 1, 0, 1, 2, 1, 4), or random batches;
* :class:`DomainMixture`: two datasets concatenated with a domain label per image, whose epoch order puts the same
  number of images of each domain in every even-sized batch (the 50/50 training batches of section 4.2);
* :class:`GroupedDataset`: *training* groups that share one value of a key (the domain of a mixture, the label, or an
  ink-quantity quantile), the weakly supervised regime of the ML-VAE (Bouchacourt et al. 2018), as an explicit
  alternative to the paper's random batches (:data:`GROUPINGS`, ``untwine train ... --group-by``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch

from untwine.data.base import DataError, ImageDataset

#: How training images are put into groups: ``random`` (the UG-VAE paper's random batches), ``domain`` (one domain of a
#: mixture per group), ``label`` (one class per group), ``ink`` (one ink-quantity quantile per group; ``ink:Q`` for
#: ``Q`` quantiles, default :data:`INK_QUANTILES`).
GROUPINGS = ("random", "domain", "label", "ink")
INK_QUANTILES = 4


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


def ink(data: ImageDataset, chunk: int = 65_536) -> torch.Tensor:
    """Ink quantity of every image: its mean pixel value in ``[0, 1]``, ``(N,)`` float64 (read in chunks, so a large
    ``uint8`` dataset is never converted whole)."""
    parts = [
        data.images[i : i + chunk].flatten(1).double().mean(1).cpu() / data.max_value
        for i in range(0, len(data), chunk)
    ]
    return torch.cat(parts)


def quantile_bins(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin ``0 .. bins-1`` of each value by rank, so the bins hold equal counts (ties broken by position), ``(N,)``."""
    ranks = torch.empty(len(values), dtype=torch.long)
    ranks[torch.argsort(values, stable=True)] = torch.arange(len(values))
    return ranks * bins // len(values)


def parse_grouping(by: str) -> tuple[str, int]:
    """``(kind, quantiles)`` of a grouping name from :data:`GROUPINGS` (``"ink:Q"`` gives ``Q`` ink quantiles)."""
    kind, _, count = str(by).partition(":")
    if kind not in GROUPINGS or (count and kind != "ink"):
        raise DataError(f"unknown grouping {by!r}; choose one of {', '.join(GROUPINGS)} (or ink:Q for Q ink quantiles)")
    quantiles = INK_QUANTILES
    if count:
        if not count.isdigit() or int(count) < 2:
            raise DataError(f"ink groups need at least 2 quantiles, as in ink:4; got {by!r}")
        quantiles = int(count)
    return kind, quantiles


def group_keys(data: ImageDataset, by: str) -> torch.Tensor:
    """The key ``(N,)`` whose value every image of a training group shares, for grouping ``by`` (not ``random``).

    :raises DataError: ``domain`` on data that is not a :class:`DomainMixture`, ``label`` on data without one
        non-negative integer label per image, or an unknown grouping.
    """
    kind, quantiles = parse_grouping(by)
    if kind == "random":
        raise DataError("random batches have no group key; group by domain, label or ink")
    if kind == "domain":
        if not isinstance(data, DomainMixture):
            raise DataError(
                f"grouping by domain needs a mixture of datasets (e.g. --data mnist+fashion-mnist), not {data.name}"
            )
        return data.domains.cpu()
    if kind == "label":
        y = data.targets.cpu()
        if y.dim() != 1 or y.is_floating_point() or (len(y) and int(y.min()) < 0):
            raise DataError(f"grouping by label needs one non-negative integer label per image; {data.name} has none")
        return y.long()
    return quantile_bins(ink(data), quantiles)


def grouped_order(keys: torch.Tensor, group_size: int, generator: torch.Generator) -> torch.Tensor:
    """An epoch order whose consecutive runs of ``group_size`` positions share one key, the groups in random order.

    The images of each key are shuffled and cut into groups; a key's last, incomplete group is filled from the start
    of the same shuffled list (so no group mixes keys), which makes the order at least ``len(keys)`` long and a
    multiple of ``group_size``. One vectorised draw: a random permutation sorted stably by key.
    """
    if group_size < 1:
        raise DataError(f"group size must be positive, got {group_size}")
    keys = keys.cpu().long()
    perm = torch.randperm(len(keys), generator=generator)
    by_key = perm[torch.argsort(keys[perm], stable=True)]  # shuffled within each key
    _, counts = torch.unique_consecutive(keys[by_key], return_counts=True)
    starts = counts.cumsum(0) - counts
    padded = -(-counts // group_size) * group_size  # each key rounded up to whole groups
    key_of = torch.repeat_interleave(torch.arange(len(counts)), padded)
    within = torch.arange(int(padded.sum())) - torch.repeat_interleave(padded.cumsum(0) - padded, padded)
    order = by_key[starts[key_of] + within % counts[key_of]].reshape(-1, group_size)
    return order[torch.randperm(len(order), generator=generator)].reshape(-1)


class GroupedDataset(ImageDataset):
    """``data`` (images shared, not copied) whose epoch order forms training groups of ``group_size`` images that
    share one key: the domain, the label or an ink quantile (:func:`group_keys`).

    Random batches are i.i.d., so a model whose global latent should describe a group has nothing to find beyond the
    dataset's average; groups that share a value of something give it that value to find. Evaluation uses the
    original data; only the training order changes.
    """

    def __init__(self, data: ImageDataset, by: str, group_size: int):
        super().__init__(data.images, data.targets, data.max_value, data.name)
        self.keys = group_keys(data, by)
        self.by = by
        self.group_size = int(group_size)

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        return grouped_order(self.keys, self.group_size, generator)

    def batches(self, num_batches: int, seed: int = 0) -> torch.Tensor:
        """Index ``(G, group_size)`` of the first ``num_batches`` groups of a seeded epoch order (fewer when the data
        hold fewer groups): held-out batches grouped as training groups are, for measuring a trained model."""
        order = self.epoch_order(torch.Generator().manual_seed(seed))
        return order.reshape(-1, self.group_size)[:num_batches]
