r"""The β-TCVAE decomposition of the KL term, evaluated exactly over a whole dataset.

Chen et al. (2018), "ELBO TC-decomposition" (eq. 3 of the ISA-VAE paper), write the average KL of the ELBO with
the aggregate posterior :math:`q(z) = \frac{1}{N}\sum_{n=1}^N q(z \mid x_n)` and :math:`p(n) = 1/N` as

.. math::

    \mathbb{E}_{p(n)} \mathrm{KL}\big(q(z \mid x_n) \,\|\, p(z)\big)
    = \underbrace{\mathrm{KL}\big(q(z, n) \,\|\, q(z) p(n)\big)}_{\text{index-code MI}}
    + \underbrace{\mathrm{KL}\Big(q(z) \,\Big\|\, \prod_j q(z_j)\Big)}_{\text{total correlation}}
    + \underbrace{\mathbb{E}_{q(z)}\Big[\log \prod_j q(z_j) - \log p(z)\Big]}_{\text{dimension-wise KL}} .

Training (:mod:`untwine.inference.tc_elbo`) estimates :math:`\log q(z)` from a minibatch; here every sample is
scored against **all** :math:`N` posteriors, as for the decompositions the paper reports, by the blocked mixture
engine of :mod:`untwine.metrics.mixture` (:math:`O(S N D)` for :math:`S` samples, bounded memory).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from untwine.data.base import ImageDataset
from untwine.inference.tc_elbo import kl_terms
from untwine.metrics.mixture import HALF_LOG_2PI, full_aggregate_log_density
from untwine.metrics.utils import batches, encode_dataset, eval_mode, model_device, normal_kl, random_subset


def _diagonal_normal(prior: torch.distributions.Distribution, d: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(loc, scale)`` of a prior that is a diagonal Normal over ``(d,)``, else ``None``."""
    if tuple(prior.event_shape) != (d,) or tuple(prior.batch_shape) != ():
        return None
    base = prior
    while isinstance(base, torch.distributions.Independent):
        base = base.base_dist
    if not isinstance(base, torch.distributions.Normal):  # pyro's Normal subclasses torch's
        return None
    return base.loc.expand(d), base.scale.expand(d)


_TERMS = ("log_likelihood", "mi", "tc", "dwkl", "kl", "elbo")


@torch.no_grad()
def elbo_decomposition(
    model: nn.Module,
    data: ImageDataset,
    batch_size: int = 1024,
    num_samples: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    chunk_elements: int | None = None,
    return_samples: bool = False,
    codes: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    r"""Full-dataset ELBO with its KL split into index-code MI, total correlation and dimension-wise KL.

    All :math:`N` images are encoded (eval mode, no gradients) and one :math:`z_s \sim q(z \mid x_{n_s})` is drawn
    per image, or, with ``num_samples=S``, for a seeded random subset of :math:`S` images drawn without replacement.
    Over those samples (Chen et al. 2018, "ELBO TC-decomposition"; ISA-VAE paper, eq. 3):

    .. math::

        \mathrm{MI} &= \mathbb{E}\big[\log q(z \mid x_n) - \log q(z)\big], \\
        \mathrm{TC} &= \mathbb{E}\Big[\log q(z) - \sum_j \log q(z_j)\Big], \\
        \mathrm{DW} &= \mathbb{E}\Big[\sum_j \log q(z_j) - \log p(z)\Big], \\
        \mathrm{KL} &= \mathbb{E}\big[\log q(z \mid x_n) - \log p(z)\big] = \mathrm{MI} + \mathrm{TC} + \mathrm{DW},

    with :math:`\log q(z)` and :math:`\log q(z_j)` from **all** :math:`N` posteriors
    (:func:`~untwine.metrics.mixture.full_aggregate_log_density`), never a minibatch. For a factorised prior DW is
    :math:`\sum_j \mathrm{KL}(q(z_j) \| p(z_j))`; for a prior that does not factorise (the Lp-nested ISA prior) it
    is :math:`\mathbb{E}_{q(z)}[\log \prod_j q(z_j) - \log p(z)]`, still the remainder that makes the three terms sum
    to the KL. The reconstruction term is :math:`\mathbb{E}[\log p(x_n \mid z)]` and ``elbo`` is
    ``log_likelihood - kl`` on the same samples. ``analytic_kl`` is
    :math:`\frac{1}{N}\sum_{n=1}^N \mathrm{KL}(q(z \mid x_n) \| p(z))` in closed form over all :math:`N` images when
    the prior is a diagonal Normal, else ``None``.

    The model needs ``encode(x) -> (loc, scale)`` (a diagonal-Normal posterior), ``prior()`` (a distribution with
    event shape ``(D,)``), ``decoder(z)`` and ``likelihood(decoder_output)`` (a distribution over one image), as
    :class:`~untwine.pyro_models.VAE` has. Values are nats per datapoint; the training mode is restored.

    :param batch_size: images per encoder/decoder call.
    :param num_samples: evaluate on a random subset of this many images (``None``: every image once). The mixture
        :math:`q(z)` still has all :math:`N` components; the result then carries Monte Carlo standard errors.
    :param seed: seeds the subset and the posterior draws (a private generator; global RNG state is untouched).
    :param device: where the computation runs; the model must already be there (default: the model's device).
    :param chunk_elements: block size of the :math:`O(S N D)` scoring, see
        :func:`~untwine.metrics.mixture.full_aggregate_log_density`.
    :param codes: posterior ``(loc, scale)`` of every image, from :func:`~untwine.metrics.utils.encode_dataset`, if
        already computed.
    :param return_samples: also return the per-sample quantities under ``"samples"`` (numpy arrays).
    :returns: ``{"log_likelihood", "mi", "tc", "dwkl", "kl", "elbo"}`` (floats), ``"analytic_kl"`` (float or
        ``None``), ``"num_samples"`` (:math:`S`), ``"dataset_size"`` (:math:`N`), ``"stderr"`` (``{term: std/sqrt(S)}``
        when ``num_samples`` is given, else ``None``) and, with ``return_samples``, ``"samples"``: ``index`` ``(S,)``,
        ``z`` ``(S, D)``, ``log_px_z``, ``log_qz_x``, ``log_qz``, ``log_pz`` ``(S,)`` and ``log_qz_marginals``
        ``(S, D)``.
    """
    device = model_device(model, device)
    n = len(data)
    if codes is None:
        codes = encode_dataset(model, data, batch_size, device)
    loc, scale = (t.to(device) for t in codes)
    d = loc.shape[1]
    gen = torch.Generator().manual_seed(seed)
    if num_samples is None:
        index = torch.arange(n)
    else:
        if num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer or None, got {num_samples}")
        index = random_subset(n, num_samples, gen).sort().values
    s = len(index)
    # Noise drawn on the CPU so that a seed gives the same samples on every device.
    eps = torch.randn(s, d, generator=gen).to(device=device, dtype=loc.dtype)
    index_dev = index.to(device)
    loc_s, scale_s = loc[index_dev], scale[index_dev]
    z = loc_s + scale_s * eps
    # log q(z_s | x_s) from the stored z with the same operations as the mixture's own term, so that rounding of
    # z near a very narrow posterior cannot push a sample's MI above its bound log N.
    own = (z - loc_s).mul_(scale_s.reciprocal()).square_().mul_(-0.5).add_(-scale_s.log() - HALF_LOG_2PI)
    log_qz_x = own.double().sum(-1)

    with eval_mode(model):
        prior = model.prior()
        log_px_z, log_pz = [], []
        for z_b, (x, _) in zip(z.split(batch_size), batches(data, batch_size, device, index)):
            log_px_z.append(model.likelihood(model.decoder(z_b)).log_prob(x).double())
            log_pz.append(prior.log_prob(z_b).double())
        log_px_z, log_pz = torch.cat(log_px_z), torch.cat(log_pz)

    log_qz, log_qz_marg = full_aggregate_log_density(z, loc, scale, chunk_elements=chunk_elements)
    log_qz, log_qz_marg = log_qz.double(), log_qz_marg.double()
    per_sample = {"log_likelihood": log_px_z, **kl_terms(log_qz_x, log_qz, log_qz_marg, log_pz)}
    per_sample["kl"] = log_qz_x - log_pz
    per_sample["elbo"] = log_px_z - per_sample["kl"]
    out: dict = {name: per_sample[name].mean().item() for name in _TERMS}

    normal = _diagonal_normal(prior, d)
    if normal is None:
        out["analytic_kl"] = None
    else:
        p_loc, p_scale = (t.double() for t in normal)
        out["analytic_kl"] = normal_kl(loc.double(), scale.double(), p_loc, p_scale).sum(-1).mean().item()
    out["num_samples"] = s
    out["dataset_size"] = n
    if num_samples is None:
        out["stderr"] = None
    else:
        denom = math.sqrt(s)
        out["stderr"] = {name: (per_sample[name].std().item() / denom if s > 1 else float("nan")) for name in _TERMS}
    if return_samples:
        out["samples"] = {
            "index": index.numpy(),
            "z": z.cpu().numpy(),
            "log_px_z": log_px_z.cpu().numpy(),
            "log_qz_x": log_qz_x.cpu().numpy(),
            "log_qz": log_qz.cpu().numpy(),
            "log_qz_marginals": log_qz_marg.cpu().numpy(),
            "log_pz": log_pz.cpu().numpy(),
        }
    return out
