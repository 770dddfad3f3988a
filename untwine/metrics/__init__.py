"""Evaluation: ELBO terms over a dataset (disentanglement metrics join here)."""

from untwine.metrics.elbo import evaluate_elbo

__all__ = ["evaluate_elbo"]
