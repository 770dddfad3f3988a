"""Pyro model/guide pairs, one module per paper, and their encoder/decoder networks."""

from untwine.pyro_models.isavae import ISAVAE, ISABetaTCVAE, ISATCVAEConfig, ISAVAEConfig, LpNestedPrior
from untwine.pyro_models.networks import build_networks, default_network
from untwine.pyro_models.nvae import NVAE, NVAEConfig
from untwine.pyro_models.registry import MODELS, build_model, make_config, model_spec
from untwine.pyro_models.tcvae import BetaTCVAE, TCVAEConfig
from untwine.pyro_models.ugvae import UGVAE, GroupError, UGVAEConfig
from untwine.pyro_models.vae import VAE, ConfigError, NormalPrior, VAEConfig

__all__ = [
    "MODELS",
    "BetaTCVAE",
    "ISABetaTCVAE",
    "ISATCVAEConfig",
    "ISAVAE",
    "ISAVAEConfig",
    "LpNestedPrior",
    "NVAE",
    "NVAEConfig",
    "TCVAEConfig",
    "UGVAE",
    "UGVAEConfig",
    "GroupError",
    "VAE",
    "ConfigError",
    "NormalPrior",
    "VAEConfig",
    "build_model",
    "build_networks",
    "default_network",
    "make_config",
    "model_spec",
]
