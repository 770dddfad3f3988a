"""UG-VAE's batch experiments: global posterior means of batches, SVMs on them, t-SNE, domain alignment."""

import math

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


def record_features(monkeypatch) -> list[torch.Tensor]:
    """Record the batch index of every call of ``batch_features`` (every representation of every batch kind)."""
    calls = []
    original = gl.batch_features

    def recording(features, data, index, device, chunk=16):
        calls.append(index.clone())
        return original(features, data, index, device, chunk)

    monkeypatch.setattr(gl, "batch_features", recording)
    return calls


def test_svm_training_and_test_batches_come_from_disjoint_halves_of_the_images(monkeypatch):
    data = digits(200, parity_visible=True)
    calls = record_features(monkeypatch)
    batch_classification(tiny_ugvae(), data, [BatchProblem(("even", "odd", "random"))], num_batches=30)
    # per representation (the model, then three baselines): three kinds for training, the same three for testing
    assert len(calls) == 4 * 6 and all(c.shape == (30, 8) for c in calls)
    for k in range(1, 4):  # the baselines see exactly the model's batches
        assert all(torch.equal(a, b) for a, b in zip(calls[:6], calls[6 * k : 6 * k + 6]))
    train = torch.cat([c.reshape(-1) for c in calls[:3]]).unique()
    test = torch.cat([c.reshape(-1) for c in calls[3:6]]).unique()
    assert len(np.intersect1d(train.numpy(), test.numpy())) == 0
    assert len(train) + len(test) > 150, "the two halves should together cover most of the 200 images"
    for c, kind in zip(calls[:6], ["even", "odd", "random"] * 2):
        labels = data.targets[c]
        if kind == "even":
            assert (labels % 2 == 0).all()
        elif kind == "odd":
            assert (labels % 2 == 1).all()
        else:
            assert len(labels.unique()) == 10


def test_batch_classification_uses_the_model_group_size_unless_given(monkeypatch):
    calls = record_features(monkeypatch)
    data = digits(200, parity_visible=True)
    batch_classification(tiny_ugvae(group_size=4), data, [EVEN_ODD], num_batches=5, baselines=False)
    batch_classification(tiny_ugvae(group_size=4), data, [EVEN_ODD], num_batches=5, batch_size=6, baselines=False)
    assert [c.shape[1] for c in calls] == [4] * 4 + [6] * 4


def test_baselines_score_the_same_problems_and_the_margin_is_over_the_best_of_them():
    rows = batch_classification(tiny_ugvae(), digits(400, parity_visible=True), [EVEN_ODD], num_batches=40)
    for row in rows:
        assert set(row["baselines"]) == {"mean pixels", "random features", "untrained network"}
        best = max(row["baselines"].values())
        assert row["baselines"][row["best_baseline"]] == best
        assert row["margin"] == pytest.approx(row["test_accuracy"] - best)
        # the parity shows in every image's pixels, so the batch's mean image alone tells the kinds apart
        assert row["baselines"]["mean pixels"] >= 0.95
    bare = batch_classification(tiny_ugvae(), digits(400, parity_visible=True), [EVEN_ODD], num_batches=40,
                                baselines=False)  # fmt: skip
    assert "margin" not in bare[0] and [r["test_accuracy"] for r in bare] == [r["test_accuracy"] for r in rows]


def test_mean_pixel_baseline_is_at_chance_when_the_kinds_look_alike():
    rows = batch_classification(tiny_ugvae(), digits(4000, parity_visible=False), [EVEN_ODD], num_batches=100)
    for row in rows:
        assert 0.3 <= row["baselines"]["mean pixels"] <= 0.7, row


def test_untrained_copy_has_fresh_seeded_weights_and_leaves_the_model_alone():
    model = tiny_ugvae()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fresh, again = gl.untrained_copy(model, seed=1), gl.untrained_copy(model, seed=1)
    weights = [k for k, v in before.items() if v.is_floating_point() and v.numel() > 1]
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
    assert all(torch.equal(fresh.state_dict()[k], again.state_dict()[k]) for k in weights)
    # every learned weight is fresh (buffers such as the prior's constants are not weights)
    params = [k for k, p in model.named_parameters() if p.numel() > 1]
    assert params and all(not torch.equal(fresh.state_dict()[k], before[k]) for k in params), [
        k for k in params if torch.equal(fresh.state_dict()[k], before[k])
    ]
    assert not fresh.training and type(fresh) is type(model)


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


# --- what the global latent carries: I(X; beta), likelihood costs, ink transfer -------------------------------------
class ConjugateGroups(torch.nn.Module, GlobalLatent):
    """The linear-Gaussian group model: beta ~ N(0, tau^2 I), x_i = beta + N(0, nu^2 I) for the B images of a group
    (1x1xg "images"), with the exact conjugate posterior as its global posterior and a decoder that returns beta
    (``use_beta=False``: one that ignores it)."""

    def __init__(self, tau, nu, group_size, use_beta=True):
        super().__init__()
        self.tau, self.nu, self.group_size, self.use_beta = tau, nu, group_size, use_beta
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def global_posterior(self, x):
        values = x.flatten(-3)  # (G, B, g)
        precision = 1 / self.tau**2 + values.shape[-2] / self.nu**2
        loc = values.sum(-2) / self.nu**2 / precision
        return loc, torch.full_like(loc, precision**-0.5)

    def encode(self, x):
        values = x.flatten(-3)
        return values, torch.ones_like(values)

    def log_likelihood(self, x, z, beta):
        mean = beta if self.use_beta else torch.zeros_like(beta)
        return torch.distributions.Normal(mean, self.nu).log_prob(x.flatten(-3)).sum(-1)


def conjugate_groups(num_groups, group_size, dims, tau, nu, seed=0):
    """Images drawn group by group from the linear-Gaussian model, and the index of each group."""
    g = torch.Generator().manual_seed(seed)
    beta = tau * torch.randn(num_groups, 1, dims, generator=g)
    x = beta + nu * torch.randn(num_groups, group_size, dims, generator=g)
    data = ImageDataset(x.reshape(-1, 1, 1, dims), torch.zeros(num_groups * group_size), 1.0, "conjugate")
    return data, torch.arange(num_groups * group_size).reshape(num_groups, group_size)


@pytest.mark.parametrize("tau, nu, group_size", [(1.0, 1.0, 4), (0.3, 1.0, 16), (2.0, 0.5, 2)])
def test_information_matches_the_closed_form_of_the_linear_gaussian_model(tau, nu, group_size):
    # I(X; beta) = 1/2 log(1 + B tau^2 / nu^2) per coordinate for the conjugate posterior
    model = ConjugateGroups(tau, nu, group_size)
    data, index = conjugate_groups(4000, group_size, 2, tau, nu)
    got = gl.global_posterior_summary(model, data, index=index)
    expected = 2 * 0.5 * math.log(1 + group_size * tau**2 / nu**2)
    assert got["information"] == pytest.approx(expected, rel=0.05)


def test_information_is_zero_when_every_batch_has_the_same_posterior():
    loc = torch.full((50, 3), 0.7)
    assert gl.gaussian_information(loc, torch.full((50, 3), 0.1)) == pytest.approx(0.0, abs=1e-12)
    # varying scales with a constant mean: log of the mean variance minus the mean log variance (>= 0, Jensen)
    scale = torch.linspace(0.1, 1.0, 50)[:, None].expand(50, 3)
    expected = 3 * 0.5 * (math.log(float((scale[:, 0] ** 2).mean())) - float((scale[:, 0] ** 2).log().mean()))
    assert gl.gaussian_information(loc, scale) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least 2 batches"):
        gl.gaussian_information(loc[:1], scale[:1])


def test_swapping_or_drawing_beta_costs_what_the_likelihood_says_and_nothing_when_the_decoder_ignores_it():
    tau, nu, size = 1.0, 0.5, 8
    data, index = conjugate_groups(40, size, 2, tau, nu, seed=1)
    model = ConjugateGroups(tau, nu, size)
    got = gl.global_posterior_summary(model, data, index=index, seed=2, prior_draws=200)
    x = data.images.reshape(40, size, 2)
    loc, scale = model.global_posterior(x.reshape(40, size, 1, 1, 2))

    def loglik(beta):  # the Gaussian log-density written out
        return (-0.5 * math.log(2 * math.pi * nu**2) - (x - beta) ** 2 / (2 * nu**2)).sum(-1).mean()

    assert got["log_likelihood"] == pytest.approx(float(loglik(loc[:, None])), rel=1e-5)
    assert got["swap_cost"] == pytest.approx(float(loglik(loc[:, None]) - loglik(loc.roll(1, 0)[:, None])), rel=1e-5)
    # E over beta ~ N(0, I) of (x - beta)^2 is (x^2 + 1): the prior cost in closed form, up to 200 draws' noise
    prior = (-0.5 * math.log(2 * math.pi * nu**2) - (x**2 + 1) / (2 * nu**2)).sum(-1).mean()
    assert got["prior_cost"] == pytest.approx(float(loglik(loc[:, None]) - prior), rel=0.05)
    assert got["swap_cost"] > 1 and got["prior_distance_sd"] > 2
    assert got["mu_min"] == pytest.approx(loc.min(0).values.tolist()) and len(got["mu_max"]) == 2
    ignores = gl.global_posterior_summary(ConjugateGroups(tau, nu, size, use_beta=False), data, index=index)
    assert ignores["swap_cost"] == 0.0 and ignores["prior_cost"] == 0.0


class InkCarrier(Carrier):
    """:class:`Carrier` whose decoded image is the group's mean ink (``by="beta"``) or the image's own (``"z"``)."""


@pytest.mark.parametrize("by, transfer", [("beta", 1.0), ("z", 0.0)])
def test_ink_transfer_is_the_share_of_the_real_ink_gap_that_swapping_beta_moves(by, transfer):
    data = digits(400, parity_visible=False)
    got = gl.ink_transfer(InkCarrier(by), data, num_batches=6)
    assert got["real_gap"] > 0 and got["reconstructed_gap"] == pytest.approx(got["real_gap"], rel=1e-5)
    assert got["transfer"] == pytest.approx(transfer, abs=1e-6)
    with pytest.raises(ValueError, match="quantile"):
        gl.ink_transfer(InkCarrier(by), data, quantile=0.7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_global_latent_measurements_run_on_cuda_and_match_the_cpu():
    data = digits(400, parity_visible=True)
    cpu, gpu = tiny_ugvae(), tiny_ugvae().to("cuda")
    for fn in (gl.global_posterior_summary, gl.ink_transfer):
        a, b = fn(cpu, data, num_batches=4), fn(gpu, data, num_batches=4)
        for key in ("information", "swap_cost", "transfer"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-4), key
    rows = batch_classification(gpu, data, [EVEN_ODD], num_batches=10)
    on_cpu = batch_classification(cpu, data, [EVEN_ODD], num_batches=10)[0]["baselines"]
    assert rows[0]["baselines"] == pytest.approx(on_cpu, abs=0.1)  # SVMs on features equal up to float error
    fresh = gl.untrained_copy(gpu, seed=3)
    assert next(fresh.parameters()).is_cuda
    for a, b in zip(fresh.parameters(), gl.untrained_copy(cpu, seed=3).parameters()):  # the same seeded weights
        assert torch.equal(a.cpu(), b)
