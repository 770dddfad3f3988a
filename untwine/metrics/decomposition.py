r"""The β-TCVAE decomposition of the KL term, evaluated exactly over a whole dataset.

Chen et al. (2018), "ELBO TC-decomposition" (eq. 3 of the ISA-VAE paper), write the average KL of the ELBO with
the aggregate posterior :math:`q(z) = \frac{1}{N}\sum_{n=1}^N q(z \mid x_n)` and :math:`p(n) = 1/N` as

.. math::

    \mathbb{E}_{p(n)} \mathrm{KL}\big(q(z \mid x_n) \,\|\, p(z)\big)
    = \underbrace{\mathrm{KL}\big(q(z, n) \,\|\, q(z) p(n)\big)}_{\text{index-code MI}}
    + \underbrace{\mathrm{KL}\Big(q(z) \,\Big\|\, \prod_j q(z_j)\Big)}_{\text{total correlation}}
    + \underbrace{\mathbb{E}_{q(z)}\Big[\log \prod_j q(z_j) - \log p(z)\Big]}_{\text{dimension-wise KL}} .

Training (:mod:`untwine.inference.tc_elbo`) estimates :math:`\log q(z)` from a minibatch; here every sample is
scored against **all** :math:`N` posteriors, as for the decompositions the paper reports. The cost is
:math:`O(S N D)` for :math:`S` samples, computed in blocks with a running log-sum-exp, so memory stays bounded:
beyond the images and the ``(N, D)`` posteriors, full dSprites (:math:`N = 737{,}280`) needs a few MB of blocks on a
CPU and under 1 GB on a GPU, never an :math:`N \times N` matrix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from untwine.data.base import ImageDataset
from untwine.inference.tc_elbo import kl_terms

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

# Elements of one (samples x dims x components) block. On a CPU, blocks that stay in cache are ~2x faster than
# large ones (measured: 0.5M elements run at ~340 M/s on one core, 20M at ~80 M/s); a GPU wants large blocks so
# that kernel launches do not dominate.
_CPU_CHUNK_ELEMENTS = 2**19
_GPU_CHUNK_ELEMENTS = 2**26
_COMPONENT_CHUNK = 2048


def _chunk_elements(device: torch.device, chunk_elements: int | None) -> int:
    if chunk_elements is not None:
        if chunk_elements < 1:
            raise ValueError(f"chunk_elements must be positive, got {chunk_elements}")
        return int(chunk_elements)
    return _GPU_CHUNK_ELEMENTS if device.type == "cuda" else _CPU_CHUNK_ELEMENTS


def _group_matrix(groups: Sequence[Sequence[int]], d: int, like: torch.Tensor) -> torch.Tensor:
    """``(K, D)`` 0/1 membership of each coordinate in each group, with a clear error for bad groups."""
    member = torch.zeros(len(groups), d, dtype=like.dtype, device=like.device)
    if len(groups) == 0:
        raise ValueError("groups is empty; give at least one list of coordinates")
    for k, group in enumerate(groups):
        index = [int(j) for j in group]
        if not index or min(index) < 0 or max(index) >= d or len(set(index)) != len(index):
            raise ValueError(f"group {k} = {list(group)} must list distinct coordinates in [0, {d})")
        member[k, index] = 1.0
    return member


@torch.no_grad()
def full_aggregate_log_density(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    joint: bool = True,
    marginals: bool = True,
    chunk_elements: int | None = None,
    groups: Sequence[Sequence[int]] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    r"""Exact log-density of samples under the aggregate posterior of a whole dataset.

    With diagonal-Gaussian posteriors :math:`q(z \mid x_n) = \mathcal{N}(\mu_n, \operatorname{diag}\sigma_n^2)`,

    .. math::

        \log q(z_s) = \operatorname{logsumexp}_{n=1}^{N} \sum_j \log \mathcal{N}(z_{sj}; \mu_{nj}, \sigma_{nj})
            - \log N, \qquad
        \log q(z_{sj}) = \operatorname{logsumexp}_{n=1}^{N} \log \mathcal{N}(z_{sj}; \mu_{nj}, \sigma_{nj}) - \log N .

    Samples and components are processed in blocks; the log-sum-exp over components is accumulated across
    component blocks (``logaddexp`` of block results), so peak memory is about ``chunk_elements`` floats times a
    small constant whatever :math:`N` is.

    With ``groups`` (lists of coordinates, e.g. the subspaces of an ISA prior), the marginals are those of each
    group of coordinates, :math:`\log q(z_{s,\mathcal{V}_k}) = \operatorname{logsumexp}_n \sum_{j \in \mathcal{V}_k}
    \log \mathcal{N}(z_{sj}; \mu_{nj}, \sigma_{nj}) - \log N`, instead of one per coordinate.

    An optional leading group dimension evaluates :math:`G` independent mixtures at once (``z`` ``(G, S, D)``
    against ``loc``/``scale`` ``(G, N, D)``); MIG uses it for the aggregate posterior of each factor value.

    :param z: samples ``(S, D)`` or ``(G, S, D)``.
    :param loc: posterior means ``(N, D)`` or ``(G, N, D)``; :param scale: posterior scales, same shape.
    :param joint: compute :math:`\log q(z_s)`; :param marginals: compute :math:`\log q(z_{sj})`.
    :param chunk_elements: elements per block (default: :math:`2^{19}` on a CPU, :math:`2^{26}` on a GPU).
    :param groups: coordinate groups for the marginals (default: each coordinate alone).
    :returns: ``(log_qz, log_qz_marginals)`` of shapes ``(..., S)`` and ``(..., S, D)`` (``(..., S, K)`` for ``K``
        groups; ``None`` where not asked).
    """
    squeeze = z.dim() == 2
    if squeeze:
        z, loc, scale = z.unsqueeze(0), loc.unsqueeze(0), scale.unsqueeze(0)
    if z.dim() != 3 or loc.dim() != 3 or loc.shape != scale.shape:
        raise ValueError(
            f"z must be (S, D) or (G, S, D) and loc, scale (N, D) or (G, N, D); got {tuple(z.shape)}, "
            f"{tuple(loc.shape)}, {tuple(scale.shape)}"
        )
    if loc.shape[0] != z.shape[0] or loc.shape[2] != z.shape[2]:
        raise ValueError(f"z {tuple(z.shape)} and loc {tuple(loc.shape)} disagree in groups or dimensions")
    g_total, s_total, d = z.shape
    n_total = loc.shape[1]
    budget = _chunk_elements(z.device, chunk_elements)
    # Components last and contiguous: the log-sum-exp then reduces over the innermost axis, ~2x faster on a CPU
    # than reducing over a middle axis.
    loc_t = loc.transpose(1, 2).contiguous()
    inv_t = scale.reciprocal().transpose(1, 2).contiguous()
    const_t = (-scale.log() - HALF_LOG_2PI).transpose(1, 2).contiguous()
    c = min(n_total, _COMPONENT_CHUNK, max(1, budget // d))
    s = min(s_total, max(1, budget // (d * c)))
    g = min(g_total, max(1, budget // (s * d * c)))
    log_n = math.log(n_total)
    out_joint = z.new_empty(g_total, s_total) if joint else None
    member = None if groups is None else _group_matrix(groups, d, z)
    out_marg = z.new_empty(g_total, s_total, d if member is None else len(member)) if marginals else None
    for g0 in range(0, g_total, g):
        gs = slice(g0, g0 + g)
        for s0 in range(0, s_total, s):
            ss = slice(s0, s0 + s)
            zc = z[gs, ss].unsqueeze(-1)  # (g, s, D, 1)
            acc_j = acc_m = None
            for c0 in range(0, n_total, c):
                cs = slice(c0, c0 + c)
                # log N(z; mu, sigma) for every (sample, dim, component); in-place after the first op.
                lp = (zc - loc_t[gs, None, :, cs]).mul_(inv_t[gs, None, :, cs])
                lp = lp.square_().mul_(-0.5).add_(const_t[gs, None, :, cs])  # (g, s, D, c)
                if joint:
                    block = torch.logsumexp(lp.sum(-2), dim=-1)
                    acc_j = block if acc_j is None else torch.logaddexp(acc_j, block)
                if marginals:
                    grouped = lp if member is None else torch.einsum("gsdc,kd->gskc", lp, member)
                    block = torch.logsumexp(grouped, dim=-1)
                    acc_m = block if acc_m is None else torch.logaddexp(acc_m, block)
            if joint:
                out_joint[gs, ss] = acc_j - log_n
            if marginals:
                out_marg[gs, ss] = acc_m - log_n
    if squeeze:
        out_joint = out_joint[0] if joint else None
        out_marg = out_marg[0] if marginals else None
    return out_joint, out_marg


def _model_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a metric with ``model`` in eval mode (batch norm on running statistics) and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def encode_dataset(
    model: nn.Module,
    data: ImageDataset,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior parameters ``model.encode(x)`` of every image of ``data``, in dataset order.

    The model is put in eval mode for the pass (batch-norm statistics, dropout) and restored afterwards.

    :param device: where images are sent; the model must already live there (default: the model's device).
    :returns: ``(loc, scale)``, each ``(N, D)`` on ``device``.
    """
    device = _model_device(model, device)
    locs, scales = [], []
    with eval_mode(model):
        for start in range(0, len(data), batch_size):
            x, _ = data.batch(torch.arange(start, min(start + batch_size, len(data))), device)
            loc, scale = model.encode(x)
            locs.append(loc)
            scales.append(scale)
    return torch.cat(locs), torch.cat(scales)


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


def _normal_kl(loc: torch.Tensor, scale: torch.Tensor, p_loc: torch.Tensor, p_scale: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{KL}(\mathcal{N}(\mu, \sigma) \| \mathcal{N}(m, s))` per row, summed over dimensions."""
    loc, scale = loc.double(), scale.double()
    p_loc, p_scale = p_loc.double(), p_scale.double()
    ratio = (scale / p_scale) ** 2
    return 0.5 * (ratio + ((loc - p_loc) / p_scale) ** 2 - 1.0 - ratio.log()).sum(-1)


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
    (:func:`full_aggregate_log_density`), never a minibatch. For a factorised prior DW is
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
    :param chunk_elements: block size of the :math:`O(S N D)` scoring, see :func:`full_aggregate_log_density`.
    :param codes: posterior ``(loc, scale)`` of every image, from :func:`encode_dataset`, if already computed.
    :param return_samples: also return the per-sample quantities under ``"samples"`` (numpy arrays).
    :returns: ``{"log_likelihood", "mi", "tc", "dwkl", "kl", "elbo"}`` (floats), ``"analytic_kl"`` (float or
        ``None``), ``"num_samples"`` (:math:`S`), ``"dataset_size"`` (:math:`N`), ``"stderr"`` (``{term: std/sqrt(S)}``
        when ``num_samples`` is given, else ``None``) and, with ``return_samples``, ``"samples"``: ``index`` ``(S,)``,
        ``z`` ``(S, D)``, ``log_px_z``, ``log_qz_x``, ``log_qz``, ``log_pz`` ``(S,)`` and ``log_qz_marginals``
        ``(S, D)``.
    """
    device = _model_device(model, device)
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
        index = torch.randperm(n, generator=gen)[: min(num_samples, n)].sort().values
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
        log_px_z = torch.empty(s, dtype=torch.float64, device=device)
        log_pz = torch.empty(s, dtype=torch.float64, device=device)
        for start in range(0, s, batch_size):
            sl = slice(start, start + batch_size)
            x, _ = data.batch(index[sl], device)
            log_px_z[sl] = model.likelihood(model.decoder(z[sl])).log_prob(x).double()
            log_pz[sl] = prior.log_prob(z[sl]).double()

    log_qz, log_qz_marg = full_aggregate_log_density(z, loc, scale, chunk_elements=chunk_elements)
    log_qz, log_qz_marg = log_qz.double(), log_qz_marg.double()
    per_sample = {"log_likelihood": log_px_z, **kl_terms(log_qz_x, log_qz, log_qz_marg, log_pz)}
    per_sample["kl"] = log_qz_x - log_pz
    per_sample["elbo"] = log_px_z - per_sample["kl"]
    out: dict = {name: per_sample[name].mean().item() for name in _TERMS}

    normal = _diagonal_normal(prior, d)
    out["analytic_kl"] = None if normal is None else _normal_kl(loc, scale, *normal).mean().item()
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
