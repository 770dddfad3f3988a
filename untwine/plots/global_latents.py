"""Figures of grouped models with a global latent (UG-VAE, ML-VAE): sampling grids, interpolations, t-SNE.

Each function returns a matplotlib ``Figure`` built without pyplot (see :mod:`untwine.plots.images`). The model
supplies the images (``sampling_grid``, ``interpolate``); :mod:`untwine.metrics.global_latents` supplies the
embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from untwine.plots.images import _grid, _show


def observed_beta_path(beta_means: torch.Tensor | np.ndarray, rows: int = 7) -> tuple[torch.Tensor, float]:
    """A path of ``rows`` points through the range real batches' posterior means ``(G, g)`` take: along their first
    principal axis, from the smallest to the largest projection. Returns the path ``(rows, g)`` and its length."""
    means = torch.as_tensor(np.asarray(beta_means), dtype=torch.float64)
    if means.dim() != 2 or len(means) < 2:
        raise ValueError(f"need the posterior means of at least 2 batches as (G, g), got {tuple(means.shape)}")
    centre = means.mean(0)
    axis = torch.linalg.svd(means - centre, full_matrices=False).Vh[0]
    projection = (means - centre) @ axis
    t = torch.linspace(float(projection.min()), float(projection.max()), rows, dtype=torch.float64)
    return (centre + t[:, None] * axis).float(), float(projection.max() - projection.min())


@torch.no_grad()
def plot_sampling_grid(
    model: nn.Module,
    clusters: Sequence[int] = (0, 1, 2),
    rows: int = 7,
    cols: int = 7,
    beta_span: float = 1.0,
    z_span: float = 3.0,
    beta_means: torch.Tensor | np.ndarray | None = None,
) -> Figure:
    """Fig. 3 (fig. 4 for the ML-VAE): one panel per cluster ``d``; columns sweep :math:`z` along the diagonal over
    :math:`\\mu_z^{(d)}(\\beta) \\pm` ``z_span``; rows sweep :math:`\\beta`.

    :param beta_means: posterior means of real batches ``(G, g)``: rows then span the range they take
        (:func:`observed_beta_path`), which the title states. Without them, rows sweep the prior's range
        ``[-beta_span, beta_span]`` along the diagonal, as the paper draws it, which can lie far outside every
        posterior.
    """
    model.eval()
    clusters = [int(c) for c in clusters]
    path, length = (None, 0.0) if beta_means is None else observed_beta_path(beta_means, rows)
    fig = Figure(figsize=(3.2 * len(clusters), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(clusters)))
    for ax, d in zip(axes, clusters):
        grid = model.sampling_grid(d, rows, cols, beta_span, z_span, beta_path=path)
        ax.imshow(_grid(grid.reshape(-1, *grid.shape[2:]), cols).numpy(), interpolation="nearest")
        ax.set_title(f"cluster {d}" if model.config.mixture else "unimodal local prior (ML-VAE)")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"z: mu_z(beta) -{z_span:g} ... +{z_span:g}")
        ax.set_ylabel("beta: observed range" if path is not None else f"beta: -{beta_span:g} ... +{beta_span:g}")
    if path is None:
        title = f"beta on rows: the prior's range, diagonal -{beta_span:g} ... +{beta_span:g}; local z on columns"
    else:
        title = (
            f"beta on rows: the range of mu_beta over {len(beta_means)} real batches (main axis, length {length:.2g}; "
            f"the prior's sweep: {2 * beta_span * math.sqrt(path.shape[1]):.2g}); local z on columns"
        )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_interpolation(
    images: torch.Tensor,
    title: str = "beta_1 -> beta_2 (rows), z_1 -> z_2 (columns)",
    betas: torch.Tensor | None = None,
    scales: torch.Tensor | None = None,
) -> Figure:
    """Fig. 5(a, c): the ``(steps, steps, C, H, W)`` grid of :meth:`~untwine.pyro_models.UGVAE.interpolate`.

    :param betas: the interpolated :math:`\\beta` of each row ``(steps, g)`` and ``scales`` the posterior standard
        deviations of the two endpoints ``(2, g)``: each row is then labelled with its distance from either endpoint
        in that endpoint's posterior standard deviations, and rows within 2 of one are marked, so the figure shows
        whether the path ever leaves the endpoints' posteriors.
    """
    fig = _show(_grid(images.reshape(-1, *images.shape[2:]), images.shape[1]), title, size=5.0)
    if betas is None or scales is None:
        return fig
    steps = betas.shape[0]
    b, s = betas.double().cpu(), scales.double().cpu()
    to_first = ((b - b[0]) / s[0]).square().sum(-1).sqrt()
    to_last = ((b - b[-1]) / s[1]).square().sum(-1).sqrt()
    ax = fig.axes[0]
    ax.axis("on")
    ax.set_xticks([])
    height = ax.get_images()[0].get_array().shape[0]
    ax.set_yticks([(k + 0.5) * height / steps for k in range(steps)])
    ax.set_yticklabels(
        [f"{'*' if min(a, c) <= 2 else ' '} {a:.1f} | {c:.1f}" for a, c in zip(to_first.tolist(), to_last.tolist())],
        fontsize=7,
    )
    ax.set_ylabel("sd from beta_1 | from beta_2 (* within 2)", fontsize=8)
    ax.set_title(f"{title}\nbeta_1 and beta_2 are {float(to_first[-1]):.2g} posterior sd apart", fontsize=9)
    fig.tight_layout()
    return fig


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
