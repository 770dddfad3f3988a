"""Evaluation: ELBO terms, the β-TCVAE decomposition, MIG (two named variants), N-VAE's class metrics, UG-VAE's
global-latent experiments."""

from untwine.metrics.classes import classification_accuracy, latent_kl
from untwine.metrics.decomposition import elbo_decomposition, encode_dataset, full_aggregate_log_density
from untwine.metrics.elbo import evaluate_elbo
from untwine.metrics.global_latents import (
    MNIST_PROBLEMS,
    BatchProblem,
    batch_classification,
    batch_embedding,
    domain_alignment,
    domain_transfer,
    format_table,
    global_means,
    global_posterior_summary,
)
from untwine.metrics.mig import DSPRITES_MIG_FACTORS, discrete_mig, discrete_mig_of, mig, sampling_mig

__all__ = [
    "MNIST_PROBLEMS",
    "BatchProblem",
    "batch_classification",
    "batch_embedding",
    "domain_alignment",
    "domain_transfer",
    "format_table",
    "global_means",
    "global_posterior_summary",
    "DSPRITES_MIG_FACTORS",
    "classification_accuracy",
    "discrete_mig",
    "discrete_mig_of",
    "elbo_decomposition",
    "encode_dataset",
    "evaluate_elbo",
    "full_aggregate_log_density",
    "latent_kl",
    "mig",
    "sampling_mig",
]
