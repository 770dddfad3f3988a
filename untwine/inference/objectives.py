r"""Objectives as settings: what a registry entry names as its loss, what a run folder records, what builds the ELBO.

A model/guide pair and its objective are separate choices: β-TCVAE is the VAE pair trained with the TC-decomposed
ELBO, ISA-β-TCVAE the ISA-VAE pair trained with it. An :class:`Objective` is a small dataclass of the loss's
settings (checked in ``__post_init__``) whose :meth:`~Objective.build` makes the Pyro ELBO for a model and a
dataset size; ``name`` identifies it in ``config.json``. :data:`OBJECTIVES` lists them by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from pyro.infer import ELBO
from torch import nn

from untwine.inference.density_ratio import DensityRatioTCELBO
from untwine.inference.tc_elbo import ESTIMATORS, TCDecomposedELBO


class Objective:
    """Settings of an objective; subclasses are dataclasses with a ``name`` and :meth:`build`."""

    name: ClassVar[str]

    def build(self, model: nn.Module, dataset_size: int) -> ELBO:
        """The Pyro ELBO for ``model`` trained on ``dataset_size`` images."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """``{"name": ..., **fields}``, as a run folder records it."""
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass
class TCObjective(Objective):
    r"""The TC-decomposed ELBO of β-TCVAE (Chen et al. 2018, "ELBO TC-decomposition"; ISA-VAE paper, eq. 3) at the
    model's ``latent_site``:

    .. math::

        \mathcal{L} = \mathbb{E}\log p(x \mid z) - \alpha\, I_q(z; n) - \beta\, \mathrm{TC}(z)
            - \gamma \sum_j \mathrm{KL}\big(q(z_j) \,\|\, p(z_j)\big).

    :param mi_weight: α, weight of the index-code mutual information (1 in the paper).
    :param tc_weight: β, weight of the total correlation (6 in the paper's dSprites runs).
    :param dw_weight: γ, weight of the dimension-wise KL (1 in the paper).
    :param estimator: ``"mss"`` (minibatch stratified sampling) or ``"mws"`` (the paper's formula); see
        :func:`~untwine.inference.tc_elbo.aggregate_log_density`.
    """

    name: ClassVar[str] = "tc-decomposed"
    mi_weight: float = 1.0
    tc_weight: float = 6.0
    dw_weight: float = 1.0
    estimator: str = "mss"

    def __post_init__(self):
        from untwine.pyro_models.base import ConfigError

        if self.mi_weight < 0 or self.dw_weight < 0:
            raise ConfigError(
                f"mi_weight and dw_weight must be non-negative, got {self.mi_weight} and {self.dw_weight}"
            )
        if not self.tc_weight > 0:
            raise ConfigError(f"tc_weight must be positive, got {self.tc_weight}")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")

    def build(self, model: nn.Module, dataset_size: int) -> TCDecomposedELBO:
        return TCDecomposedELBO(
            dataset_size, mi_weight=self.mi_weight, tc_weight=self.tc_weight, dw_weight=self.dw_weight,
            sites=(model.latent_site,), estimator=self.estimator,
        )  # fmt: skip


@dataclass
class FactorObjective(Objective):
    r"""FactorVAE's objective (Kim & Mnih 2018, eq. 2) at the model's ``latent_site``: the ELBO minus
    :math:`\gamma` times the total correlation estimated by the model's ``discriminator``
    (:class:`~untwine.inference.density_ratio.DensityRatioTCELBO`),

    .. math::

        \mathcal{L}_\gamma = \mathcal{L} - \gamma\, \mathbb{E}_{q(z)}\big[\log D(z) - \log(1 - D(z))\big].

    :param gamma: :math:`\gamma \ge 0`. The ELBO's KL already holds one total correlation, so the TC's weight in
        all is :math:`1 + \gamma`, which is β-TCVAE's ``tc_weight``: the default :math:`\gamma = 5` matches
        β-TCVAE's default 6 and lies inside the ISA-VAE paper's Table 1 range (1–10). Kim & Mnih's own dSprites
        runs used larger values (up to 100) with a conv net; sweeps cover Table 1's range.
    """

    name: ClassVar[str] = "factor-tc"
    gamma: float = 5.0

    def __post_init__(self):
        from untwine.pyro_models.base import ConfigError

        if not self.gamma >= 0:
            raise ConfigError(f"gamma must be non-negative, got {self.gamma}")

    def build(self, model: nn.Module, dataset_size: int) -> DensityRatioTCELBO:
        discriminator = getattr(model, "discriminator", None)
        if not isinstance(discriminator, nn.Module):
            from untwine.pyro_models.base import ConfigError

            raise ConfigError(f"the {self.name!r} objective needs a model with a discriminator (FactorVAE); "
                              f"{type(model).__name__} has none")  # fmt: skip
        return DensityRatioTCELBO(discriminator, self.gamma, sites=(model.latent_site,))


#: objectives by the name a registry entry and ``config.json`` use
OBJECTIVES: dict[str, type[Objective]] = {TCObjective.name: TCObjective, FactorObjective.name: FactorObjective}
