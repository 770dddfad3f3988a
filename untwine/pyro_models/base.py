r"""The model/guide contract of untwine, stated once.

Every model is a :class:`Model`: an ``nn.Module`` whose ``model(x, y=None)`` and ``guide(x, y=None)`` are a Pyro
model/guide pair over a batch of images ``x`` ``(B, C, H, W)`` (``y``: labels, for models that read them), plus the
deterministic pieces the metrics and figures use (:meth:`Model.encode`, :meth:`Model.decode`, :meth:`Model.sample`,
:meth:`Model.reconstruct`). The training loop (:func:`~untwine.inference.train.fit`) and the run folders
(:mod:`untwine.experiment`) call the hooks below on every model; each has a default that does nothing special, so a
new model/guide pair overrides only what it changes:

============================  ==========================================================================================
hook                          default
============================  ==========================================================================================
``default_loss(n)``           :class:`~untwine.inference.elbo.SyncFreeTrace_ELBO` (Pyro's ``Trace_ELBO``)
``param_groups(lr)``          one group of every parameter not in ``auxiliary_param_groups``
``group_size``                1 (images a training batch must keep together; UG-VAE: one global latent per group)
``check_labels(y)``           accept any labels
``epoch_summary()``           nothing (ISA-VAE: its learned exponents, one history column each)
``auxiliary_param_groups``    none: a model with an adversary (FactorVAE's discriminator) lists its parameters here;
                              ``fit`` gives them a second optimiser that minimises ``auxiliary_loss(x, y)`` after
                              every ELBO step, and checkpoints it
``evaluations()``             the ELBO and, on data with ground-truth factors, both MIGs (the VAE family adds the TC
                              decomposition, which reads its ``prior()``, ``decoder`` and ``likelihood``)
``figures()``                 reconstructions, prior samples, traversals, the training curve, latents vs factors
============================  ==========================================================================================

The names in ``evaluations()`` and ``figures()`` are keys of :data:`untwine.evaluations.EVALUATIONS` and
:data:`untwine.evaluations.FIGURES`; a model adds its paper's own by naming them there.

Optional abilities are declared by inheriting a capability: :class:`Subspaces` (independent subspaces of the latent
code, ISA-VAE), :class:`ClassPosterior` (a posterior over classes, N-VAE) and :class:`GlobalLatent` (a latent shared
by a group of images, UG-VAE and ML-VAE). Metrics that need an ability check for it with ``isinstance``.

The shared plumbing lives here too: :class:`ImageConfig` (the fields every image model's config has, checked in
``__post_init__``), :func:`image_likelihood`, :func:`positive_scale` and :class:`ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pyro.distributions as dist
import torch
from pyro.infer import ELBO
from torch import nn
from torch.nn import functional as F

from untwine.inference.elbo import SyncFreeTrace_ELBO

if TYPE_CHECKING:
    from untwine.inference.objectives import Objective

LIKELIHOODS = ("bernoulli", "gaussian")
#: the disentanglement_lib study's scores beside MIG (Locatello et al. 2019), by evaluation name
SCORES = ("beta_vae_score", "factor_vae_score", "dci", "sap", "modularity")


class ConfigError(ValueError):
    """A model or training configuration value is invalid; the message names the field."""


@dataclass
class ImageConfig:
    """Fields every image model's config has; subclasses add theirs and call ``super().__post_init__()``.

    :param image_shape: ``(C, H, W)`` of the data (set from the dataset by the run folders).
    :param likelihood: ``"bernoulli"`` on decoder logits, or ``"gaussian"`` with fixed ``obs_scale``.
    :param obs_scale: standard deviation of the Gaussian likelihood.
    :param network: encoder/decoder family from :mod:`untwine.pyro_models.networks` (``"auto"``: by image shape).
    """

    image_shape: tuple[int, int, int] = (1, 64, 64)
    likelihood: str = "bernoulli"
    obs_scale: float = 0.1
    network: str = "auto"

    def __post_init__(self):
        self.image_shape = tuple(int(s) for s in self.image_shape)
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if not self.obs_scale > 0:
            raise ConfigError(f"obs_scale must be positive, got {self.obs_scale}")

    def check_positive(self, *names: str) -> None:
        """A :class:`ConfigError` naming the first of ``names`` that is not a positive number."""
        for name in names:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")


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


def positive_scale(raw: torch.Tensor) -> torch.Tensor:
    r"""A network output as a Normal scale: :math:`\operatorname{softplus}(r) + 10^{-6}` (never exactly zero)."""
    return F.softplus(raw) + 1e-6


class Model(nn.Module):
    """Base class of every untwine model/guide pair (see the module docstring for the contract).

    Class attributes: ``name`` (registry name; checkpoints record it), ``Config`` (the config dataclass),
    ``latent_site`` (the local latent that the metrics and the TC objective read), ``default_lr`` (a learning rate the
    paper prescribes, else ``None`` for :class:`~untwine.inference.train.TrainConfig`'s), ``find_unused_parameters``
    (``True`` if some parameter gets no gradient in a step, for DDP).
    """

    name: ClassVar[str] = "model"
    Config: ClassVar[type] = ImageConfig
    latent_site: ClassVar[str] = "z"
    default_lr: ClassVar[float | None] = None
    find_unused_parameters: ClassVar[bool] = False

    def __init__(self, config: Any = None, objective: Objective | None = None):
        super().__init__()
        self.config = config if config is not None else type(self).Config()
        #: the objective :meth:`default_loss` builds (``None``: the model's own); the registry sets it for entries that
        #: pair a model with an objective, e.g. ``beta-tcvae``
        self.objective = objective

    # --- the Pyro program (required) ----------------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        """The generative model :math:`p(x, z)`, with ``x`` observed."""
        raise NotImplementedError(f"{type(self).__name__} must define model(x, y=None)")

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        """The variational posterior :math:`q(z \\mid x)` over the model's latent sites."""
        raise NotImplementedError(f"{type(self).__name__} must define guide(x, y=None)")

    # --- deterministic pieces (required by the metrics and figures) ---------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of the diagonal Gaussian :math:`q(z \\mid x)` at ``latent_site``, each ``(B, D)``."""
        raise NotImplementedError(f"{type(self).__name__} must define encode(x) -> (loc, scale)")

    def decode(self, z: torch.Tensor, *args: Any) -> torch.Tensor:
        """Mean image :math:`\\mathbb{E}[x \\mid z]`."""
        raise NotImplementedError(f"{type(self).__name__} must define decode(z)")

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of each image."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` mean images decoded from the prior."""
        raise NotImplementedError(f"{type(self).__name__} must define sample(n)")

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Latent traversal around the posterior mean of one image ``x`` ``(C, H, W)``.

        :returns: ``(D, len(values), C, H, W)``: row ``d`` sets :math:`z_d` to each of ``values``.
        """
        loc = self.encode(x.unsqueeze(0))[0][0]
        d, k = loc.shape[0], values.shape[0]
        z = loc.expand(d, k, d).clone()
        idx = torch.arange(d, device=loc.device)
        z[idx, :, idx] = values.to(loc).expand(d, k)
        return self.decode(z.reshape(d * k, d)).reshape(d, k, *x.shape)

    # --- hooks of the training loop -----------------------------------------------------------------------------
    def default_loss(self, dataset_size: int) -> ELBO:
        """The objective :func:`~untwine.inference.train.fit` uses unless given another: ``objective.build(self, N)``
        when the model holds an :class:`~untwine.inference.objectives.Objective`, else Pyro's ``Trace_ELBO``
        computed without host-device synchronisation. A model that overrides this hook (N-VAE, UG-VAE) cannot be
        paired with an objective."""
        if self.objective is not None:
            return self.objective.build(self, dataset_size)
        return SyncFreeTrace_ELBO()

    @property
    def group_size(self) -> int:
        """Images a training batch keeps together (1: any image may go with any other)."""
        return 1

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser parameter groups of the ELBO step: every parameter not in :meth:`auxiliary_param_groups`."""
        auxiliary = {id(p) for group in self.auxiliary_param_groups(lr) for p in group["params"]}
        return [{"params": [p for p in self.parameters() if id(p) not in auxiliary]}]

    def auxiliary_param_groups(self, lr: float) -> list[dict]:
        """Parameter groups of a second optimiser that the ELBO does not train (none by default)."""
        return []

    def auxiliary_loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The loss per image that the second optimiser minimises after each ELBO step, on the same batch."""
        raise NotImplementedError(f"{type(self).__name__} has auxiliary parameters but no auxiliary_loss(x, y)")

    def check_labels(self, y: torch.Tensor) -> torch.Tensor:
        """The labels as the model reads them; a ``ValueError`` saying what is wrong with them otherwise."""
        return y

    def epoch_summary(self) -> dict[str, float]:
        """Numbers recorded in the training history after every epoch (none by default)."""
        return {}

    def prior_parameters(self) -> dict[str, torch.Tensor]:
        """Learned parameters of the prior, by name (none by default; ISA-VAE's exponents); what
        :func:`~untwine.diagnostics.to_inference_data` exports beside the posterior."""
        return {}

    # --- what the run folders compute and draw ------------------------------------------------------------------
    def evaluations(self) -> list[str]:
        """Names of the :data:`~untwine.evaluations.EVALUATIONS` that ``metrics.json`` holds for this model: the
        ELBO, log p(x), both MIGs and the other scores of the disentanglement_lib study (each only where the data has
        factors), and the Gaussian total correlation of the codes."""
        return ["elbo", "log_px", "mig", "discrete_mig", *SCORES, "gaussian_tc"]

    def figures(self) -> list[str]:
        """Names of the :data:`~untwine.evaluations.FIGURES` drawn into ``figures/`` for this model."""
        return ["reconstructions", "samples", "traversals", "loss", "latent_vs_factors", "khat"]


class Subspaces:
    """Capability: the latent code falls into independent subspaces (ISA-VAE)."""

    def subspaces(self) -> list[list[int]]:
        """Latent coordinates of each subspace, in order."""
        raise NotImplementedError


class ClassPosterior:
    """Capability: the guide holds a posterior over classes (N-VAE)."""

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`q(y \mid x)`, shape ``(B, L)``."""
        raise NotImplementedError

    def class_proportions(self, x: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`q(\pi \mid x)`, the posterior over class proportions, batch shape ``(B,)``, event ``(L,)``."""
        raise NotImplementedError


class GlobalLatent:
    """Capability: a latent shared by each group of ``group_size`` images (UG-VAE, ML-VAE)."""

    def global_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of the global posterior per group, each ``(G, global_dim)``."""
        raise NotImplementedError

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x_i \mid z_i, \beta)` of each image of groups ``x`` ``(G, B, C, H, W)`` given local codes
        ``z`` ``(G, B, latent)`` and global codes ``beta`` broadcastable to ``(G, B, global_dim)``; ``(G, B)``."""
        raise NotImplementedError
