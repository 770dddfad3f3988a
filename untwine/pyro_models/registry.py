"""Name -> model/guide pair, its config, its objective and the paper's defaults, for the CLI, run folders and Python.

An entry pairs a :class:`~untwine.pyro_models.base.Model` class with an optional
:class:`~untwine.inference.objectives.Objective`: ``beta-tcvae`` is the VAE pair with the TC-decomposed objective,
``isa-beta-tcvae`` the ISA-VAE pair with it. :func:`register` adds an entry from Python; :func:`model_spec` also
resolves ``"package.module:ClassName"`` (the ``module:attr`` convention of uvicorn and gunicorn) to any importable
:class:`~untwine.pyro_models.base.Model` subclass, so an unregistered model trains with ``untwine train mod:Class``.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from untwine.inference.objectives import OBJECTIVES, FactorObjective, Objective, TCObjective
from untwine.pyro_models.base import ConfigError, Model
from untwine.pyro_models.factorvae import FactorVAE, FactorVAEConfig
from untwine.pyro_models.isavae import ISAVAE, ISAVAEConfig
from untwine.pyro_models.nvae import NVAE, NVAEConfig
from untwine.pyro_models.ugvae import UGVAE, UGVAEConfig
from untwine.pyro_models.vae import VAE, VAEConfig


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered model.

    :param cls: the :class:`~untwine.pyro_models.base.Model` subclass.
    :param config_cls: its config dataclass.
    :param defaults: config values that differ from the dataclass defaults for this entry.
    :param summary: one line for ``untwine list``.
    :param objective: the :class:`~untwine.inference.objectives.Objective` the pair is trained with (``None``: the
        model's own ``default_loss``).
    :param objective_defaults: objective settings that differ from its dataclass defaults.
    """

    cls: type[Model]
    config_cls: type
    defaults: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    objective: type[Objective] | None = None
    objective_defaults: dict[str, Any] = field(default_factory=dict)

    def config_fields(self) -> list[dataclasses.Field]:
        """The model settings a user sets (``image_shape`` comes from the data)."""
        return [f for f in dataclasses.fields(self.config_cls) if f.name != "image_shape"]

    def objective_fields(self) -> list[dataclasses.Field]:
        return list(dataclasses.fields(self.objective)) if self.objective is not None else []


MODELS: dict[str, ModelSpec] = {
    "vae": ModelSpec(VAE, VAEConfig, {}, "VAE, Normal prior (Kingma & Welling 2014)"),
    "beta-vae": ModelSpec(VAE, VAEConfig, {"kl_weight": 4.0}, "beta-VAE, KL weighted by beta=4 (Higgins et al. 2017)"),
    "beta-tcvae": ModelSpec(
        VAE, VAEConfig, {}, "beta-TCVAE: the VAE pair, total correlation weighted by beta=6 (Chen et al. 2018)",
        TCObjective,
    ),
    "factor-vae": ModelSpec(
        FactorVAE, FactorVAEConfig, {},
        "FactorVAE: the VAE pair, TC by a discriminator weighted by gamma=5 (Kim & Mnih 2018)",
        FactorObjective,
    ),
    "isa-vae": ModelSpec(
        ISAVAE, ISAVAEConfig, {}, "ISA-VAE, Lp-nested independent-subspace prior, 5x4 layout (Stuehmer et al.)"
    ),
    "isa-beta-tcvae": ModelSpec(
        ISAVAE, ISAVAEConfig, {}, "ISA-beta-TCVAE: the ISA-VAE pair with the TC-decomposed objective", TCObjective
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
}  # fmt: skip


def register(
    name: str,
    cls: type[Model],
    config_cls: type | None = None,
    defaults: dict[str, Any] | None = None,
    objective: type[Objective] | None = None,
    objective_defaults: dict[str, Any] | None = None,
    summary: str = "",
) -> ModelSpec:
    """Register ``cls`` under ``name`` for :func:`build_model`, the run folders and ``untwine train NAME``.

    :param config_cls: its config dataclass (default ``cls.Config``).
    :raises ConfigError: when ``cls`` is not a :class:`~untwine.pyro_models.base.Model` subclass, ``config_cls`` is
        not a dataclass, or ``name`` is taken by a built-in model.
    """
    spec = _spec_of(cls, config_cls, defaults, objective, objective_defaults, summary, where=f"register({name!r})")
    if name in _BUILT_IN:
        raise ConfigError(f"{name!r} is a built-in model; register yours under another name")
    if ":" in name:
        raise ConfigError(f"model names may not contain ':' (reserved for module:Class), got {name!r}")
    MODELS[name] = spec
    return spec


def _spec_of(cls, config_cls, defaults, objective, objective_defaults, summary, where: str) -> ModelSpec:
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ConfigError(f"{where}: {cls!r} is not a subclass of untwine.pyro_models.Model; derive your model from it")
    config_cls = config_cls if config_cls is not None else cls.Config
    if not dataclasses.is_dataclass(config_cls):
        raise ConfigError(f"{where}: the config {config_cls!r} of {cls.__name__} must be a dataclass")
    if objective is not None and cls.default_loss is not Model.default_loss:
        raise ConfigError(f"{where}: {cls.__name__} defines its own default_loss, so it cannot be paired with the "
                          f"objective {objective.name!r}; drop one of them")  # fmt: skip
    doc = (cls.__doc__ or "").strip().splitlines()
    return ModelSpec(cls, config_cls, dict(defaults or {}), summary or (doc[0] if doc else cls.__name__), objective,
                     dict(objective_defaults or {}))  # fmt: skip


def model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``, or for ``"package.module:ClassName"`` the class it names.

    A module is imported from ``sys.path`` (the current folder first, as ``python -m`` does), so a model in a file
    ``mymodels.py`` beside the command trains as ``mymodels:LaplaceVAE``.

    :raises ConfigError: unknown name, a module that does not import, or an attribute that is not a Model.
    """
    if name in MODELS:
        return MODELS[name]
    if ":" not in name:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}, or give package.module:Class")
    module_name, _, attr = name.partition(":")
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"cannot import module {module_name!r} for model {name!r} ({err}); check the name and that "
                          "it is importable from the current folder")  # fmt: skip
    cls = getattr(module, attr, None)  # a missing attribute is reported below with the module's name
    if cls is None:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}; give package.module:ClassName")
    return _spec_of(cls, None, None, None, None, "", where=name)


def make_config(name: str, **overrides: Any) -> Any:
    """Config of model ``name``: dataclass defaults, then the entry's defaults, then ``overrides``.

    ``None`` values in ``overrides`` are ignored, so CLI flags that were not given keep the defaults. Objective
    settings are not accepted here; :func:`make_settings` takes both.
    """
    return make_settings(name, **overrides)[0]


def make_settings(name: str, **overrides: Any) -> tuple[Any, Objective | None]:
    """Config and objective of model ``name``, ``overrides`` split between them by field name.

    :raises ConfigError: for a setting neither has (listing the settings there are), or a bad value (from the
        dataclasses' ``__post_init__``).
    """
    spec = model_spec(name)
    model_fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    objective_fields = {f.name for f in spec.objective_fields()}
    values, objective_values = dict(spec.defaults), dict(spec.objective_defaults)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in model_fields:
            values[key] = value
        elif key in objective_fields:
            objective_values[key] = value
        else:
            known = ", ".join(sorted((model_fields - {"image_shape"}) | objective_fields))
            raise ConfigError(f"model {name!r} has no setting {key!r}; settings: {known}")
    objective = spec.objective(**objective_values) if spec.objective is not None else None
    return spec.config_cls(**values), objective


def build_model(name: str, config: Any = None, objective: Objective | dict | None = None, **overrides: Any) -> Model:
    """Instantiate model ``name`` from ``config`` (a dataclass or dict) or from defaults plus ``overrides``.

    :param objective: the entry's objective settings (an :class:`~untwine.inference.objectives.Objective` or a dict
        of its fields; default: the entry's defaults).
    """
    spec = model_spec(name)
    if config is None:
        config, default_objective = make_settings(name, **overrides)
    else:
        if isinstance(config, dict):
            config = make_config(name, **config)
        default_objective = make_settings(name)[1]
    if isinstance(objective, dict):
        objective = make_objective(objective)
    objective = objective if objective is not None else default_objective
    model = spec.cls(config)
    model.objective = objective
    # the registry name (e.g. beta-vae rather than the class's vae) goes into checkpoints, so a run reloads as itself
    model.name = name
    return model


def make_objective(settings: dict[str, Any]) -> Objective:
    """An objective from what a run folder records (``{"name": ..., **fields}``)."""
    values = dict(settings)
    kind = values.pop("name", None)
    if kind not in OBJECTIVES:
        raise ConfigError(f"unknown objective {kind!r}; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[kind](**values)


#: settings of model configs written before the KL weight and the TC weights had their own names
_RENAMED_TC = {"alpha": "mi_weight", "beta": "tc_weight", "gamma": "dw_weight", "estimator": "estimator"}


def upgrade_settings(model: str, model_config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    """``(model_config, objective settings, changed)`` of a run written before objectives were separate: ``beta``
    was the KL weight (``kl_weight`` now), or, for β-TCVAE entries, the TC weight with ``alpha`` and ``gamma``
    (now the objective's ``tc_weight``, ``mi_weight``, ``dw_weight``)."""
    config = dict(model_config)
    spec = MODELS.get(model)
    if "beta" not in config or spec is None or "kl_weight" not in {f.name for f in dataclasses.fields(spec.config_cls)}:
        return config, None, False
    if spec.objective is TCObjective:
        objective = {
            "name": TCObjective.name,
            **{new: config.pop(old) for old, new in _RENAMED_TC.items() if old in config},
        }
        config["kl_weight"] = 1.0
        return config, objective, True
    config["kl_weight"] = config.pop("beta")
    return config, None, True


_BUILT_IN = frozenset(MODELS)
