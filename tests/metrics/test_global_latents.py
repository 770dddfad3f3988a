"""UG-VAE's batch experiments: global posterior means of batches, SVMs on them, t-SNE, domain alignment."""

import numpy as np
import pytest
import torch

import untwine.metrics.global_latents as gl
from untwine.data import DataError, DomainMixture, ImageDataset
from untwine.metrics import (
    BatchProblem,
    batch_classification,
    batch_embedding,
    domain_alignment,
    format_table,
    global_means,
)
from untwine.metrics.global_latents import tsne
from untwine.pyro_models import UGVAE, VAE, UGVAEConfig, VAEConfig
from untwine.pyro_models.base import GlobalLatent

SHAPE = (1, 8, 8)
EVEN_ODD = BatchProblem(("even", "odd"))


def tiny_ugvae(group_size=8, **kw):
    torch.manual_seed(0)
    config = dict(
        image_shape=SHAPE, latent_dim=2, global_dim=3, num_clusters=3, group_size=group_size, hidden=16,
        network="mlp-256",
    )  # fmt: skip
    return UGVAE(UGVAEConfig(**{**config, **kw}))


def digits(n, parity_visible, seed=0):
    """``n`` noise images with labels 0-9; with ``parity_visible`` even digits get a bright top row, odd digits a
    bright bottom row, so the kind of a batch of even or odd digits shows in every image."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 256 if not parity_visible else 60, (n, *SHAPE), dtype=torch.uint8, generator=g)
    if parity_visible:
        images[labels % 2 == 0, 0, 0, :] = 255
        images[labels % 2 == 1, 0, -1, :] = 255
    return ImageDataset(images, labels, 255, "toy-digits")


def test_global_means_are_the_model_global_posterior_of_each_batch():
    model = tiny_ugvae().train()
    data = digits(100, parity_visible=False)
    index = torch.randint(100, (20, 8), generator=torch.Generator().manual_seed(0))  # 20 batches: two chunks of 16
    got = global_means(model, data, index)
    assert got.shape == (20, 3) and got.dtype == np.float64
    model.eval()
    for g in range(20):
        x = data.images[index[g]].float() / 255  # the batch built by hand, not through data.batch
        loc, _ = model.global_posterior(x)
        np.testing.assert_allclose(got[g], loc[0].double().numpy(), rtol=1e-5, atol=1e-6)
    model.train()
    global_means(model, data, index)
    assert model.training, "global_means must restore the training mode"


def test_global_means_of_a_batch_do_not_depend_on_the_other_batches():
    model = tiny_ugvae()
    data = digits(100, parity_visible=False)
    index = torch.randint(100, (5, 8), generator=torch.Generator().manual_seed(1))
    together = global_means(model, data, index, chunk=16)
    one_by_one = np.concatenate([global_means(model, data, index[g : g + 1]) for g in range(5)])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6)


def test_svms_tell_apart_batch_kinds_that_every_image_shows():
    rows = batch_classification(tiny_ugvae(), digits(400, parity_visible=True), [EVEN_ODD], num_batches=50)
    assert [r["classifier"] for r in rows] == ["linear SVM", "RBF SVM"]
    assert all(r["problem"] == "even (0) vs odd (1)" for r in rows)
    for row in rows:
        assert row["train_accuracy"] >= 0.95 and row["test_accuracy"] >= 0.95, row


def test_svms_are_at_chance_when_the_batch_kinds_look_alike():
    # images are noise whatever the label: even and odd batches come from one distribution
    rows = batch_classification(tiny_ugvae(), digits(4000, parity_visible=False), [EVEN_ODD], num_batches=100)
    for row in rows:
        assert 0.3 <= row["test_accuracy"] <= 0.7, row


def test_three_kind_problems_give_one_row_per_classifier_and_accuracies_in_range():
    problems = [BatchProblem(("even", "odd", "random")), BatchProblem(("fibonacci", "primes"), "numbers")]
    rows = batch_classification(tiny_ugvae(), digits(400, parity_visible=True), problems, num_batches=10)
    assert [r["problem"] for r in rows] == [
        "even (0) vs odd (1) vs random (2)", "even (0) vs odd (1) vs random (2)",
        "fibonacci (0) vs primes (1) [multi-digit numbers]", "fibonacci (0) vs primes (1) [multi-digit numbers]",
    ]  # fmt: skip
    assert all(0.0 <= r[k] <= 1.0 for r in rows for k in ("train_accuracy", "test_accuracy"))


def test_svm_training_and_test_batches_come_from_disjoint_halves_of_the_images(monkeypatch):
    data = digits(200, parity_visible=True)
    calls = []
    original = gl.global_means

    def recording(model, data, index, chunk=16):
        calls.append(index.clone())
        return original(model, data, index, chunk)

    monkeypatch.setattr(gl, "global_means", recording)
    batch_classification(tiny_ugvae(), data, [BatchProblem(("even", "odd", "random"))], num_batches=30)
    # features are computed per kind and half: three kinds for training, then the same three for testing
    assert len(calls) == 6 and all(c.shape == (30, 8) for c in calls)
    train = torch.cat([c.reshape(-1) for c in calls[:3]]).unique()
    test = torch.cat([c.reshape(-1) for c in calls[3:]]).unique()
    assert len(np.intersect1d(train.numpy(), test.numpy())) == 0
    assert len(train) + len(test) > 150, "the two halves should together cover most of the 200 images"
    for c, kind in zip(calls, ["even", "odd", "random"] * 2):
        labels = data.targets[c]
        if kind == "even":
            assert (labels % 2 == 0).all()
        elif kind == "odd":
            assert (labels % 2 == 1).all()
        else:
            assert len(labels.unique()) == 10


def test_batch_classification_uses_the_model_group_size_unless_given(monkeypatch):
    sizes = []
    original = gl.global_means

    def recording(model, data, index, chunk=16):
        sizes.append(index.shape[1])
        return original(model, data, index, chunk)

    monkeypatch.setattr(gl, "global_means", recording)
    data = digits(200, parity_visible=True)
    batch_classification(tiny_ugvae(group_size=4), data, [EVEN_ODD], num_batches=5)
    batch_classification(tiny_ugvae(group_size=4), data, [EVEN_ODD], num_batches=5, batch_size=6)
    assert sizes == [4] * 4 + [6] * 4


def test_batch_experiments_need_a_model_with_a_global_latent_and_batches_of_two():
    data = digits(100, parity_visible=True)
    vae = VAE(VAEConfig(image_shape=SHAPE, latent_dim=2, network="mlp"))
    with pytest.raises(TypeError, match="no global latent"):
        batch_classification(vae, data, [EVEN_ODD], num_batches=5)

    class DuckTyped(torch.nn.Module):
        """A global posterior and a group size, without the GlobalLatent capability."""

        group_size = 4

        def global_posterior(self, x):
            return x.flatten(-3).mean(-1, keepdim=True), torch.ones(x.shape[0], 1)

    with pytest.raises(TypeError, match="GlobalLatent"):
        batch_classification(DuckTyped(), data, [EVEN_ODD], num_batches=5)
    with pytest.raises(DataError, match="at least 2 images"):
        batch_classification(tiny_ugvae(), data, [EVEN_ODD], num_batches=5, batch_size=1)
    unlabelled = ImageDataset(data.images, torch.zeros(100, 3, dtype=torch.long), 255, "factors")
    with pytest.raises(DataError, match="one integer label per image"):
        batch_classification(tiny_ugvae(), unlabelled, [EVEN_ODD], num_batches=5)


def test_format_table_is_markdown_with_each_problem_named_once():
    rows = [
        {"problem": "even (0) vs odd (1)", "classifier": "linear SVM", "train_accuracy": 0.996, "test_accuracy": 0.5},
        {"problem": "even (0) vs odd (1)", "classifier": "RBF SVM", "train_accuracy": 1.0, "test_accuracy": 0.123},
        {"problem": "p (0) vs q (1)", "classifier": "linear SVM", "train_accuracy": 0.5, "test_accuracy": 0.25},
    ]
    assert format_table(rows).splitlines() == [
        "| batch categories | classifier | train accuracy | test accuracy |",
        "| --- | --- | --- | --- |",
        "| even (0) vs odd (1) | linear SVM | 1.00 | 0.50 |",
        "|  | RBF SVM | 1.00 | 0.12 |",
        "| p (0) vs q (1) | linear SVM | 0.50 | 0.25 |",
    ]
    assert format_table([]).count("\n") == 1  # header only


@pytest.mark.parametrize("n", [0, 1, 2])
def test_tsne_needs_three_points(n):
    with pytest.raises(ValueError, match="at least 3 points"):
        tsne(np.zeros((n, 4)))


def test_tsne_embeds_in_the_plane_and_keeps_separated_clusters_apart():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 0.1, (20, 5)), rng.normal(10, 0.1, (20, 5))])
    emb = tsne(features, seed=0)
    assert emb.shape == (40, 2) and np.isfinite(emb).all()
    a, b = emb[:20], emb[20:]
    within = max(np.ptp(a, 0).max(), np.ptp(b, 0).max())
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > within
    assert tsne(features[:3]).shape == (3, 2)


def test_batch_embedding_lists_each_kind_and_one_point_per_batch():
    result = batch_embedding(tiny_ugvae(), digits(200, parity_visible=True), kinds=("even", "odd"), num_batches=6)
    assert result["kinds"] == ["even", "odd"]
    assert result["labels"] == ["even"] * 6 + ["odd"] * 6
    assert result["features"].shape == (12, 3) and result["embedding"].shape == (12, 2)


def mixture(n_dark=120, n_bright=100):
    g = torch.Generator().manual_seed(0)
    dark = ImageDataset(torch.randint(0, 60, (n_dark, *SHAPE), dtype=torch.uint8, generator=g),
                        torch.arange(n_dark) % 10, 255, "dark")  # fmt: skip
    bright = ImageDataset(torch.randint(190, 256, (n_bright, *SHAPE), dtype=torch.uint8, generator=g),
                          torch.arange(n_bright) % 10, 255, "bright")  # fmt: skip
    return DomainMixture.of([dark, bright])


def test_domain_alignment_returns_pure_mixed_and_interpolated_points():
    model, data = tiny_ugvae(), mixture()
    nb, steps = 6, 5
    result = domain_alignment(model, data, num_batches=nb, steps=steps)
    assert set(result) == {"kinds", "labels", "features", "embedding", "batches", "separability"}
    assert result["kinds"] == ["dark", "bright", "mixed", "interpolation"]
    per_half = ["dark"] * nb + ["bright"] * nb + ["mixed"] * nb
    assert result["labels"] == per_half * 2 + ["interpolation"] * steps
    n = 6 * nb + steps
    assert result["features"].shape == (n, 3) and result["embedding"].shape == (n, 2)
    assert np.isfinite(result["embedding"]).all()
    # the first batch of each pure kind: one domain only, and the first point of its kind
    first_dark, first_bright = (torch.tensor(b) for b in result["batches"])
    assert len(first_dark) == len(first_bright) == model.group_size
    assert (data.domains[first_dark] == 0).all() and (data.domains[first_bright] == 1).all()
    model.eval()
    beta1 = model.global_posterior(data.images[first_dark].float() / 255)[0][0].double().numpy()
    beta2 = model.global_posterior(data.images[first_bright].float() / 255)[0][0].double().numpy()
    np.testing.assert_allclose(result["features"][0], beta1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["features"][nb], beta2, rtol=1e-5, atol=1e-6)
    # the path runs in a straight line from one batch's global mean to the other's
    path = result["features"][-steps:]
    expected = beta1 + np.linspace(0, 1, steps)[:, None] * (beta2 - beta1)
    np.testing.assert_allclose(path, expected, rtol=1e-5, atol=1e-5)
    # dark and bright batches are told apart perfectly on held-out images
    assert [r["classifier"] for r in result["separability"]] == ["linear SVM", "RBF SVM"]
    assert all(r["test_accuracy"] == 1.0 for r in result["separability"])


def test_domain_alignment_needs_a_two_domain_mixture():
    model, mix = tiny_ugvae(), mixture()
    plain = ImageDataset(mix.images, mix.targets, 255, "plain")
    with pytest.raises(DataError, match="mixture of two datasets"):
        domain_alignment(model, plain, num_batches=4)
    three = DomainMixture.of([mix.domain(0), mix.domain(1), mix.domain(0)])
    with pytest.raises(DataError, match="mixture of two datasets"):
        domain_alignment(model, three, num_batches=4)


class Carrier(torch.nn.Module, GlobalLatent):
    """A stand-in grouped model whose decoded brightness comes from beta (``by="beta"``) or from z (``by="z"``):
    beta is a group's mean brightness, z an image's."""

    def __init__(self, by: str):
        super().__init__()
        self.by = by
        self.group_size = 4
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def global_posterior(self, x):
        loc = x.flatten(-3).mean(-1).mean(-1, keepdim=True)  # (G, 1)
        return loc, torch.ones_like(loc)

    def encode(self, x):
        loc = x.flatten(-3).mean(-1, keepdim=True)  # (G, B, 1)
        return loc, torch.ones_like(loc)

    def decode(self, z, beta):
        value = (beta if self.by == "beta" else z).expand(*torch.broadcast_shapes(z.shape, beta.shape))
        return value[..., None, None].expand(*value.shape[:-1], *SHAPE)


def dark_and_bright(n: int = 200) -> DomainMixture:
    g = torch.Generator().manual_seed(0)
    dark = ImageDataset(torch.randint(0, 60, (n, *SHAPE), dtype=torch.uint8, generator=g), torch.zeros(n), 255, "d")
    bright = ImageDataset(
        torch.randint(190, 256, (n, *SHAPE), dtype=torch.uint8, generator=g), torch.zeros(n), 255, "b"
    )
    return DomainMixture.of([dark, bright])


@pytest.mark.parametrize("by, beta_flips", [("beta", 1.0), ("z", 0.0)])
def test_domain_transfer_names_the_latent_that_carries_the_domain(by, beta_flips):
    got = gl.domain_transfer(Carrier(by), dark_and_bright(), num_batches=5, classifier_images=100)
    assert got["classifier_accuracy"] == 1.0 and got["reconstruction_accuracy"] == 1.0
    assert got["beta_swap_flip_rate"] == beta_flips


def test_domain_transfer_needs_a_two_domain_mixture():
    with pytest.raises(DataError, match="mixture of two datasets"):
        gl.domain_transfer(Carrier("z"), digits(40, parity_visible=False))


def test_format_table_sets_models_side_by_side_and_rejects_mismatched_rows():
    rows = [
        {"problem": "a vs b", "classifier": "linear SVM", "train_accuracy": 1.0, "test_accuracy": 0.9},
        {"problem": "a vs b", "classifier": "RBF SVM", "train_accuracy": 0.8, "test_accuracy": 0.7},
    ]
    other = [{**r, "test_accuracy": 0.5} for r in rows]
    lines = format_table({"M1": rows, "M2": other}).splitlines()
    assert lines[0] == (
        "| batch categories | classifier | M1 train accuracy | M1 test accuracy | "
        "M2 train accuracy | M2 test accuracy |"
    )
    assert lines[2] == "| a vs b | linear SVM | 1.00 | 0.90 | 1.00 | 0.50 |"
    assert lines[3] == "|  | RBF SVM | 0.80 | 0.70 | 0.80 | 0.50 |"
    with pytest.raises(ValueError, match="same problems"):
        format_table({"M1": rows, "M2": rows[::-1]})


def test_global_posterior_summary_matches_the_kl_of_each_batch():
    from torch.distributions import Normal, kl_divergence

    model = tiny_ugvae().eval()
    data = digits(200, parity_visible=False)
    got = gl.global_posterior_summary(model, data, num_batches=6, seed=3)
    index = torch.randint(200, (6, 8), generator=torch.Generator().manual_seed(3))
    loc, scale = model.global_posterior(data.images[index].float() / 255)
    kl = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1)
    assert got["kl_per_group"] == pytest.approx(float(kl.mean()), rel=1e-5)
    assert got["posterior_scale"] == pytest.approx(float(scale.mean()), rel=1e-5)
    assert got["between_batch_std"] == pytest.approx(float(loc.std(0).mean()), rel=1e-5)


def test_domain_alignment_without_embedding_keeps_the_same_separability():
    mix = dark_and_bright(64)
    model = tiny_ugvae(image_shape=SHAPE)
    full = domain_alignment(model, mix, num_batches=4, steps=3)
    bare = domain_alignment(model, mix, num_batches=4, steps=3, embed=False)
    assert bare["embedding"] is None and full["embedding"].shape == (3 * 2 * 4 + 3, 2)
    assert bare["separability"] == full["separability"]
