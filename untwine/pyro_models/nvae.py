r"""N-VAE (Antorán & Miguel 2019): class-dependent and shared latents with a Dirichlet class prior.

Generative model (section III, fig. 4), per datapoint, with :math:`L` classes, class blocks of size :math:`d_c` and a
shared latent of size :math:`d_s`:

.. math::

    \pi \sim \mathrm{Dir}(\alpha_p \mathbf{1}_L), \quad y \sim \mathrm{Cat}(\pi), \quad
    z_c = [z_{c1}, \dots, z_{cL}] \sim \mathcal{N}(0, I_{L d_c}), \quad z_s \sim \mathcal{N}(0, I_{d_s}), \\
    z_{cy} = \operatorname{vec}\big(c_y \odot [\mathbf{1}_L, [z_{c1}, \dots, z_{cL}]^\top]\big), \qquad
    x \sim p_\theta(x \mid [z_{cy}, z_s]),

where the one-hot :math:`c_y` keeps only the true class's block **and** its column of ones, the class-dependent
bias of appendix B (``class_bias=False`` drops it, the ablation of fig. 10). One encoder trunk gives both
approximate posteriors (eqs. 4–5): :math:`q(z \mid x) = \mathcal{N}(\mu(x), \operatorname{diag}\sigma^2(x))` and
:math:`q(\pi \mid x) = \mathrm{Dir}(\alpha_q \cdot \alpha(x))` with :math:`\alpha(x)` a softmax, so that
:math:`q(y \mid x) = \mathbb{E}_{q(\pi \mid x)}[\pi_y] = \alpha_y(x)`.

**Objectives** (all from Pyro's ELBOs; β_c is ``poutine.scale`` on the ``z_c`` site in model and guide):

* ``objective="surrogate"`` (default, the paper's eqs. 6–7): the Dirichlet KL is replaced by the classifier's
  :math:`\log q(y \mid x)`. The term depends on the guide alone, so it is a factor of the guide (site ``"y"``,
  ``pyro.factor(..., has_rsample=True)``, which adds :math:`-(-\log q(y \mid x))` to the ELBO) computed from the
  guide's own encoder pass,

  .. math::

      \mathcal{L}_{\beta_c} = \mathbb{E}_q \log p(x \mid y, z) - \mathrm{KL}(q(z_s \mid x) \,\|\, p(z_s))
          - \beta_c \mathrm{KL}(q(z_c \mid x) \,\|\, p(z_c)) + \log q(y \mid x).

* ``objective="exact"``: the bound of eq. 3, :math:`\ldots - \mathrm{KL}(q(\pi \mid x) \,\|\, p(\pi \mid y)) +
  \log p(y)`. The model scores :math:`\pi` under the conjugate posterior
  (:meth:`~untwine.distributions.DirichletClassPrior.posterior`) plus the constant :math:`\log p(y) = -\log L`,
  which equals :math:`\mathbb{E}_q \log p(y \mid \pi) - \mathrm{KL}(q(\pi \mid x) \,\|\, p(\pi))` (appendix A).
  ``TraceMeanField_ELBO`` then evaluates every KL in closed form.
* **Unlabelled data** (beyond the paper): where ``y`` is ``None``, or, with ``semi_supervised=True``, where a label
  is ``-1``, the model draws :math:`y` from its marginal :math:`p(y) = \mathbb{E}_{p(\pi)}[\pi_y] = 1/L` (the
  same generative model with :math:`\pi` integrated out), and the guide enumerates :math:`y \sim q(y \mid x)` in
  parallel (``TraceEnum_ELBO``), the exact expectation over the class:

  .. math::

      \mathcal{U}(x) = \mathbb{E}_{q(y \mid x)}\big[\mathbb{E}_{q(z \mid x)} \log p(x \mid y, z)\big]
          - \mathrm{KL}(q(z_s \mid x) \,\|\, p(z_s)) - \beta_c \mathrm{KL}(q(z_c \mid x) \,\|\, p(z_c))
          - \mathrm{KL}(q(y \mid x) \,\|\, \mathrm{Cat}(1/L)),

  M2's unlabelled bound (Kingma et al. 2014, eq. 7) with N-VAE's shared :math:`q(z \mid x)`. Keeping :math:`\pi`
  with :math:`q(\pi \mid x) = \mathrm{Dir}(\alpha_q \alpha(x))` would lower this bound by
  :math:`\mathbb{E}_{q(y \mid x)} \mathrm{KL}(q(\pi \mid x) \,\|\, p(\pi \mid y))`, which grows without limit as
  :math:`\alpha(x)` becomes confident (concentrations :math:`\alpha_q \alpha_k(x) \to 0`), so it pushed the
  unlabelled images' :math:`q(y \mid x)` towards uniform: measured on MNIST with 1,000 labels (class weight 10,
  a quarter of every batch labelled, one seed), test accuracy peaked at 0.89 after 3 epochs and fell to 0.79 after 10,
  below the 0.90 of the same encoder trained on the labelled images alone.
  Labelled and unlabelled parts of a batch live in plates ``"data"`` and ``"unlabelled"`` (sites suffixed ``_u``).

**Weight of the labelled term** (beyond the paper; ``class_weight``, :math:`\gamma`). The surrogate's classifier
term is scaled (``poutine.scale`` on the guide factor ``"y"``, so every Pyro ELBO sees the same weight):

.. math::

    \mathcal{L}_{\beta_c, \gamma}(x, y) = \mathcal{L}_{\beta_c}(x, y) + (\gamma - 1) \log q(y \mid x),

eq. 7 being :math:`\gamma = 1`, the default when every image is labelled. With unlabelled images the objective is
:math:`\sum_{\text{labelled}} \mathcal{L}_{\beta_c, \gamma}(x, y) + \sum_{\text{unlabelled}}
\mathbb{E}_{q(y \mid x)}[\ldots]`, the form of Kingma et al. (2014)'s M2 objective (their eq. 9, with
:math:`\alpha = 0.1 N`). The unlabelled bound trains :math:`q(y \mid x)` only through which class reconstructs an
image best, and in the labelled bound one nat of :math:`\log q(y \mid x)` competes with hundreds of nats of
reconstruction, so at weight 1 the classifier learns slowly. The semi-supervised default
:data:`SEMI_SUPERVISED_CLASS_WEIGHT` is 10, chosen on MNIST with 1,000 labels in 60,000 (a quarter of every batch
labelled, 3 epochs, one seed, test accuracy) against 1 and 50 while the unlabelled bound still carried :math:`\pi`
(above): 0.57 at 1, 0.90 at 10, and 50 reached 0.90 after one epoch and fell to 0.87 by the third as the few
labelled images were fitted (the same encoder trained on the 1,000 labelled images alone: 0.90). With the bound
above (same setting), weight 10 gives 0.89, 0.92 and 0.93 after epochs 1 to 3 and weight 1 gives 0.66, 0.74 and
0.81; ``benchmarks/nvae_semisupervised.py`` measures weight 10 over seeds. Labelled images reach every batch through
:meth:`~untwine.data.ImageDataset.hide_labels` with ``labelled_share``; without it, 100 or 1,000 labels in 60,000
leave most batches of 128 without any (weight 1, with :math:`\pi`: 0.15 after 3 epochs instead of 0.57).

:meth:`NVAE.default_loss` picks ``TraceMeanField_ELBO`` for labelled training and ``TraceEnum_ELBO`` when
``semi_supervised``. At test time the class is inferred as :math:`\arg\max_y \alpha_y(x)` (:meth:`NVAE.predict`).

**Sizes chosen** (the paper leaves them open): :math:`d_c = 4` per class and :math:`d_s = 2`. The split of
information between :math:`z_c` and :math:`z_s` is whatever training finds cheaper: a nat in a class block costs
:math:`\beta_c = 2`, a nat in :math:`z_s` costs 1, and the decoder already knows the class from the bias, so a wide
shared code absorbs the class-specific variation too (measured on MNIST, 12 epochs: with :math:`d_s = 10` the true
class's block carried 0.002 nats and the KL matrix had no diagonal). Two shared dimensions match the shared factors
the paper reports (two on Fashion-MNIST and Yale B, two to three on MNIST) and its fig. 3, and leave the class
blocks the class-specific factors. :math:`\alpha_p = 1` (uniform over the simplex, the symmetric prior of section
III-B); :math:`\alpha_q = L\alpha_p + 1`, the total concentration of :math:`p(\pi \mid y)`, so that
:math:`q(\pi \mid x)` can equal the conjugate posterior exactly. A consequence for ``objective="exact"``: with
:math:`\alpha_p = 1` the Dirichlet KL is smallest at :math:`q(y \mid x) = (\alpha_p + 1)/(L\alpha_p + 1)` on the
true class, so the exact bound asks for the right argmax but not for a confident one; the surrogate's
:math:`\log q(y \mid x)` does (and a smaller :math:`\alpha_p` moves :math:`p(\pi \mid y)` towards the vertex).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import ELBO, TraceEnum_ELBO
from torch.nn import functional as F

from untwine.distributions import DirichletClassPrior
from untwine.inference.elbo import SyncFreeTraceMeanField_ELBO
from untwine.pyro_models.base import ClassPosterior, ConfigError, ImageConfig, Model, image_likelihood, positive_scale
from untwine.pyro_models.networks import build_networks, labelled_network

OBJECTIVES = ("surrogate", "exact")

#: default :math:`\gamma` of semi-supervised training (measured; see the module docstring)
SEMI_SUPERVISED_CLASS_WEIGHT = 10.0


@dataclass
class NVAEConfig(ImageConfig):
    """Hyperparameters of :class:`NVAE` (see the module docstring for the choices).

    :param num_classes: :math:`L`.
    :param class_dim: :math:`d_c`, latent dimensions per class block.
    :param shared_dim: :math:`d_s`.
    :param beta_c: weight of the KL of :math:`z_c` (eq. 7; the paper uses 2).
    :param alpha_p: symmetric Dirichlet prior concentration.
    :param alpha_q: total concentration of :math:`q(\\pi \\mid x)` (``None``: :math:`L \\alpha_p + 1`).
    :param objective: ``"surrogate"`` (eqs. 6–7) or ``"exact"`` (eq. 3).
    :param class_bias: feed :math:`c_y \\odot \\mathbf{1}_L` to the decoder (appendix B).
    :param semi_supervised: labels of ``-1`` mark unlabelled images, whose class is enumerated.
    :param class_weight: :math:`\\gamma`, weight of the labelled images' :math:`\\log q(y \\mid x)` (surrogate
        objective only). ``None``: 1 (eq. 7) when fully supervised, :data:`SEMI_SUPERVISED_CLASS_WEIGHT` when
        ``semi_supervised``; see :attr:`classifier_weight`.

    The image fields are :class:`~untwine.pyro_models.base.ImageConfig`'s (``network="auto"``: MLP for 28x28, conv
    net for 32/64-pixel faces).
    """

    image_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    class_dim: int = 4
    shared_dim: int = 2
    beta_c: float = 2.0
    alpha_p: float = 1.0
    alpha_q: float | None = None
    objective: str = "surrogate"
    class_bias: bool = True
    semi_supervised: bool = False
    class_weight: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.class_dim < 1 or self.shared_dim < 0:
            raise ConfigError(f"class_dim must be >= 1 and shared_dim >= 0, got {self.class_dim}, {self.shared_dim}")
        self.check_positive("beta_c", "alpha_p")
        if self.alpha_q is not None and not self.alpha_q > 0:
            raise ConfigError(f"alpha_q must be positive, got {self.alpha_q}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        weight = self.class_weight
        if weight is not None:
            # bool is an int subclass: class_weight=True would silently mean 1
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (0 < weight < math.inf):
                raise ConfigError(f"class_weight must be a positive finite number or None, got {weight!r}")
            if self.objective != "surrogate" and weight != 1:
                raise ConfigError(f"class_weight applies to objective='surrogate' only, got {weight!r} with 'exact'")

    @property
    def classifier_weight(self) -> float:
        """:math:`\\gamma`: ``class_weight``, by default 1 (eq. 7) fully supervised and
        :data:`SEMI_SUPERVISED_CLASS_WEIGHT` semi-supervised (1 for ``objective="exact"``)."""
        if self.class_weight is not None:
            return float(self.class_weight)
        if self.semi_supervised and self.objective == "surrogate":
            return SEMI_SUPERVISED_CLASS_WEIGHT
        return 1.0

    @property
    def q_concentration(self) -> float:
        """:math:`\\alpha_q`: ``alpha_q``, by default :math:`L \\alpha_p + 1` (the total of :math:`p(\\pi \\mid y)`)."""
        return self.alpha_q if self.alpha_q is not None else self.num_classes * self.alpha_p + 1.0

    @property
    def latent_dim(self) -> int:
        """Size of :math:`z = [z_c, z_s]`: :math:`L d_c + d_s`."""
        return self.num_classes * self.class_dim + self.shared_dim


class NVAE(Model, ClassPosterior):
    """N-VAE model/guide pair; sites ``z_c`` (scaled by β_c), ``z_s``, ``pi``, ``y``, ``x`` in plate ``"data"``.

    ``encode(x)`` gives the Gaussian posterior over the whole :math:`z = [z_c, z_s]` (class blocks first, block
    :math:`k` at ``k * class_dim``), so the dataset metrics of :mod:`untwine.metrics` apply; :meth:`classify` gives
    :math:`q(y \\mid x)`.
    """

    name = "n-vae"
    Config = NVAEConfig

    def __init__(self, config: NVAEConfig | None = None):
        super().__init__(config)
        cfg = self.config
        network = cfg.network
        if network == "auto":
            network = labelled_network(cfg.image_shape)
        self.latent_dim = cfg.latent_dim
        decoder_in = cfg.num_classes * (cfg.class_dim + int(cfg.class_bias)) + cfg.shared_dim
        self.encoder, self.decoder = build_networks(
            network, cfg.image_shape, decoder_in, encoder_out=2 * cfg.latent_dim + cfg.num_classes
        )
        self.register_buffer("alpha_p", torch.tensor(float(cfg.alpha_p)))
        # N(0, I) parameters of z_c and z_s, built once instead of in every step; they follow .to() and stay out of
        # checkpoints
        for part, size in (("c", cfg.num_classes * cfg.class_dim), ("s", cfg.shared_dim)):
            self.register_buffer(f"_prior_loc_{part}", torch.zeros(size), persistent=False)
            self.register_buffer(f"_prior_scale_{part}", torch.ones(size), persistent=False)
        self.register_buffer("_uniform_logits", torch.zeros(cfg.num_classes), persistent=False)

    # --- pieces shared by model, guide and users ----------------------------------------------------
    def class_prior(self) -> DirichletClassPrior:
        r""":math:`p(\pi) = \mathrm{Dir}(\alpha_p \mathbf{1}_L)` on the model's device."""
        return DirichletClassPrior(self.alpha_p, self.config.num_classes)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One trunk pass: location, scale of :math:`q(z|x)` ``(B, latent_dim)`` and :math:`q(y|x)` ``(B, L)``."""
        h = self.encoder(x)
        d = self.latent_dim
        loc, raw, logits = h[..., :d], h[..., d : 2 * d], h[..., 2 * d :]
        return loc, positive_scale(raw), torch.softmax(logits, -1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior location and scale of :math:`z = [z_c, z_s]`."""
        loc, scale, _ = self.heads(x)
        return loc, scale

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`q(y \mid x) = \alpha(x)`, the mean of :math:`q(\pi \mid x)`, shape ``(B, L)``."""
        return self.heads(x)[2]

    def class_proportions(self, x: torch.Tensor) -> dist.Dirichlet:
        r""":math:`q(\pi \mid x) = \mathrm{Dir}(\alpha_q \alpha(x))` (eq. 4)."""
        return dist.Dirichlet(self.config.q_concentration * self.classify(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Inferred class :math:`\\arg\\max_y q(y \\mid x)`."""
        return self.classify(x).argmax(-1)

    def check_labels(self, y: torch.Tensor) -> torch.Tensor:
        """Labels as ``long`` in ``[0, L)`` (``-1`` allowed when semi-supervised); a clear error otherwise."""
        if y.is_floating_point():
            raise ValueError(f"labels must be integers, got dtype {y.dtype}")
        if not y.is_cuda:  # a range check on a GPU would make the step wait for the device
            low = -1 if self.config.semi_supervised else 0
            if y.numel() and (int(y.min()) < low or int(y.max()) >= self.config.num_classes):
                raise ValueError(
                    f"labels must lie in [{low}, {self.config.num_classes}) for this {self.config.num_classes}-class "
                    f"model, got values from {int(y.min())} to {int(y.max())}; build the model with num_classes "
                    "equal to the number of classes in the data"
                )
        return y.long()

    def decoder_input(self, z_c: torch.Tensor, z_s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""Decoder input :math:`[z_{cy}, z_s]`, :math:`z_{cy} = \operatorname{vec}(c_y \odot [\mathbf{1}_L, Z_c])`.

        Leading dimensions broadcast, so an enumerated ``y`` of shape ``(L, 1)`` gives ``(L, B, ...)``.
        """
        cfg = self.config
        blocks = z_c.reshape(*z_c.shape[:-1], cfg.num_classes, cfg.class_dim)
        if cfg.class_bias:
            blocks = torch.cat([torch.ones_like(blocks[..., :1]), blocks], -1)
        one_hot = F.one_hot(y, cfg.num_classes).to(blocks.dtype)
        z_cy = (one_hot.unsqueeze(-1) * blocks).flatten(-2)
        z_s = z_s.expand(*z_cy.shape[:-1], z_s.shape[-1])
        return torch.cat([z_cy, z_s], -1)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` ``(..., latent_dim)`` into :math:`z_c` ``(..., L d_c)`` and :math:`z_s` ``(..., d_s)``."""
        k = self.config.num_classes * self.config.class_dim
        return z[..., :k], z[..., k:]

    def likelihood(self, out: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`p(x \mid y, z)` from the decoder output, one event per image."""
        return image_likelihood(out, self.config.likelihood, self.config.obs_scale)

    def _standard_normal(self, part: str) -> dist.TorchDistribution:
        return dist.Normal(getattr(self, f"_prior_loc_{part}"), getattr(self, f"_prior_scale_{part}")).to_event(1)

    # --- the Pyro program ---------------------------------------------------------------------------
    def _by_label(self, part, x: torch.Tensor, y: torch.Tensor | None) -> None:
        """Run ``part(x, y, plate, suffix)`` on the labelled images (plate ``"data"``) and, when semi-supervised, on
        the unlabelled ones (label ``-1``; plate ``"unlabelled"``, sites suffixed ``_u``)."""
        if y is None:
            part(x, None, "data", "")
            return
        y = self.check_labels(y)
        if not self.config.semi_supervised:
            part(x, y, "data", "")
            return
        # Boolean masks give data-dependent shapes (a host sync on a GPU, only in this mode); a plate cannot be empty,
        # so a batch without labelled (or unlabelled) images skips that part.
        known = y >= 0
        labelled, unlabelled = x[known], x[~known]
        if labelled.shape[0]:
            part(labelled, y[known], "data", "")
        if unlabelled.shape[0]:
            part(unlabelled, None, "unlabelled", "_u")

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The generative model; labelled images in plate ``"data"``, unlabelled ones in ``"unlabelled"``."""
        pyro.module(self.name, self)
        self._by_label(self._model, x, y)

    def _model(self, x: torch.Tensor, y: torch.Tensor | None, plate: str, sfx: str) -> None:
        cfg = self.config
        with pyro.plate(plate, x.shape[0]):
            with poutine.scale(scale=cfg.beta_c):
                z_c = pyro.sample("z_c" + sfx, self._standard_normal("c"))
            z_s = pyro.sample("z_s" + sfx, self._standard_normal("s"))
            if y is None:
                # pi integrated out: p(y) = E_p(pi)[pi_y] = 1/L under the symmetric prior (see the module docstring)
                y = pyro.sample("y" + sfx, dist.Categorical(logits=self._uniform_logits))
            elif cfg.objective == "exact":
                prior = self.class_prior()
                pyro.sample("pi" + sfx, prior.posterior(y))
                pyro.factor("log_py" + sfx, prior.log_marginal(y))
            # with a label and the surrogate objective, log q(y|x) is the guide's factor "y"
            out = self.decoder(self.decoder_input(z_c, z_s, y))
            pyro.sample("x" + sfx, self.likelihood(out), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """:math:`q(z \\mid x)`, :math:`q(\\pi \\mid x)` from one trunk; unlabelled classes enumerated."""
        pyro.module(self.name, self)
        self._by_label(self._guide, x, y)

    def _guide(self, x: torch.Tensor, y: torch.Tensor | None, plate: str, sfx: str) -> None:
        cfg = self.config
        loc, scale, probs = self.heads(x)
        loc_c, loc_s = self.split(loc)
        scale_c, scale_s = self.split(scale)
        with pyro.plate(plate, x.shape[0]):
            with poutine.scale(scale=cfg.beta_c):
                pyro.sample("z_c" + sfx, dist.Normal(loc_c, scale_c).to_event(1))
            pyro.sample("z_s" + sfx, dist.Normal(loc_s, scale_s).to_event(1))
            if y is not None and cfg.objective == "exact":
                pyro.sample("pi" + sfx, dist.Dirichlet(cfg.q_concentration * probs))
            if y is None:
                pyro.sample("y" + sfx, dist.Categorical(probs=probs), infer={"enumerate": "parallel"})
            elif cfg.objective == "surrogate":
                # the ELBO subtracts a guide factor: -log q(y|x) here adds the classifier's log q(y|x) (eq. 7),
                # weighted by gamma (class_weight) through the trace's own scale, so every ELBO applies the same weight
                log_qy = dist.Categorical(probs=probs).log_prob(y)
                with poutine.scale(scale=cfg.classifier_weight):
                    pyro.factor("y" + sfx, -log_qy, has_rsample=True)

    def default_loss(self, dataset_size: int) -> ELBO:
        """``TraceMeanField_ELBO`` (closed-form Gaussian and Dirichlet KLs; without host-device synchronisation,
        :mod:`untwine.inference.elbo`), or Pyro's ``TraceEnum_ELBO`` if semi-supervised."""
        if self.config.semi_supervised:
            return TraceEnum_ELBO(max_plate_nesting=1)
        return SyncFreeTraceMeanField_ELBO()

    def evaluations(self) -> list[str]:
        """The VAE's, plus the accuracy of q(y|x) and the KL detectors of figs. 5 and 10."""
        return [*super().evaluations(), "classification", "latent_kl"]

    def figures(self) -> list[str]:
        """Class-dependent and shared traversals, KL per dimension and class block, samples at σ = 1, 1.4 (fig. 11)
        instead of the per-coordinate traversals."""
        return ["reconstructions", "samples", "class_figures", "loss", "latent_vs_factors", "khat"]

    # --- deterministic pieces -----------------------------------------------------------------------
    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""Mean image :math:`\mathbb{E}[x \mid y, z]` for codes ``z`` ``(..., latent_dim)`` and labels ``y``."""
        z_c, z_s = self.split(z)
        out = self.decoder(self.decoder_input(z_c, z_s, y))
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the posterior mean with the given labels, or with the inferred class (test time)."""
        loc, _, probs = self.heads(x)
        return self.decode(loc, probs.argmax(-1) if y is None else self.check_labels(y))

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | int | None = None, sigma: float = 1.0) -> torch.Tensor:
        r"""``n`` ancestral samples with :math:`z \sim \mathcal{N}(0, \sigma^2 I)` (fig. 11 uses σ = 1 and 1.4).

        :param y: one label per sample ``(n,)``, a single class for all, or ``None`` (classes ``0..L-1`` in turn).
        """
        device = self.alpha_p.device
        if y is None:
            y = torch.arange(n, device=device) % self.config.num_classes
        elif isinstance(y, int):
            y = torch.full((n,), y, dtype=torch.long, device=device)
        y = self.check_labels(torch.as_tensor(y, device=device))
        z = sigma * torch.randn(n, self.latent_dim, device=device, dtype=self.alpha_p.dtype)
        return self.decode(z, y)

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, values: torch.Tensor, dims: list[int] | None = None) -> torch.Tensor:
        """Traversal around the posterior mean of one image, decoded with its inferred class.

        :param dims: latent coordinates to sweep (default all); row ``i`` sets coordinate ``dims[i]`` to ``values``.
        :returns: ``(len(dims), len(values), C, H, W)``.
        """
        loc, _, probs = self.heads(x.unsqueeze(0))
        return self._sweep(loc[0], probs[0].argmax(), values, dims)

    @torch.no_grad()
    def traverse_class(
        self, cls: int, values: torch.Tensor, x: torch.Tensor | None = None, shared: bool = False
    ) -> torch.Tensor:
        """Class-dependent (fig. 1, 6) or shared (fig. 2, 7, 8) traversals for class ``cls``.

        The base code is the posterior mean of ``x`` when given, else zero; the image is decoded as class ``cls``.

        :param shared: sweep the shared dimensions :math:`z_s` instead of the class block :math:`z_{c,cls}`.
        :returns: ``(dims, len(values), C, H, W)``.
        """
        cfg = self.config
        if not 0 <= cls < cfg.num_classes:
            raise ValueError(f"class {cls} is outside [0, {cfg.num_classes})")
        base = self.encode(x.unsqueeze(0))[0][0] if x is not None else self.alpha_p.new_zeros(self.latent_dim)
        start = cfg.num_classes * cfg.class_dim if shared else cls * cfg.class_dim
        width = cfg.shared_dim if shared else cfg.class_dim
        return self._sweep(base, torch.tensor(cls, device=base.device), values, list(range(start, start + width)))

    def _sweep(self, base: torch.Tensor, cls: torch.Tensor, values: torch.Tensor, dims: list[int] | None):
        dims = list(range(self.latent_dim)) if dims is None else list(dims)
        k = values.shape[0]
        z = base.expand(len(dims), k, self.latent_dim).clone()
        rows = torch.arange(len(dims), device=base.device)
        z[rows, :, torch.tensor(dims, device=base.device)] = values.to(base).expand(len(dims), k)
        images = self.decode(z.reshape(-1, self.latent_dim), cls.expand(len(dims) * k))
        return images.reshape(len(dims), k, *images.shape[1:])
