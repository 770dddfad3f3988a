"""Name -> model class, config class and the paper's defaults, for the CLI and ``build_model``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from untwine.pyro_models.isavae import ISAVAE, ISABetaTCVAE, ISATCVAEConfig, ISAVAEConfig
from untwine.pyro_models.nvae import NVAE, NVAEConfig
from untwine.pyro_models.tcvae import BetaTCVAE, TCVAEConfig
from untwine.pyro_models.ugvae import UGVAE, UGVAEConfig
from untwine.pyro_models.vae import VAE, ConfigError, VAEConfig


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered model.

    :param cls: the ``nn.Module`` with ``model``/``guide``.
    :param config_cls: its config dataclass.
    :param defaults: config values that differ from the dataclass defaults for this entry.
    :param summary: one line for ``untwine list``.
    """

    cls: Callable[..., nn.Module]
    config_cls: type
    defaults: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


MODELS: dict[str, ModelSpec] = {
    "vae": ModelSpec(VAE, VAEConfig, {}, "VAE, Normal prior (Kingma & Welling 2014)"),
    "beta-vae": ModelSpec(VAE, VAEConfig, {"beta": 4.0}, "beta-VAE, KL scaled by beta=4 (Higgins et al. 2017)"),
    "beta-tcvae": ModelSpec(
        BetaTCVAE, TCVAEConfig, {}, "beta-TCVAE, total correlation weighted by beta=6 (Chen et al. 2018)"
    ),
    "isa-vae": ModelSpec(
        ISAVAE, ISAVAEConfig, {}, "ISA-VAE, Lp-nested independent-subspace prior, 5x4 layout (Stuehmer et al.)"
    ),
    "isa-beta-tcvae": ModelSpec(
        ISABetaTCVAE, ISATCVAEConfig, {}, "ISA-beta-TCVAE, the ISA prior with the TC-decomposed ELBO"
    ),
    "n-vae": ModelSpec(
        NVAE, NVAEConfig, {}, "N-VAE, class-dependent + shared latents, Dirichlet class prior (Antoran & Miguel 2019)"
    ),
    "ug-vae": ModelSpec(
        UGVAE, UGVAEConfig, {}, "UG-VAE, global latent per group + mixture local prior driven by it (Peis et al.)"
    ),
    "ml-vae": ModelSpec(
        UGVAE, UGVAEConfig, {"mixture": False}, "ML-VAE on random groups: UG-VAE without the cluster variable"
    ),
}


def model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``, or a :class:`ConfigError` listing the known names."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def make_config(name: str, **overrides: Any) -> Any:
    """Config of model ``name``: dataclass defaults, then the entry's defaults, then ``overrides``.

    ``None`` values in ``overrides`` are ignored, so CLI flags that were not given keep the defaults.
    """
    spec = model_spec(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    values = dict(spec.defaults)
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in fields:
            raise ConfigError(f"model {name!r} has no setting {key!r}; settings: {', '.join(sorted(fields))}")
        values[key] = value
    return spec.config_cls(**values)


def build_model(name: str, config: Any = None, **overrides: Any) -> nn.Module:
    """Instantiate model ``name`` from ``config`` (a dataclass or dict) or from defaults plus ``overrides``."""
    spec = model_spec(name)
    if config is None:
        config = make_config(name, **overrides)
    elif isinstance(config, dict):
        config = make_config(name, **config)
    model = spec.cls(config)
    # the registry name (e.g. beta-vae rather than the class's vae) goes into checkpoints, so a run reloads as itself
    model.name = name
    return model
