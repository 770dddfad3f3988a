r"""VAE and β-VAE as a Pyro model/guide pair with a pluggable prior.

The generative model and amortised posterior, for a batch of images :math:`x_{1:B}`, are

.. math::

    p_\theta(x, z) = \prod_{n} p(z_n)\, p_\theta(x_n \mid z_n), \qquad
    q_\phi(z \mid x) = \prod_n \mathcal{N}\big(z_n;\ \mu_\phi(x_n), \operatorname{diag} \sigma_\phi^2(x_n)\big),

and the objective is the β-weighted ELBO (β-TCVAE paper, "Background"; ISA-VAE paper, eq. 12)

.. math::

    \mathcal{L}_\beta = \frac{1}{N} \sum_n \Big( \mathbb{E}_{q(z_n \mid x_n)} \log p(x_n \mid z_n)
        - \beta\, \mathrm{KL}\big(q(z_n \mid x_n) \,\|\, p(z_n)\big) \Big).

β enters as ``poutine.scale(scale=β)`` around the latent site ``"z"`` in **both** model and guide, so that
Pyro's ``Trace_ELBO`` computes :math:`\log p(x|z) + \beta \log p(z) - \beta \log q(z|x)`; scaling only one
side would silently add :math:`(\beta - 1)` times an entropy or cross-entropy term. ``beta = 1`` is the plain
VAE of Kingma & Welling. The pair works with ``Trace_ELBO`` for any prior with a ``log_prob`` and with
``TraceMeanField_ELBO`` when the prior has an analytic KL to a Normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import ELBO
from torch import nn
from torch.nn import functional as F

from untwine.inference.elbo import SyncFreeTrace_ELBO
from untwine.pyro_models.networks import build_networks

LIKELIHOODS = ("bernoulli", "gaussian")


class ConfigError(ValueError):
    """A model or training configuration value is invalid; the message names the field."""


@dataclass
class VAEConfig:
    """Hyperparameters of :class:`VAE`; defaults follow Chen et al.'s dSprites setting.

    :param image_shape: ``(C, H, W)`` of the data.
    :param latent_dim: number of latent dimensions (10 for dSprites in Chen et al.).
    :param beta: weight on the KL term; 1 is the plain VAE.
    :param likelihood: ``"bernoulli"`` on decoder logits, or ``"gaussian"`` with fixed ``obs_scale``.
    :param obs_scale: standard deviation of the Gaussian likelihood.
    :param network: encoder/decoder family from :mod:`untwine.pyro_models.networks` (``"auto"``: by image shape).
    """

    image_shape: tuple[int, int, int] = (1, 64, 64)
    latent_dim: int = 10
    beta: float = 1.0
    likelihood: str = "bernoulli"
    obs_scale: float = 0.1
    network: str = "auto"

    def __post_init__(self):
        check_image_config(self)
        if self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be a positive integer, got {self.latent_dim}")
        if not self.beta > 0:
            raise ConfigError(f"beta must be positive, got {self.beta}")


def check_image_config(config) -> None:
    """Normalise ``config.image_shape`` to a tuple of ints and check ``likelihood`` and ``obs_scale``: the fields every
    image model's config has."""
    config.image_shape = tuple(int(s) for s in config.image_shape)
    if config.likelihood not in LIKELIHOODS:
        raise ConfigError(f"likelihood must be one of {LIKELIHOODS}, got {config.likelihood!r}")
    if not config.obs_scale > 0:
        raise ConfigError(f"obs_scale must be positive, got {config.obs_scale}")


def image_likelihood(out: torch.Tensor, likelihood: str, obs_scale: float) -> dist.TorchDistribution:
    """Bernoulli on decoder logits or Normal around the decoder output with fixed ``obs_scale``, one event per image
    (the last three dimensions); the likelihood every model of untwine uses."""
    if likelihood == "bernoulli":
        # Greyscale targets in [0, 1] are scored by the same cross-entropy; the support check would reject them.
        return ImageBernoulli(dist.Bernoulli(logits=out, validate_args=False), 3)
    return dist.Normal(out, obs_scale).to_event(3)


class ImageBernoulli(dist.Independent):
    r"""``Bernoulli(logits).to_event(3)`` that sums the per-pixel cross-entropy before negating it,

    .. math::

        \log p(x \mid z) = -\sum_{c,h,w} \mathrm{BCE}(\ell_{chw}, x_{chw}),

    the same value as ``Independent``'s sum of ``Bernoulli.log_prob``, with one pass over the pixels less in the
    forward and in the backward pass (a few percent of a step of Chen et al.'s MLP at batch 2048).
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits, value = torch.broadcast_tensors(self.base_dist.logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum((-3, -2, -1))


class NormalPrior(nn.Module):
    r"""Standard normal prior :math:`p(z) = \mathcal{N}(0, I)`; buffers follow the module to its device."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class VAE(nn.Module):
    """β-VAE model/guide pair with a pluggable prior over a ``latent_dim``-vector ``z``.

    :param config: :class:`VAEConfig`.
    :param prior: an ``nn.Module`` whose ``forward()`` returns a distribution with event shape
        ``(latent_dim,)`` and empty batch shape (the data plate broadcasts it). Parameters of the prior
        (for example learned exponents) are trained with the rest. Default :class:`NormalPrior`.

    Sites: ``"z"`` (local latent, inside plate ``"data"``) and ``"x"`` (observed). Use with ``Trace_ELBO``.
    """

    name = "vae"
    Config = VAEConfig
    latent_site = "z"

    def __init__(self, config: VAEConfig | None = None, prior: nn.Module | None = None):
        super().__init__()
        self.config = config if config is not None else VAEConfig()
        cfg = self.config
        self.encoder, self.decoder = build_networks(cfg.network, cfg.image_shape, cfg.latent_dim)
        self.prior = prior if prior is not None else NormalPrior(cfg.latent_dim)

    @property
    def kl_scale(self) -> float:
        """Weight ``poutine.scale`` puts on the latent site in model and guide (β of the β-VAE)."""
        return self.config.beta

    def default_loss(self, dataset_size: int) -> ELBO:
        """The objective :func:`~untwine.inference.train.fit` uses unless given another: ``Trace_ELBO``, computed
        without host-device synchronisation (:class:`~untwine.inference.elbo.SyncFreeTrace_ELBO`)."""
        return SyncFreeTrace_ELBO()

    # --- the Pyro program -------------------------------------------------------------------------
    def likelihood(self, out: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`p(x \mid z)` from the decoder output, one event per image."""
        return image_likelihood(out, self.config.likelihood, self.config.obs_scale)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`z_n \sim p(z)`, :math:`x_n \sim p_\theta(x \mid z_n)`; ``y`` is ignored (unsupervised)."""
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.kl_scale):
                z = pyro.sample(self.latent_site, self.prior())
            out = self.decoder(z)
            pyro.sample("x", self.likelihood(out), obs=x)
        return out

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`z_n \sim \mathcal{N}(\mu_\phi(x_n), \operatorname{diag}\sigma^2_\phi(x_n))`."""
        pyro.module(self.name, self)
        loc, scale = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.kl_scale):
                return pyro.sample(self.latent_site, dist.Normal(loc, scale).to_event(1))

    # --- deterministic pieces ---------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior location and scale, each ``(B, latent_dim)``; softplus keeps the scale positive."""
        h = self.encoder(x)
        loc, raw = h.chunk(2, dim=-1)
        return loc, F.softplus(raw) + 1e-6

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        r"""Mean image :math:`\mathbb{E}[x \mid z]`: sigmoid of the logits, or the Gaussian mean."""
        out = self.decoder(z)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of each image."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` mean images decoded from prior samples."""
        z = self.prior().sample((n,))
        return self.decode(z)

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Latent traversal around the posterior mean of one image ``x`` ``(C, H, W)``.

        :returns: ``(latent_dim, len(values), C, H, W)``: row ``d`` sets :math:`z_d` to each of ``values``.
        """
        loc = self.encode(x.unsqueeze(0))[0][0]
        d, k = loc.shape[0], values.shape[0]
        z = loc.expand(d, k, d).clone()
        idx = torch.arange(d, device=loc.device)
        z[idx, :, idx] = values.to(loc).expand(d, k)
        return self.decode(z.reshape(d * k, d)).reshape(d, k, *x.shape)
