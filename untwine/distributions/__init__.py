"""Custom ``TorchDistribution`` classes: the Lp-nested ISA prior (ISA-VAE)."""

from untwine.distributions.lp_nested import LpNestedSymmetric, LpNestedTree, LpNestedTreeError

__all__ = ["LpNestedSymmetric", "LpNestedTree", "LpNestedTreeError"]
