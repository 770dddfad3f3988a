"""Custom ``TorchDistribution`` classes: the Lp-nested ISA prior (ISA-VAE) and the Dirichlet class prior (N-VAE)."""

from untwine.distributions.class_prior import DirichletClassPrior
from untwine.distributions.lp_nested import LpNestedSymmetric, LpNestedTree, LpNestedTreeError

__all__ = ["DirichletClassPrior", "LpNestedSymmetric", "LpNestedTree", "LpNestedTreeError"]
