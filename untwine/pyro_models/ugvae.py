r"""UG-VAE (unsupervised global VAE): a global latent per group, a Gaussian-mixture local prior driven by it.

**Generative model** (section 3.1, eqs. 1–4), for each of :math:`G` groups of :math:`B` observations:

.. math::

    \beta \sim \mathcal{N}(0, I_g), \qquad
    d_i \sim \mathrm{Cat}(1/K), \qquad
    z_i \mid d_i, \beta \sim \mathcal{N}\big(\mu_z^{(d_i)}(\beta), \operatorname{diag}\sigma_z^{(d_i)}(\beta)^2\big),
    \qquad x_i \sim p_\theta(x \mid [z_i, \beta]), \quad i = 1, \dots, B,

with one prior network per cluster (eq. 3), all :math:`K` evaluated in one batched call
(:class:`~untwine.pyro_models.networks.ClusterHeads`). Plates say what is shared: ``"groups"`` (dim -2) holds
:math:`\beta`, ``"data"`` (dim -1) inside it holds :math:`d_i, z_i, x_i`. A minibatch of ``G * group_size`` images
is read as ``G`` consecutive groups; training batches are random, so groups are random subsets of the data, as in
the paper (section 3.1), unless training groups are formed by a shared key (``untwine train --group-by``,
:class:`~untwine.data.groups.GroupedDataset`): random groups are i.i.d., and a mixture over :math:`\beta` of
:math:`\prod_i p(x_i \mid \beta)` can equal an i.i.d. law only where :math:`p(x \mid \beta)` ignores
:math:`\beta`, so under random batches the global latent has nothing about a group to carry
(:func:`~untwine.metrics.global_posterior_summary` measures how little it does). The likelihood (eq. 2) is a
Gaussian with fixed variance 0.2 by default (the authors'
MNIST setting) or a Bernoulli.

**Variational family** (section 3.2, eqs. 5–9):

.. math::

    q(z_i \mid x_i) = \mathcal{N}(\mu_\phi(x_i), \operatorname{diag}\sigma_\phi^2(x_i)), \qquad
    q(d_i \mid z_i) = \mathrm{Cat}(\pi_\phi(z_i)), \\
    q(\beta \mid X, Z) \propto \prod_{i=1}^B \mathcal{N}(\beta; \mu_i, \Lambda_i^{-1}), \quad
    \Lambda_\beta = \textstyle\sum_i \Lambda_i, \quad \mu_\beta = \Lambda_\beta^{-1} \sum_i \Lambda_i \mu_i,

where :math:`(\mu_i, \Lambda_i)` (diagonal precisions) come from one network applied to :math:`[x_i, \pi_\phi(z_i)]`
(eqs. 8–9). Whether the prior factor :math:`\mathcal{N}(0, I)` joins the product is the explicit choice
``global_prior_factor``: off by default, as in eq. 9 and the authors' code; on, :math:`\Lambda_\beta` gains
:math:`I`, so a group's posterior can never be wider than the prior. The guide draws :math:`z`, then
:math:`\beta`, then enumerates :math:`d`: :math:`\beta` is sampled before the enumerated :math:`d`, so nothing
outside plate ``"data"`` appears to depend on it.

**Objective** (eqs. 10–11): ``TraceEnum_ELBO(max_plate_nesting=2)`` with :math:`d` enumerated in the guide, which
sums over the clusters exactly, as the paper does by hand:

.. math::

    \mathcal{L} = \sum_{i} \Big( \mathbb{E}_q \log p(x_i \mid z_i, \beta)
        - \mathbb{E}_{q(d_i \mid z_i)} \mathrm{KL}\big(q(z_i \mid x_i) \,\|\, p(z_i \mid d_i, \beta)\big)
        - \mathrm{KL}\big(q(d_i \mid z_i) \,\|\, p(d_i)\big) \Big)
        - \mathrm{KL}\big(q(\beta \mid X, Z) \,\|\, p(\beta)\big),

one global KL per group. Pyro estimates the two Gaussian KLs by Monte Carlo at the drawn :math:`z, \beta`; the
discrete expectations are exact. Eq. 11 writes the :math:`z` term as an analytic KL weighted by
:math:`\pi_\phi(z_i)` evaluated at the drawn :math:`z_i`; the two agree in expectation when :math:`\pi_\phi` and
:math:`q(\beta)` do not move with the drawn :math:`z` and otherwise differ by that dependence (Pyro's estimator is
the unbiased one for the family of eq. 5). Training divides by the number of images, so the global KL costs
:math:`1/B` per image.

**ML-VAE ablation** (fig. 4; ``mixture=False``, registered as ``ml-vae``): no cluster variable, the local prior is
one Gaussian :math:`\mathcal{N}(\mu_z(\beta), \sigma_z(\beta)^2)` and the global posterior is computed from the
:math:`x_i` alone (Bouchacourt et al.'s product of Gaussians), trained on random batches like UG-VAE.

**Defaults** follow the authors' MNIST setting: :math:`\dim z = 10`, :math:`\dim \beta = 20`, :math:`K = 10`,
groups of 128, one hidden layer of 256 units in the encoder and decoder (``mlp-256``), and (in the data registry)
batch 128 with Adam at ``lr=5e-3`` set by :attr:`UGVAE.default_lr`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import ELBO, TraceEnum_ELBO
from pyro.ops.indexing import Vindex
from torch import nn

from untwine.inference.elbo import SyncFreeTrace_ELBO
from untwine.pyro_models.base import ConfigError, GlobalLatent, ImageConfig, Model, image_likelihood, positive_scale
from untwine.pyro_models.networks import ClusterHeads, build_networks, labelled_network


class GroupError(ValueError):
    """Images cannot be read as groups for the global latent (too small, or unequal, or not divisible)."""


@dataclass
class UGVAEConfig(ImageConfig):
    """Hyperparameters of :class:`UGVAE` (defaults: the authors' MNIST setting).

    :param latent_dim: size of the local latent :math:`z`.
    :param global_dim: size :math:`g` of the global latent :math:`\\beta`.
    :param num_clusters: :math:`K`, mixture components of the local prior (ignored when ``mixture=False``).
    :param group_size: :math:`B`, observations sharing one :math:`\\beta`; a training batch holds whole groups.
    :param mixture: ``False`` gives the ML-VAE ablation (no cluster variable).
    :param global_prior_factor: include :math:`\\mathcal{N}(0, I)` in the product of eq. 9.
    :param hidden: width of the hidden layers of the cluster, global-encoder and prior networks.

    The image fields are :class:`~untwine.pyro_models.base.ImageConfig`'s, with a Gaussian likelihood of variance
    0.2 by default (``network="auto"``: ``mlp-256`` for 28x28, else as N-VAE).
    """

    image_shape: tuple[int, int, int] = (1, 28, 28)
    likelihood: str = "gaussian"
    obs_scale: float = math.sqrt(0.2)
    latent_dim: int = 10
    global_dim: int = 20
    num_clusters: int = 10
    group_size: int = 128
    mixture: bool = True
    global_prior_factor: bool = False
    hidden: int = 256

    def __post_init__(self):
        super().__post_init__()
        for name in ("latent_dim", "global_dim", "hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.num_clusters < 1:
            raise ConfigError(f"num_clusters (K) must be at least 1, got {self.num_clusters}")
        if self.group_size < 2:
            raise ConfigError(
                f"group_size must be at least 2: the global posterior is a product over a group, got {self.group_size}"
            )

    @property
    def components(self) -> int:
        """Number of local prior components: :math:`K`, or 1 for the ML-VAE ablation."""
        return self.num_clusters if self.mixture else 1


class UGVAE(Model, GlobalLatent):
    """UG-VAE (or, with ``mixture=False``, the ML-VAE ablation) as a Pyro model/guide pair.

    Sites: ``beta`` in plate ``"groups"``; ``d`` (enumerated), ``z`` and ``x`` in plate ``"data"`` inside it. Use
    with ``TraceEnum_ELBO(max_plate_nesting=2)`` (:meth:`default_loss`). ``model(x)`` and ``guide(x)`` take
    ``x`` ``(G * group_size, C, H, W)`` (consecutive groups) or ``(G, B, C, H, W)``.
    """

    name = "ug-vae"
    Config = UGVAEConfig
    default_lr = 5e-3

    def __init__(self, config: UGVAEConfig | None = None):
        super().__init__(config)
        cfg = self.config
        network = cfg.network
        if network == "auto":
            network = "mlp-256" if tuple(cfg.image_shape[1:]) == (28, 28) else labelled_network(cfg.image_shape)
        self.encoder, self.decoder = build_networks(
            network, cfg.image_shape, cfg.latent_dim + cfg.global_dim, encoder_out=2 * cfg.latent_dim
        )
        # q(beta | x_i, pi_i): image features plus a linear map of pi, then one hidden layer (eq. 8); adding the two
        # linear maps is a linear layer on the concatenation [x_i, pi_i].
        self.global_features = build_networks(network, cfg.image_shape, 1, encoder_out=cfg.hidden)[0]
        self.global_head = nn.Sequential(nn.ReLU(), nn.Linear(cfg.hidden, 2 * cfg.global_dim))
        if cfg.mixture:
            self.global_pi = nn.Linear(cfg.num_clusters, cfg.hidden, bias=False)
            self.cluster_net = nn.Sequential(
                nn.Linear(cfg.latent_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.num_clusters)
            )
        self.prior_heads = ClusterHeads(cfg.components, cfg.global_dim, cfg.hidden, 2 * cfg.latent_dim)
        self.register_buffer("_zero", torch.zeros(()))
        # p(beta) = N(0, I) and the uniform p(d), built once instead of in every step; they follow .to() and stay out
        # of checkpoints
        self.register_buffer("_beta_loc", torch.zeros(cfg.global_dim), persistent=False)
        self.register_buffer("_beta_scale", torch.ones(cfg.global_dim), persistent=False)
        self.register_buffer("_cluster_logits", torch.zeros(cfg.num_clusters), persistent=False)

    @property
    def group_size(self) -> int:
        """:math:`B`: the training loop feeds whole groups of this size."""
        return self.config.group_size

    # --- groups -------------------------------------------------------------------------------------
    def as_groups(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``(G, B, C, H, W)``: 5-D input as is, 4-D input split into consecutive groups of ``group_size``."""
        if x.dim() == 5:
            groups = x
        elif x.dim() == 4:
            n, b = x.shape[0], self.config.group_size
            if n % b:
                raise GroupError(
                    f"a batch of {n} images cannot be split into groups of {b}: pass a multiple of group_size "
                    f"images, or groups shaped (G, B, C, H, W)"
                )
            groups = x.reshape(n // b, b, *x.shape[1:])
        else:
            raise GroupError(f"expected images (N, C, H, W) or groups (G, B, C, H, W), got shape {tuple(x.shape)}")
        if groups.shape[1] < 2:
            raise GroupError(
                f"the global posterior needs at least 2 observations per group, got groups of {groups.shape[1]}"
            )
        if tuple(groups.shape[2:]) != tuple(self.config.image_shape):
            raise GroupError(f"images of shape {tuple(groups.shape[2:])}, expected {tuple(self.config.image_shape)}")
        return groups

    @staticmethod
    def stack_groups(groups: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack a list of groups ``(B, C, H, W)`` into ``(G, B, C, H, W)``; every group must have the same size."""
        sizes = [int(g.shape[0]) for g in groups]
        if not sizes:
            raise GroupError("no groups given")
        if len(set(sizes)) > 1:
            raise GroupError(
                f"groups have different sizes {sizes}; groups stacked in one call must be equally large "
                "(call once per size)"
            )
        return torch.stack(list(groups))

    # --- networks -----------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of :math:`q(z \\mid x)` (eq. 6) for images with any leading dimensions."""
        lead = x.shape[:-3]
        h = self.encoder(x.reshape(-1, *x.shape[-3:]))
        loc, raw = h.reshape(*lead, -1).chunk(2, dim=-1)
        return loc, positive_scale(raw)

    def cluster_probs(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\pi_\\phi(z)`, the parameters of :math:`q(d \\mid z)` (eq. 7), ``(..., K)``."""
        if not self.config.mixture:
            return z.new_ones(*z.shape[:-1], 1)
        return torch.softmax(self.cluster_net(z), -1)

    def local_factors(self, x: torch.Tensor, probs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-observation Gaussian factors :math:`(\\mu_i, \\Lambda_i)` of eq. 8 from :math:`[x_i, \\pi_i]`."""
        lead = x.shape[:-3]
        h = self.global_features(x.reshape(-1, *x.shape[-3:])).reshape(*lead, -1)
        if self.config.mixture:
            h = h + self.global_pi(probs)
        loc, raw = self.global_head(h).chunk(2, dim=-1)
        return loc, positive_scale(raw)

    def combine(self, loc: torch.Tensor, precision: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Product of the Gaussian factors along the data dimension (eq. 9), keeping it as a size-1 dimension.

        :param loc: :math:`\\mu_i` ``(..., B, g)``. :param precision: diagonal :math:`\\Lambda_i` ``(..., B, g)``.
        :returns: location and scale of :math:`q(\\beta \\mid X, Z)`, each ``(..., 1, g)``.
        """
        total = precision.sum(-2, keepdim=True)
        weighted = (precision * loc).sum(-2, keepdim=True)
        if self.config.global_prior_factor:
            total = total + 1.0  # the N(0, I) factor adds precision 1 and nothing to the weighted sum
        return weighted / total, total.rsqrt()

    def local_prior(self, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`\\mu_z^{(k)}(\\beta)`, :math:`\\sigma_z^{(k)}(\\beta)` for each component, ``(..., K, latent)``."""
        loc, raw = self.prior_heads(beta).chunk(2, dim=-1)
        return loc, positive_scale(raw)

    def decoder_input(self, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """:math:`[z_i, \\beta]` with :math:`\\beta` broadcast over the group (eq. 2)."""
        return torch.cat([z, beta.expand(*z.shape[:-1], beta.shape[-1])], -1)

    def likelihood(self, out: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`p(x \mid z, \beta)` from the decoder output, one event per image."""
        return image_likelihood(out, self.config.likelihood, self.config.obs_scale)

    # --- the Pyro program ---------------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Eqs. 1–4; ``y`` is ignored (the model is unsupervised)."""
        pyro.module(self.name, self)
        groups = self.as_groups(x)
        cfg = self.config
        g, b = groups.shape[:2]
        with pyro.plate("groups", g, dim=-2):
            beta = pyro.sample("beta", dist.Normal(self._beta_loc, self._beta_scale).to_event(1))
            loc, scale = self.local_prior(beta)  # (..., G, 1, K, latent)
            with pyro.plate("data", b, dim=-1):
                if cfg.mixture:
                    d = pyro.sample("d", dist.Categorical(logits=self._cluster_logits))
                    loc, scale = Vindex(loc)[..., d, :], Vindex(scale)[..., d, :]
                else:
                    loc, scale = loc[..., 0, :], scale[..., 0, :]
                z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
                out = self.decoder(self.decoder_input(z, beta))
                pyro.sample("x", self.likelihood(out), obs=groups)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Eqs. 5–9: :math:`z`, then :math:`\\beta` from the product of local factors, then :math:`d` enumerated."""
        pyro.module(self.name, self)
        groups = self.as_groups(x)
        g, b = groups.shape[:2]
        z_loc, z_scale = self.encode(groups)
        data = pyro.plate("data", b, dim=-1)  # one plate object entered twice: a plate is recorded once per trace
        with pyro.plate("groups", g, dim=-2):
            with data:
                z = pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
            probs = self.cluster_probs(z)
            beta_loc, beta_scale = self.combine(*self.local_factors(groups, probs))
            pyro.sample("beta", dist.Normal(beta_loc, beta_scale).to_event(1))
            if self.config.mixture:
                with data:
                    pyro.sample("d", dist.Categorical(probs=probs), infer={"enumerate": "parallel"})

    def default_loss(self, dataset_size: int) -> ELBO:
        """Pyro's ``TraceEnum_ELBO`` with the cluster enumerated, or for the ML-VAE, which has none, ``Trace_ELBO``
        without host-device synchronisation (:mod:`untwine.inference.elbo`)."""
        if self.config.mixture:
            return TraceEnum_ELBO(max_plate_nesting=2)
        return SyncFreeTrace_ELBO(max_plate_nesting=2)

    def evaluations(self) -> list[str]:
        """The VAE's, plus the experiments on the global posterior: what it carries (:math:`I(X; \\beta)`, the costs of
        prior and swapped :math:`\\beta`, ink transfer), the digit-series batches of Table 1 beside label-free
        baselines (MNIST) and domain separability and transfer (a two-domain mixture)."""
        return [*super().evaluations(), "global_posterior", "ink_transfer", "batch_classification", "domains"]

    def figures(self) -> list[str]:
        """Sampling grids (fig. 3), interpolation between two batches (fig. 5) and the t-SNE of global posteriors
        (figs. 5b, 7) instead of per-coordinate traversals."""
        return ["reconstructions", "samples", "global_figures", "loss", "latent_vs_factors", "khat"]

    # --- deterministic pieces -----------------------------------------------------------------------
    @torch.no_grad()
    def global_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of :math:`q(\\beta \\mid X, Z)` per group, with :math:`z` at its posterior mean.

        :param x: one group ``(B, C, H, W)`` or groups ``(G, B, C, H, W)`` (``B >= 2``).
        :returns: ``(G, global_dim)`` each (``G = 1`` for a single group).
        """
        groups = self._groups_of(x)
        z_loc, _ = self.encode(groups)
        loc, scale = self.combine(*self.local_factors(groups, self.cluster_probs(z_loc)))
        return loc.squeeze(-2), scale.squeeze(-2)

    @torch.no_grad()
    def cluster_usage(self, x: torch.Tensor) -> torch.Tensor:
        r"""Share of the images ``x`` ``(N, C, H, W)`` in each cluster: :math:`q(d \mid \mathbb{E}[z \mid x])` averaged
        over the images, ``(K,)`` (``(1,)`` for the ML-VAE); the sampling grid shows the most used clusters."""
        return self.cluster_probs(self.encode(x)[0]).mean(0)

    def _groups_of(self, x: torch.Tensor) -> torch.Tensor:
        return self.as_groups(x.unsqueeze(0) if x.dim() == 4 else x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """Mean image :math:`\\mathbb{E}[x \\mid z, \\beta]` for broadcastable ``z`` ``(..., latent_dim)`` and
        ``beta`` ``(..., global_dim)``."""
        lead = torch.broadcast_shapes(z.shape[:-1], beta.shape[:-1])
        z = z.expand(*lead, z.shape[-1])
        out = self.decoder(self.decoder_input(z, beta.expand(*lead, beta.shape[-1])))
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x_i \mid z_i, \beta)` (eq. 2) per image of groups ``x`` ``(G, B, C, H, W)``, ``(G, B)``."""
        lead = torch.broadcast_shapes(z.shape[:-1], beta.shape[:-1])
        out = self.decoder(self.decoder_input(z.expand(*lead, z.shape[-1]), beta.expand(*lead, beta.shape[-1])))
        return self.likelihood(out).log_prob(x)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode each image's :math:`\\mathbb{E}[z \\mid x]` with its group's :math:`\\mathbb{E}[\\beta]`.

        :param x: ``(N, C, H, W)``, read as **one** group (``N >= 2``), or groups ``(G, B, C, H, W)``.
        """
        groups = self._groups_of(x)
        beta, _ = self.global_posterior(groups)
        z_loc, _ = self.encode(groups)
        return self.decode(z_loc, beta.unsqueeze(-2)).reshape(x.shape)

    @torch.no_grad()
    def sample(self, n: int, per_group: int = 8) -> torch.Tensor:
        """``n`` ancestral samples in groups of ``per_group`` consecutive images that share one :math:`\\beta`."""
        cfg = self.config
        g = math.ceil(n / per_group)
        beta = torch.randn(g, 1, cfg.global_dim, device=self._zero.device)
        loc, scale = self.local_prior(beta)  # (G, 1, K, latent)
        d = torch.randint(cfg.components, (g, per_group), device=beta.device)
        rows = torch.arange(g, device=beta.device)[:, None]
        loc, scale = loc[:, 0][rows, d], scale[:, 0][rows, d]  # (G, per_group, latent)
        z = loc + scale * torch.randn_like(loc)
        return self.decode(z, beta).reshape(-1, *cfg.image_shape)[:n]

    @torch.no_grad()
    def sampling_grid(
        self,
        cluster: int,
        rows: int = 7,
        cols: int = 7,
        beta_span: float = 1.0,
        z_span: float = 3.0,
        beta_path: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fig. 3: rows move :math:`\\beta` along the diagonal from ``-beta_span`` to ``beta_span`` in every coordinate
        (or through the rows of ``beta_path`` ``(rows, global_dim)``, e.g. the range real batches' posteriors take);
        columns move :math:`z` along the diagonal from :math:`\\mu_z^{(d)}(\\beta) - z_{span}` to
        :math:`\\mu_z^{(d)}(\\beta) + z_{span}`, for cluster ``d = cluster``.

        :returns: ``(rows, cols, C, H, W)``.
        """
        if not 0 <= cluster < self.config.components:
            raise ValueError(f"cluster {cluster} is outside [0, {self.config.components})")
        device = self._zero.device
        if beta_path is None:
            t = torch.linspace(-beta_span, beta_span, rows, device=device)
            beta = t[:, None].expand(rows, self.config.global_dim)
        else:
            if beta_path.dim() != 2 or beta_path.shape[1] != self.config.global_dim:
                raise ValueError(f"beta_path must be (rows, {self.config.global_dim}), got {tuple(beta_path.shape)}")
            beta = beta_path.to(device=device, dtype=self._zero.dtype)
            rows = beta.shape[0]
        mu = self.local_prior(beta)[0][:, cluster]  # (rows, latent)
        s = torch.linspace(-z_span, z_span, cols, device=device)
        z = mu[:, None, :] + s[None, :, None]
        return self.decode(z, beta[:, None, :])

    @torch.no_grad()
    def interpolate(
        self, batch1: torch.Tensor, batch2: torch.Tensor, i: int = 0, j: int = 0, steps: int = 7
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fig. 5: :math:`\\beta_1 \\to \\beta_2` (rows; the two batches' posterior means) against
        :math:`z_1 \\to z_2` (columns; posterior means of image ``i`` of ``batch1`` and image ``j`` of ``batch2``).

        :returns: images ``(steps, steps, C, H, W)`` and the interpolated :math:`\\beta` ``(steps, global_dim)``.
        """
        beta1, _ = self.global_posterior(batch1)
        beta2, _ = self.global_posterior(batch2)
        z1 = self.encode(batch1[i : i + 1])[0][0]
        z2 = self.encode(batch2[j : j + 1])[0][0]
        t = torch.linspace(0, 1, steps, device=z1.device)[:, None]
        betas = (1 - t) * beta1 + t * beta2
        zs = (1 - t) * z1 + t * z2
        return self.decode(zs[None, :, :], betas[:, None, :]), betas
