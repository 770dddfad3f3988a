r"""The total-correlation decomposition of the ELBO (β-TCVAE) for any model/guide pair.

Chen et al. (2018), "ELBO TC-decomposition" (restated as eq. 3 of the ISA-VAE paper), split the average KL
term with the aggregate posterior :math:`q(z) = \frac{1}{N}\sum_n q(z \mid x_n)`:

.. math::

    \mathbb{E}_{p(n)} \mathrm{KL}\big(q(z \mid x_n) \,\|\, p(z)\big)
    = \underbrace{\mathrm{KL}\big(q(z, n) \,\|\, q(z) p(n)\big)}_{\text{index-code MI}}
    + \underbrace{\mathrm{KL}\Big(q(z) \,\Big\|\, \prod_j q(z_j)\Big)}_{\text{total correlation}}
    + \underbrace{\mathbb{E}_{q(z)}\Big[\log \prod_j q(z_j) - \log p(z)\Big]}_{\text{dimension-wise KL}} .

For a factorised prior the last term is :math:`\sum_j \mathrm{KL}(q(z_j) \,\|\, p(z_j))`; for a prior that does
not factorise (the Lp-nested ISA prior) it is :math:`\mathbb{E}_{q(z)}[\log \prod_j q(z_j) - \log p(z)]`, which is
what this module computes in both cases. :class:`TCDecomposedELBO` weights the three terms α, β, γ
(``mi_weight``, ``tc_weight``, ``dw_weight``); with α = β = γ = 1 it is the ordinary ELBO on the same samples.

:math:`\log q(z)` and :math:`\log q(z_j)` need the whole dataset; :func:`aggregate_log_density` estimates them from
the minibatch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine import Trace

from untwine.inference.elbo import SyncFreeTrace_ELBO

ESTIMATORS = ("mss", "mws")
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _log_weights(batch_size: int, dataset_size: int, estimator: str) -> tuple[float, float]:
    r"""Log importance weights as ``(off, diagonal)``: :math:`\log w_{im}` is ``off`` for every pair, plus ``diagonal``
    when :math:`m = i`."""
    b, n = batch_size, dataset_size
    if estimator == "mws":
        return -math.log(n * b), 0.0
    if b == 1:
        return -math.log(n), 0.0
    off = math.log(n - 1) - math.log(n) - math.log(b - 1)
    return off, -math.log(n) - off


def aggregate_log_density(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    dataset_size: int,
    estimator: str = "mss",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Minibatch estimates of :math:`\log q(z_i)` and :math:`\log q(z_{ij})` under the aggregate posterior.

    Sample :math:`z_i \sim q(z \mid x_i)` of a minibatch :math:`x_{1:B}` drawn from :math:`N` data points, with
    diagonal-Gaussian posteriors :math:`q(z \mid x_m) = \mathcal{N}(\mu_m, \operatorname{diag}\sigma_m^2)`, is
    scored against every posterior in the batch, :math:`\log q(z_i \mid x_m)`, and the terms are combined as

    .. math::

        \log \hat q(z_i) = \operatorname{logsumexp}_m \big[\log w_{im} + \log q(z_i \mid x_m)\big],

    and the same per dimension for :math:`\log \hat q(z_{ij})`. The weights are

    * ``"mss"`` (minibatch stratified sampling): the sample's own posterior is one of the :math:`N` components,
      weight :math:`w_{ii} = 1/N` **on the diagonal**, and the other :math:`B-1` posteriors stand in for the other
      :math:`N-1` components, :math:`w_{im} = \frac{N-1}{N(B-1)}`. Unbiased for :math:`q(z_i)`; the log is
      consistent as :math:`B \to N`.
    * ``"mws"`` (minibatch weighted sampling, the β-TCVAE poster's formula): :math:`w_{im} = \frac{1}{NB}` for all
      pairs. Its self term is down-weighted by :math:`B`, so :math:`\log \hat q(z)` is low by up to
      :math:`\log B` while each marginal is low by about :math:`\log N`, which biases the total correlation by
      up to :math:`D \log N - \log B` nats.

    :param z: samples ``(B, D)``; :param loc: posterior means ``(B, D)``; :param scale: posterior scales ``(B, D)``.
    :param dataset_size: :math:`N`, the number of data points the batch was drawn from.
    :returns: ``(log_qz, log_qz_marginals)`` of shapes ``(B,)`` and ``(B, D)``.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if z.dim() != 2 or loc.shape != z.shape or scale.shape != z.shape:
        raise ValueError(f"z, loc and scale must all be (B, D); got {tuple(z.shape)}, {tuple(loc.shape)}, "
                         f"{tuple(scale.shape)}")  # fmt: skip
    b = z.shape[0]
    if dataset_size < b:
        raise ValueError(f"dataset_size ({dataset_size}) cannot be smaller than the batch ({b})")
    off, diagonal = _log_weights(b, dataset_size, estimator)
    # (B, B, D): log q(z_ij | x_m) for sample i (rows) against posterior m (columns), in three passes over B*B*D
    # elements (this is most of the objective's cost at Chen et al.'s batch of 2048); the weight common to all pairs
    # is added after the log-sum-exp, the diagonal's extra weight in place
    diff = (z.unsqueeze(1) - loc) * scale.reciprocal()
    pairwise = torch.addcmul(-(scale.log() + HALF_LOG_2PI), diff, diff, value=-0.5)
    if diagonal:
        pairwise.diagonal(dim1=0, dim2=1).add_(diagonal)
    log_qz_marginals = torch.logsumexp(pairwise, dim=1) + off
    joint = pairwise.sum(-1)  # its diagonal holds D times the diagonal weight, the joint needs it once
    if diagonal and z.shape[1] != 1:
        joint.diagonal().sub_((z.shape[1] - 1) * diagonal)
    log_qz = torch.logsumexp(joint, dim=1) + off
    return log_qz, log_qz_marginals


def _normal_params(fn: dist.Distribution, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``loc`` and ``scale`` of a (possibly ``Independent``) Normal guide distribution."""
    base = fn
    while isinstance(base, (dist.Independent, torch.distributions.Independent)):
        base = base.base_dist
    if not isinstance(base, torch.distributions.Normal):
        raise ValueError(
            f"the TC decomposition needs a diagonal Normal guide at site {name!r}, got {type(base).__name__}"
        )
    return base.loc, base.scale


def tc_terms(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    log_pz: torch.Tensor,
    dataset_size: int,
    estimator: str = "mss",
) -> dict[str, torch.Tensor]:
    r"""Per-sample estimates of the three KL terms, each of shape ``(B,)``.

    .. math::

        \mathrm{MI}_i = \log q(z_i \mid x_i) - \log \hat q(z_i), \quad
        \mathrm{TC}_i = \log \hat q(z_i) - \sum_j \log \hat q(z_{ij}), \quad
        \mathrm{DW}_i = \sum_j \log \hat q(z_{ij}) - \log p(z_i),

    so :math:`\mathrm{MI}_i + \mathrm{TC}_i + \mathrm{DW}_i = \log q(z_i \mid x_i) - \log p(z_i)` exactly.

    :param log_pz: prior log-density of each sample ``(B,)``.
    """
    log_qz_x = dist.Normal(loc, scale).log_prob(z).sum(-1)
    log_qz, log_qz_marg = aggregate_log_density(z, loc, scale, dataset_size, estimator)
    return kl_terms(log_qz_x, log_qz, log_qz_marg, log_pz)


def kl_terms(
    log_qz_x: torch.Tensor, log_qz: torch.Tensor, log_qz_marginals: torch.Tensor, log_pz: torch.Tensor
) -> dict[str, torch.Tensor]:
    r"""The three KL terms per sample from the four log-densities, however :math:`\log q(z)` was estimated.

    Shared by the minibatch objective (:func:`tc_terms`) and the full-dataset decomposition
    (:func:`untwine.metrics.elbo_decomposition`) so both use one definition.

    :param log_qz_x: :math:`\log q(z_i \mid x_i)` ``(B,)``; :param log_qz: :math:`\log q(z_i)` ``(B,)``;
    :param log_qz_marginals: :math:`\log q(z_{ij})` ``(B, D)``; :param log_pz: :math:`\log p(z_i)` ``(B,)``.
    :returns: ``{"mi", "tc", "dwkl"}``, each ``(B,)``.
    """
    log_prod_marg = log_qz_marginals.sum(-1)
    return {"mi": log_qz_x - log_qz, "tc": log_qz - log_prod_marg, "dwkl": log_prod_marg - log_pz}


class TCDecomposedELBO(SyncFreeTrace_ELBO):
    r"""The ELBO with the KL of named latent sites weighted as α·MI + β·TC + γ·dimension-wise KL (β-TCVAE).

    Chen et al. (2018) split the KL term of each datapoint into index-code MI, total correlation and dimension-wise
    KL ("ELBO TC-decomposition", eq. 3 of the ISA-VAE paper) and weight the three ("Special case: β-TCVAE" is
    α = γ = 1, β > 1, with a model whose own KL weight is 1). Since the terms add up to the KL per sample
    (:func:`tc_terms`), the weighted objective is the ELBO plus a correction,

    .. math::

        -\mathcal{L}_{\alpha\beta\gamma}
        &= -\mathbb{E}_q \log p(x \mid z)
            + \sum_{\text{sites}} s \sum_i \big(\alpha\,\mathrm{MI}_i + \beta\,\mathrm{TC}_i
            + \gamma\,\mathrm{DW}_i\big) \\
        &= -\mathcal{L} + \sum_{\text{sites}} s \sum_i \big[(\alpha - 1)\,\mathrm{MI}_i
            + (\beta - 1)\,\mathrm{TC}_i + (\gamma - 1)\,\mathrm{DW}_i\big],
        \qquad \mathrm{MI}_i + \mathrm{TC}_i + \mathrm{DW}_i = \log q(z_i \mid x_i) - \log p(z_i),

    where :math:`-\mathcal{L}` is :class:`~untwine.inference.elbo.SyncFreeTrace_ELBO`'s loss of the same particle
    (likelihood, every latent site, score-function terms of non-reparameterised sites), :math:`s` the site's scale
    and the terms are computed from the particle's traces: the guide's Normal ``loc``/``scale`` and sample, and the
    model's unscaled prior log-density. Each site in ``sites`` must be a local latent inside the data plate with a
    diagonal-Normal guide. With α = β = γ = 1 this is the ELBO. The loss is computed without moving any value to the
    host, so a GPU step does not synchronise.

    :param dataset_size: :math:`N` of the training set (the estimators need it).
    :param mi_weight: α, the weight of the index-code mutual information.
    :param tc_weight: β, the weight of the total correlation.
    :param dw_weight: γ, the weight of the dimension-wise KL.
    :param sites: names of the latent sites to decompose (default ``("z",)``).
    :param estimator: ``"mss"`` or ``"mws"``, see :func:`aggregate_log_density`.
    :param elbo_kwargs: passed to ``Trace_ELBO`` (``num_particles``, ``max_plate_nesting``, ...).
    """

    #: the weights' former keyword names, refused with a message naming the new ones
    RENAMED = {"alpha": "mi_weight", "beta": "tc_weight", "gamma": "dw_weight"}

    def __init__(
        self,
        dataset_size: int,
        mi_weight: float = 1.0,
        tc_weight: float = 1.0,
        dw_weight: float = 1.0,
        sites: Sequence[str] = ("z",),
        estimator: str = "mss",
        **elbo_kwargs,
    ):
        renamed = [f"{old}= is now {new}=" for old, new in self.RENAMED.items() if old in elbo_kwargs]
        if renamed:
            raise TypeError(f"TCDecomposedELBO's weights were renamed: {', '.join(renamed)}")
        super().__init__(**elbo_kwargs)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if dataset_size < 1:
            raise ValueError(f"dataset_size must be positive, got {dataset_size}")
        self.dataset_size = int(dataset_size)
        self.mi_weight, self.tc_weight, self.dw_weight = float(mi_weight), float(tc_weight), float(dw_weight)
        self.sites = tuple(sites)
        self.estimator = estimator
        #: per-datapoint means of the last call's terms, as detached tensors (for logging)
        self.last_terms: dict[str, torch.Tensor] = {}

    def particle_loss(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
        loss = super().particle_loss(model_trace, guide_trace)
        for name in self.sites:
            loss = loss + self.correction(name, model_trace, guide_trace)
        return loss

    def correction(self, name: str, model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
        """What the weights add to the ELBO's loss at site ``name``: (α−1)·MI + (β−1)·TC + (γ−1)·DW, scaled and
        masked as the site's log-densities are."""
        if name not in guide_trace.nodes or name not in model_trace.nodes:
            raise ValueError(f"latent site {name!r} is not in both the model and the guide")
        g_site, m_site = guide_trace.nodes[name], model_trace.nodes[name]
        loc, scale = _normal_params(g_site["fn"], name)
        z = g_site["value"]
        if z.dim() != 2:
            raise ValueError(f"site {name!r} must hold one vector per datapoint, shape (B, D); got {tuple(z.shape)}")
        loc, scale = loc.expand_as(z), scale.expand_as(z)
        terms = tc_terms(z, loc, scale, m_site["unscaled_log_prob"], self.dataset_size, self.estimator)
        self.last_terms = {k: v.detach().mean() for k, v in terms.items()}
        weighted = (
            (self.mi_weight - 1.0) * terms["mi"]
            + (self.tc_weight - 1.0) * terms["tc"]
            + (self.dw_weight - 1.0) * terms["dwkl"]
        )
        return scale_and_mask(weighted, g_site["scale"], g_site["mask"]).sum()
