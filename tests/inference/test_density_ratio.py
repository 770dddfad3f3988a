"""FactorVAE's density-ratio estimate of the total correlation: the permutation that samples the product of the
marginals, the discriminator's estimate against the closed-form TC of correlated Gaussians, and the ELBO term."""

import pyro
import pytest
import torch
from pyro import poutine

from untwine.inference.density_ratio import DensityRatioTCELBO, discriminator_loss, log_odds, permute_dims
from untwine.inference.elbo import SyncFreeTrace_ELBO
from untwine.pyro_models import Discriminator, FactorVAE, FactorVAEConfig


def correlated_gaussian(rho: float, d: int = 4):
    """Cholesky factor and exact total correlation of N(0, R), R with correlation ``rho`` within pairs (0,1), (2,3):
    TC = sum_j log sigma_j - log det(R) / 2 = -log(1 - rho^2) per pair."""
    cov = torch.eye(d)
    for a in range(0, d - 1, 2):
        cov[a, a + 1] = cov[a + 1, a] = rho
    return torch.linalg.cholesky(cov), -0.5 * torch.logdet(cov).item()


def test_permute_dims_keeps_every_marginal_and_breaks_the_dependence():
    g = torch.Generator().manual_seed(0)
    chol, _ = correlated_gaussian(0.9)
    z = torch.randn(4000, 4, generator=g) @ chol.T
    p = permute_dims(z, generator=g)
    assert torch.equal(p.sort(dim=0).values, z.sort(dim=0).values), "each column holds the same values"
    assert torch.corrcoef(z.T)[0, 1] > 0.85
    assert abs(torch.corrcoef(p.T)[0, 1]) < 0.05, "columns shuffled independently are uncorrelated"
    assert not torch.equal(p[:, 0], z[:, 0])


def test_permute_dims_refuses_codes_that_are_not_a_batch_of_vectors():
    with pytest.raises(ValueError, match=r"shape \(B, D\)"):
        permute_dims(torch.zeros(3, 2, 2))


@pytest.mark.parametrize("rho", [0.0, 0.6])
def test_the_trained_discriminator_estimates_the_exact_total_correlation(rho):
    """Kim & Mnih's estimator, trained with their optimiser settings on samples of a Gaussian with known TC, is within
    0.06 nats of the closed form (0 for independent coordinates, 0.446 nats at rho = 0.6)."""
    torch.manual_seed(0)
    chol, exact = correlated_gaussian(rho)
    disc = Discriminator(4, units=64, layers=2)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.9))
    for _ in range(1000):
        opt.zero_grad()
        discriminator_loss(disc, torch.randn(1024, 4) @ chol.T, torch.randn(1024, 4) @ chol.T).backward()
        opt.step()
    with torch.no_grad():
        estimate = log_odds(disc, torch.randn(100_000, 4) @ chol.T).mean().item()
    assert estimate == pytest.approx(exact, abs=0.06)


def test_the_discriminator_of_the_isa_vae_appendix():
    disc = Discriminator(20)
    linear = [m for m in disc if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(20, 1000)] + [(1000, 1000)] * 4 + [(1000, 2)]
    leaky = [m for m in disc if isinstance(m, torch.nn.LeakyReLU)]
    assert len(leaky) == 5 and all(m.negative_slope == 0.2 for m in leaky)


def small_factor_vae():
    torch.manual_seed(0)
    cfg = FactorVAEConfig(image_shape=(1, 28, 28), latent_dim=3, discriminator_units=16, discriminator_layers=2)
    return FactorVAE(cfg)


def loss_of(elbo, model, x, seed=3):
    pyro.clear_param_store()
    torch.manual_seed(seed)
    return elbo.differentiable_loss(model.model, model.guide, x)


@pytest.mark.parametrize("gamma", [0.0, 2.5])
def test_the_elbo_term_is_gamma_times_the_log_odds_of_the_guides_codes(gamma):
    """With gamma = 0 the loss is the ELBO's; otherwise it adds gamma * sum_n log D/(1-D) of the sampled codes, here
    read from an independent trace of the guide with the same random stream."""
    model = small_factor_vae()
    x = torch.rand(6, 1, 28, 28)
    plain = loss_of(SyncFreeTrace_ELBO(), model, x)
    with_tc = loss_of(DensityRatioTCELBO(model.discriminator, gamma), model, x)
    torch.manual_seed(3)
    z = poutine.trace(model.guide).get_trace(x).nodes["z"]["value"]
    expected = plain + gamma * log_odds(model.discriminator, z).sum()
    assert with_tc.item() == pytest.approx(expected.item(), rel=1e-6)
    if gamma == 0:
        assert torch.equal(with_tc, plain)


def test_the_elbo_term_refuses_bad_settings():
    model = small_factor_vae()
    with pytest.raises(ValueError, match="gamma must be non-negative"):
        DensityRatioTCELBO(model.discriminator, -1.0)
    with pytest.raises(ValueError, match="'w' is not in the guide"):
        loss_of(DensityRatioTCELBO(model.discriminator, 1.0, sites=("w",)), model, torch.rand(2, 1, 28, 28))
