"""Latent codes against ground-truth factors (Chen et al. 2018, Fig. 1 style; ISA-VAE paper, appendix A.5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from untwine.data.base import FactorDataset

SHAPE_COLOURS = ("tab:green", "tab:red", "tab:blue")  # square, ellipse, heart as in the ISA-VAE appendix
SHAPE_NAMES = ("square", "ellipse", "heart")


def plot_latent_vs_factors(
    loc: torch.Tensor,
    data: FactorDataset,
    factors: Sequence[str] = ("scale", "orientation", "posX", "posY"),
    latents: Sequence[int] | None = None,
    split_by: str | None = "shape",
) -> Figure:
    """Mean posterior location of each latent as a function of each factor.

    Panel (row ``j``, column ``k``) plots :math:`\\mathbb{E}[\\mu_j(x) \\mid v_k]`, the posterior mean of latent
    ``j`` averaged over all images with factor ``k`` at each value, one line per value of ``split_by`` (the
    sprite's shape on dSprites). A disentangled code shows one latent that varies with each factor and flat
    lines elsewhere.

    :param loc: posterior means ``(N, D)`` of every image of ``data``, in the dataset's order
        (see :func:`untwine.metrics.encode_dataset`).
    :param latents: which latents to show (default: all, ordered by how much their means vary).
    :param split_by: factor whose values get separate lines (``None``: one line).
    """
    sizes = data.factor_sizes
    grid = loc.detach().cpu().double().reshape(*sizes, loc.shape[-1]).numpy()
    names = list(data.factor_names)
    for f in list(factors) + ([split_by] if split_by else []):
        if f not in names:
            raise ValueError(f"unknown factor {f!r}; factors are {names}")
    if latents is None:
        spread = grid.reshape(-1, grid.shape[-1]).std(0)
        latents = list(np.argsort(-spread))
    rows, cols = len(latents), len(factors)
    fig = Figure(figsize=(2.2 * cols, 1.3 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False, sharey="row")
    split_axis = names.index(split_by) if split_by else None
    n_split = sizes[split_axis] if split_by else 1
    for c, factor in enumerate(factors):
        k = names.index(factor)
        values = np.unique(data.factor_values[:, k])
        for s in range(n_split):
            sub = np.take(grid, [s], axis=split_axis) if split_by else grid
            keep = tuple(i for i in range(len(sizes)) if i != k)
            curve = sub.mean(axis=keep)  # (sizes[k], D)
            shapes = split_by == "shape" and n_split == len(SHAPE_NAMES)
            colour = SHAPE_COLOURS[s] if shapes else None
            label = SHAPE_NAMES[s] if shapes else (f"{split_by}={s}" if split_by else None)
            for r, j in enumerate(latents):
                axes[r, c].plot(values, curve[:, j], color=colour, lw=1.2, label=label)
        axes[0, c].set_title(factor)
        for r, j in enumerate(latents):
            axes[r, c].tick_params(labelsize=6)
            if c == 0:
                axes[r, c].set_ylabel(f"z{j}", rotation=0, labelpad=12)
    if split_by:
        axes[0, 0].legend(fontsize=6, frameon=False)
    fig.suptitle("mean latent vs factor" + (f" (one line per {split_by})" if split_by else ""), fontsize=9)
    fig.tight_layout()
    return fig
