"""Grouped batches for UG-VAE: digit series, batches by label, two-domain mixtures and their epoch order."""

import pytest
import torch

from untwine.data import DataError, DomainMixture, ImageDataset, load_dataset
from untwine.data.groups import label_batches, series_digits, series_members, structured_batches

# The series written out by hand (OEIS A005843, A005408, A000045, A000040), then split into decimal digits.
EVEN = "0 2 4 6 8 10 12 14 16 18 20 22 24"
ODD = "1 3 5 7 9 11 13 15 17 19 21 23 25"
FIBONACCI = "0 1 1 2 3 5 8 13 21 34 55 89 144 233 377 610"
PRIMES = "2 3 5 7 11 13 17 19 23 29 31 37 41 43 47"


def _digits(numbers: str) -> list[int]:
    return [int(c) for c in numbers.replace(" ", "")]


@pytest.mark.parametrize(
    "name, members",
    [("even", [0, 2, 4, 6, 8]), ("odd", [1, 3, 5, 7, 9]), ("fibonacci", [0, 1, 2, 3, 5, 8]), ("primes", [2, 3, 5, 7])],
)
def test_series_members_are_the_single_digit_numbers_of_the_series(name, members):
    assert series_members(name) == members


@pytest.mark.parametrize("name, numbers", [("even", EVEN), ("odd", ODD), ("fibonacci", FIBONACCI), ("primes", PRIMES)])
def test_series_digits_are_the_numbers_written_out_digit_by_digit(name, numbers):
    expected = _digits(numbers)
    assert series_digits(name, len(expected)) == expected
    assert series_digits(name, 7) == expected[:7]


def test_primes_digits_start_as_written_out_by_hand():
    assert series_digits("primes", 12) == [2, 3, 5, 7, 1, 1, 1, 3, 1, 7, 1, 9]


@pytest.mark.parametrize("call", [lambda: series_members("squares"), lambda: series_digits("squares", 3)])
def test_unknown_series_is_a_data_error_naming_the_choices(call):
    with pytest.raises(DataError, match="unknown series 'squares'.*fibonacci"):
        call()


def _labels(n_per_label=12, classes=10, seed=0):
    """Every label 0..classes-1 ``n_per_label`` times, shuffled (so indices do not reveal labels)."""
    labels = torch.arange(classes).repeat(n_per_label)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize("kind", ["even", "odd", "fibonacci", "primes"])
def test_digit_batches_hold_only_members_of_the_series(kind):
    labels = _labels()
    index = structured_batches(labels, kind, num_batches=40, batch_size=16, mode="digits", seed=3)
    assert index.shape == (40, 16) and index.dtype == torch.long
    got = labels[index]
    members = set(series_members(kind))
    assert set(got.unique().tolist()) == members  # every member shows up over 640 draws, nothing else does


@pytest.mark.parametrize("kind, numbers", [("even", EVEN), ("odd", ODD), ("fibonacci", FIBONACCI), ("primes", PRIMES)])
def test_number_batches_are_windows_of_the_written_out_series(kind, numbers):
    labels = _labels()
    batch_size = 8
    stream = _digits(numbers)
    index = structured_batches(labels, kind, num_batches=50, batch_size=batch_size, mode="numbers", seed=1)
    starts = set()
    for row in labels[index].tolist():
        # a window starting at one of the first batch_size digits of the stream
        found = [s for s in range(batch_size) if stream[s : s + batch_size] == row]
        assert found, f"{row} is not a window of {stream[: 2 * batch_size]}"
        starts.update(found)
    assert len(starts) > 3, "batches should start at different positions of the stream"


def test_random_batches_draw_indices_over_the_whole_dataset():
    labels = _labels(n_per_label=3)  # 30 images
    index = structured_batches(labels, "random", num_batches=100, batch_size=10, seed=0)
    assert index.shape == (100, 10)
    assert index.min() >= 0 and index.max() < len(labels)
    assert len(index.unique()) == len(labels)  # 1000 uniform draws over 30 images hit every one
    # random batches are not restricted to a series: they hold both parities
    assert {int(v) % 2 for v in labels[index].reshape(-1)} == {0, 1}


@pytest.mark.parametrize("kind, mode", [("even", "digits"), ("primes", "numbers"), ("random", "digits")])
def test_batches_are_reproducible_from_the_seed(kind, mode):
    labels = _labels()
    first = structured_batches(labels, kind, 20, 8, mode, seed=5)
    again = structured_batches(labels, kind, 20, 8, mode, seed=5)
    other = structured_batches(labels, kind, 20, 8, mode, seed=6)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "squares"}, "unknown batch kind 'squares'"),
        ({"kind": "even", "mode": "words"}, "mode must be one of"),
        ({"kind": "even", "num_batches": 0}, "at least one batch"),
        ({"kind": "even", "batch_size": 0}, "at least one batch"),
    ],
)
def test_bad_batch_requests_are_data_errors(kwargs, match):
    args = {"num_batches": 4, "batch_size": 4, **kwargs}
    with pytest.raises(DataError, match=match):
        structured_batches(_labels(), **args)


def test_a_series_digit_without_an_image_is_a_data_error_naming_it():
    labels = torch.tensor([0, 1, 2, 3, 4, 6, 7, 8, 9] * 3)  # no 5
    with pytest.raises(DataError, match=r"no image has label \[5\]"):
        structured_batches(labels, "primes", 10, 8, seed=0)
    # series that do not need a 5 still work on these labels
    assert set(labels[structured_batches(labels, "even", 10, 8)].reshape(-1).tolist()) <= {0, 2, 4, 6, 8}


def test_label_batches_give_each_position_an_image_with_the_wanted_label():
    labels = _labels(n_per_label=5)
    wanted = torch.tensor([[3, 3, 1], [9, 0, 3]])
    index = label_batches(labels, wanted, torch.Generator().manual_seed(0))
    assert index.shape == wanted.shape
    assert torch.equal(labels[index], wanted)


def test_label_batches_pick_uniformly_among_the_images_of_a_label():
    # label 1 has 4 images, label 0 has 6, scattered through the dataset
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 2, 1, 0, 0, 1, 2])
    draws = 6000
    wanted = torch.tensor([1, 0]).repeat(draws // 2).reshape(-1, 2)
    index = label_batches(labels, wanted, torch.Generator().manual_seed(0))
    for label, column in ((1, 0), (0, 1)):
        images = torch.nonzero(labels == label).squeeze(1)
        counts = torch.tensor([(index[:, column] == i).sum() for i in images], dtype=torch.float64)
        assert counts.sum() == draws // 2  # nothing outside the label's images
        expected = draws / 2 / len(images)
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        # chi-square with 3 or 5 degrees of freedom: the 99.99% quantile is below 26
        assert chi2 < 26, (label, counts.tolist())


def test_label_batches_reject_missing_labels_and_2d_labels():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(DataError, match=r"no image has label \[4, 7\]"):
        label_batches(torch.tensor([0, 1, 2]), torch.tensor([[4, 1, 7]]), g)
    with pytest.raises(DataError, match="one label per image"):
        label_batches(torch.zeros(5, 2, dtype=torch.long), torch.tensor([[0]]), g)


# --- domain mixtures ---------------------------------------------------------------------------


def _images(n, value, shape=(1, 4, 4), name="part"):
    images = torch.full((n, *shape), value, dtype=torch.uint8)
    return ImageDataset(images, torch.arange(n) % 10, 255, name)


def test_mixture_of_two_datasets_keeps_images_targets_and_domains():
    a, b = _images(3, 10, name="a"), _images(5, 200, name="b")
    mix = DomainMixture.of([a, b])
    assert len(mix) == 8 and mix.image_shape == (1, 4, 4)
    assert mix.name == "a+b" and mix.domain_names == ("a", "b")
    assert mix.domains.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert mix.targets.tolist() == [0, 1, 2, 0, 1, 2, 3, 4]
    # domain k holds exactly the images of part k
    assert torch.equal(mix.domain(0).images, a.images) and torch.equal(mix.domain(1).images, b.images)
    assert DomainMixture.of([a, b], name="both").name == "both"


def test_subsets_of_a_mixture_keep_their_domains():
    mix = DomainMixture.of([_images(4, 10, name="a"), _images(4, 200, name="b")])
    sub = mix.subset([6, 1, 5])
    assert isinstance(sub, DomainMixture)
    assert sub.domains.tolist() == [1, 0, 1] and sub.domain_names == ("a", "b")
    assert sub.images[:, 0, 0, 0].tolist() == [200, 10, 200]
    rand = mix.random_subset(5, seed=0)
    assert isinstance(rand, DomainMixture)
    # the domain of every image still matches its content (dark: a, bright: b)
    assert torch.equal(rand.domains, (rand.images[:, 0, 0, 0] == 200).long())


def test_mixing_datasets_of_different_shapes_or_ranges_is_a_data_error():
    with pytest.raises(DataError, match="share an image shape"):
        DomainMixture.of([_images(3, 0), _images(3, 0, shape=(1, 5, 5))])
    binary = ImageDataset(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), 1, "bin")
    with pytest.raises(DataError, match="value range"):
        DomainMixture.of([_images(3, 0), binary])
    with pytest.raises(DataError, match="at least two"):
        DomainMixture.of([_images(3, 0)])


def test_mixture_needs_one_domain_per_image():
    with pytest.raises(DataError, match="one domain per image"):
        DomainMixture(torch.zeros(3, 1, 2, 2), torch.zeros(3), torch.zeros(2), ("a", "b"), 1.0, "m")


def _check_order(mix, order):
    assert sorted(order.tolist()) == list(range(len(mix)))  # a permutation
    domains = mix.domains[order]
    both = 2 * min(int((mix.domains == k).sum()) for k in (0, 1))
    pairs = domains[:both].reshape(-1, 2)
    assert (pairs.sum(1) == 1).all(), "every pair must hold one image of each domain"
    return domains


@pytest.mark.parametrize("sizes", [(6, 6), (3, 8), (9, 2)])
def test_epoch_order_pairs_the_domains_while_both_have_images(sizes):
    mix = DomainMixture.of([_images(sizes[0], 10, name="a"), _images(sizes[1], 200, name="b")])
    g = torch.Generator().manual_seed(0)
    orders = [mix.epoch_order(g) for _ in range(20)]
    for order in orders:
        domains = _check_order(mix, order)
        larger = int(sizes[1] > sizes[0])
        assert (domains[2 * min(sizes) :] == larger).all()  # then the rest of the larger domain
    assert len({tuple(o.tolist()) for o in orders}) > 1, "the order must be shuffled"


def test_even_batches_of_the_real_mnist_fashion_mixture_are_half_and_half(torchvision_root):
    mix = load_dataset("mnist+fashion-mnist", torchvision_root, quick=True)
    assert isinstance(mix, DomainMixture) and mix.name == "mnist+fashion-mnist"
    assert mix.domain_names == ("mnist", "fashion-mnist") and mix.image_shape == (1, 28, 28)
    assert torch.bincount(mix.domains).tolist() == [2500, 2500]
    order = mix.epoch_order(torch.Generator().manual_seed(0))
    domains = _check_order(mix, order)
    assert (domains.reshape(-1, 8).float().mean(1) == 0.5).all()  # batches of 8 in this order: 4 + 4
    sub = load_dataset("mnist+fashion-mnist", torchvision_root, quick=True, subset=300, seed=2)
    assert isinstance(sub, DomainMixture) and len(sub) == 300
    _check_order(sub, sub.epoch_order(torch.Generator().manual_seed(1)))


# --- training groups sharing a key (GroupedDataset) ------------------------------------------------------------------
from untwine.data.groups import (  # noqa: E402
    GroupedDataset,
    group_keys,
    grouped_order,
    ink,
    parse_grouping,
    quantile_bins,
)


@pytest.mark.parametrize("counts, group", [([8, 8, 8], 4), ([5, 9, 2], 4), ([1, 30], 8)])
def test_grouped_order_gives_groups_that_share_one_key_and_visit_every_image(counts, group):
    keys = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    keys = keys[torch.randperm(len(keys), generator=torch.Generator().manual_seed(0))]
    order = grouped_order(keys, group, torch.Generator().manual_seed(1))
    assert len(order) % group == 0 and len(order) >= len(keys)
    assert len(order) == sum(-(-c // group) * group for c in counts)  # each key rounded up to whole groups
    groups = keys[order].reshape(-1, group)
    assert (groups == groups[:, :1]).all(), "a group mixes keys"
    assert set(order.tolist()) == set(range(len(keys)))
    for k, c in enumerate(counts):  # an image repeats only to fill its key's last group
        seen = torch.bincount(order[keys[order] == k], minlength=len(keys))
        padded = -(-c // group) * group
        assert int(seen.max()) <= -(-padded // c), (k, c)


def test_grouped_order_shuffles_groups_and_images_and_is_seeded():
    keys = torch.arange(400) // 100  # four keys, 25 groups of 4 each
    first = grouped_order(keys, 4, torch.Generator().manual_seed(0))
    assert torch.equal(first, grouped_order(keys, 4, torch.Generator().manual_seed(0)))
    assert not torch.equal(first, grouped_order(keys, 4, torch.Generator().manual_seed(1)))
    group_keys_in_order = keys[first].reshape(-1, 4)[:, 0]
    assert len(group_keys_in_order[:8].unique()) > 1, "groups of one key should not come in one block"
    assert sorted(first.tolist()) == list(range(400)) and first[:4].tolist() != sorted(first[:4].tolist())


def test_quantile_bins_hold_equal_counts_and_follow_the_values():
    values = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    bins = quantile_bins(values, 4)
    assert torch.bincount(bins).tolist() == [250] * 4
    for b in range(3):
        assert values[bins == b].max() < values[bins == b + 1].min()


def test_ink_is_the_mean_pixel_value_in_the_unit_interval():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    data = ImageDataset(images, torch.zeros(3, dtype=torch.long), 255, "ink")
    assert torch.allclose(ink(data, chunk=2), torch.tensor([0.0, 0.2, 1.0], dtype=torch.float64))


def test_group_keys_read_the_domain_the_label_or_the_ink_quantile():
    g = torch.Generator().manual_seed(0)
    dark = ImageDataset(
        torch.randint(0, 60, (20, 1, 4, 4), dtype=torch.uint8, generator=g), torch.arange(20) % 5, 255, "dark"
    )
    bright = ImageDataset(
        torch.randint(190, 256, (12, 1, 4, 4), dtype=torch.uint8, generator=g), torch.arange(12) % 5, 255, "bright"
    )
    mix = DomainMixture.of([dark, bright])
    assert torch.equal(group_keys(mix, "domain"), mix.domains)
    assert torch.equal(group_keys(mix, "label"), mix.targets)
    two = group_keys(mix, "ink:2")
    assert torch.bincount(two).tolist() == [16, 16] and (two[20:] == 1).all()  # the bright images hold more ink
    assert group_keys(mix, "ink").max() == 3


@pytest.mark.parametrize(
    "by, match",
    [
        ("size", "unknown grouping 'size'"),
        ("label:3", "unknown grouping 'label:3'"),
        ("ink:1", "at least 2 quantiles"),
        ("ink:x", "at least 2 quantiles"),
        ("random", "random batches have no group key"),
    ],
)
def test_bad_groupings_are_data_errors_that_say_what_to_choose(by, match):
    data = ImageDataset(torch.zeros(8, 1, 2, 2, dtype=torch.uint8), torch.arange(8), 255, "toy")
    with pytest.raises(DataError, match=match):
        group_keys(data, by)


def test_grouping_by_domain_or_label_needs_data_that_has_one():
    data = ImageDataset(torch.zeros(8, 1, 2, 2, dtype=torch.uint8), torch.zeros(8, 3, dtype=torch.long), 255, "toy")
    with pytest.raises(DataError, match="mixture of datasets"):
        group_keys(data, "domain")
    with pytest.raises(DataError, match="one non-negative integer label"):
        group_keys(data, "label")
    hidden = ImageDataset(data.images, torch.full((8,), -1), 255, "toy")
    with pytest.raises(DataError, match="one non-negative integer label"):
        group_keys(hidden, "label")


def test_parse_grouping_reads_the_number_of_ink_quantiles():
    assert parse_grouping("random") == ("random", 4) and parse_grouping("ink:10") == ("ink", 10)


def test_grouped_dataset_shares_the_images_and_orders_them_by_key():
    data = ImageDataset(torch.zeros(30, 1, 2, 2, dtype=torch.uint8), torch.arange(30) % 3, 255, "toy")
    grouped = GroupedDataset(data, "label", 5)
    assert grouped.images is data.images and len(grouped) == 30
    order = grouped.epoch_order(torch.Generator().manual_seed(0))
    labels = data.targets[order].reshape(-1, 5)
    assert (labels == labels[:, :1]).all()


def test_grouped_batches_are_the_first_groups_of_the_seeded_epoch_order():
    data = ImageDataset(torch.zeros(30, 1, 2, 2, dtype=torch.uint8), torch.arange(30) % 3, 255, "toy")
    grouped = GroupedDataset(data, "label", 5)
    index = grouped.batches(4, seed=2)
    assert torch.equal(index, grouped.epoch_order(torch.Generator().manual_seed(2))[:20].reshape(4, 5))
    assert grouped.batches(100).shape == (6, 5)  # no more groups than the data hold
