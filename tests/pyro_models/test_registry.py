"""The registry: entries pair a model/guide pair with an objective, models written outside the package register or
resolve as ``module:Class``, and run folders written before objectives had their own names still read."""

import sys

import pytest
import torch
from custom_models import LAPLACE

from untwine.inference import TCDecomposedELBO, TCObjective
from untwine.inference.elbo import SyncFreeTrace_ELBO
from untwine.pyro_models import (
    ISAVAE,
    MODELS,
    VAE,
    ConfigError,
    Model,
    VAEConfig,
    build_model,
    make_settings,
    model_spec,
    register,
)
from untwine.pyro_models.registry import upgrade_settings


@pytest.fixture
def laplace_module(tmp_path, monkeypatch):
    (tmp_path / "laplace_models.py").write_text(LAPLACE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "laplace_models"
    sys.modules.pop("laplace_models", None)


def test_beta_tcvae_is_the_vae_pair_with_the_tc_objective():
    model = build_model("beta-tcvae", image_shape=(1, 28, 28), latent_dim=4, network="mlp")
    assert type(model) is VAE and model.config.kl_weight == 1.0
    assert model.objective == TCObjective(mi_weight=1.0, tc_weight=6.0, dw_weight=1.0, estimator="mss")
    loss = model.default_loss(1000)
    assert isinstance(loss, TCDecomposedELBO) and (loss.mi_weight, loss.tc_weight, loss.dw_weight) == (1.0, 6.0, 1.0)
    isa = build_model("isa-beta-tcvae", tc_weight=2.0)
    assert type(isa) is ISAVAE and isa.objective.tc_weight == 2.0
    assert isinstance(build_model("vae").default_loss(10), SyncFreeTrace_ELBO)


def test_settings_are_split_between_the_config_and_the_objective_by_name():
    config, objective = make_settings("beta-tcvae", latent_dim=3, tc_weight=4.0, estimator="mws", kl_weight=None)
    assert config.latent_dim == 3 and config.kl_weight == 1.0
    assert (objective.tc_weight, objective.estimator) == (4.0, "mws")
    with pytest.raises(ConfigError, match="no setting 'tc_weight'; settings: .*kl_weight"):
        make_settings("beta-vae", tc_weight=2.0)
    with pytest.raises(ConfigError, match="tc_weight must be positive"):
        make_settings("beta-tcvae", tc_weight=0.0)
    with pytest.raises(ConfigError, match="estimator must be one of"):
        make_settings("beta-tcvae", estimator="exact")


def test_a_model_module_outside_the_package_resolves_as_module_colon_class(laplace_module):
    spec = model_spec(f"{laplace_module}:LaplaceVAE")
    assert spec.cls.__name__ == "LaplaceVAE" and spec.config_cls is VAEConfig
    assert spec.summary == "VAE with a Laplace(0, 1) prior on every latent coordinate."
    model = build_model(f"{laplace_module}:LaplaceVAE", latent_dim=3)
    assert model.name == f"{laplace_module}:LaplaceVAE" and isinstance(
        model.prior().base_dist, torch.distributions.Laplace
    )


@pytest.mark.parametrize(
    "name, match",
    [
        ("no_such_module_anywhere:Model", "cannot import module 'no_such_module_anywhere'"),
        ("untwine.pyro_models:Nothing", "has no attribute 'Nothing'"),
        ("untwine.pyro_models:VAEConfig", "is not a subclass of untwine.pyro_models.Model"),
        ("gan", "unknown model 'gan'; choose one of: vae, "),
    ],
)
def test_names_that_are_not_models_are_one_line_config_errors(name, match):
    with pytest.raises(ConfigError, match=match):
        model_spec(name)


def test_register_adds_a_model_with_its_defaults_and_refuses_built_in_names(laplace_module, monkeypatch):
    monkeypatch.setattr("untwine.pyro_models.registry.MODELS", dict(MODELS))
    from untwine.pyro_models import registry

    cls = model_spec(f"{laplace_module}:LaplaceVAE").cls
    spec = register("laplace-vae", cls, defaults={"latent_dim": 5}, objective=TCObjective, summary="Laplace")
    assert registry.MODELS["laplace-vae"] is spec
    model = build_model("laplace-vae", tc_weight=3.0)
    assert model.config.latent_dim == 5 and model.objective.tc_weight == 3.0 and model.name == "laplace-vae"
    with pytest.raises(ConfigError, match="'vae' is a built-in model"):
        register("vae", cls)
    with pytest.raises(ConfigError, match="not a subclass of untwine.pyro_models.Model"):
        register("plain", torch.nn.Linear)
    with pytest.raises(ConfigError, match="may not contain ':'"):
        register("a:b", cls)
    from untwine.pyro_models import NVAE

    with pytest.raises(ConfigError, match="NVAE defines its own default_loss, so it cannot be paired"):
        register("tc-nvae", NVAE, objective=TCObjective)


def test_run_settings_of_the_old_layout_read_in_todays_names():
    """Before objectives had their own entry, ``beta`` was the KL weight of a VAE config and the TC weight (with
    ``alpha``, ``gamma``, ``estimator``) of a beta-TCVAE config."""
    old_tc = {"image_shape": [1, 64, 64], "latent_dim": 10, "beta": 3.0, "alpha": 0.5, "gamma": 1.0,
              "estimator": "mws", "likelihood": "bernoulli", "obs_scale": 0.1, "network": "auto"}  # fmt: skip
    config, objective, changed = upgrade_settings("beta-tcvae", old_tc)
    assert changed and config["kl_weight"] == 1.0 and "beta" not in config and "alpha" not in config
    assert objective == {"name": "tc-decomposed", "mi_weight": 0.5, "tc_weight": 3.0, "dw_weight": 1.0,
                         "estimator": "mws"}  # fmt: skip
    config, objective, changed = upgrade_settings("beta-vae", {"latent_dim": 10, "beta": 4.0})
    assert changed and config == {"latent_dim": 10, "kl_weight": 4.0} and objective is None
    unchanged = {"latent_dim": 10, "kl_weight": 4.0}
    assert upgrade_settings("beta-vae", unchanged) == (unchanged, None, False)
    assert upgrade_settings("ug-vae", {"global_dim": 20}) == ({"global_dim": 20}, None, False)


def test_every_registered_model_is_a_model_and_asks_only_for_registered_evaluations_and_figures():
    from untwine.evaluations import check_registered

    for name, spec in MODELS.items():
        assert issubclass(spec.cls, Model), name
        check_registered(build_model(name, image_shape=(1, 28, 28), network="mlp"))
