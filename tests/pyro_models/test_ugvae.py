"""UG-VAE and its ML-VAE ablation: the Pyro objective against eqs. 9-11 written out, plates, figures' inputs, errors."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from torch import nn

from untwine.pyro_models import UGVAE, GroupError, UGVAEConfig, build_model
from untwine.pyro_models.vae import ConfigError

SHAPE = (1, 4, 4)


def tiny(**kw) -> UGVAE:
    torch.manual_seed(0)
    options = dict(image_shape=SHAPE, latent_dim=2, global_dim=3, num_clusters=3, group_size=3, hidden=8)
    options.update(kw, network="mlp-256")
    return UGVAE(UGVAEConfig(**options))


def images(n: int = 6) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(1))


def normal_lp(value, loc, scale):
    return (-0.5 * ((value - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def hand_elbo(m: UGVAE, x: torch.Tensor, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Eqs. 10-11 at given draws of z (G, B, dz) and beta (G, 1, g): exact sums over d weighted by pi(z), the
    Gaussian KLs as their one-sample estimates, eq. 9 for q(beta) written out, one global term per group."""
    cfg = m.config
    groups = x.reshape(-1, cfg.group_size, *SHAPE)
    z_loc, z_scale = m.encode(groups)
    pi = m.cluster_probs(z)  # (G, B, K)
    loc_i, prec_i = m.local_factors(groups, pi)
    lam = prec_i.sum(1, keepdim=True)
    mu = (prec_i * loc_i).sum(1, keepdim=True) / lam
    out = m.decoder(torch.cat([z, beta.expand(*z.shape[:-1], -1)], -1))
    loglik = -0.5 * ((groups - out) / cfg.obs_scale) ** 2 - math.log(cfg.obs_scale) - 0.5 * math.log(2 * math.pi)
    loglik = loglik.flatten(2).sum(-1)  # (G, B)
    comp_loc, comp_scale = m.local_prior(beta)  # (G, 1, K, dz)
    log_pz = normal_lp(z.unsqueeze(-2), comp_loc, comp_scale)  # (G, B, K)
    k = cfg.num_clusters
    local = (pi * (log_pz + math.log(1 / k) - torch.log(pi))).sum(-1) - normal_lp(z, z_loc, z_scale)
    glob = normal_lp(beta, torch.zeros(()), torch.ones(())) - normal_lp(beta, mu, lam.rsqrt())
    return (loglik + local).sum() + glob.sum()


def test_pyro_loss_equals_eqs_10_11_on_the_same_draws():
    m = tiny()
    x = images()
    for seed in range(3):
        pyro.set_rng_seed(seed)
        loss = TraceEnum_ELBO(max_plate_nesting=2).differentiable_loss(m.model, m.guide, x)
        pyro.set_rng_seed(seed)  # the guide draws z, then beta, in the same order outside the ELBO
        tr = poutine.trace(m.guide).get_trace(x)
        expected = hand_elbo(m, x, tr.nodes["z"]["value"], tr.nodes["beta"]["value"])
        assert loss.item() == pytest.approx(-expected.item(), rel=1e-5, abs=1e-3)


def test_one_global_log_density_per_group_and_one_local_per_image():
    m = tiny()
    x = images()
    pyro.set_rng_seed(0)
    tr = poutine.trace(m.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(m.model, trace=tr)).get_trace(x)
    model_tr.compute_log_prob()
    assert model_tr.nodes["beta"]["log_prob"].shape == (2, 1)
    assert model_tr.nodes["z"]["log_prob"].shape == (2, 3)


def linear_gaussian_ugvae() -> UGVAE:
    """A tiny UG-VAE whose ELBO has a closed form: linear decoder, q(d|z) fixed (so q(beta) does not depend on z)."""
    m = tiny()
    with torch.no_grad():
        last = m.cluster_net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([3.0, -3.0, 0.5]))
        # move q(beta) away from the prior, so that the global KL is large against the Monte Carlo error
        m.global_head[-1].bias[:3].add_(torch.tensor([1.5, -1.0, 2.0]))
    d_in = m.config.latent_dim + m.config.global_dim
    m.decoder = nn.Sequential(nn.Linear(d_in, math.prod(SHAPE)), nn.Unflatten(-1, SHAPE))
    with torch.no_grad():
        m.decoder[0].weight.mul_(0.1)  # a small decoder slope keeps the one-sample variance of the bound small
    return m


def closed_form_elbo(m: UGVAE, x: torch.Tensor) -> torch.Tensor:
    """Eqs. 10-11 with every expectation analytic: E log p(x|z, beta) of a linear-Gaussian decoder, the Gaussian KLs
    weighted by pi, the categorical KL, and one KL(q(beta)||N(0, I)) per group."""
    cfg = m.config
    groups = x.reshape(-1, cfg.group_size, *SHAPE)
    z_loc, z_scale = m.encode(groups)  # (G, B, dz)
    pi = m.cluster_probs(z_loc)  # constant: the cluster network ignores z
    beta_loc, beta_scale = m.combine(*m.local_factors(groups, pi))  # (G, 1, g)
    lin = m.decoder[0]
    w, b = lin.weight, lin.bias  # (D, dz + g)
    dz = cfg.latent_dim
    mean = z_loc @ w[:, :dz].T + beta_loc @ w[:, dz:].T + b  # (G, B, D)
    var = z_scale**2 @ (w[:, :dz] ** 2).T + beta_scale**2 @ (w[:, dz:] ** 2).T
    s2 = cfg.obs_scale**2
    flat = groups.flatten(2)
    loglik = (-0.5 * ((flat - mean) ** 2 + var) / s2 - 0.5 * math.log(2 * math.pi * s2)).sum(-1)
    total = loglik.sum()
    # E_q(beta) KL(q(z|x) || N(mu_k(beta), s_k(beta))): the prior networks are non-linear in beta, so this one
    # expectation is integrated by Monte Carlo, with draws independent of Pyro's.
    g = torch.Generator().manual_seed(123)
    eps = torch.randn(20000, *beta_loc.shape, generator=g)
    betas = beta_loc + beta_scale * eps  # (S, G, 1, g)
    comp_loc, comp_scale = m.local_prior(betas)  # (S, G, 1, K, dz)
    zl, zs = z_loc.unsqueeze(-2), z_scale.unsqueeze(-2)
    kl_z = (torch.log(comp_scale / zs) + (zs**2 + (zl - comp_loc) ** 2) / (2 * comp_scale**2) - 0.5).sum(-1)
    total = total - (pi * kl_z).sum((-1, -2, -3)).mean(0)
    k = cfg.num_clusters
    total = total - (pi * torch.log(pi * k)).sum()
    kl_beta = 0.5 * (beta_scale**2 + beta_loc**2 - 1 - torch.log(beta_scale**2)).sum()
    return total - kl_beta


def test_pyro_loss_matches_closed_form_eqs_10_11_in_expectation():
    m = linear_gaussian_ugvae()
    x = images()
    with torch.no_grad():
        expected = closed_form_elbo(m, x).item()
        elbo = TraceEnum_ELBO(max_plate_nesting=2, num_particles=4000, vectorize_particles=True)
        chunks = []
        for seed in range(20):
            pyro.set_rng_seed(seed)
            chunks.append(-elbo.loss(m.model, m.guide, x))
    chunks = torch.tensor(chunks)
    mean, se = chunks.mean().item(), chunks.std().item() / math.sqrt(len(chunks))
    # A missing or per-image global KL (about 7 nats here) or a wrong categorical KL (about 5 nats) is far outside
    # this tolerance; the closed form's own Monte Carlo over beta (20,000 draws) adds a little noise.
    assert abs(mean - expected) < 4 * se + 0.02, (mean, expected, se)
    assert 4 * se < 0.5


def test_global_posterior_is_the_normalised_product_of_local_gaussians():
    m = tiny()
    groups = images().reshape(2, 3, *SHAPE)
    loc_i, prec_i = m.local_factors(groups, m.cluster_probs(m.encode(groups)[0]))
    loc, scale = m.combine(loc_i, prec_i)
    # log prod_i N(b; mu_i, 1/lam_i) - log N(b; mu, scale^2) must not depend on b (eq. 9 is the normalised product)
    b = torch.randn(50, 2, 1, 3, generator=torch.Generator().manual_seed(0)) * 2
    prod = dist.Normal(loc_i, prec_i.rsqrt()).log_prob(b).sum(-2, keepdim=True)
    diff = (prod - dist.Normal(loc, scale).log_prob(b)).squeeze(-2)  # (50, 2, 3)
    assert torch.allclose(diff, diff[:1].expand_as(diff), atol=1e-4)


def test_prior_factor_option_adds_unit_precision_to_the_global_posterior():
    without, with_prior = tiny(), tiny(global_prior_factor=True)
    x = images(3)
    loc0, scale0 = without.global_posterior(x)
    loc1, scale1 = with_prior.global_posterior(x)
    assert torch.allclose(scale1**-2, scale0**-2 + 1, rtol=1e-5)
    assert torch.allclose(loc1 * scale1**-2, loc0 * scale0**-2, rtol=1e-4, atol=1e-6)


def test_plates_hold_beta_per_group_and_z_d_x_per_image():
    m = tiny()
    x = images()
    guide = poutine.trace(poutine.enum(m.guide, first_available_dim=-3)).get_trace(x)
    model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x)
    plates = {name: {f.name for f in site["cond_indep_stack"]} for name, site in model.nodes.items()
              if site["type"] == "sample" and not name.startswith(("groups", "data"))}  # fmt: skip
    assert plates == {"beta": {"groups"}, "d": {"groups", "data"}, "z": {"groups", "data"}, "x": {"groups", "data"}}
    assert guide.nodes["beta"]["value"].shape == (2, 1, 3)
    assert guide.nodes["d"]["value"].shape == (3, 1, 1), "d is enumerated in parallel over the K clusters"
    order = [n for n, s in guide.nodes.items() if s["type"] == "sample" and n in ("z", "beta", "d")]
    assert order == ["z", "beta", "d"]


def test_prior_heads_are_separate_networks_per_cluster():
    m = tiny()
    beta = torch.randn(5, 3)
    loc, scale = m.local_prior(beta)
    assert loc.shape == scale.shape == (5, 3, 2) and (scale > 0).all()
    with torch.no_grad():
        m.prior_heads.w2[1].add_(1.0)  # changing head 1 leaves heads 0 and 2 untouched
    loc2, _ = m.local_prior(beta)
    assert torch.equal(loc2[:, 0], loc[:, 0]) and torch.equal(loc2[:, 2], loc[:, 2])
    assert not torch.allclose(loc2[:, 1], loc[:, 1])


def test_ml_vae_has_no_cluster_variable_and_matches_its_elbo():
    m = tiny(mixture=False)
    x = images()
    tr = poutine.trace(m.guide).get_trace(x)
    assert "d" not in tr.nodes and not hasattr(m, "cluster_net")
    pyro.set_rng_seed(0)
    loss = Trace_ELBO(max_plate_nesting=2).differentiable_loss(m.model, m.guide, x)
    pyro.set_rng_seed(0)
    tr = poutine.trace(m.guide).get_trace(x)
    z, beta = tr.nodes["z"]["value"], tr.nodes["beta"]["value"]
    groups = x.reshape(2, 3, *SHAPE)
    z_loc, z_scale = m.encode(groups)
    loc_i, prec_i = m.local_factors(groups, None)
    lam = prec_i.sum(1, keepdim=True)
    mu = (prec_i * loc_i).sum(1, keepdim=True) / lam
    out = m.decoder(torch.cat([z, beta.expand(2, 3, 3)], -1))
    loglik = dist.Normal(out, m.config.obs_scale).log_prob(groups).flatten(2).sum(-1)
    p_loc, p_scale = m.local_prior(beta)
    local = normal_lp(z, p_loc[..., 0, :], p_scale[..., 0, :]) - normal_lp(z, z_loc, z_scale)
    glob = normal_lp(beta, torch.zeros(()), torch.ones(())) - normal_lp(beta, mu, lam.rsqrt())
    assert loss.item() == pytest.approx(-((loglik + local).sum() + glob.sum()).item(), rel=1e-5)


def test_registry_builds_both_variants_with_the_papers_defaults():
    ug, ml = build_model("ug-vae"), build_model("ml-vae")
    cfg = ug.config
    assert (cfg.latent_dim, cfg.global_dim, cfg.num_clusters, cfg.group_size) == (10, 20, 10, 128)
    assert cfg.likelihood == "gaussian" and cfg.obs_scale**2 == pytest.approx(0.2)
    assert ug.default_lr == 5e-3 and isinstance(ug.default_loss(1), TraceEnum_ELBO)
    assert ml.config.mixture is False and ml.name == "ml-vae" and ug.name == "ug-vae"
    assert ug.encoder.net[1].out_features == 256 and ug.decoder.net[0].out_features == 256


@pytest.mark.parametrize(
    "options, message",
    [({"num_clusters": 0}, "num_clusters"), ({"group_size": 1}, "group_size"), ({"global_dim": 0}, "global_dim")],
)
def test_bad_config_is_a_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        UGVAEConfig(**options)


def test_batches_that_cannot_form_groups_are_clear_errors():
    m = tiny()
    with pytest.raises(GroupError, match="cannot be split into groups of 3"):
        TraceEnum_ELBO(max_plate_nesting=2).differentiable_loss(m.model, m.guide, images(7))
    with pytest.raises(GroupError, match="at least 2 observations"):
        m.global_posterior(images(1))
    with pytest.raises(GroupError, match="at least 2 observations"):
        m.global_posterior(images(4).reshape(4, 1, *SHAPE))
    with pytest.raises(GroupError, match="different sizes"):
        UGVAE.stack_groups([images(3), images(4)])
    with pytest.raises(GroupError, match="expected"):
        m.global_posterior(torch.rand(3, 1, 5, 5))


def test_sampling_grid_sweeps_beta_on_rows_and_z_around_the_cluster_mean_on_columns():
    m = tiny()
    grid = m.sampling_grid(cluster=1, rows=3, cols=5, beta_span=1.0, z_span=3.0)
    assert grid.shape == (3, 5, *SHAPE)
    beta = torch.full((3,), 1.0)  # last row: beta = +1 in every coordinate
    mu = m.local_prior(beta)[0][1]
    expected = m.decode(mu + 3.0, beta)  # last column: mu + 3 in every coordinate
    assert torch.allclose(grid[-1, -1], expected, atol=1e-6)
    first = m.decode(m.local_prior(-torch.ones(3))[0][1] - 3.0, -torch.ones(3))
    assert torch.allclose(grid[0, 0], first, atol=1e-6)
    with pytest.raises(ValueError, match="cluster 3"):
        m.sampling_grid(3)


def test_interpolation_corners_decode_the_two_posteriors():
    m = tiny()
    a, b = images(3), images(6)[3:]
    grid, betas = m.interpolate(a, b, i=1, j=2, steps=4)
    beta1, beta2 = m.global_posterior(a)[0][0], m.global_posterior(b)[0][0]
    z1, z2 = m.encode(a[1:2])[0][0], m.encode(b[2:3])[0][0]
    assert torch.allclose(betas[0], beta1) and torch.allclose(betas[-1], beta2)
    assert torch.allclose(grid[0, 0], m.decode(z1, beta1), atol=1e-6)
    assert torch.allclose(grid[-1, -1], m.decode(z2, beta2), atol=1e-6)
    assert torch.allclose(grid[-1, 0], m.decode(z1, beta2), atol=1e-6)


def test_samples_share_beta_within_each_group_of_rows():
    m = tiny(num_clusters=1)  # one cluster: images of a group differ only by z
    pyro.set_rng_seed(0)
    x = m.sample(6, per_group=3)
    assert x.shape == (6, *SHAPE)
    recon = m.reconstruct(images(4))
    assert recon.shape == (4, *SHAPE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loss_and_figures_run_on_cuda():
    m = tiny().to("cuda")
    x = images().to("cuda")
    loss = TraceEnum_ELBO(max_plate_nesting=2).differentiable_loss(m.model, m.guide, x)
    assert loss.is_cuda and torch.isfinite(loss)
    assert m.sampling_grid(0, 2, 2).is_cuda and m.sample(4).is_cuda
