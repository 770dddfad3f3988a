r"""Conditional VAE (Sohn, Lee & Yan 2015), the class-conditional baseline of N-VAE's augmentation experiment.

The label :math:`y` is observed and conditions both networks; the latent :math:`z` carries what the label does not.
For a batch of labelled images :math:`(x_n, y_n)`,

.. math::

    p_\theta(x, z \mid y) = \prod_n \mathcal{N}(z_n; 0, I)\, p_\theta(x_n \mid z_n, y_n), \qquad
    q_\phi(z \mid x, y) = \prod_n \mathcal{N}\big(z_n;\ \mu_\phi(x_n, y_n),
        \operatorname{diag} \sigma_\phi^2(x_n, y_n)\big),

and the objective is the conditional ELBO (Sohn et al., eq. 4, with the roles of their input and output played by
the label and the image)

.. math::

    \mathcal{L} = \sum_n \Big( \mathbb{E}_{q(z_n \mid x_n, y_n)} \log p_\theta(x_n \mid z_n, y_n)
        - \mathrm{KL}\big(q(z_n \mid x_n, y_n) \,\|\, \mathcal{N}(0, I)\big) \Big)
        \le \sum_n \log p_\theta(x_n \mid y_n).

Sohn et al. allow a learned prior network :math:`p(z \mid y)`; here the prior is the fixed :math:`\mathcal{N}(0, I)`
(as in the N-VAE paper's comparison, section IV-C), so that class-conditional samples are drawn the same way for
both models: :math:`z \sim \mathcal{N}(0, \sigma^2 I)`, decoded with the wanted label.

**Where the label enters.** The decoder reads :math:`[z, \mathrm{onehot}(y)]`. The encoder sees the label in its
first layer: for the MLP families the one-hot is concatenated to the flattened image; for the convolutional families
it is broadcast to :math:`L` constant channels stacked on the image. The encoder and decoder otherwise come from
:func:`~untwine.pyro_models.networks.build_networks`, with the same ``"auto"`` rule as N-VAE (small MLP for 28x28
images, conv nets for 32 and 64 pixels), so the two models of the comparison share their network family.

**Latent size.** ``latent_dim = 6`` by default: with N-VAE's default sizes (:math:`d_c = 4`, :math:`d_s = 2`) the
N-VAE decoder receives, for each image, the 4 coordinates of its class block plus the 2 shared ones (the other
class blocks are masked to zero), and the label through the one-hot class bias. The CVAE gets the same number of
live latent coordinates per image and the label as a one-hot, so neither model has more code to spend per image.

The pair uses ``TraceMeanField_ELBO`` (:meth:`CVAE.default_loss`): both sides of the single latent site are Normal,
so the KL is evaluated in closed form; ``Trace_ELBO`` gives the same objective with a noisier estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import ELBO
from torch import nn
from torch.nn import functional as F

from untwine.inference.elbo import SyncFreeTraceMeanField_ELBO
from untwine.pyro_models.base import ConfigError, ImageConfig, Model, image_likelihood, positive_scale
from untwine.pyro_models.networks import MLPEncoder, build_networks, labelled_network
from untwine.pyro_models.vae import NormalPrior


@dataclass
class CVAEConfig(ImageConfig):
    """Hyperparameters of :class:`CVAE` (see the module docstring for the latent size).

    :param num_classes: :math:`L`, the number of labels.
    :param latent_dim: size of :math:`z` (6: N-VAE's live latent coordinates per image, :math:`d_c + d_s`).

    The image fields are :class:`~untwine.pyro_models.base.ImageConfig`'s (``network="auto"``: MLP for 28x28, conv
    net otherwise, as N-VAE).
    """

    image_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    latent_dim: int = 6

    def __post_init__(self):
        super().__post_init__()
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be a positive integer, got {self.latent_dim}")


class LabelledEncoder(nn.Module):
    """An encoder of :mod:`~untwine.pyro_models.networks` whose first layer also reads the one-hot label.

    :param network: a family name of :func:`~untwine.pyro_models.networks.build_networks` (not ``"auto"``).
    :param image_shape: ``(C, H, W)``.
    :param num_classes: width of the one-hot label.
    :param out_dim: width of the output (location and raw scale).
    """

    def __init__(self, network: str, image_shape: tuple[int, int, int], num_classes: int, out_dim: int):
        super().__init__()
        c, h, w = image_shape
        probe, _ = build_networks(network, image_shape, 1, encoder_out=1)
        # MLPs take the label next to the flattened pixels; conv nets take it as L constant feature maps.
        self.flat = isinstance(probe, MLPEncoder)
        shape = (1, 1, math.prod(image_shape) + num_classes) if self.flat else (c + num_classes, h, w)
        self.net, _ = build_networks(network, shape, 1, encoder_out=out_dim)

    def forward(self, x: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        if self.flat:
            return self.net(torch.cat([x.flatten(1), one_hot], -1))
        maps = one_hot[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        return self.net(torch.cat([x, maps], 1))


class CVAE(Model):
    """Conditional VAE model/guide pair; sites ``"z"`` (local latent in plate ``"data"``) and ``"x"`` (observed).

    ``model(x, y)`` and ``guide(x, y)`` need the labels ``y`` (``long``, ``(B,)``, values in ``[0, L)``).
    """

    name = "cvae"
    Config = CVAEConfig

    def __init__(self, config: CVAEConfig | None = None):
        super().__init__(config)
        cfg = self.config
        network = cfg.network
        if network == "auto":
            network = labelled_network(cfg.image_shape)
        self.latent_dim = cfg.latent_dim
        _, self.decoder = build_networks(network, cfg.image_shape, cfg.latent_dim + cfg.num_classes)
        self.encoder = LabelledEncoder(network, cfg.image_shape, cfg.num_classes, 2 * cfg.latent_dim)
        self.prior = NormalPrior(cfg.latent_dim)

    def default_loss(self, dataset_size: int) -> ELBO:
        """``TraceMeanField_ELBO`` (sync-free): the Normal-to-Normal KL of ``z`` in closed form."""
        return SyncFreeTraceMeanField_ELBO()

    # --- pieces shared by model, guide and users ----------------------------------------------------
    def check_labels(self, y: torch.Tensor | None) -> torch.Tensor:
        """Labels as ``long`` in ``[0, L)``; a clear error otherwise (no range check on a GPU, to avoid a sync)."""
        if y is None:
            raise ValueError("the CVAE is conditioned on the label: pass y with one class per image")
        if y.is_floating_point():
            raise ValueError(f"labels must be integers, got dtype {y.dtype}")
        if not y.is_cuda and y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.config.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.config.num_classes}) for this {self.config.num_classes}-class model, "
                f"got values from {int(y.min())} to {int(y.max())}; build the model with num_classes equal to the "
                "number of classes in the data"
            )
        return y.long()

    def one_hot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """One-hot labels ``(..., L)`` in the dtype of ``like``."""
        return F.one_hot(y, self.config.num_classes).to(like.dtype)

    def likelihood(self, out: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`p(x \mid z, y)` from the decoder output, one event per image."""
        return image_likelihood(out, self.config.likelihood, self.config.obs_scale)

    def decoder_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Decoder output for codes ``z`` ``(..., D)`` and labels ``y`` broadcasting against ``z.shape[:-1]``."""
        c = self.one_hot(y, z).expand(*z.shape[:-1], self.config.num_classes)
        return self.decoder(torch.cat([z, c], -1))

    # --- the Pyro program ---------------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`z_n \sim \mathcal{N}(0, I)`, :math:`x_n \sim p_\theta(x \mid z_n, y_n)`."""
        pyro.module(self.name, self)
        y = self.check_labels(y)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(self.latent_site, self.prior())
            out = self.decoder_logits(z, y)
            pyro.sample("x", self.likelihood(out), obs=x)
        return out

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`z_n \sim \mathcal{N}(\mu_\phi(x_n, y_n), \operatorname{diag}\sigma^2_\phi(x_n, y_n))`."""
        pyro.module(self.name, self)
        y = self.check_labels(y)
        loc, scale = self.encode(x, y)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.latent_site, dist.Normal(loc, scale).to_event(1))

    # --- deterministic pieces -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior location and scale of :math:`q(z \\mid x, y)`, each ``(B, latent_dim)``."""
        h = self.encoder(x, self.one_hot(y, x))
        loc, raw = h.chunk(2, dim=-1)
        return loc, positive_scale(raw)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""Mean image :math:`\mathbb{E}[x \mid z, y]` for codes ``z`` ``(..., latent_dim)`` and labels ``y``."""
        out = self.decoder_logits(z, y)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of each image with its own label."""
        y = self.check_labels(y)
        return self.decode(self.encode(x, y)[0], y)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | int | None = None, sigma: float = 1.0) -> torch.Tensor:
        r"""``n`` mean images decoded from :math:`z \sim \mathcal{N}(0, \sigma^2 I)` (as :meth:`NVAE.sample`).

        :param y: one label per sample ``(n,)``, a single class for all, or ``None`` (classes ``0..L-1`` in turn).
        :param sigma: standard deviation of the codes; values above 1 reach codes that are rare under the prior.
        """
        loc = self.prior.loc
        if y is None:
            y = torch.arange(n, device=loc.device) % self.config.num_classes
        elif isinstance(y, int):
            y = torch.full((n,), y, dtype=torch.long, device=loc.device)
        y = self.check_labels(torch.as_tensor(y, device=loc.device))
        if y.shape != (n,):
            raise ValueError(f"y must hold one label per sample, shape ({n},), got {tuple(y.shape)}")
        z = sigma * torch.randn(n, self.latent_dim, device=loc.device, dtype=loc.dtype)
        return self.decode(z, y)
