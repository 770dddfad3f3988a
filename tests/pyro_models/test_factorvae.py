"""FactorVAE: the VAE pair with a discriminator trained by the auxiliary optimiser, paired with FactorObjective."""

import pytest
import torch

from untwine.data.base import ImageDataset
from untwine.inference import TrainConfig, fit
from untwine.inference.density_ratio import DensityRatioTCELBO
from untwine.inference.objectives import FactorObjective
from untwine.inference.train import load_checkpoint, make_optimizer
from untwine.pyro_models import VAE, ConfigError, FactorVAE, FactorVAEConfig, VAEConfig, build_model, make_settings


def small(seed=0):
    torch.manual_seed(seed)
    cfg = FactorVAEConfig(image_shape=(1, 28, 28), latent_dim=3, discriminator_units=16, discriminator_layers=2)
    model = FactorVAE(cfg)
    model.objective = FactorObjective(gamma=4.0)
    return model


def digits(n=48):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 1, 28, 28, generator=g) > 0.7).to(torch.uint8) * 255
    return ImageDataset(images, torch.zeros(n, dtype=torch.long), 255, "toy")


def test_the_registry_pairs_the_vae_with_the_density_ratio_objective_at_gamma_5():
    config, objective = make_settings("factor-vae")
    assert isinstance(objective, FactorObjective) and objective.gamma == 5.0 and config.kl_weight == 1.0
    model = build_model("factor-vae", image_shape=(1, 28, 28), gamma=2.0)
    loss = model.default_loss(100)
    assert isinstance(loss, DensityRatioTCELBO) and loss.gamma == 2.0 and loss.discriminator is model.discriminator


def test_the_discriminator_has_its_own_optimiser_with_kim_and_mnih_settings():
    model = small()
    (group,) = model.auxiliary_param_groups(1e-3)
    assert group["lr"] == 1e-4 and group["betas"] == (0.5, 0.9)
    assert {id(p) for p in group["params"]} == {id(p) for p in model.discriminator.parameters()}
    held = {id(p) for g in make_optimizer(model, 1e-3).param_groups for p in g["params"]}
    assert held.isdisjoint(id(p) for p in model.discriminator.parameters())
    assert held == {id(p) for p in model.parameters()} - {id(p) for p in model.discriminator.parameters()}


def test_the_auxiliary_loss_trains_only_the_discriminator():
    model = small()
    loss = model.auxiliary_loss(torch.rand(8, 1, 28, 28))
    loss.backward()
    assert loss.shape == () and loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=0.2)
    assert all(p.grad is None for p in model.encoder.parameters()), "the codes are detached"
    assert all(p.grad is not None for p in model.discriminator.parameters())


def test_factor_objective_needs_a_model_with_a_discriminator_and_a_non_negative_gamma():
    with pytest.raises(ConfigError, match="needs a model with a discriminator"):
        FactorObjective().build(VAE(VAEConfig(image_shape=(1, 28, 28))), 10)
    with pytest.raises(ConfigError, match="gamma must be non-negative"):
        FactorObjective(gamma=-1)
    with pytest.raises(ConfigError, match="discriminator_units and discriminator_layers must be positive"):
        FactorVAEConfig(discriminator_layers=0)


@pytest.mark.slow
def test_an_interrupted_factor_vae_run_resumes_to_the_uninterrupted_run(tmp_path):
    """Both optimisers, the discriminator and the sampling streams are in the checkpoint: resuming mid-epoch gives
    the weights of the uninterrupted run bit for bit."""
    data = digits()
    cfg = TrainConfig(epochs=2, batch_size=16, seed=0, device="cpu")
    full = small()
    fit(full, data, cfg, out_dir=tmp_path / "full", progress=False)
    fit(small(), data, cfg, out_dir=tmp_path / "part", progress=False, max_steps=4)
    resumed = small(seed=1)
    fit(resumed, data, cfg, out_dir=tmp_path / "part", resume=True, progress=False)
    for name, value in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    state = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    assert tuple(state["auxiliary_optimizer"]["param_groups"][0]["betas"]) == (0.5, 0.9)
