r"""FactorVAE (Kim & Mnih 2018): the VAE pair, plus a discriminator that estimates the total correlation.

The model/guide pair is :class:`~untwine.pyro_models.vae.VAE`'s; what makes it FactorVAE is the objective
(:class:`~untwine.inference.objectives.FactorObjective`, building
:class:`~untwine.inference.density_ratio.DensityRatioTCELBO`),

.. math::

    \mathcal{L}_\gamma = \frac{1}{N}\sum_n \Big(\mathbb{E}_{q(z_n \mid x_n)} \log p(x_n \mid z_n)
        - \mathrm{KL}\big(q(z_n \mid x_n) \,\|\, p(z_n)\big)\Big)
        - \gamma\, \mathbb{E}_{q(z)}\Big[\log \frac{D(z)}{1 - D(z)}\Big]
    \qquad \text{(Kim \& Mnih, eq. 2)},

and the discriminator :math:`D` this class holds. :meth:`FactorVAE.auxiliary_loss` is its update (Kim & Mnih,
algorithm 2): after every ELBO step the training loop's second optimiser takes one step on the discriminator's
cross-entropy, the batch's first half encoded as samples of :math:`q(z)` and its second half with each dimension
permuted across the half-batch as samples of :math:`\prod_j q(z_j)`. The codes are fresh samples of the encoder
just updated (Kim & Mnih reuse the ELBO step's sample: one encoder pass more, no state shared between the two
updates).

Defaults: the discriminator of the ISA-VAE paper's appendix A.4 (five hidden layers of 1000 LeakyReLU(0.2) units, two
logits), trained with Kim & Mnih's optimiser settings (Adam, learning rate 1e-4, :math:`\beta_1 = 0.5`,
:math:`\beta_2 = 0.9`); the VAE with the ISA-VAE paper's Table 1 (Adam 1e-3, from the training config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from untwine.inference.density_ratio import discriminator_loss
from untwine.pyro_models.base import ConfigError
from untwine.pyro_models.vae import VAE, VAEConfig

if TYPE_CHECKING:
    from untwine.inference.objectives import Objective

#: Kim & Mnih's Adam moments for the discriminator
DISCRIMINATOR_BETAS = (0.5, 0.9)


@dataclass
class FactorVAEConfig(VAEConfig):
    """Hyperparameters of :class:`FactorVAE`: :class:`~untwine.pyro_models.vae.VAEConfig`'s plus the discriminator's.

    :param discriminator_units: width of each hidden layer (1000 in appendix A.4).
    :param discriminator_layers: number of hidden layers (5 in appendix A.4).
    :param discriminator_lr: the discriminator's Adam learning rate (Kim & Mnih: 1e-4).
    """

    discriminator_units: int = 1000
    discriminator_layers: int = 5
    discriminator_lr: float = 1e-4

    def __post_init__(self):
        super().__post_init__()
        if self.discriminator_units < 1 or self.discriminator_layers < 1:
            raise ConfigError(
                "discriminator_units and discriminator_layers must be positive integers, got "
                f"{self.discriminator_units} and {self.discriminator_layers}"
            )
        self.check_positive("discriminator_lr")


class Discriminator(nn.Sequential):
    """Codes ``(..., D)`` -> two logits ``(..., 2)`` (q(z), product of marginals): ``layers`` hidden layers of ``units``
    LeakyReLU(0.2) units (the ISA-VAE paper's appendix A.4 with the defaults)."""

    def __init__(self, latent_dim: int, units: int = 1000, layers: int = 5):
        widths = [latent_dim] + [units] * layers
        hidden = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.LeakyReLU(0.2))]
        super().__init__(*hidden, nn.Linear(widths[-1], 2))


class FactorVAE(VAE):
    """The VAE pair with FactorVAE's discriminator as auxiliary parameters (see the module docstring).

    Train it with :class:`~untwine.inference.objectives.FactorObjective` (the registry's ``factor-vae``); with the
    VAE's own ``Trace_ELBO`` the discriminator still learns but does not act on the codes.
    """

    name = "factor-vae"
    Config = FactorVAEConfig

    def __init__(
        self, config: FactorVAEConfig | None = None, prior: nn.Module | None = None, objective: Objective | None = None
    ):
        super().__init__(config, prior, objective)
        cfg = self.config
        self.discriminator = Discriminator(cfg.latent_dim, cfg.discriminator_units, cfg.discriminator_layers)

    def auxiliary_param_groups(self, lr: float) -> list[dict]:
        """The discriminator's parameters at ``discriminator_lr`` with Kim & Mnih's Adam moments (``lr``, the VAE's
        rate, is not used)."""
        params = list(self.discriminator.parameters())
        return [{"params": params, "lr": self.config.discriminator_lr, "betas": DISCRIMINATOR_BETAS}]

    def auxiliary_loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The discriminator's cross-entropy per code: the first half of ``x`` as samples of q(z), the second half,
        dimensions permuted, as samples of the product of marginals (a batch of one uses the same code twice)."""
        with torch.no_grad():
            loc, scale = self.encode(x)
            z = loc + scale * torch.randn_like(loc)
        half = max(1, len(z) // 2)
        other = z[half:] if len(z) > 1 else z
        return discriminator_loss(self.discriminator, z[:half], other)
