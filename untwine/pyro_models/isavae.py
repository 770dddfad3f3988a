r"""ISA-VAE (Stühmer, Turner & Nowozin): the VAE with an Lp-nested independent-subspace prior.

The model/guide pair is :class:`~untwine.pyro_models.vae.VAE`'s with the prior replaced by the ISA layout of the
Lp-nested symmetric distribution (eqs. 7–11, :class:`~untwine.distributions.LpNestedSymmetric`), and the objective
is the β-weighted ELBO of eq. 12,

.. math::

    \mathcal{L}_{\text{ISA-VAE}} = \mathbb{E}_{q_\phi(z \mid x)}\Big[\log p_\theta(x \mid z)
        - \beta\big(\log q_\phi(z \mid x) - \log p_{\text{ISA}}(z)\big)\Big],

a Monte Carlo KL (there is no closed form against this prior), which is exactly what Pyro's ``Trace_ELBO`` computes
from the traces, with β as ``poutine.scale`` on the latent site in model and guide (inherited from
:class:`~untwine.pyro_models.vae.VAE`). :class:`ISABetaTCVAE` trains the same prior with the TC-decomposed ELBO.

Defaults are the paper's dSprites setting (section 4, appendix A.3): a 20-dimensional latent as five subspaces of
four coordinates, :math:`p_0 = 2.1`, :math:`p_k = 2.2`, Chen et al.'s MLP, Bernoulli likelihood (batch 2048, Adam
1e-3 from :class:`~untwine.inference.train.TrainConfig`). Appendix A.5 also names a layout :math:`l_0 = 5`,
:math:`l_{1..5} = 5` (25 coordinates), which contradicts the 20-dimensional latent of its Table 1; the default follows
Table 1. The paper does not state the scale :math:`s` of the radial law (eq. 11); the default ``prior_scale = 2``
makes the prior exactly :math:`\mathcal{N}(0, I)` when every exponent is 2, so an ISA-VAE differs from the VAE only
through its exponents (per-coordinate variance 0.958 at the default exponents).

**Learned exponents** (section 4, "Learning the exponents"; appendix A.2): with ``learn_exponents=True`` the root
exponent stays fixed and each subspace exponent starts at ``exponent_init`` (the paper: 2.0) and is trained with the
encoder and decoder, with its own Adam learning rate ``exponent_lr`` (5e-4; the paper states none for the exponents).
Exponents are kept above 0.1 as :math:`p_k = 0.1 + \operatorname{softplus}(r_k)`; the trajectory goes into the training
history (columns ``p0``, ``p1``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from untwine.distributions import LpNestedSymmetric, LpNestedTree
from untwine.distributions.lp_nested import as_tree
from untwine.pyro_models.base import ConfigError, Subspaces
from untwine.pyro_models.vae import VAE, VAEConfig

if TYPE_CHECKING:
    from untwine.inference.objectives import Objective

#: Learned exponents never go below this: as p -> 0 the density collapses onto the axes and f(z)^{p0} overflows.
MIN_EXPONENT = 0.1


def _inverse_softplus(p: torch.Tensor) -> torch.Tensor:
    return p + torch.log(-torch.expm1(-p))


class LpNestedPrior(nn.Module):
    r"""A prior module (``forward() -> LpNestedSymmetric``) for any Lp-nested tree, with optionally learned exponents.

    :param tree: an :class:`~untwine.distributions.LpNestedTree` or its list notation.
    :param exponents: initial :math:`p_i`, one per inner node in pre-order (root first).
    :param scale: :math:`s` of the radial law (eq. 11); 2 with every exponent 2 is :math:`\mathcal{N}(0, I)`.
    :param learned: which exponents are trained (a bool per inner node); default none. Learned exponents are
        parameters :math:`r_i` with :math:`p_i = p_{\min} + \operatorname{softplus}(r_i)`, :math:`p_{\min} = 0.1`
        (:data:`MIN_EXPONENT`), so they stay positive and finite under any optimiser step; the others are buffers.
    """

    def __init__(
        self,
        tree: LpNestedTree | Sequence,
        exponents: Sequence[float],
        scale: float = 2.0,
        learned: Sequence[bool] | None = None,
    ):
        super().__init__()
        self.tree = as_tree(tree)
        values = torch.as_tensor([float(p) for p in exponents], dtype=torch.get_default_dtype())
        if values.shape != (self.tree.num_inner,):
            raise ConfigError(
                f"the tree {list(self.tree.spec)} has {self.tree.num_inner} inner nodes but {len(values)} exponents "
                "were given"
            )
        if not bool((values > 0).all()):
            raise ConfigError(f"exponents must be positive, got {values.tolist()}")
        if not scale > 0:
            raise ConfigError(f"prior scale must be positive, got {scale}")
        mask = torch.zeros(self.tree.num_inner, dtype=torch.bool)
        if learned is not None:
            mask = torch.as_tensor(list(learned), dtype=torch.bool)
            if mask.shape != values.shape:
                raise ConfigError(f"learned needs one flag per inner node ({self.tree.num_inner}), got {len(mask)}")
        self.register_buffer("fixed", values)
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("learned_index", mask.nonzero().flatten())
        if bool((values[mask] <= MIN_EXPONENT).any()):
            raise ConfigError(f"learned exponents must start above {MIN_EXPONENT}, got {values[mask].tolist()}")
        raw = _inverse_softplus(values[mask] - MIN_EXPONENT)
        self.raw_exponents = nn.Parameter(raw) if bool(mask.any()) else None

    @property
    def exponents(self) -> torch.Tensor:
        """Current :math:`p_i` (pre-order), differentiable in the learned ones."""
        if self.raw_exponents is None:
            return self.fixed
        return self.fixed.index_put((self.learned_index,), MIN_EXPONENT + F.softplus(self.raw_exponents))

    def forward(self) -> LpNestedSymmetric:
        return LpNestedSymmetric(self.tree, self.exponents, self.scale)


@dataclass
class ISAVAEConfig(VAEConfig):
    """:class:`~untwine.pyro_models.vae.VAEConfig` plus the ISA layout; defaults from the paper's dSprites runs.

    :param latent_dim: 20 (the paper's Table 1).
    :param subspace_sizes: coordinates per subspace; ``None`` splits ``latent_dim`` into subspaces of 4 (the last
        one takes the remainder). Must sum to ``latent_dim``.
    :param p0: root exponent :math:`p_0` (2.1: platykurtic over subspaces).
    :param exponent: subspace exponent :math:`p_k` when the exponents are fixed (2.2).
    :param prior_scale: :math:`s` of the radial law (eq. 11), see the module docstring.
    :param learn_exponents: train :math:`p_1, \\dots, p_{l_0}` (root fixed).
    :param exponent_init: starting :math:`p_k` when learned (2.0 in the paper).
    :param exponent_lr: Adam learning rate of the learned exponents (not stated in the paper).
    """

    latent_dim: int = 20
    subspace_sizes: tuple[int, ...] | None = None
    p0: float = 2.1
    exponent: float = 2.2
    prior_scale: float = 2.0
    learn_exponents: bool = False
    exponent_init: float = 2.0
    exponent_lr: float = 5e-4

    def __post_init__(self):
        super().__post_init__()
        if self.subspace_sizes is None:
            whole, rest = divmod(self.latent_dim, 4)
            self.subspace_sizes = (4,) * whole + ((rest,) if rest else ())
        self.subspace_sizes = tuple(int(s) for s in self.subspace_sizes)
        if not self.subspace_sizes or min(self.subspace_sizes) < 1:
            raise ConfigError(f"subspace_sizes must be positive integers, got {self.subspace_sizes}")
        if sum(self.subspace_sizes) != self.latent_dim:
            raise ConfigError(
                f"subspace_sizes {self.subspace_sizes} add up to {sum(self.subspace_sizes)}, but latent_dim is "
                f"{self.latent_dim}; make them agree"
            )
        self.check_positive("p0", "exponent", "prior_scale", "exponent_init", "exponent_lr")


class ISAVAE(VAE, Subspaces):
    """ISA-VAE: :class:`~untwine.pyro_models.vae.VAE` with the Lp-nested ISA prior of eq. 9; use ``Trace_ELBO``.

    The prior is ``self.prior``, an :class:`LpNestedPrior`; its exponents are read with :attr:`exponents` and
    ``config.subspace_sizes`` gives the latent layout (:meth:`subspaces` the coordinate groups, e.g. for
    :func:`~untwine.metrics.sampling_mig` with ``groups``).
    """

    name = "isa-vae"
    Config = ISAVAEConfig

    def __init__(self, config: ISAVAEConfig | None = None, objective: Objective | None = None):
        config = config if config is not None else type(self).Config()
        sizes = config.subspace_sizes
        if config.learn_exponents:
            initial = [config.p0] + [config.exponent_init] * len(sizes)
            learned = [False] + [True] * len(sizes)
        else:
            initial, learned = [config.p0] + [config.exponent] * len(sizes), None
        prior = LpNestedPrior([[s] for s in sizes], initial, config.prior_scale, learned)
        super().__init__(config, prior, objective)

    @property
    def exponents(self) -> torch.Tensor:
        """:math:`(p_0, p_1, \\dots, p_{l_0})`, detached."""
        return self.prior.exponents.detach()

    def subspaces(self) -> list[list[int]]:
        """Latent coordinates of each independent subspace, in order."""
        return self.prior.tree.subspaces()

    def param_groups(self, lr: float) -> list[dict]:
        """Adam parameter groups: the networks at ``lr``, learned exponents at ``config.exponent_lr``."""
        exps = [self.prior.raw_exponents] if self.prior.raw_exponents is not None else []
        rest = [p for p in self.parameters() if all(p is not e for e in exps)]
        groups = [{"params": rest}]
        if exps:
            groups.append({"params": exps, "lr": self.config.exponent_lr})
        return groups

    def epoch_summary(self) -> dict[str, float]:
        """The exponents, recorded in the training history after every epoch (``p0``, ``p1``, ...)."""
        return {f"p{i}": float(p) for i, p in enumerate(self.exponents.tolist())}

    def prior_parameters(self) -> dict[str, torch.Tensor]:
        """The exponents :math:`p_0, p_1, \\dots` (pre-order), learned or fixed."""
        return {"exponents": self.exponents.detach()}

    def evaluations(self) -> list[str]:
        """The VAE's, plus the sampling MIG with each subspace scored as one variable."""
        return [*super().evaluations(), "mig_grouped"]
