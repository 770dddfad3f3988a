"""N-VAE: decoder input masking, the three objectives against hand-written closed forms, labels and test-time use."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, TraceMeanField_ELBO
from scipy.special import digamma, gammaln

from untwine.data import ImageDataset
from untwine.inference import TrainConfig, TrainingError, fit
from untwine.metrics import classification_accuracy
from untwine.pyro_models import NVAE, ConfigError, NVAEConfig, build_model, make_config
from untwine.pyro_models.nvae import SEMI_SUPERVISED_CLASS_WEIGHT

SHAPE = (1, 28, 28)
L, DC, DS = 3, 2, 4


def small(**kw):
    torch.manual_seed(0)
    base = dict(image_shape=SHAPE, num_classes=L, class_dim=DC, shared_dim=DS, network="mlp")
    base.update(kw)
    return NVAE(NVAEConfig(**base))


def normal_kl(loc, scale):
    loc, scale = loc.detach().double().numpy(), scale.detach().double().numpy()
    return 0.5 * (loc**2 + scale**2 - 1 - 2 * np.log(scale))


def dirichlet_kl(a, b):
    a0, b0 = a.sum(-1), b.sum(-1)
    return (
        gammaln(a0) - gammaln(a).sum(-1) - gammaln(b0) + gammaln(b).sum(-1)
        + ((a - b) * (digamma(a) - digamma(a0)[..., None])).sum(-1)
    )  # fmt: skip


def bernoulli_loglik(model, z, y, x):
    logits = model.decoder(model.decoder_input(*model.split(z), y)).double()
    x = x.double()
    return (x * torch.nn.functional.logsigmoid(logits) + (1 - x) * torch.nn.functional.logsigmoid(-logits)).sum(
        (-3, -2, -1)
    )


def replayed(model, x, y):
    guide_tr = pyro.poutine.trace(model.guide).get_trace(x, y)
    return guide_tr, pyro.poutine.replay(model.model, trace=guide_tr), pyro.poutine.replay(model.guide, trace=guide_tr)


def test_defaults_and_documented_choices():
    cfg = make_config("n-vae")
    assert (cfg.num_classes, cfg.class_dim, cfg.shared_dim, cfg.beta_c) == (10, 4, 2, 2.0)
    assert (cfg.alpha_p, cfg.q_concentration, cfg.objective, cfg.class_bias) == (1.0, 11.0, "surrogate", True)
    assert cfg.latent_dim == 42
    assert isinstance(build_model("n-vae").default_loss(10), TraceMeanField_ELBO)
    assert isinstance(small(semi_supervised=True).default_loss(10), TraceEnum_ELBO)


def test_decoder_input_keeps_the_true_block_and_its_bias_only():
    model = small()
    z_c = torch.arange(1.0, 1 + L * DC).repeat(2, 1)  # blocks [1,2], [3,4], [5,6]
    z_s = -torch.ones(2, DS)
    got = model.decoder_input(z_c, z_s, torch.tensor([2, 0]))
    want = torch.zeros(2, L * (1 + DC) + DS)
    want[0, 6:9] = torch.tensor([1.0, 5.0, 6.0])
    want[1, 0:3] = torch.tensor([1.0, 1.0, 2.0])
    want[:, 9:] = -1.0
    torch.testing.assert_close(got, want)
    no_bias = small(class_bias=False).decoder_input(z_c, z_s, torch.tensor([1, 1]))
    torch.testing.assert_close(no_bias[0, : L * DC], torch.tensor([0.0, 0.0, 3.0, 4.0, 0.0, 0.0]))
    # an enumerated label (L, 1) broadcasts against the batch
    assert model.decoder_input(z_c, z_s, torch.arange(L).reshape(L, 1)).shape == (L, 2, L * (1 + DC) + DS)


@pytest.mark.parametrize("objective", ["exact", "surrogate"])
def test_labelled_loss_is_the_papers_bound_in_closed_form(objective):
    model = small(objective=objective, beta_c=2.0)
    x = torch.rand(5, *SHAPE).round()
    y = torch.tensor([0, 1, 2, 1, 0])
    pyro.set_rng_seed(0)
    guide_tr, model_fn, guide_fn = replayed(model, x, y)
    loss = TraceMeanField_ELBO().differentiable_loss(model_fn, guide_fn, x, y).item()
    z = torch.cat([guide_tr.nodes["z_c"]["value"], guide_tr.nodes["z_s"]["value"]], -1)
    loc, scale, probs = model.heads(x)
    kl = normal_kl(loc, scale)
    kl_c, kl_s = kl[:, : L * DC].sum(-1), kl[:, L * DC :].sum(-1)
    bound = bernoulli_loglik(model, z, y, x).detach().numpy() - kl_s - 2.0 * kl_c
    p = probs.detach().double().numpy()
    if objective == "exact":  # eq. 3: - KL(q(pi|x) || Dir(alpha_p + c_y)) + log p(y)
        posterior = 1.0 + np.eye(L)[y.numpy()]
        bound = bound - dirichlet_kl((L + 1.0) * p, posterior) - math.log(L)
    else:  # eq. 7: + log q(y|x)
        bound = bound + np.log(p[np.arange(5), y.numpy()])
    assert loss == pytest.approx(-bound.sum(), rel=1e-5)


def test_unlabelled_images_sum_over_the_class_exactly():
    """With pi integrated out, an unlabelled image's bound is M2's: E_q(y)[log p(x|y,z) + log(1/L) - log q(y)] plus
    the latent terms, with no Dirichlet site whose KL would penalise a confident q(y|x)."""
    model = small(objective="exact")
    x = torch.rand(4, *SHAPE).round()
    # Replaying would fix y to one draw; instead rerun with the same seed: z is drawn in the same order and the
    # enumerated y draws nothing, so the ELBO's own guide pass sees the values traced here.
    pyro.set_rng_seed(1)
    guide_tr = pyro.poutine.trace(model.guide).get_trace(x, None)
    assert guide_tr.nodes["y"]["infer"]["enumerate"] == "parallel" and "pi" not in guide_tr.nodes
    pyro.set_rng_seed(1)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model.model, model.guide, x, None).item()
    z = torch.cat([guide_tr.nodes["z_c"]["value"], guide_tr.nodes["z_s"]["value"]], -1)
    loc, scale, probs = model.heads(x)
    q = probs.detach().double()
    total = torch.zeros(4, dtype=torch.float64)
    for k in range(L):  # E_q(y)[log p(x|y,z) + log p(y) - log q(y)], the sum the guide's enumeration makes exact
        yk = torch.full((4,), k)
        total += q[:, k] * (bernoulli_loglik(model, z, yk, x).detach() - math.log(L) - q[:, k].log())
    lp = torch.distributions
    log_pz = lp.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = lp.Normal(loc, scale).log_prob(z).sum(-1)
    z_c = slice(0, L * DC)
    log_pz_c, log_qz_c = (
        lp.Normal(0.0, 1.0).log_prob(z[:, z_c]).sum(-1),
        lp.Normal(loc, scale).log_prob(z)[:, z_c].sum(-1),
    )
    latent = (log_pz - log_qz) + (2.0 - 1.0) * (log_pz_c - log_qz_c)  # beta_c = 2 on the class blocks
    bound = total + latent.detach().double()
    assert loss == pytest.approx(-bound.sum().item(), rel=1e-5)


def test_beta_c_scales_only_the_class_blocks_on_both_sides():
    model = small(beta_c=3.0)
    x, y = torch.rand(2, *SHAPE), torch.tensor([0, 2])
    guide_tr, model_fn, _ = replayed(model, x, y)
    model_tr = pyro.poutine.trace(model_fn).get_trace(x, y)
    for tr in (guide_tr, model_tr):
        assert tr.nodes["z_c"]["scale"] == 3.0 and tr.nodes["z_s"]["scale"] == 1.0
    assert guide_tr.nodes["y"]["is_observed"] and model_tr.nodes["x"]["scale"] == 1.0
    assert [f.name for f in model_tr.nodes["z_c"]["cond_indep_stack"]] == ["data"]


def test_the_classifier_term_is_a_guide_factor_and_the_encoder_runs_once_per_step():
    """The surrogate's log q(y|x) depends on the guide alone: it is the guide's factor "y", computed from the guide's
    own encoder pass, so the model needs no second pass (and no hidden state shared with the guide)."""
    model = small()
    x, y = torch.rand(3, *SHAPE).round(), torch.tensor([0, 2, 1])
    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1))
    pyro.set_rng_seed(0)
    guide_tr = pyro.poutine.trace(model.guide).get_trace(x, y)
    model_tr = pyro.poutine.trace(pyro.poutine.replay(model.model, trace=guide_tr)).get_trace(x, y)
    assert "y" not in model_tr.nodes and guide_tr.nodes["y"]["infer"]["is_auxiliary"]
    probs = model.classify(x).detach()
    expected = (-probs[torch.arange(3), y].log()).tolist()
    assert guide_tr.nodes["y"]["fn"].log_factor.detach().tolist() == pytest.approx(expected, rel=1e-5)
    calls.clear()
    model.default_loss(3).differentiable_loss(model.model, model.guide, x, y)
    assert len(calls) == 1


def test_semi_supervised_batches_split_into_labelled_and_enumerated_plates():
    model = small(semi_supervised=True)
    x, y = torch.rand(6, *SHAPE).round(), torch.tensor([0, -1, 2, -1, -1, 1])
    guide_tr, model_fn, _ = replayed(model, x, y)
    model_tr = pyro.poutine.trace(model_fn).get_trace(x, y)
    assert model_tr.nodes["x"]["value"].shape[0] == 3 and model_tr.nodes["x_u"]["value"].shape[0] == 3
    assert [f.name for f in model_tr.nodes["z_s_u"]["cond_indep_stack"]] == ["unlabelled"]
    assert not model_tr.nodes["y_u"]["is_observed"] and guide_tr.nodes["y"]["is_observed"]
    loss = model.default_loss(6).differentiable_loss(model.model, model.guide, x, y)
    loss.backward()
    assert torch.isfinite(loss)


def test_class_weight_scales_exactly_the_labelled_classifier_term():
    """class_weight multiplies the labelled images' log q(y|x) and nothing else: two losses with the same draws differ
    by (a - b) * sum log q(y|x), computed here from the classifier alone."""
    model = small(semi_supervised=True).double()  # float64: the difference is under 1 % of the loss
    x, y = torch.rand(6, *SHAPE, dtype=torch.float64).round(), torch.tensor([0, -1, 2, -1, -1, 1])
    known = y >= 0
    log_qy = model.classify(x[known]).log().gather(1, y[known].unsqueeze(1)).sum().item()
    losses = {}
    for weight in (1.0, 7.5):
        model.config.class_weight = weight
        pyro.set_rng_seed(3)
        losses[weight] = model.default_loss(6).differentiable_loss(model.model, model.guide, x, y).item()
    assert losses[1.0] - losses[7.5] == pytest.approx((1.0 - 7.5) * -log_qy, rel=1e-9)
    guide_tr = pyro.poutine.trace(model.guide).get_trace(x, y)
    assert guide_tr.nodes["y"]["scale"] == 7.5
    assert guide_tr.nodes["z_s"]["scale"] == 1.0 and guide_tr.nodes["z_s_u"]["scale"] == 1.0


def test_class_weight_defaults_to_the_papers_weight_supervised_and_the_measured_one_semi_supervised():
    assert NVAEConfig().classifier_weight == 1.0
    assert NVAEConfig(semi_supervised=True).classifier_weight == SEMI_SUPERVISED_CLASS_WEIGHT
    assert NVAEConfig(semi_supervised=True, objective="exact").classifier_weight == 1.0
    assert NVAEConfig(semi_supervised=True, class_weight=3).classifier_weight == 3.0
    guide_tr = pyro.poutine.trace(small().guide).get_trace(torch.rand(2, *SHAPE), torch.tensor([0, 1]))
    assert guide_tr.nodes["y"]["scale"] == 1.0


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "10"])
def test_a_bad_class_weight_is_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match=r"^class_weight must be a positive finite number or None, got [^\n]+$"):
        NVAEConfig(class_weight=bad)


def test_class_weight_is_refused_with_the_exact_objective():
    with pytest.raises(ConfigError, match="objective='surrogate' only"):
        NVAEConfig(objective="exact", class_weight=2.0)
    assert NVAEConfig(objective="exact", class_weight=1.0).classifier_weight == 1.0


def test_bad_labels_are_refused_with_the_allowed_range():
    model = small()
    x = torch.rand(2, *SHAPE)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*from 0 to 3"):
        model.model(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integers"):
        model.guide(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model.model(x, torch.tensor([-1, 0]))  # -1 means unlabelled only in semi-supervised mode
    data = ImageDataset(torch.zeros(8, *SHAPE, dtype=torch.uint8), torch.arange(8), 255.0, "eight-classes")
    with pytest.raises(TrainingError, match="eight-classes: labels must lie in"):
        fit(model, data, TrainConfig(epochs=1, batch_size=4, device="cpu"), progress=False)
    with pytest.raises(ConfigError, match="objective"):
        NVAEConfig(objective="elbo")
    with pytest.raises(ConfigError, match="num_classes"):
        NVAEConfig(num_classes=1)


def test_test_time_pieces_use_the_inferred_or_requested_class():
    model = small().eval()
    x = torch.rand(4, *SHAPE)
    probs = model.classify(x)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    torch.testing.assert_close(model.reconstruct(x), model.decode(model.encode(x)[0], probs.argmax(-1)))
    assert model.sample(7, sigma=1.4).shape == (7, *SHAPE)
    values = torch.linspace(-3, 3, 5)
    rows = model.traverse_class(1, values)
    assert rows.shape == (DC, 5, *SHAPE)
    # sweeping class 1's own block changes the image; its first row at value v equals decoding that code directly
    z = torch.zeros(5, model.latent_dim)
    z[:, 1 * DC] = values
    torch.testing.assert_close(rows[0], model.decode(z, torch.ones(5, dtype=torch.long)))
    assert not torch.allclose(rows[0, 0], rows[0, -1])
    # another class's block is masked out: sweeping it leaves class 1's image unchanged
    z_other = torch.zeros(5, model.latent_dim)
    z_other[:, 0] = values
    torch.testing.assert_close(model.decode(z_other, torch.ones(5, dtype=torch.long))[0], rows[0, 2])
    assert model.traverse_class(0, values, shared=True).shape == (DS, 5, *SHAPE)


@pytest.mark.slow
def test_training_on_real_mnist_learns_to_classify(mnist_train):
    train = mnist_train.random_subset(3000, seed=0)
    held_out = mnist_train.random_subset(1000, seed=1)
    model = NVAE(NVAEConfig(image_shape=SHAPE))
    before = classification_accuracy(model, held_out)["accuracy"]
    fit(model, train, TrainConfig(epochs=3, batch_size=64, lr=2e-3, seed=0, device="cpu"), progress=False)
    after = classification_accuracy(model, held_out)["accuracy"]
    # measured 0.53 here: the classifier shares its trunk with the VAE, whose gradient dominates early training
    assert before < 0.3 and after > 0.4, (before, after)


@pytest.mark.slow
def test_semi_supervised_training_uses_the_unlabelled_images(mnist_train):
    train = mnist_train.random_subset(3000, seed=0)
    partly = train.hide_labels(300, seed=0)
    assert (partly.targets >= 0).sum() == 300 and torch.equal(partly.targets[partly.targets >= 0],
                                                               train.targets[partly.targets >= 0])  # fmt: skip
    model = NVAE(NVAEConfig(image_shape=SHAPE, semi_supervised=True))
    result = fit(model, partly, TrainConfig(epochs=3, batch_size=64, lr=2e-3, seed=0, device="cpu"), progress=False)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] - 50, losses  # the unlabelled images' enumerated bound is being optimised


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nvae_step_on_cuda():
    model = small(semi_supervised=True).to("cuda")
    x, y = torch.rand(6, *SHAPE, device="cuda").round(), torch.tensor([0, -1, 2, -1, 1, 0], device="cuda")
    loss = model.default_loss(6).differentiable_loss(model.model, model.guide, x, y)
    loss.backward()
    assert torch.isfinite(loss) and model.sample(3).is_cuda
