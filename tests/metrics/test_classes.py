"""N-VAE's class metrics on a model whose posteriors and class probabilities are known tables."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from untwine.data import ImageDataset
from untwine.metrics import classification_accuracy, latent_kl
from untwine.metrics.classes import class_layout
from untwine.pyro_models.base import ClassPosterior, Model

L, DC, DS, N = 3, 2, 2, 60


class TableModel(Model, ClassPosterior):
    """Posterior and q(y|x) looked up by the index stored in pixel 0."""

    def __init__(self, loc, scale, probs, config=None):
        super().__init__(config if config is not None else SimpleNamespace(num_classes=L, class_dim=DC, shared_dim=DS))
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)
        self.register_buffer("probs", probs)

    def _idx(self, x):
        return x[:, 0, 0, 0].round().long()

    def encode(self, x):
        return self.loc[self._idx(x)], self.scale[self._idx(x)]

    def classify(self, x):
        return self.probs[self._idx(x)]


def setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(N) % L
    loc = 0.1 * torch.randn(N, L * DC + DS, generator=g)
    scale = 0.9 + 0.1 * torch.rand(N, L * DC + DS, generator=g)
    # the true class's block is informative: far from the prior
    for n in range(N):
        k = int(labels[n])
        loc[n, k * DC : (k + 1) * DC] += 2.0
        scale[n, k * DC : (k + 1) * DC] = 0.2
    probs = torch.softmax(torch.randn(N, L, generator=g), -1)
    images = torch.arange(N, dtype=torch.float32).reshape(N, 1, 1, 1)
    return TableModel(loc, scale, probs), ImageDataset(images, labels, 1.0, "table")


def test_latent_kl_matches_the_gaussian_kl_by_hand():
    model, data = setup()
    got = latent_kl(model, data, batch_size=7)
    mu, sd = model.loc.double().numpy(), model.scale.double().numpy()
    kl = 0.5 * (mu**2 + sd**2 - 1 - np.log(sd**2))  # (N, D)
    np.testing.assert_allclose(got["per_dimension"].numpy(), kl.mean(0), rtol=1e-10)
    labels = data.targets.numpy()
    blocks = kl[:, : L * DC].reshape(N, L, DC).sum(-1)
    matrix = np.stack([blocks[labels == i].mean(0) for i in range(L)])
    np.testing.assert_allclose(got["class_matrix"].numpy(), matrix, rtol=1e-10)
    assert got["z_c"] == pytest.approx(kl[:, : L * DC].sum(-1).mean())
    assert got["z_s"] == pytest.approx(kl[:, L * DC :].sum(-1).mean())
    assert got["z_cy"] == pytest.approx(blocks[np.arange(N), labels].mean())
    assert got["z_c_other"] == pytest.approx((got["z_c"] - got["z_cy"]) / (L - 1))
    ratio = np.diag(matrix) / ((matrix.sum(1) - np.diag(matrix)) / (L - 1))
    np.testing.assert_allclose(got["diagonal_ratio"].numpy(), ratio, rtol=1e-10)
    assert got["min_diagonal_ratio"] == pytest.approx(ratio.min()) and ratio.min() > 5


def test_accuracy_counts_argmax_of_q_y_given_x():
    model, data = setup()
    want = (model.probs.argmax(-1) == data.targets).double().mean().item()
    got = classification_accuracy(model, data, batch_size=8)
    assert got == {"accuracy": pytest.approx(want), "error": pytest.approx(1 - want), "num_images": N}
    model.probs.copy_(torch.nn.functional.one_hot(data.targets, L).float())
    assert classification_accuracy(model, data)["accuracy"] == 1.0


def test_labels_outside_the_models_classes_are_refused():
    model, data = setup()
    bad = ImageDataset(data.images, data.targets + 1, 1.0, "shifted")
    with pytest.raises(ValueError, match="labels run from 1 to 3, but the model has 3 classes"):
        latent_kl(model, bad)
    with pytest.raises(TypeError, match="no class blocks"):
        classification_accuracy(nn.Linear(1, 1), data)


def test_class_metrics_need_the_class_posterior_capability_and_class_blocks():
    model, data = setup()
    assert class_layout(model) == (L, DC, DS)

    class DuckTyped(nn.Module):
        """Has the config and the methods the metrics read, but does not declare the capability."""

        def __init__(self):
            super().__init__()
            self.config = model.config

        def encode(self, x):
            return model.encode(x)

        def classify(self, x):
            return model.classify(x)

    with pytest.raises(TypeError, match="ClassPosterior"):
        latent_kl(DuckTyped(), data)
    blockless = TableModel(model.loc, model.scale, model.probs, config=SimpleNamespace(num_classes=L))
    with pytest.raises(TypeError, match="no class blocks"):
        classification_accuracy(blockless, data)
    with pytest.raises(ValueError, match="one integer label per image"):
        latent_kl(model, ImageDataset(data.images, torch.zeros(N, 2, dtype=torch.long), 1.0, "pairs"))
