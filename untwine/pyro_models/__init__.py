"""Pyro model/guide pairs, one module per paper, on one base class (:mod:`untwine.pyro_models.base`), with their
encoder/decoder networks and the registry of named models."""

from untwine.pyro_models.base import (
    ClassPosterior,
    ConfigError,
    GlobalLatent,
    ImageConfig,
    Model,
    Subspaces,
    image_likelihood,
    positive_scale,
)
from untwine.pyro_models.cvae import CVAE, CVAEConfig
from untwine.pyro_models.factorvae import Discriminator, FactorVAE, FactorVAEConfig
from untwine.pyro_models.isavae import ISAVAE, ISAVAEConfig, LpNestedPrior
from untwine.pyro_models.networks import build_networks, default_network
from untwine.pyro_models.nvae import NVAE, NVAEConfig
from untwine.pyro_models.registry import (
    MODELS,
    ModelSpec,
    build_model,
    make_config,
    make_objective,
    make_settings,
    model_spec,
    register,
)
from untwine.pyro_models.ugvae import UGVAE, GroupError, UGVAEConfig
from untwine.pyro_models.vae import VAE, NormalPrior, VAEConfig

__all__ = [
    "CVAE",
    "MODELS",
    "ClassPosterior",
    "ConfigError",
    "CVAEConfig",
    "Discriminator",
    "FactorVAE",
    "FactorVAEConfig",
    "GlobalLatent",
    "GroupError",
    "ISAVAE",
    "ISAVAEConfig",
    "ImageConfig",
    "LpNestedPrior",
    "Model",
    "ModelSpec",
    "NVAE",
    "NVAEConfig",
    "NormalPrior",
    "Subspaces",
    "UGVAE",
    "UGVAEConfig",
    "VAE",
    "VAEConfig",
    "build_model",
    "build_networks",
    "default_network",
    "image_likelihood",
    "make_config",
    "make_objective",
    "make_settings",
    "model_spec",
    "positive_scale",
    "register",
]
