"""Full-dataset ELBO decomposition, checked against brute-force numpy/scipy over all N components (the mixture engine
itself is tested in test_mixture.py)."""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from scipy import stats
from scipy.special import log_expit, logsumexp
from torch import nn

from untwine.data import ImageDataset
from untwine.metrics.decomposition import elbo_decomposition
from untwine.metrics.utils import encode_dataset
from untwine.pyro_models import VAE, VAEConfig

N, D = 240, 3
OBS_SCALE = 0.5
PRIOR_LOC = np.array([0.5, -0.2, 0.1])
PRIOR_SCALE = np.array([1.5, 0.8, 1.2])
PRIOR_COV = np.array([[1.0, 0.6, 0.0], [0.6, 1.5, -0.3], [0.0, -0.3, 0.7]])


class DiagonalPrior(nn.Module):
    def forward(self):
        return dist.Normal(torch.tensor(PRIOR_LOC).float(), torch.tensor(PRIOR_SCALE).float()).to_event(1)


class FullCovariancePrior(nn.Module):
    def forward(self):
        return dist.MultivariateNormal(torch.tensor(PRIOR_LOC).float(), torch.tensor(PRIOR_COV).float())


class TableModel(nn.Module):
    """Known posteriors looked up by the index stored in pixel 0; linear decoder, Gaussian likelihood."""

    def __init__(self, loc, scale, prior):
        super().__init__()
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)
        self.dec = nn.Linear(D, 2)
        self.prior = prior

    def encode(self, x):
        idx = x[:, 0, 0, 0].round().long()
        return self.loc[idx], self.scale[idx]

    def decoder(self, z):
        return self.dec(z).reshape(*z.shape[:-1], 1, 1, 2)

    def likelihood(self, out):
        return dist.Normal(out, OBS_SCALE).to_event(3)


def table_setup(prior_cls=DiagonalPrior):
    """Correlated, well-separated posteriors, so MI and TC are far from zero."""
    g = torch.Generator().manual_seed(1234)  # not a seed the tests pass: the codes' noise must not be `loc`'s
    mixing = torch.tensor([[1.0, 0.8, 0.0], [0.0, 0.6, 0.9], [0.0, 0.0, 0.4]])
    loc = torch.randn(N, D, generator=g) @ mixing
    scale = 0.05 + 0.3 * torch.rand(N, D, generator=g)
    torch.manual_seed(0)
    model = TableModel(loc, scale, prior_cls())
    images = torch.stack([torch.arange(N).float(), torch.randn(N, generator=g)], 1).reshape(N, 1, 1, 2)
    data = ImageDataset(images, torch.zeros(N, dtype=torch.long), 1.0, "table")
    return model, data


def brute_force(z, loc, scale):
    """log q(z_s) and log q(z_sj) over all N components, in float64 with scipy."""
    z, loc, scale = (np.asarray(a, dtype=np.float64) for a in (z, loc, scale))
    lp = stats.norm.logpdf(z[:, None, :], loc[None], scale[None])  # (S, N, D)
    n = loc.shape[0]
    return logsumexp(lp.sum(-1), axis=1) - math.log(n), logsumexp(lp, axis=1) - math.log(n)


def brute_terms(model, data, samples, log_pz):
    """Per-sample terms computed from the returned codes only (everything else recomputed independently)."""
    z, index = samples["z"].astype(np.float64), samples["index"]
    loc, scale = model.loc.double().numpy(), model.scale.double().numpy()
    log_qz, log_qz_marg = brute_force(z, loc, scale)
    log_qz_x = stats.norm.logpdf(z, loc[index], scale[index]).sum(-1)
    w, b = model.dec.weight.detach().double().numpy(), model.dec.bias.detach().double().numpy()
    x = data.images[index].reshape(len(index), 2).double().numpy()
    log_px = stats.norm.logpdf(x, z @ w.T + b, OBS_SCALE).sum(-1)
    kl = log_qz_x - log_pz
    return {
        "log_likelihood": log_px,
        "mi": log_qz_x - log_qz,
        "tc": log_qz - log_qz_marg.sum(-1),
        "dwkl": log_qz_marg.sum(-1) - log_pz,
        "kl": kl,
        "elbo": log_px - kl,
    }, (log_qz, log_qz_marg)


def test_full_dataset_terms_match_a_brute_force_computation():
    model, data = table_setup()
    got = elbo_decomposition(model, data, batch_size=64, seed=3, return_samples=True)
    s = got["samples"]
    assert got["num_samples"] == got["dataset_size"] == N and got["stderr"] is None
    np.testing.assert_array_equal(s["index"], np.arange(N))
    # the codes are draws from each image's own posterior
    eps = (s["z"] - model.loc.numpy()) / model.scale.numpy()
    assert stats.kstest(eps.ravel(), "norm").pvalue > 1e-3
    log_pz = stats.norm.logpdf(s["z"].astype(np.float64), PRIOR_LOC, PRIOR_SCALE).sum(-1)
    want, (log_qz, log_qz_marg) = brute_terms(model, data, s, log_pz)
    np.testing.assert_allclose(s["log_qz"], log_qz, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(s["log_qz_marginals"], log_qz_marg, rtol=1e-5, atol=1e-4)
    for name, values in want.items():
        assert got[name] == pytest.approx(values.mean(), rel=1e-5, abs=1e-4), name
    # the posteriors are correlated and distinct: the terms are far from zero, so the checks above mean something
    assert got["mi"] > 2.0 and got["tc"] > 0.3 and got["dwkl"] > 0.1
    assert got["mi"] + got["tc"] + got["dwkl"] == pytest.approx(got["kl"], rel=1e-12, abs=1e-12)
    assert got["elbo"] == pytest.approx(got["log_likelihood"] - got["kl"], abs=1e-9)


def test_analytic_kl_is_the_normal_normal_closed_form_and_agrees_with_the_monte_carlo_kl():
    model, data = table_setup()
    got = elbo_decomposition(model, data, seed=1, return_samples=True)
    mu, sigma = model.loc.double().numpy(), model.scale.double().numpy()
    closed = (np.log(PRIOR_SCALE / sigma) + (sigma**2 + (mu - PRIOR_LOC) ** 2) / (2 * PRIOR_SCALE**2) - 0.5).sum(-1)
    assert got["analytic_kl"] == pytest.approx(closed.mean(), rel=1e-9)
    s = got["samples"]
    per_sample_kl = s["log_qz_x"] - s["log_pz"]
    assert abs(got["kl"] - closed.mean()) < 4 * per_sample_kl.std(ddof=1) / math.sqrt(N)


def test_non_factorised_prior_has_no_analytic_kl_and_uses_its_joint_density():
    model, data = table_setup(FullCovariancePrior)
    got = elbo_decomposition(model, data, seed=2, return_samples=True)
    assert got["analytic_kl"] is None
    z = got["samples"]["z"].astype(np.float64)
    log_pz = stats.multivariate_normal(PRIOR_LOC, PRIOR_COV).logpdf(z)
    want, _ = brute_terms(model, data, got["samples"], log_pz)
    for name in ("dwkl", "kl", "elbo"):
        assert got[name] == pytest.approx(want[name].mean(), rel=1e-5, abs=1e-4), name


def test_subsampled_estimates_lie_within_standard_errors_of_the_full_values():
    model, data = table_setup()
    full = elbo_decomposition(model, data, seed=0)
    sub = elbo_decomposition(model, data, num_samples=100, seed=5, return_samples=True)
    s = sub["samples"]
    assert sub["num_samples"] == 100 and sub["dataset_size"] == N
    assert len(np.unique(s["index"])) == 100 and s["index"].min() >= 0 and s["index"].max() < N
    # q(z) of the subset's codes is still the mixture of all N posteriors
    log_qz, log_qz_marg = brute_force(s["z"], model.loc, model.scale)
    np.testing.assert_allclose(s["log_qz"], log_qz, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(s["log_qz_marginals"], log_qz_marg, rtol=1e-5, atol=1e-4)
    per_mi = s["log_qz_x"] - s["log_qz"]
    assert sub["stderr"]["mi"] == pytest.approx(per_mi.std(ddof=1) / 10, rel=1e-9)
    for name in ("log_likelihood", "mi", "tc", "dwkl", "kl", "elbo"):
        assert sub["stderr"][name] > 0
        assert abs(sub[name] - full[name]) < 4 * sub["stderr"][name], name
    other = elbo_decomposition(model, data, num_samples=100, seed=6, return_samples=True)
    assert not np.array_equal(other["samples"]["index"], s["index"])
    again = elbo_decomposition(model, data, num_samples=100, seed=5)
    assert again["mi"] == sub["mi"] and again["tc"] == sub["tc"]


def test_standard_errors_match_the_spread_over_seeds():
    # 12 of 240 images per estimate: the finite-population correction (5%) is negligible, a 2x error is not.
    model, data = table_setup()
    runs = [elbo_decomposition(model, data, num_samples=12, seed=seed) for seed in range(300)]
    for name in ("log_likelihood", "mi", "tc", "dwkl", "kl", "elbo"):
        ratio = np.mean([r["stderr"][name] for r in runs]) / np.std([r[name] for r in runs], ddof=1)
        assert 0.75 < ratio < 1.33, (name, ratio)


def test_real_vae_matches_brute_force_and_restores_training_mode():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_shape=(1, 28, 28), latent_dim=3, network="mlp")).train()
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(200, 1, 28, 28, generator=g) < 0.3).to(torch.uint8)
    data = ImageDataset(images, torch.zeros(200, dtype=torch.long), 1.0, "noise")
    got = elbo_decomposition(vae, data, batch_size=64, seed=0, return_samples=True)
    assert vae.training
    s = got["samples"]
    vae.eval()
    with torch.no_grad():
        loc, scale = vae.encode(images.float())
        logits = vae.decoder(torch.from_numpy(s["z"])).double().numpy()
    loc, scale = loc.double().numpy(), scale.double().numpy()
    z = s["z"].astype(np.float64)
    x = images.double().numpy()
    log_px = (x * log_expit(logits) + (1 - x) * log_expit(-logits)).reshape(200, -1).sum(-1)
    log_qz, log_qz_marg = brute_force(z, loc, scale)
    log_qz_x = stats.norm.logpdf(z, loc, scale).sum(-1)
    log_pz = stats.norm.logpdf(z).sum(-1)
    assert got["log_likelihood"] == pytest.approx(log_px.mean(), rel=1e-5)
    assert got["mi"] == pytest.approx((log_qz_x - log_qz).mean(), rel=1e-4, abs=1e-4)
    assert got["tc"] == pytest.approx((log_qz - log_qz_marg.sum(-1)).mean(), rel=1e-4, abs=1e-4)
    assert got["dwkl"] == pytest.approx((log_qz_marg.sum(-1) - log_pz).mean(), rel=1e-4, abs=1e-4)
    closed = (-np.log(scale) + (scale**2 + loc**2) / 2 - 0.5).sum(-1).mean()
    assert got["analytic_kl"] == pytest.approx(closed, rel=1e-5)
    assert got["mi"] + got["tc"] + got["dwkl"] == pytest.approx(got["kl"], rel=1e-12, abs=1e-12)
    enc_loc, _ = encode_dataset(vae, data, batch_size=7)
    np.testing.assert_allclose(enc_loc.double().numpy(), loc, rtol=1e-5, atol=1e-6)


def test_near_deterministic_posteriors_keep_mi_at_its_bound():
    # Distinct posteriors so narrow that z = loc + scale * eps is rounded in float32: each code is identifiable,
    # so MI = log N exactly, and no sample may exceed that bound.
    loc = (1000.0 + 10.0 * torch.arange(N, dtype=torch.float32))[:, None].expand(N, D).contiguous()
    model = TableModel(loc, torch.full((N, D), 1e-6), DiagonalPrior())
    _, data = table_setup()
    got = elbo_decomposition(model, data, seed=0, return_samples=True)
    s = got["samples"]
    assert (s["log_qz_x"] - s["log_qz"]).max() <= math.log(N) + 1e-4
    assert got["mi"] == pytest.approx(math.log(N), abs=1e-4)


def test_block_size_does_not_change_the_result():
    model, data = table_setup()
    small = elbo_decomposition(model, data, seed=4, chunk_elements=70)  # ragged blocks of 23 components
    large = elbo_decomposition(model, data, seed=4, chunk_elements=10**8)
    for name in ("mi", "tc", "dwkl", "kl"):
        assert small[name] == pytest.approx(large[name], rel=1e-5, abs=1e-5)
