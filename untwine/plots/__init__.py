"""Figures: reconstructions, samples, latent traversals, training curves (matplotlib figures)."""

from untwine.plots.factors import plot_latent_vs_factors
from untwine.plots.images import (
    plot_history,
    plot_images,
    plot_reconstructions,
    plot_samples,
    plot_traversals,
    save_figure,
)

__all__ = [
    "plot_history",
    "plot_images",
    "plot_latent_vs_factors",
    "plot_reconstructions",
    "plot_samples",
    "plot_traversals",
    "save_figure",
]
