r"""FactorVAE's total correlation by density-ratio estimation, as a term of a Pyro ELBO (Kim & Mnih 2018).

A discriminator :math:`D(z)` is trained to tell samples of the aggregate posterior :math:`q(z)` from samples of the
product of its marginals :math:`\bar q(z) = \prod_j q(z_j)`, which :func:`permute_dims` draws by shuffling each
coordinate of a batch of codes independently across the batch (Kim & Mnih, algorithm 1). At the optimum
:math:`D(z) = q(z) / (q(z) + \bar q(z))`, so the total correlation is the expected log-odds

.. math::

    \mathrm{TC}(z) = \mathrm{KL}\big(q(z) \,\|\, \bar q(z)\big)
        = \mathbb{E}_{q(z)} \log \frac{q(z)}{\bar q(z)}
        \approx \mathbb{E}_{q(z)} \Big[\log D(z) - \log\big(1 - D(z)\big)\Big],

and FactorVAE maximises :math:`\mathcal{L} - \gamma\, \mathrm{TC}(z)` (Kim & Mnih, eq. 2; the ISA-VAE paper's
baseline, appendix A.3–A.4). With two logits :math:`(\ell_0, \ell_1)` and :math:`D = \operatorname{softmax}_0`, the
log-odds is :math:`\ell_0 - \ell_1`. :class:`DensityRatioTCELBO` adds :math:`\gamma (\ell_0 - \ell_1)(z_n)` per data
point at named latent sites of any model/guide pair; :func:`discriminator_loss` is what the discriminator minimises
(its own optimiser, see :class:`untwine.pyro_models.factorvae.FactorVAE`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine import Trace
from torch import nn
from torch.nn import functional as F

from untwine.inference.elbo import SyncFreeTrace_ELBO

#: the discriminator's class of samples of q(z) and of the product of marginals
REAL, PERMUTED = 0, 1


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Samples of :math:`\prod_j q(z_j)` from samples ``z`` ``(B, D)`` of :math:`q(z)`: each column shuffled by its own
    random permutation of the batch (Kim & Mnih, algorithm 1), in one gather. Every marginal is kept exactly (each
    column holds the same values); the dependence between columns is broken."""
    if z.dim() != 2:
        raise ValueError(f"permute_dims needs codes of shape (B, D), got {tuple(z.shape)}")
    b, d = z.shape
    # argsort of uniform keys is a uniform random permutation per column
    keys = torch.rand(b, d, generator=generator, device=z.device)
    return z.gather(0, keys.argsort(dim=0))


def log_odds(discriminator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    r""":math:`\log D(z) - \log(1 - D(z))` per code, ``(...)`` for codes ``(..., D)``: the density-ratio estimate of
    :math:`\log q(z) - \log \bar q(z)`."""
    logits = discriminator(z)
    return logits[..., REAL] - logits[..., PERMUTED]


def discriminator_loss(discriminator: nn.Module, z: torch.Tensor, z_other: torch.Tensor) -> torch.Tensor:
    r"""The discriminator's cross-entropy, mean per code, for samples ``z`` of :math:`q(z)` and a second batch
    ``z_other`` of codes whose dimensions :func:`permute_dims` shuffles (Kim & Mnih, algorithm 2):

    .. math::

        -\tfrac12\, \mathbb{E}_{q(z)} \log D(z) - \tfrac12\, \mathbb{E}_{\bar q(z)} \log\big(1 - D(z)\big).

    The codes are detached: this loss trains the discriminator only."""
    permuted = permute_dims(z_other.detach())
    real = F.cross_entropy(discriminator(z.detach()), torch.full(z.shape[:1], REAL, device=z.device))
    fake = F.cross_entropy(discriminator(permuted), torch.full(permuted.shape[:1], PERMUTED, device=z.device))
    return 0.5 * (real + fake)


class DensityRatioTCELBO(SyncFreeTrace_ELBO):
    r"""The ELBO minus :math:`\gamma` times the discriminator's estimate of the total correlation at named sites
    (FactorVAE, Kim & Mnih 2018, eq. 2):

    .. math::

        -\mathcal{L}_\gamma = -\mathcal{L} + \gamma \sum_{\text{sites}} s \sum_n
            \big[\log D(z_n) - \log(1 - D(z_n))\big], \qquad z_n \sim q(z \mid x_n),

    where :math:`-\mathcal{L}` is :class:`~untwine.inference.elbo.SyncFreeTrace_ELBO`'s loss of the same particle and
    :math:`s` the site's scale. Gradients reach the encoder through :math:`z_n` (reparameterised) and the
    discriminator's parameters too; train them only with :func:`discriminator_loss` (a second optimiser). With
    ``gamma = 0`` it is the ELBO. Works for any model/guide pair whose sites hold one code vector per data point.

    :param discriminator: module mapping codes ``(B, D)`` to two logits ``(B, 2)`` (:data:`REAL`, :data:`PERMUTED`).
    :param gamma: :math:`\gamma \ge 0`.
    :param sites: latent sites whose codes the discriminator reads (default ``("z",)``).
    :param elbo_kwargs: passed to ``Trace_ELBO``.
    """

    def __init__(self, discriminator: nn.Module, gamma: float, sites: Sequence[str] = ("z",), **elbo_kwargs):
        super().__init__(**elbo_kwargs)
        if not gamma >= 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}")
        self.discriminator = discriminator
        self.gamma = float(gamma)
        self.sites = tuple(sites)
        #: the last call's TC estimate per data point, detached (for logging)
        self.last_tc: torch.Tensor | None = None

    def particle_loss(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
        loss = super().particle_loss(model_trace, guide_trace)
        for name in self.sites:
            if name not in guide_trace.nodes:
                raise ValueError(f"latent site {name!r} is not in the guide")
            site = guide_trace.nodes[name]
            z = site["value"]
            if z.dim() != 2:
                raise ValueError(
                    f"site {name!r} must hold one vector per datapoint, shape (B, D); got {tuple(z.shape)}"
                )
            tc = log_odds(self.discriminator, z)
            self.last_tc = tc.detach().mean()
            if self.gamma:
                loss = loss + self.gamma * scale_and_mask(tc, site["scale"], site["mask"]).sum()
        return loss
