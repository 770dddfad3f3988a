"""Figures of grouped models with a global latent (UG-VAE, ML-VAE): sampling grids, interpolations, t-SNE.

Each function returns a matplotlib ``Figure`` built without pyplot (see :mod:`untwine.plots.images`). The model
supplies the images (``sampling_grid``, ``interpolate``); :mod:`untwine.metrics.global_latents` supplies the
embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from untwine.plots.images import _grid, _show


@torch.no_grad()
def plot_sampling_grid(
    model: nn.Module,
    clusters: Sequence[int] = (0, 1, 2),
    rows: int = 7,
    cols: int = 7,
    beta_span: float = 1.0,
    z_span: float = 3.0,
) -> Figure:
    """Fig. 3 (fig. 4 for the ML-VAE): one panel per cluster ``d``; rows sweep :math:`\\beta` along the diagonal over
    ``[-beta_span, beta_span]``, columns sweep :math:`z` along the diagonal over :math:`\\mu_z^{(d)}(\\beta) \\pm`
    ``z_span``."""
    model.eval()
    clusters = [int(c) for c in clusters]
    fig = Figure(figsize=(3.2 * len(clusters), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(clusters)))
    for ax, d in zip(axes, clusters):
        grid = model.sampling_grid(d, rows, cols, beta_span, z_span)
        ax.imshow(_grid(grid.reshape(-1, *grid.shape[2:]), cols).numpy(), interpolation="nearest")
        ax.set_title(f"cluster {d}" if model.config.mixture else "unimodal local prior (ML-VAE)")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"z: mu_z(beta) -{z_span:g} ... +{z_span:g}")
        ax.set_ylabel(f"beta: -{beta_span:g} ... +{beta_span:g}")
    fig.suptitle("samples: global beta on rows, local z on columns")
    fig.tight_layout()
    return fig


def plot_interpolation(images: torch.Tensor, title: str = "beta_1 -> beta_2 (rows), z_1 -> z_2 (columns)") -> Figure:
    """Fig. 5(a, c): the ``(steps, steps, C, H, W)`` grid of :meth:`~untwine.pyro_models.UGVAE.interpolate`."""
    return _show(_grid(images.reshape(-1, *images.shape[2:]), images.shape[1]), title, size=5.0)


_STYLES = [("tab:blue", "s"), ("tab:green", "^"), ("0.6", "o"), ("tab:purple", "D"), ("tab:brown", "v")]


def plot_global_tsne(result: dict, title: str = "t-SNE of the global posterior means") -> Figure:
    """Fig. 5(b) and fig. 7: batches of each kind in the t-SNE plane, with an interpolation path when there is one.

    :param result: the output of :func:`~untwine.metrics.global_latents.domain_alignment` (pure domains, mixed
        batches and the :math:`\\beta_1 \\to \\beta_2` path) or of
        :func:`~untwine.metrics.global_latents.batch_embedding` (up to five batch kinds).
    """
    emb = np.asarray(result["embedding"], dtype=float)
    labels = np.asarray(result["labels"])
    kinds = [kind for kind in result["kinds"] if kind != "interpolation"]
    if len(kinds) > len(_STYLES):
        raise ValueError(f"at most {len(_STYLES)} batch kinds can be drawn, got {len(kinds)}")
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.subplots()
    for (colour, marker), kind in zip(_STYLES, kinds):
        pts = emb[labels == kind]
        ax.scatter(pts[:, 0], pts[:, 1], s=18, c=colour, marker=marker, label=f"{kind} batches", alpha=0.8)
    path = emb[labels == "interpolation"]
    if len(path):
        ax.plot(path[:, 0], path[:, 1], "-o", color="tab:red", ms=4, lw=1.2, label="beta_1 -> beta_2")
    ax.legend(fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    fig.tight_layout()
    return fig
