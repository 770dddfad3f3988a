"""The helpers every metric shares: device, eval mode, batches, encoding, subsets, labels, the Gaussian KL."""

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from untwine.data import DataError, ImageDataset
from untwine.metrics.utils import (
    batches,
    encode_dataset,
    eval_mode,
    integer_labels,
    model_device,
    normal_kl,
    random_subset,
)


def indexed_images(n=10):
    """Image ``i`` holds the value ``i`` in its one pixel; the label is ``i % 3``."""
    images = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1)
    return ImageDataset(images, torch.arange(n) % 3, 1.0, "indexed")


class Doubler(nn.Module):
    """Posterior ``(2 x, 1)`` per image, with a batch norm so eval mode matters."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(1)
        self.modes = []

    def encode(self, x):
        self.modes.append(self.training)
        loc = 2 * x.flatten(1)
        return loc, torch.ones_like(loc)


def test_model_device_prefers_the_argument_then_parameters_then_buffers():
    assert model_device(nn.Linear(1, 1)) == torch.device("cpu")
    assert model_device(nn.Linear(1, 1), "meta") == torch.device("meta")
    only_buffer = nn.Module()
    only_buffer.register_buffer("b", torch.zeros(1, device="meta"))
    assert model_device(only_buffer) == torch.device("meta")
    assert model_device(nn.Module()) == torch.device("cpu")


def test_eval_mode_restores_the_mode_even_after_an_error():
    model = nn.Linear(1, 1).train()
    with eval_mode(model) as inside:
        assert inside is model and not model.training
    assert model.training
    model.eval()
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(model):
            model.train()
            raise RuntimeError("inside")
    assert not model.training


def test_batches_cover_the_index_in_order_with_a_ragged_last_batch():
    data = indexed_images(10)
    got = list(batches(data, 4))
    assert [len(x) for x, _ in got] == [4, 4, 2]
    assert torch.cat([x.flatten() for x, _ in got]).tolist() == list(range(10))
    assert torch.cat([y for _, y in got]).tolist() == (torch.arange(10) % 3).tolist()
    index = torch.tensor([7, 7, 0, 3, 9])
    picked = torch.cat([x.flatten() for x, _ in batches(data, 2, index=index)])
    assert picked.tolist() == index.float().tolist()
    with pytest.raises(ValueError, match="batch_size must be positive"):
        next(batches(data, 0))


def test_encode_dataset_encodes_in_eval_mode_in_dataset_or_index_order():
    data, model = indexed_images(10), Doubler().train()
    loc, scale = encode_dataset(model, data, batch_size=3)
    assert loc.flatten().tolist() == [2.0 * i for i in range(10)] and scale.shape == (10, 1)
    assert model.modes == [False] * 4 and model.training
    loc, _ = encode_dataset(model, data, batch_size=3, index=torch.tensor([5, 1, 5]))
    assert loc.flatten().tolist() == [10.0, 2.0, 10.0]


def test_random_subset_is_seeded_distinct_and_at_most_the_population():
    def draw(seed, size, n=20):
        return random_subset(n, size, torch.Generator().manual_seed(seed))

    a, b, c = draw(0, 8), draw(0, 8), draw(1, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(a.unique()) == 8 and a.min() >= 0 and a.max() < 20
    assert sorted(draw(2, 50).tolist()) == list(range(20))


def test_integer_labels_name_the_purpose_and_the_problem():
    data = indexed_images(10)
    assert torch.equal(integer_labels(data, "x"), data.targets)
    assert torch.equal(integer_labels(data, "x", num_classes=3), data.targets)
    with pytest.raises(DataError, match="labels run from 0 to 2, but the model has 2 classes"):
        integer_labels(data, "x", num_classes=2)
    soft = ImageDataset(data.images, torch.rand(10), 1.0, "soft")
    with pytest.raises(DataError, match="one integer label per image is needed for the test, got targets of shape"):
        integer_labels(soft, "the test")


def test_normal_kl_is_torchs_closed_form():
    g = torch.Generator().manual_seed(0)
    loc, scale = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.rand(5, 3, generator=g).double() + 0.1
    p_loc, p_scale = torch.randn(3, generator=g).double(), torch.rand(3, generator=g).double() + 0.5
    torch.testing.assert_close(normal_kl(loc, scale), kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)))
    torch.testing.assert_close(
        normal_kl(loc, scale, p_loc, p_scale), kl_divergence(Normal(loc, scale), Normal(p_loc, p_scale))
    )
