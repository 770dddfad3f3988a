"""ISA-VAE: the Lp-nested prior inside the VAE's model/guide pair, learned exponents, and ISA-beta-TCVAE."""

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from scipy.special import gammaln

from untwine.data import ImageDataset
from untwine.distributions import LpNestedSymmetric
from untwine.inference import TCDecomposedELBO, TrainConfig, fit
from untwine.pyro_models import (
    ISAVAE,
    ConfigError,
    ISAVAEConfig,
    LpNestedPrior,
    build_model,
    make_config,
)
from untwine.pyro_models.isavae import MIN_EXPONENT

SHAPE = (1, 28, 28)


def small_isa(**kw):
    torch.manual_seed(0)
    base = dict(image_shape=SHAPE, latent_dim=6, subspace_sizes=(2, 4), network="mlp")
    base.update(kw)
    return ISAVAE(ISAVAEConfig(**base))


def isa_log_density(z, p0, exponents, sizes, s):
    """log p_ISA(z) written out from eqs. 7-11 for the two-level layout, in float64 (independent of the class)."""
    z = z.double()
    n = sum(sizes)
    parts, start, log_area = [], 0, n * math.log(2.0)
    for size, p in zip(sizes, exponents):
        block = z[..., start : start + size].abs()
        parts.append(block.pow(p).sum(-1).pow(p0 / p))
        log_area += size * gammaln(1 / p) - (size - 1) * math.log(p) - gammaln(size / p)
        start += size
    log_area += sum(gammaln(size / p0) for size in sizes) - (len(sizes) - 1) * math.log(p0) - gammaln(n / p0)
    radius = torch.stack(parts, -1).sum(-1)
    return math.log(p0) - radius / s - gammaln(n / p0) - (n / p0) * math.log(s) - log_area


def test_defaults_follow_the_papers_dsprites_setting():
    cfg = make_config("isa-vae")
    assert cfg.latent_dim == 20 and cfg.subspace_sizes == (4, 4, 4, 4, 4)
    assert (cfg.p0, cfg.exponent, cfg.kl_weight, cfg.likelihood) == (2.1, 2.2, 1.0, "bernoulli")
    assert (cfg.exponent_init, cfg.exponent_lr, cfg.learn_exponents) == (2.0, 5e-4, False)
    model = build_model("isa-vae")
    layers = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]  # Chen et al.'s MLP
    assert [(m.in_features, m.out_features) for m in layers] == [(4096, 1200), (1200, 1200), (1200, 40)]
    torch.testing.assert_close(model.exponents, torch.tensor([2.1, 2.2, 2.2, 2.2, 2.2, 2.2]))
    assert model.subspaces() == [list(range(k, k + 4)) for k in range(0, 20, 4)]


def test_model_site_z_carries_the_isa_prior_and_beta_scales_both_sides():
    model = small_isa(kl_weight=2.5)
    x = torch.rand(5, *SHAPE)
    guide_tr = pyro.poutine.trace(model.guide).get_trace(x)
    model_tr = pyro.poutine.trace(pyro.poutine.replay(model.model, trace=guide_tr)).get_trace(x)
    site = model_tr.nodes["z"]
    assert isinstance(site["fn"], LpNestedSymmetric)
    assert guide_tr.nodes["z"]["scale"] == 2.5 and site["scale"] == 2.5 and model_tr.nodes["x"]["scale"] == 1.0
    assert [f.name for f in site["cond_indep_stack"]] == ["data"]
    z = site["value"]
    expected = isa_log_density(z, 2.1, [2.2, 2.2], (2, 4), 2.0)
    torch.testing.assert_close(site["fn"].log_prob(z).double(), expected, rtol=1e-5, atol=1e-4)


def test_trace_elbo_is_the_beta_weighted_monte_carlo_bound_of_eq_12():
    model = small_isa(kl_weight=3.0)
    x = torch.rand(4, *SHAPE).round()
    pyro.set_rng_seed(1)
    guide_tr = pyro.poutine.trace(model.guide).get_trace(x)
    z = guide_tr.nodes["z"]["value"]
    loc, scale = model.encode(x)
    log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1).double()
    logits = model.decoder(z)
    log_px = (x * torch.nn.functional.logsigmoid(logits) + (1 - x) * torch.nn.functional.logsigmoid(-logits)).sum(
        (-3, -2, -1)
    )
    log_p = isa_log_density(z, 2.1, [2.2, 2.2], (2, 4), 2.0)
    expected = -(log_px.double() + 3.0 * (log_p - log_q)).sum()
    loss = Trace_ELBO().differentiable_loss(
        pyro.poutine.replay(model.model, trace=guide_tr), pyro.poutine.replay(model.guide, trace=guide_tr), x
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_learned_exponents_move_with_their_own_rate_while_p0_stays_fixed():
    model = small_isa(learn_exponents=True)
    torch.testing.assert_close(model.exponents, torch.tensor([2.1, 2.0, 2.0]))
    groups = model.param_groups(1e-3)
    assert len(groups) == 2 and groups[1]["lr"] == 5e-4 and groups[1]["params"] == [model.prior.raw_exponents]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    x = torch.rand(8, *SHAPE).round()
    opt = torch.optim.Adam(groups, lr=1e-3)
    loss = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    loss.backward()
    assert model.prior.raw_exponents.grad is not None and torch.isfinite(model.prior.raw_exponents.grad).all()
    opt.step()
    after = model.exponents
    assert after[0] == pytest.approx(2.1)
    # one Adam step moves each learned exponent by about lr * softplus'(r) <= 5e-4
    steps = (after[1:] - 2.0).abs()
    assert (steps > 1e-4).all() and (steps < 6e-4).all(), steps


def test_exponents_stay_positive_however_far_the_raw_parameter_goes():
    prior = LpNestedPrior([[2], [2]], [2.1, 2.0, 2.0], learned=[False, True, True])
    with torch.no_grad():
        prior.raw_exponents.fill_(-40.0)
    assert (prior.exponents[1:] >= MIN_EXPONENT).all()
    assert torch.isfinite(prior().log_prob(torch.randn(3, 4))).all()


def test_fit_records_the_exponent_trajectory_and_resume_restores_it(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = ImageDataset((torch.rand(64, *SHAPE, generator=g) > 0.5).to(torch.uint8), torch.zeros(64).long(), 1.0, "r")
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=0, device="cpu")
    model = small_isa(learn_exponents=True, exponent_lr=1e-2)
    result = fit(model, data, cfg, out_dir=tmp_path, progress=False)
    rows = result.history
    assert [set(r) >= {"p0", "p1", "p2"} for r in rows] == [True, True]
    assert rows[-1]["p1"] == pytest.approx(model.exponents[1].item()) and rows[-1]["p0"] == pytest.approx(2.1)
    assert rows[0]["p1"] != rows[1]["p1"]
    header = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert {"p0", "p1", "p2"} <= set(header)
    again = small_isa(learn_exponents=True, exponent_lr=1e-2)
    fit(again, data, TrainConfig(epochs=3, batch_size=16, lr=1e-3, seed=0, device="cpu"), out_dir=tmp_path,
        resume=True, progress=False)  # fmt: skip
    resumed = [r["p1"] for r in fit_rows(tmp_path)]
    assert resumed[:2] == pytest.approx([r["p1"] for r in rows]) and len(resumed) == 3
    assert again.exponents[1].item() == pytest.approx(resumed[-1])


def fit_rows(folder):
    lines = (folder / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, map(float, line.split(",")))) for line in lines[1:]]


def test_isa_beta_tcvae_with_unit_weights_is_the_plain_elbo_on_the_same_draw():
    torch.manual_seed(0)
    model = build_model("isa-beta-tcvae", image_shape=SHAPE, latent_dim=6, subspace_sizes=(3, 3), network="mlp")
    assert isinstance(model, ISAVAE) and model.objective.tc_weight == 6.0  # the ISA pair with the TC objective
    assert isinstance(model.default_loss(100), TCDecomposedELBO) and model.config.kl_weight == 1.0
    x = torch.rand(6, *SHAPE).round()
    pyro.set_rng_seed(3)
    guide_tr = pyro.poutine.trace(model.guide).get_trace(x)
    replayed = (pyro.poutine.replay(model.model, trace=guide_tr), pyro.poutine.replay(model.guide, trace=guide_tr))
    tc = TCDecomposedELBO(100, mi_weight=1.0, tc_weight=1.0, dw_weight=1.0).differentiable_loss(*replayed, x)
    plain = Trace_ELBO().differentiable_loss(*replayed, x)
    assert tc.item() == pytest.approx(plain.item(), rel=1e-5)
    weighted = model.default_loss(100).differentiable_loss(*replayed, x)
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-5)


def test_prior_samples_decode_and_the_model_follows_dtype_and_device():
    model = small_isa().to(torch.float64).eval()
    assert model.prior().exponents.dtype == torch.float64 and model.prior().scale.dtype == torch.float64
    images = model.sample(5)
    assert images.shape == (5, *SHAPE) and images.dtype == torch.float64


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="add up to 8, but latent_dim is 20"):
        ISAVAEConfig(subspace_sizes=(4, 4))
    with pytest.raises(ConfigError, match="p0 must be positive"):
        ISAVAEConfig(p0=0.0)
    with pytest.raises(ConfigError, match="exponent_lr"):
        ISAVAEConfig(exponent_lr=-1.0)
    assert ISAVAEConfig(latent_dim=10).subspace_sizes == (4, 4, 2)
    with pytest.raises(ConfigError, match="3 inner nodes but 2 exponents"):
        LpNestedPrior([[2], [2]], [2.0, 2.0])
    with pytest.raises(ConfigError, match="no setting 'p0'"):
        make_config("vae", p0=2.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_isa_vae_trains_a_step_on_cuda():
    model = small_isa(learn_exponents=True).to("cuda")
    x = torch.rand(8, *SHAPE, device="cuda").round()
    loss = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    loss.backward()
    assert model.prior.raw_exponents.grad.is_cuda and torch.isfinite(loss)
