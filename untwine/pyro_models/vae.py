r"""VAE and β-VAE as a Pyro model/guide pair with a pluggable prior.

The generative model and amortised posterior, for a batch of images :math:`x_{1:B}`, are

.. math::

    p_\theta(x, z) = \prod_{n} p(z_n)\, p_\theta(x_n \mid z_n), \qquad
    q_\phi(z \mid x) = \prod_n \mathcal{N}\big(z_n;\ \mu_\phi(x_n), \operatorname{diag} \sigma_\phi^2(x_n)\big),

and the objective is the β-weighted ELBO (β-TCVAE paper, "Background"; ISA-VAE paper, eq. 12)

.. math::

    \mathcal{L}_\beta = \frac{1}{N} \sum_n \Big( \mathbb{E}_{q(z_n \mid x_n)} \log p(x_n \mid z_n)
        - \beta\, \mathrm{KL}\big(q(z_n \mid x_n) \,\|\, p(z_n)\big) \Big).

β (``VAEConfig.kl_weight``) enters as ``poutine.scale(scale=β)`` around the latent site ``"z"`` in **both** model
and guide, so that Pyro's ``Trace_ELBO`` computes :math:`\log p(x|z) + \beta \log p(z) - \beta \log q(z|x)`;
scaling only one side would silently add :math:`(\beta - 1)` times an entropy or cross-entropy term.
``kl_weight = 1`` is the plain VAE of Kingma & Welling. β-TCVAE is this pair with another objective
(:class:`~untwine.inference.objectives.TCObjective`), not another model. The pair works with ``Trace_ELBO`` for any
prior with a ``log_prob`` and with ``TraceMeanField_ELBO`` when the prior has an analytic KL to a Normal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from untwine.pyro_models.base import ConfigError, ImageConfig, Model, image_likelihood, positive_scale
from untwine.pyro_models.networks import build_networks

if TYPE_CHECKING:
    from untwine.inference.objectives import Objective


@dataclass
class VAEConfig(ImageConfig):
    """Hyperparameters of :class:`VAE`; defaults follow Chen et al.'s dSprites setting.

    :param latent_dim: number of latent dimensions (10 for dSprites in Chen et al.).
    :param kl_weight: β of the β-VAE, the weight on the KL term; 1 is the plain VAE.

    The image fields (``image_shape``, ``likelihood``, ``obs_scale``, ``network``) are
    :class:`~untwine.pyro_models.base.ImageConfig`'s.
    """

    latent_dim: int = 10
    kl_weight: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be a positive integer, got {self.latent_dim}")
        self.check_positive("kl_weight")


class NormalPrior(nn.Module):
    r"""Standard normal prior :math:`p(z) = \mathcal{N}(0, I)`; buffers follow the module to its device."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class VAE(Model):
    """β-VAE model/guide pair with a pluggable prior over a ``latent_dim``-vector ``z``.

    :param config: :class:`VAEConfig`.
    :param prior: an ``nn.Module`` whose ``forward()`` returns a distribution with event shape
        ``(latent_dim,)`` and empty batch shape (the data plate broadcasts it). Parameters of the prior
        (for example learned exponents) are trained with the rest. Default :class:`NormalPrior`.
    :param objective: the objective :meth:`default_loss` builds, e.g.
        :class:`~untwine.inference.objectives.TCObjective` for β-TCVAE (the same pair, another ELBO); ``None``:
        ``Trace_ELBO`` with the KL weighted by ``config.kl_weight``.

    Sites: ``"z"`` (local latent, inside plate ``"data"``) and ``"x"`` (observed). Use with ``Trace_ELBO``.
    """

    name = "vae"
    Config = VAEConfig

    def __init__(
        self, config: VAEConfig | None = None, prior: nn.Module | None = None, objective: Objective | None = None
    ):
        super().__init__(config, objective)
        cfg = self.config
        self.encoder, self.decoder = build_networks(cfg.network, cfg.image_shape, cfg.latent_dim)
        self.prior = prior if prior is not None else NormalPrior(cfg.latent_dim)

    def evaluations(self) -> list[str]:
        """The base class's, plus β-TCVAE's decomposition of the KL (index-code MI, TC, dimension-wise KL), which
        scores codes under :meth:`prior` and images under :meth:`likelihood`."""
        return [*super().evaluations(), "decomposition"]

    # --- the Pyro program -------------------------------------------------------------------------
    def likelihood(self, out: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`p(x \mid z)` from the decoder output, one event per image."""
        return image_likelihood(out, self.config.likelihood, self.config.obs_scale)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`z_n \sim p(z)`, :math:`x_n \sim p_\theta(x \mid z_n)`; ``y`` is ignored (unsupervised)."""
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.config.kl_weight):
                z = pyro.sample(self.latent_site, self.prior())
            out = self.decoder(z)
            pyro.sample("x", self.likelihood(out), obs=x)
        return out

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`z_n \sim \mathcal{N}(\mu_\phi(x_n), \operatorname{diag}\sigma^2_\phi(x_n))`."""
        pyro.module(self.name, self)
        loc, scale = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.config.kl_weight):
                return pyro.sample(self.latent_site, dist.Normal(loc, scale).to_event(1))

    # --- deterministic pieces ---------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior location and scale, each ``(B, latent_dim)``; softplus keeps the scale positive."""
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        return loc, positive_scale(raw)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        r"""Mean image :math:`\mathbb{E}[x \mid z]`: sigmoid of the logits, or the Gaussian mean."""
        out = self.decoder(z)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` mean images decoded from prior samples."""
        z = self.prior().sample((n,))
        return self.decode(z)
