"""Evaluation: ELBO terms, the β-TCVAE decomposition, MIG (named variants), the disentanglement_lib scores, N-VAE's
class metrics, UG-VAE's global-latent experiments.

Each MIG estimator takes codes and factors under its plain name (:func:`sampling_mig`, :func:`discrete_mig`) and a
model and a dataset under its ``_of`` name (:func:`sampling_mig_of`, :func:`discrete_mig_of`); ``mig`` is an alias
of :func:`sampling_mig_of`; :func:`labelled_sampling_mig` is the sampling MIG on labelled images without a full grid.
The scores of disentanglement_lib (β-VAE, FactorVAE, DCI, SAP, modularity and explicitness, Gaussian total
correlation) live in :mod:`untwine.metrics.scores`, each as a function of codes and factors and an ``_of`` wrapper
taking a model and a dataset. The exact mixture densities behind the decomposition and the sampling MIG live in
:mod:`untwine.metrics.mixture`, the helpers every metric shares in :mod:`untwine.metrics.utils`.
"""

from untwine.metrics.classes import classification_accuracy, latent_kl
from untwine.metrics.decomposition import elbo_decomposition
from untwine.metrics.elbo import evaluate_elbo
from untwine.metrics.global_latents import (
    MNIST_PROBLEMS,
    BatchProblem,
    baseline_features,
    batch_classification,
    batch_embedding,
    batch_features,
    domain_alignment,
    domain_transfer,
    format_table,
    gaussian_information,
    global_means,
    global_posterior_summary,
    ink_transfer,
    untrained_copy,
)
from untwine.metrics.mixture import full_aggregate_log_density
from untwine.metrics.mutual_info_gap import (
    DSPRITES_MIG_FACTORS,
    discrete_mig,
    discrete_mig_of,
    labelled_sampling_mig,
    labelled_sampling_mig_of,
    mig,
    sampling_mig,
    sampling_mig_of,
)
from untwine.metrics.scores import (
    beta_vae_score,
    beta_vae_score_of,
    dci,
    dci_of,
    factor_vae_score,
    factor_vae_score_of,
    gaussian_total_correlation,
    gaussian_total_correlation_of,
    modularity_explicitness,
    modularity_explicitness_of,
    sap,
    sap_of,
)
from untwine.metrics.utils import encode_dataset

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
    "baseline_features",
    "batch_features",
    "gaussian_information",
    "ink_transfer",
    "untrained_copy",
    "DSPRITES_MIG_FACTORS",
    "classification_accuracy",
    "discrete_mig",
    "discrete_mig_of",
    "elbo_decomposition",
    "encode_dataset",
    "evaluate_elbo",
    "full_aggregate_log_density",
    "labelled_sampling_mig",
    "labelled_sampling_mig_of",
    "latent_kl",
    "mig",
    "sampling_mig",
    "sampling_mig_of",
    "beta_vae_score",
    "beta_vae_score_of",
    "factor_vae_score",
    "factor_vae_score_of",
    "dci",
    "dci_of",
    "sap",
    "sap_of",
    "modularity_explicitness",
    "modularity_explicitness_of",
    "gaussian_total_correlation",
    "gaussian_total_correlation_of",
]
