"""Figures (matplotlib, no pyplot): images, traversals, training curves, Lp-nested priors, class-conditional and
grouped models."""

from untwine.plots.classes import (
    plot_class_kl_matrix,
    plot_class_samples,
    plot_class_traversals,
    plot_latent_kl,
    plot_latent_scatter,
)
from untwine.plots.diagnostics import plot_khat
from untwine.plots.factors import plot_latent_vs_factors
from untwine.plots.global_latents import plot_global_tsne, plot_interpolation, plot_sampling_grid
from untwine.plots.images import (
    plot_history,
    plot_images,
    plot_reconstructions,
    plot_samples,
    plot_traversals,
    save_figure,
)
from untwine.plots.lp_nested import plot_exponent_history, plot_lp_nested_contours, plot_prior_samples
from untwine.plots.sweeps import (
    plot_forest,
    plot_mig_distribution,
    plot_mig_per_algorithm,
    plot_mig_vs_reconstruction,
    plot_mig_vs_tc,
    sweep_figures,
)

__all__ = [
    "plot_class_kl_matrix",
    "plot_class_samples",
    "plot_class_traversals",
    "plot_latent_kl",
    "plot_latent_scatter",
    "plot_exponent_history",
    "plot_forest",
    "plot_global_tsne",
    "plot_interpolation",
    "plot_history",
    "plot_images",
    "plot_khat",
    "plot_latent_vs_factors",
    "plot_mig_distribution",
    "plot_mig_per_algorithm",
    "plot_mig_vs_reconstruction",
    "plot_mig_vs_tc",
    "plot_lp_nested_contours",
    "plot_prior_samples",
    "plot_reconstructions",
    "plot_samples",
    "plot_sampling_grid",
    "plot_traversals",
    "save_figure",
    "sweep_figures",
]
