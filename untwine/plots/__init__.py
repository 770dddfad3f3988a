"""Figures: reconstructions, samples, latent traversals, training curves (matplotlib figures)."""

from untwine.plots.images import (
    plot_history,
    plot_images,
    plot_reconstructions,
    plot_samples,
    plot_traversals,
    save_figure,
)

__all__ = ["plot_history", "plot_images", "plot_reconstructions", "plot_samples", "plot_traversals", "save_figure"]
