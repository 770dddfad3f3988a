import math

import pyro
import pytest
import torch
from linear_gaussian import SIGMA, closed_form, linear_gaussian_vae
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from untwine.pyro_models import VAE, ConfigError, VAEConfig, build_model, make_config


@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_pyro_elbo_equals_expected_loglik_minus_beta_kl(beta):
    vae = linear_gaussian_vae(beta)
    x = torch.randn(3, 1, 1, 3)
    particles = 40_000
    pyro.set_rng_seed(0)
    with torch.no_grad():
        estimate = -Trace_ELBO(num_particles=particles, vectorize_particles=True).loss(vae.model, vae.guide, x)
        exact, kl = closed_form(vae, x, beta)
        # Monte Carlo error of the estimate, from independent draws of the same integrand
        loc, scale = vae.encode(x)
        z = loc + scale * torch.randn(particles, *loc.shape)
        out = vae.decoder(z)
        ll = torch.distributions.Normal(out, SIGMA).log_prob(x).sum((-3, -2, -1))
        lq = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        lp = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        se = (ll + beta * (lp - lq)).sum(-1).std() / math.sqrt(particles)
    assert abs(estimate - exact.item()) < 5 * se.item() + 1e-4
    # scaling only one side would be off by (beta - 1) times an entropy term: make sure the test can see it
    if beta != 1.0:
        entropy = torch.distributions.Normal(loc, scale).entropy().sum()
        assert abs((beta - 1) * entropy.item()) > 20 * se.item()


def test_mean_field_elbo_uses_the_analytic_kl_and_agrees():
    beta = 3.0
    vae = linear_gaussian_vae(beta)
    x = torch.randn(2, 1, 1, 3)
    pyro.set_rng_seed(0)
    with torch.no_grad():
        estimate = -TraceMeanField_ELBO(num_particles=20_000, vectorize_particles=True).loss(vae.model, vae.guide, x)
        exact, _ = closed_form(vae, x, beta)
    assert estimate == pytest.approx(exact.item(), abs=0.05)


def test_beta_scales_both_model_and_guide_latent_sites():
    vae = linear_gaussian_vae(2.5)
    x = torch.randn(4, 1, 1, 3)
    guide_tr = pyro.poutine.trace(vae.guide).get_trace(x)
    model_tr = pyro.poutine.trace(pyro.poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    assert guide_tr.nodes["z"]["scale"] == 2.5
    assert model_tr.nodes["z"]["scale"] == 2.5
    assert model_tr.nodes["x"]["scale"] == 1.0
    assert [f.name for f in model_tr.nodes["z"]["cond_indep_stack"]] == ["data"]


@pytest.mark.parametrize("shape", [(1, 64, 64), (1, 28, 28), (1, 32, 32)])
def test_deterministic_pieces_have_the_documented_shapes(shape):
    vae = VAE(VAEConfig(image_shape=shape, latent_dim=5)).eval()
    x = torch.rand(6, *shape)
    loc, scale = vae.encode(x)
    assert loc.shape == scale.shape == (6, 5) and (scale > 0).all()
    assert vae.decode(loc).shape == (6, *shape)
    assert vae.reconstruct(x).shape == (6, *shape)
    s = vae.sample(7)
    assert s.shape == (7, *shape) and ((s >= 0) & (s <= 1)).all()
    trav = vae.traverse(x[0], torch.linspace(-2, 2, 4))
    assert trav.shape == (5, 4, *shape)


def test_traversal_changes_only_the_swept_coordinate():
    vae = linear_gaussian_vae(1.0)
    x = torch.randn(1, 1, 3)
    values = torch.tensor([-1.0, 0.5, 2.0])
    trav = vae.traverse(x, values)
    loc = vae.encode(x.unsqueeze(0))[0][0]
    for d in range(2):
        z = loc.expand(3, 2).clone()
        z[:, d] = values
        torch.testing.assert_close(trav[d], vae.decode(z))


def test_model_moves_to_device_with_its_prior_buffers():
    vae = VAE(VAEConfig(image_shape=(1, 28, 28), latent_dim=3)).to(torch.float64)
    assert vae.prior().mean.dtype == torch.float64


def test_config_validation_names_the_bad_field():
    with pytest.raises(ConfigError, match="kl_weight"):
        VAEConfig(kl_weight=0)
    with pytest.raises(ConfigError, match="likelihood"):
        VAEConfig(likelihood="poisson")
    with pytest.raises(ConfigError, match="latent_dim"):
        VAEConfig(latent_dim=0)


def test_registry_applies_entry_defaults_then_overrides():
    assert make_config("beta-vae").kl_weight == 4.0
    assert make_config("beta-vae", kl_weight=2.0, latent_dim=None).latent_dim == 10
    assert isinstance(build_model("vae", image_shape=(1, 28, 28)), VAE)
    with pytest.raises(ConfigError, match="unknown model 'gan'"):
        make_config("gan")
    with pytest.raises(ConfigError, match="no setting 'depth'"):
        make_config("vae", depth=3)


def test_bernoulli_image_likelihood_is_the_summed_pixel_log_likelihood():
    from untwine.pyro_models.vae import image_likelihood

    torch.manual_seed(0)
    logits = torch.randn(3, 4, 1, 5, 5, dtype=torch.float64)
    x = torch.rand(4, 1, 5, 5, dtype=torch.float64)  # greyscale targets broadcast against the leading dimension
    p = torch.sigmoid(logits)
    expected = (x * p.log() + (1 - x) * (1 - p).log()).sum((-3, -2, -1))
    lik = image_likelihood(logits, "bernoulli", 0.1)
    assert lik.batch_shape == (3, 4) and lik.event_shape == (1, 5, 5)
    assert torch.allclose(lik.log_prob(x), expected, rtol=1e-10)
    assert torch.allclose(lik.expand((2, 3, 4)).log_prob(x), expected.expand(2, 3, 4), rtol=1e-10)
