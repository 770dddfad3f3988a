import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.nn import functional as F

from untwine.inference import TrainConfig, fit
from untwine.pyro_models import ConfigError
from untwine.pyro_models.cvae import CVAE, CVAEConfig


def small_cvae(shape=(1, 28, 28), **kw):
    torch.manual_seed(0)
    return CVAE(CVAEConfig(image_shape=shape, latent_dim=3, **kw))


def by_hand(cvae, x, y, z):
    """log p(x|z,y), log N(z; 0, I), log q(z|x,y) and the analytic KL, per image, written out independently."""
    one_hot = F.one_hot(y, cvae.config.num_classes).float().expand(*z.shape[:-1], -1)
    logits = cvae.decoder(torch.cat([z, one_hot], -1))
    loglik = (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum((-3, -2, -1))
    loc, scale = cvae.encode(x, y)
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    kl = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum(-1)
    return loglik, log_prior, log_q, kl


def guide_sample(cvae, x, y, seed):
    pyro.set_rng_seed(seed)
    return poutine.trace(cvae.guide).get_trace(x, y).nodes["z"]["value"]


def test_default_loss_is_minus_expected_loglik_plus_analytic_kl_on_the_guide_sample():
    cvae = small_cvae()
    x, y = torch.rand(5, 1, 28, 28), torch.tensor([0, 3, 3, 9, 1])
    loss_fn = cvae.default_loss(100)
    assert isinstance(loss_fn, TraceMeanField_ELBO)
    with torch.no_grad():
        pyro.set_rng_seed(7)
        loss = loss_fn.loss(cvae.model, cvae.guide, x, y)
        z = guide_sample(cvae, x, y, seed=7)  # the draw the ELBO used: the guide's first random call
        loglik, _, _, kl = by_hand(cvae, x, y, z)
    assert loss == pytest.approx(-(loglik - kl).sum().item(), rel=1e-5)
    assert kl.sum() > 1e-3  # the KL term is really there: dropping it would break the equality


def test_trace_elbo_scores_prior_and_posterior_at_the_same_sample():
    cvae = small_cvae()
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([2, 2, 5, 7])
    with torch.no_grad():
        pyro.set_rng_seed(3)
        loss = Trace_ELBO().loss(cvae.model, cvae.guide, x, y)
        loglik, log_prior, log_q, _ = by_hand(cvae, x, y, guide_sample(cvae, x, y, seed=3))
    assert loss == pytest.approx(-(loglik + log_prior - log_q).sum().item(), rel=1e-5)


def test_vectorised_particles_broadcast_the_label_and_average_the_particles():
    cvae = small_cvae()
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([1, 4, 8])
    particles = 5
    elbo = TraceMeanField_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        pyro.set_rng_seed(4)
        loss = elbo.loss(cvae.model, cvae.guide, x, y)
        pyro.set_rng_seed(4)
        with pyro.plate("num_particles_vectorized", particles, dim=-2):
            z = poutine.trace(cvae.guide).get_trace(x, y).nodes["z"]["value"]
        assert z.shape == (particles, 3, 3)
        loglik, _, _, kl = by_hand(cvae, x, y, z)
    assert loss == pytest.approx(-(loglik.sum(-1).mean() - kl.sum()).item(), rel=1e-5)


def test_sites_and_plates():
    cvae = small_cvae()
    x, y = torch.rand(6, 1, 28, 28), torch.arange(6)
    guide_tr = poutine.trace(cvae.guide).get_trace(x, y)
    model_tr = poutine.trace(poutine.replay(cvae.model, trace=guide_tr)).get_trace(x, y)
    assert model_tr.nodes["x"]["is_observed"] and not model_tr.nodes["z"]["is_observed"]
    for tr in (guide_tr, model_tr):
        assert [f.name for f in tr.nodes["z"]["cond_indep_stack"]] == ["data"]
        assert tr.nodes["z"]["fn"].event_shape == (3,)
    torch.testing.assert_close(model_tr.nodes["z"]["value"], guide_tr.nodes["z"]["value"])


def test_the_label_conditions_decoder_and_encoder():
    cvae = small_cvae()
    x, z = torch.rand(4, 1, 28, 28), torch.randn(4, 3)
    y, other = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 6, 7, 8])
    torch.testing.assert_close(cvae.decode(z, y), cvae.decode(z, y.clone()))
    changed = (cvae.decode(z, y) - cvae.decode(z, other)).abs().amax((1, 2, 3))
    assert (changed > 1e-4).all()
    loc_a, scale_a = cvae.encode(x, y)
    loc_b, scale_b = cvae.encode(x, other)
    assert ((loc_a - loc_b).abs().amax(-1) > 1e-4).all() and ((scale_a - scale_b).abs().amax(-1) > 1e-5).all()
    # the decoder reads [z, onehot(y)], nothing else
    expected = torch.sigmoid(cvae.decoder(torch.cat([z, F.one_hot(other, 10).float()], -1)))
    torch.testing.assert_close(cvae.decode(z, other), expected)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 32, 32)])
def test_conv_family_also_conditions_the_encoder_on_the_label(shape):
    cvae = small_cvae(shape, network="conv")
    assert not cvae.encoder.flat
    x = torch.rand(2, *shape)
    a = cvae.encode(x, torch.tensor([0, 0]))[0]
    b = cvae.encode(x, torch.tensor([4, 4]))[0]
    assert ((a - b).abs().amax(-1) > 1e-5).all()
    assert cvae.reconstruct(x, torch.tensor([0, 1])).shape == (2, *shape)


def test_sample_draws_codes_with_standard_deviation_sigma_and_the_given_labels():
    cvae = small_cvae()
    labels = torch.tensor([3, 1, 4, 1, 5])
    torch.manual_seed(11)
    got = cvae.sample(5, y=labels, sigma=1.7)
    torch.manual_seed(11)
    expected = cvae.decode(1.7 * torch.randn(5, 3), labels)
    torch.testing.assert_close(got, expected)
    assert got.shape == (5, 1, 28, 28) and ((got >= 0) & (got <= 1)).all()
    # an int label is shared by all samples; None cycles through the classes
    torch.manual_seed(2)
    same = cvae.sample(4, y=6)
    torch.manual_seed(2)
    torch.testing.assert_close(same, cvae.decode(torch.randn(4, 3), torch.full((4,), 6)))
    torch.manual_seed(2)
    cycled = cvae.sample(12)
    torch.manual_seed(2)
    torch.testing.assert_close(cycled, cvae.decode(torch.randn(12, 3), torch.arange(12) % 10))
    with pytest.raises(ValueError, match="one label per sample"):
        cvae.sample(3, y=torch.tensor([1, 2]))


def test_reconstruct_decodes_the_posterior_mean_with_the_label():
    cvae = small_cvae()
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([9, 0, 4])
    torch.testing.assert_close(cvae.reconstruct(x, y), cvae.decode(cvae.encode(x, y)[0], y))


def test_dtype_follows_the_module_and_gaussian_likelihood_returns_means():
    cvae = small_cvae(likelihood="gaussian").to(torch.float64)
    out = cvae.sample(2, y=1)
    assert out.dtype == torch.float64
    z = torch.randn(2, 3, dtype=torch.float64)
    y = torch.tensor([1, 2])
    torch.testing.assert_close(cvae.decode(z, y), cvae.decoder(torch.cat([z, F.one_hot(y, 10).double()], -1)))
    loss = TraceMeanField_ELBO().differentiable_loss(cvae.model, cvae.guide, torch.rand(2, 1, 28, 28).double(), y)
    assert loss.dtype == torch.float64 and torch.isfinite(loss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_cuda():
    cvae = small_cvae().to("cuda")
    x, y = torch.rand(4, 1, 28, 28, device="cuda"), torch.tensor([0, 1, 2, 3], device="cuda")
    loss = TraceMeanField_ELBO().differentiable_loss(cvae.model, cvae.guide, x, y)
    assert loss.device.type == "cuda"
    assert cvae.sample(3, y=2, sigma=1.4).device.type == "cuda"


def test_labels_are_required_and_checked():
    cvae = small_cvae(num_classes=5)
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="conditioned on the label"):
        cvae.guide(x)
    with pytest.raises(ValueError, match="integers"):
        cvae.model(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        cvae.guide(x, torch.tensor([0, 5]))


def test_config_validation_names_the_bad_field():
    with pytest.raises(ConfigError, match="latent_dim"):
        CVAEConfig(latent_dim=0)
    with pytest.raises(ConfigError, match="num_classes"):
        CVAEConfig(num_classes=1)
    with pytest.raises(ConfigError, match="likelihood"):
        CVAEConfig(likelihood="poisson")


def test_fit_trains_it_on_real_mnist(mnist_train):
    data = mnist_train.random_subset(512, seed=0)
    cvae = CVAE(CVAEConfig(image_shape=data.image_shape))
    result = fit(cvae, data, TrainConfig(epochs=3, batch_size=128, device="cpu"), progress=False)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] - 100  # nats per image: about 522 -> 277 when measured
