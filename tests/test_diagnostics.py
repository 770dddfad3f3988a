"""Importance-sampled log p(x), Pareto k-hat and the ArviZ export, checked against closed forms."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats

from untwine.data.base import ImageDataset
from untwine.diagnostics import DiagnosticError, importance_log_likelihood, pareto_smoothed
from untwine.metrics import evaluate_elbo
from untwine.pyro_models.base import GlobalLatent, Model
from untwine.pyro_models.registry import build_model

D_X, D_Z, SIGMA = 5, 2, 0.3


def gaussian_images(x: np.ndarray) -> ImageDataset:
    """Vectors ``(N, D)`` as 1x1xD float 'images' (``max_value`` 1, so batches give them back unchanged)."""
    images = torch.as_tensor(x, dtype=torch.float32).reshape(len(x), 1, 1, -1)
    return ImageDataset(images, torch.zeros(len(x), dtype=torch.long), 1.0, "gaussian")


class ExactLinearGaussian(Model):
    """x = W z + b + N(0, sigma^2 I), z ~ N(0, I); the guide is the exact posterior, its scale multiplied by
    ``shrink`` (1: exact). Computed in float64."""

    def __init__(self, shrink: float = 1.0, seed: int = 0):
        super().__init__()
        g = np.random.default_rng(seed)
        self.register_buffer("w", torch.as_tensor(g.normal(size=(D_X, D_Z)), dtype=torch.float64))
        self.register_buffer("b", torch.as_tensor(g.normal(size=D_X), dtype=torch.float64))
        precision = torch.eye(D_Z, dtype=torch.float64) + self.w.T @ self.w / SIGMA**2
        self.register_buffer("cov", torch.linalg.inv(precision))
        self.shrink = shrink

    def model(self, x, y=None):
        x = x.reshape(len(x), D_X).double()
        with pyro.plate("data", len(x)):
            prior = dist.MultivariateNormal(torch.zeros(D_Z, dtype=torch.float64), torch.eye(D_Z, dtype=torch.float64))
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z @ self.w.T + self.b, SIGMA).to_event(1), obs=x)

    def guide(self, x, y=None):
        x = x.reshape(len(x), D_X).double()
        mean = (x - self.b) @ self.w @ self.cov.T / SIGMA**2
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.MultivariateNormal(mean, self.cov * self.shrink**2))

    def exact_log_px(self, x: np.ndarray) -> np.ndarray:
        w, b = self.w.numpy(), self.b.numpy()
        return stats.multivariate_normal(b, w @ w.T + SIGMA**2 * np.eye(D_X)).logpdf(x)


def linear_gaussian_data(n: int = 200, seed: int = 1) -> tuple[ExactLinearGaussian, ImageDataset, np.ndarray]:
    model = ExactLinearGaussian()
    g = np.random.default_rng(seed)
    z = g.normal(size=(n, D_Z))
    x = (z @ model.w.numpy().T + model.b.numpy() + SIGMA * g.normal(size=(n, D_X))).astype(np.float32)
    return model, gaussian_images(x), x.astype(np.float64)


def test_exact_posterior_gives_every_weight_equal_to_log_px():
    model, data, x = linear_gaussian_data()
    result = importance_log_likelihood(model, data, num_samples=100)
    exact = model.exact_log_px(x)
    assert result.log_weights.shape == (200, 100)
    np.testing.assert_allclose(result.log_weights, exact[:, None].repeat(100, 1), atol=1e-9)
    np.testing.assert_allclose(result.iwae, exact, atol=1e-9)
    np.testing.assert_allclose(result.psis, exact, atol=1e-9)
    assert np.all(result.khat < 0.5)
    np.testing.assert_array_equal(result.index[:, 0], np.arange(200))


def test_narrow_guide_is_flagged_and_the_bound_rises_with_k():
    model, data, x = linear_gaussian_data()
    model.shrink = 1 / 3
    exact = model.exact_log_px(x).mean()
    bounds = []
    for k in (1, 10, 100, 1000):
        result = importance_log_likelihood(model, data, num_samples=k, seed=k)
        bounds.append(result.iwae.mean())
        if k == 1000:
            # log w = 4 |u|^2 + c with u ~ N(0, I/9) in 2 dimensions: exactly Pareto, k = 8/9. ArviZ's fit shrinks
            # k-hat towards 0.5 (a prior worth 10 tail draws), so with K = 100 (a tail of 20) its median is near 0.7;
            # with K = 1000 (a tail of 95) it is near 0.85.
            assert result.summary()["khat"]["share_above_0.7"] > 0.75
    assert all(b < exact for b in bounds)
    assert bounds == sorted(bounds), bounds
    assert exact - bounds[-1] < 0.5 * (exact - bounds[0])  # slowly: a heavy tail is what k-hat reports


def test_k_of_one_is_the_elbo_of_evaluate_elbo_on_the_same_draws():
    model = build_model("vae", image_shape=(1, 64, 64), latent_dim=4)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(64, 1, 64, 64, generator=g) < 0.2).to(torch.uint8)
    data = ImageDataset(images, torch.zeros(64, dtype=torch.long), 1.0, "binary")
    result = importance_log_likelihood(model, data, num_samples=1, seed=3)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        elbo = evaluate_elbo(model, data, batch_size=64)["elbo"]
    assert result.iwae.mean() == pytest.approx(elbo, rel=1e-6)


class ConjugateGroups(GlobalLatent, Model):
    """x_gi = beta_g + N(0, sigma^2), beta_g ~ N(0, tau^2): the guide is the exact posterior of beta given the group,
    so the weight of a group is log p(x_g1, ..., x_gB), a Gaussian with covariance sigma^2 I + tau^2 11^T."""

    TAU = 1.5

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    @property
    def group_size(self) -> int:
        return self.group

    def model(self, x, y=None):
        groups = x.reshape(-1, self.group, D_X).double()
        with pyro.plate("groups", groups.shape[0], dim=-2):
            beta = pyro.sample("beta", dist.Normal(torch.zeros(D_X).double(), self.TAU).to_event(1))
            with pyro.plate("data", self.group, dim=-1):
                pyro.sample("x", dist.Normal(beta, SIGMA).to_event(1), obs=groups)

    def guide(self, x, y=None):
        groups = x.reshape(-1, self.group, D_X).double()
        precision = 1 / self.TAU**2 + self.group / SIGMA**2
        mean = groups.sum(1, keepdim=True) / SIGMA**2 / precision
        with pyro.plate("groups", groups.shape[0], dim=-2):
            pyro.sample("beta", dist.Normal(mean, precision**-0.5).to_event(1))


def test_a_global_latent_gets_one_weight_per_group():
    model = ConjugateGroups(group=4)
    x = np.random.default_rng(0).normal(size=(40, D_X)).astype(np.float32)
    data = gaussian_images(x)
    result = importance_log_likelihood(model, data, num_samples=30)
    assert result.log_weights.shape == (10, 30) and result.index.shape == (10, 4)
    cov = SIGMA**2 * np.eye(4) + model.TAU**2 * np.ones((4, 4))
    groups = x.astype(np.float64)[result.index]  # (10, 4, D): coordinates independent, images within a group not
    exact = stats.multivariate_normal(np.zeros(4), cov).logpdf(groups.transpose(0, 2, 1)).sum(-1)
    np.testing.assert_allclose(result.log_weights, exact[:, None].repeat(30, 1), atol=1e-8)
    assert result.summary()["log_px"]["unit"] == "group"
    assert result.summary()["log_px"]["iwae"] == pytest.approx(exact.mean() / 4)


def test_ugvae_scores_groups_in_the_evaluation_order():
    model = build_model("ug-vae", image_shape=(1, 28, 28), group_size=16, num_clusters=3)
    images = (torch.rand(70, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.3).to(torch.uint8)
    data = ImageDataset(images, torch.zeros(70, dtype=torch.long), 1.0, "binary")
    result = importance_log_likelihood(model, data, num_samples=25, draws_per_pass=25 * 32)
    assert result.log_weights.shape == (4, 25) and result.index.shape == (4, 16)
    assert np.isfinite(result.log_weights).all()
    # the exact sum over clusters beats sampling one: the bound is above the sampled-cluster ELBO
    assert result.iwae.mean() / 16 > evaluate_elbo(model, data)["elbo"]


def test_nvae_marginalises_the_class():
    model = build_model("n-vae", image_shape=(1, 28, 28), num_classes=3)
    images = (torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.3).to(torch.uint8)
    data = ImageDataset(images, torch.tensor([0, 1, 2] * 4), 1.0, "binary")
    result = importance_log_likelihood(model, data, num_samples=30)
    assert result.log_weights.shape == (12, 30)
    assert np.isfinite(result.iwae).all()


def test_pareto_smoothing_is_arviz_and_flags_heavy_tails():
    g = np.random.default_rng(0)
    light = np.log(g.uniform(0.5, 1.5, size=(50, 400)))
    heavy = np.log(g.pareto(1.0, size=(50, 400)) + 1)  # a tail of index 1: k = 1
    _, k_light = pareto_smoothed(light)
    _, k_heavy = pareto_smoothed(heavy)
    assert np.median(k_light) < 0.5 < 0.7 < np.median(k_heavy)
    flat = np.zeros((2, 100))
    estimate, khat = pareto_smoothed(flat)
    np.testing.assert_allclose(estimate, 0.0)
    assert np.all(khat == -np.inf)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_samples": 0}, "num_samples must be a positive integer"), ({"max_images": 0}, "max_images")],
)
def test_bad_counts_say_what_was_wrong(kwargs, message):
    model, data, _ = linear_gaussian_data(10)
    with pytest.raises(DiagnosticError, match=message):
        importance_log_likelihood(model, data, **kwargs)


def test_a_latent_without_a_proposal_is_refused():
    class NoGuide(ExactLinearGaussian):
        def guide(self, x, y=None):
            pass

    _, data, _ = linear_gaussian_data(10)
    with pytest.raises(DiagnosticError, match="has no site in the guide"):
        importance_log_likelihood(NoGuide(), data)


def test_the_caller_random_stream_is_untouched():
    model, data, _ = linear_gaussian_data(10)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    importance_log_likelihood(model, data, num_samples=5)
    assert torch.equal(torch.rand(3), expected)
    assert math.isfinite(importance_log_likelihood(model, data, num_samples=5).iwae.mean())


class GroupsWithLocalLatents(ConjugateGroups):
    """x_gi = beta_g + z_gi + N(0, sigma^2), z_gi ~ N(0, I): per coordinate a group is Gaussian with covariance
    (1 + sigma^2) I + tau^2 11^T. The guide draws beta from its exact posterior given the group, then each z_gi from
    its exact posterior given x_gi and beta, its scale multiplied by ``z_widen`` (1: every weight is log p(X))."""

    def __init__(self, group: int, z_widen: float = 1.0):
        super().__init__(group)
        self.z_widen = z_widen

    def model(self, x, y=None):
        groups = x.reshape(-1, self.group, D_X).double()
        with pyro.plate("groups", groups.shape[0], dim=-2):
            beta = pyro.sample("beta", dist.Normal(torch.zeros(D_X).double(), self.TAU).to_event(1))
            with pyro.plate("data", self.group, dim=-1):
                z = pyro.sample("z", dist.Normal(torch.zeros(D_X).double(), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(beta + z, SIGMA).to_event(1), obs=groups)

    def guide(self, x, y=None):
        groups = x.reshape(-1, self.group, D_X).double()
        v, t2, b = 1 + SIGMA**2, self.TAU**2, self.group
        with pyro.plate("groups", groups.shape[0], dim=-2):
            mean = t2 * groups.sum(-2, keepdim=True) / (b * t2 + v)
            beta = pyro.sample("beta", dist.Normal(mean, (t2 * v / (b * t2 + v)) ** 0.5).to_event(1))
            with pyro.plate("data", self.group, dim=-1):
                scale = self.z_widen * (SIGMA**2 / v) ** 0.5
                pyro.sample("z", dist.Normal((groups - beta) / v, scale).to_event(1))

    def exact(self, groups: np.ndarray) -> np.ndarray:
        b = groups.shape[1]
        cov = (1 + SIGMA**2) * np.eye(b) + self.TAU**2 * np.ones((b, b))
        return stats.multivariate_normal(np.zeros(b), cov).logpdf(groups.transpose(0, 2, 1)).sum(-1)


def grouped_data(model: GroupsWithLocalLatents, groups: int = 6) -> ImageDataset:
    g = np.random.default_rng(2)
    beta = g.normal(0, model.TAU, size=(groups, 1, D_X))
    x = beta + g.normal(size=(groups, model.group, D_X)) * math.sqrt(1 + SIGMA**2)
    return gaussian_images(x.reshape(-1, D_X).astype(np.float32))


def test_inner_draws_per_image_are_exact_with_exact_posteriors():
    model = GroupsWithLocalLatents(group=8)
    data = grouped_data(model)
    result = importance_log_likelihood(model, data, num_samples=30, inner_samples=4)
    exact = model.exact(data.images.reshape(len(data), D_X).double().numpy()[result.index])
    np.testing.assert_allclose(result.log_weights, exact[:, None].repeat(30, 1), atol=1e-8)


def test_inner_draws_per_image_tighten_the_bound_of_large_groups():
    model = GroupsWithLocalLatents(group=32, z_widen=1.5)
    data = grouped_data(model)
    flat = importance_log_likelihood(model, data, num_samples=500, inner_samples=1)
    nested = importance_log_likelihood(model, data, num_samples=50, inner_samples=10)  # the same 500 draws per image
    exact = model.exact(data.images.reshape(len(data), D_X).double().numpy()[nested.index])
    np.testing.assert_array_equal(flat.index, nested.index)
    gap_flat, gap_nested = (exact - flat.iwae).mean(), (exact - nested.iwae).mean()
    assert 0 < gap_nested < gap_flat / 3, (gap_nested, gap_flat)
    assert np.median(nested.khat) < np.median(flat.khat)


def test_inference_data_holds_the_guide_draws_images_and_likelihoods_by_name():
    from untwine.diagnostics import summary, to_inference_data

    model, data, x = linear_gaussian_data(20)
    idata = to_inference_data(model, data, num_samples=40, num_images=6, seed=1)
    post = idata.posterior["z"]
    assert post.dims == ("chain", "draw", "image", "latent") and post.shape == (1, 40, 6, D_Z)
    np.testing.assert_array_equal(post.coords["image"].values, np.arange(6))
    np.testing.assert_allclose(idata.observed_data["x"].values.reshape(6, D_X), x[:6], atol=1e-6)
    # the exact posterior's mean, from 40 independent draws per image
    mean = (x[:6] - model.b.numpy()) @ model.w.numpy() @ model.cov.numpy().T / SIGMA**2
    sd = np.sqrt(np.diag(model.cov.numpy()))
    assert np.all(np.abs(post.mean("draw").values[0] - mean) < 4 * sd / np.sqrt(40))
    # log p(x | z) of each draw, against the Gaussian written out
    z = post.values[0]
    w, b = model.w.numpy(), model.b.numpy()
    expected = stats.norm.logpdf(x[:6][None], z @ w.T + b, SIGMA).sum(-1)
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0], expected, rtol=1e-6)
    # with an exact posterior every importance weight is log p(x)
    np.testing.assert_allclose(
        idata.sample_stats["log_weight"].values[0], model.exact_log_px(x[:6])[None].repeat(40, 0)
    )
    table = summary(idata)
    assert list(table.columns) == ["mean", "sd", "hdi_3%", "hdi_97%"] and len(table) == 6 * D_Z


def test_inference_data_of_a_grouped_model_has_the_global_latent_per_group():
    from untwine.diagnostics import to_inference_data

    model = ConjugateGroups(group=4)
    data = gaussian_images(np.random.default_rng(0).normal(size=(20, D_X)).astype(np.float32))
    idata = to_inference_data(model, data, num_samples=10, num_images=10)  # rounded down to whole groups
    assert idata.posterior["beta"].dims == ("chain", "draw", "group", "beta_dim")
    assert idata.posterior["beta"].shape == (1, 10, 2, D_X)
    assert idata.log_likelihood["x"].shape == (1, 10, 8) and idata.observed_data["x"].shape[0] == 8


def test_inference_data_carries_learned_prior_parameters_and_their_history():
    from untwine.diagnostics import to_inference_data

    model = build_model("isa-vae", image_shape=(1, 64, 64), learn_exponents=True)
    images = (torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(0)) < 0.2).to(torch.uint8)
    data = ImageDataset(images, torch.zeros(8, dtype=torch.long), 1.0, "binary")
    exponents = model.exponents.tolist()
    history = [{"epoch": e, "loss": 1.0, **{f"p{i}": p + e for i, p in enumerate(exponents)}} for e in (1, 2, 3)]
    idata = to_inference_data(model, data, num_samples=5, num_images=4, history=history)
    np.testing.assert_allclose(idata.constant_data["exponents"].values, exponents, rtol=1e-6)
    np.testing.assert_allclose(idata.constant_data["p0_by_epoch"].values, [exponents[0] + e for e in (1, 2, 3)])
    np.testing.assert_array_equal(idata.constant_data.coords["epoch"].values, [1, 2, 3])
    assert "loss_by_epoch" not in idata.constant_data


def test_inference_data_of_nvae_has_draws_of_the_class_proportions():
    from untwine.diagnostics import to_inference_data

    model = build_model("n-vae", image_shape=(1, 28, 28), num_classes=3)
    images = (torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.3).to(torch.uint8)
    data = ImageDataset(images, torch.tensor([0, 1, 2] * 2), 1.0, "binary")
    idata = to_inference_data(model, data, num_samples=50, num_images=6)
    pi = idata.posterior["pi"]
    assert pi.dims == ("chain", "draw", "image", "class") and pi.shape == (1, 50, 6, 3)
    np.testing.assert_allclose(pi.sum("class").values, 1.0, rtol=1e-5)
    with torch.no_grad():
        expected = model.classify(data.batch(torch.arange(6))[0]).numpy()  # E[pi] under q(pi|x)
    assert np.abs(pi.mean("draw").values[0] - expected).max() < 0.15


def test_inference_data_weights_of_groups_are_those_of_the_estimator():
    from untwine.diagnostics import to_inference_data

    model = GroupsWithLocalLatents(group=8)
    data = grouped_data(model, groups=2)
    idata = to_inference_data(model, data, num_samples=6, num_images=16, inner_samples=3)
    result = importance_log_likelihood(model, data, num_samples=6, inner_samples=3)
    np.testing.assert_allclose(idata.sample_stats["log_weight"].values[0], result.log_weights.T, atol=1e-8)
    assert idata.posterior["z"].shape == (1, 6, 16, D_X) and idata.posterior["beta"].shape == (1, 6, 2, D_X)
