import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from untwine.inference.tc_elbo import TCDecomposedELBO, aggregate_log_density, tc_terms
from untwine.pyro_models import VAE, VAEConfig, build_model

N, D = 20_000, 5


@pytest.fixture(scope="module")
def posteriors():
    """N correlated diagonal-Gaussian posteriors, so the aggregate posterior has a clear total correlation."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(D, D, generator=g) * 0.6 + torch.eye(D)
    loc = torch.randn(N, D, generator=g) @ mix.T
    scale = 0.1 + 0.3 * torch.rand(N, D, generator=g)
    return loc, scale


def exact_log_q(z, loc, scale, chunk=4000):
    """log q(z) and log q(z_j) against all N components, by brute force over chunks of components."""
    joint, marg = [], []
    for s in range(0, len(loc), chunk):
        lp = torch.distributions.Normal(loc[s : s + chunk], scale[s : s + chunk]).log_prob(z[:, None])
        joint.append(torch.logsumexp(lp.sum(-1), 1))
        marg.append(torch.logsumexp(lp, 1))
    n = len(loc)
    return torch.logsumexp(torch.stack(joint), 0) - math.log(n), torch.logsumexp(torch.stack(marg), 0) - math.log(n)


def tc_errors(posteriors, batch, estimator, repeats=2):
    loc, scale = posteriors
    g = torch.Generator().manual_seed(batch)
    errors = []
    for _ in range(repeats):
        idx = torch.randperm(N, generator=g)[:batch]
        z = loc[idx] + scale[idx] * torch.randn(batch, D, generator=g)
        lq, lqj = exact_log_q(z, loc, scale)
        est, est_j = aggregate_log_density(z, loc[idx], scale[idx], N, estimator)
        errors.append(((est - est_j.sum(-1)) - (lq - lqj.sum(-1))).mean().item())
    return sum(errors) / repeats


def test_mss_total_correlation_is_within_half_a_nat_at_large_batch(posteriors):
    err_large = tc_errors(posteriors, 2048, "mss")
    err_small = tc_errors(posteriors, 64, "mss")
    assert abs(err_large) < 0.5, err_large
    assert abs(err_large) < abs(err_small), (err_small, err_large)


@pytest.mark.parametrize("batch", [64, 2048])
def test_mws_total_correlation_is_biased_by_about_d_minus_one_log_n(posteriors, batch):
    err = tc_errors(posteriors, batch, "mws")
    low, high = (D - 1) * math.log(N) - 1, D * math.log(N) - math.log(batch) + 1
    assert low < err < high, (err, low, high)


def test_mss_self_weight_sits_on_the_diagonal():
    # two far-apart posteriors: each sample's density comes from its own component, weighted 1/N
    loc = torch.tensor([[0.0], [100.0]])
    scale = torch.ones(2, 1)
    z = loc.clone()
    log_qz, _ = aggregate_log_density(z, loc, scale, dataset_size=10, estimator="mss")
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor(0.0)) - math.log(10)
    torch.testing.assert_close(log_qz, expected.expand(2))


def test_estimators_reduce_to_the_exact_value_on_the_full_dataset(posteriors):
    loc, scale = posteriors[0][:300], posteriors[1][:300]
    z = loc + scale * torch.randn(300, D)
    lq, lqj = exact_log_q(z, loc, scale)
    est, est_j = aggregate_log_density(z, loc, scale, 300, "mss")
    torch.testing.assert_close(est, lq, rtol=0, atol=1e-4)
    torch.testing.assert_close(est_j, lqj, rtol=0, atol=1e-4)


def test_terms_add_up_to_the_kl_estimate_per_sample(posteriors):
    loc, scale = posteriors[0][:512].double(), posteriors[1][:512].double()
    z = loc + scale * torch.randn_like(loc)
    log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    terms = tc_terms(z, loc, scale, log_pz, N, "mss")
    kl = dist.Normal(loc, scale).log_prob(z).sum(-1) - log_pz
    torch.testing.assert_close(terms["mi"] + terms["tc"] + terms["dwkl"], kl, rtol=0, atol=1e-10)


def small_vae():
    torch.manual_seed(0)
    return VAE(VAEConfig(image_shape=(1, 28, 28), latent_dim=4, network="mlp"))


def loss_and_grads(elbo, model, x):
    model.zero_grad()
    pyro.set_rng_seed(7)
    loss = elbo.differentiable_loss(model.model, model.guide, x)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_unit_weights_equal_the_ordinary_elbo_and_its_gradients():
    model = small_vae()
    x = torch.rand(32, 1, 28, 28)
    loss_tc, grads_tc = loss_and_grads(TCDecomposedELBO(1000), model, x)
    loss, grads = loss_and_grads(Trace_ELBO(), model, x)
    torch.testing.assert_close(loss_tc, loss)
    for a, b in zip(grads_tc, grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_weights_multiply_their_own_term():
    model = small_vae()
    x = torch.rand(32, 1, 28, 28)
    elbo = TCDecomposedELBO(1000, mi_weight=2.0, tc_weight=6.0, dw_weight=0.5)
    weighted, _ = loss_and_grads(elbo, model, x)
    plain, _ = loss_and_grads(Trace_ELBO(), model, x)
    # recompute the terms independently from the same guide draw
    pyro.set_rng_seed(7)
    guide_tr = pyro.poutine.trace(model.guide).get_trace(x)
    z = guide_tr.nodes["z"]["value"]
    loc, scale = model.encode(x)
    terms = tc_terms(z, loc, scale, dist.Normal(0.0, 1.0).log_prob(z).sum(-1), 1000)
    extra = (1.0 * terms["mi"] + 5.0 * terms["tc"] - 0.5 * terms["dwkl"]).sum()
    torch.testing.assert_close(weighted, plain + extra.detach(), rtol=1e-5, atol=1e-3)


def test_the_weighted_objective_is_the_elbo_plus_its_correction_with_the_same_gradients():
    # the correction is a differentiable function of the guide's parameters and the sample: its gradient must be
    # the gradient of the weighted terms recomputed from the same draw
    model = small_vae()
    x = torch.rand(32, 1, 28, 28)
    elbo = TCDecomposedELBO(1000, mi_weight=2.0, tc_weight=6.0, dw_weight=0.5)
    weighted, grads = loss_and_grads(elbo, model, x)
    model.zero_grad()
    pyro.set_rng_seed(7)
    guide_tr = pyro.poutine.trace(model.guide).get_trace(x)
    model_tr = pyro.poutine.trace(pyro.poutine.replay(model.model, trace=guide_tr)).get_trace(x)
    z = guide_tr.nodes["z"]["value"]
    loc, scale = guide_tr.nodes["z"]["fn"].base_dist.loc, guide_tr.nodes["z"]["fn"].base_dist.scale
    terms = tc_terms(z, loc, scale, dist.Normal(0.0, 1.0).log_prob(z).sum(-1), 1000)
    expected = -(model_tr.log_prob_sum() - guide_tr.log_prob_sum())
    expected = expected + (1.0 * terms["mi"] + 5.0 * terms["tc"] - 0.5 * terms["dwkl"]).sum()
    expected.backward()
    torch.testing.assert_close(weighted, expected.detach(), rtol=1e-5, atol=1e-3)
    for got, want in zip(grads, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert set(elbo.last_terms) == {"mi", "tc", "dwkl"}


def test_pyro_svi_steps_on_the_weighted_objective():
    # SVI calls loss_and_grads, which must follow the weighted objective, not the plain ELBO
    x = torch.rand(16, 1, 28, 28)
    model = small_vae()
    elbo = TCDecomposedELBO(1000, mi_weight=2.0, tc_weight=6.0, dw_weight=0.5)
    expected, expected_grads = loss_and_grads(elbo, model, x)
    model.zero_grad()
    pyro.set_rng_seed(7)
    value = elbo.loss_and_grads(model.model, model.guide, x)
    assert isinstance(value, float) and value == pytest.approx(expected.item(), rel=1e-6)
    for got, want in zip([p.grad for p in model.parameters()], expected_grads):
        torch.testing.assert_close(got, want)
    pyro.set_rng_seed(7)
    assert elbo.loss(model.model, model.guide, x) == pytest.approx(expected.item(), rel=1e-6)


def test_works_with_a_prior_that_does_not_factorise():
    class CorrelatedPrior(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("cov", torch.eye(4) + 0.5)

        def forward(self):
            return dist.MultivariateNormal(torch.zeros(4, device=self.cov.device), self.cov)

    model = VAE(VAEConfig(image_shape=(1, 28, 28), latent_dim=4, network="mlp"), prior=CorrelatedPrior())
    x = torch.rand(16, 1, 28, 28)
    loss_tc, _ = loss_and_grads(TCDecomposedELBO(500), model, x)
    loss, _ = loss_and_grads(Trace_ELBO(), model, x)
    torch.testing.assert_close(loss_tc, loss)


def test_beta_tcvae_model_keeps_the_kl_site_unscaled_and_uses_the_tc_objective():
    torch.manual_seed(0)
    model = build_model("beta-tcvae", image_shape=(1, 28, 28), latent_dim=4, network="mlp")
    x = torch.rand(8, 1, 28, 28)
    tr = pyro.poutine.trace(model.guide).get_trace(x)
    assert tr.nodes["z"]["scale"] == 1.0
    loss = model.default_loss(60_000)
    assert isinstance(loss, TCDecomposedELBO) and (loss.mi_weight, loss.tc_weight, loss.dw_weight) == (1.0, 6.0, 1.0)
    assert loss.dataset_size == 60_000 and loss.estimator == "mss"


def test_clear_errors_for_sites_it_cannot_decompose():
    model = small_vae()
    x = torch.rand(8, 1, 28, 28)
    with pytest.raises(ValueError, match="not in both"):
        TCDecomposedELBO(100, sites=("w",)).differentiable_loss(model.model, model.guide, x)
    with pytest.raises(ValueError, match="estimator"):
        TCDecomposedELBO(100, estimator="exact")
    with pytest.raises(TypeError, match="beta= is now tc_weight="):
        TCDecomposedELBO(100, beta=6.0)
    with pytest.raises(ValueError, match="smaller than the batch"):
        aggregate_log_density(torch.zeros(5, 2), torch.zeros(5, 2), torch.ones(5, 2), 3)

    def laplace_guide(x, y=None):
        pyro.module("vae", model)
        loc, scale = model.encode(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Laplace(loc, scale).to_event(1))

    with pytest.raises(ValueError, match="diagonal Normal guide"):
        TCDecomposedELBO(100).differentiable_loss(model.model, laplace_guide, x)
