"""Image figures built with ``torchvision.utils.make_grid`` and shown with matplotlib.

Each function returns a :class:`matplotlib.figure.Figure` built without pyplot, so nothing is shown twice or
kept alive by pyplot's figure registry: a notebook displays the returned figure, :func:`save_figure` writes it
atomically as PNG. Models provide the tensors (``reconstruct``, ``sample``, ``traverse``); this module
only lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import nn
from torchvision.utils import make_grid

from untwine.io import atomic_write


def _grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """``(N, C, H, W)`` in [0, 1] -> ``(H', W', 3)`` numpy-ready grid, white padding between tiles."""
    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)
    return grid.permute(1, 2, 0)


def _show(grid: torch.Tensor, title: str, size: float = 6.0) -> Figure:
    h, w = grid.shape[:2]
    fig = Figure(figsize=(size, size * h / w + 0.4))
    ax = fig.subplots()
    ax.imshow(grid.numpy(), interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save ``fig`` as PNG via a temporary file and rename."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def plot_images(images: torch.Tensor, title: str = "", nrow: int = 8) -> Figure:
    """A grid of images ``(N, C, H, W)`` with values in [0, 1] (e.g. a data batch)."""
    return _show(_grid(images, nrow), title)


@torch.no_grad()
def plot_reconstructions(model: nn.Module, x: torch.Tensor, title: str = "data (odd rows), reconstructions") -> Figure:
    """Alternating rows of inputs and ``model.reconstruct`` outputs, 8 per row."""
    model.eval()
    width = min(8, len(x))  # rows of 8, or one shorter row for a tiny batch
    x = x[: (len(x) // width) * width]
    recon = model.reconstruct(x)
    rows = torch.stack([x.reshape(-1, width, *x.shape[1:]), recon.reshape(-1, width, *x.shape[1:])], dim=1)
    return _show(_grid(rows.reshape(-1, *x.shape[1:]), width), title)


@torch.no_grad()
def plot_samples(model: nn.Module, n: int = 64, title: str = "samples from the prior") -> Figure:
    """``n`` images decoded from prior samples (``model.sample``)."""
    model.eval()
    return plot_images(model.sample(n), title)


@torch.no_grad()
def plot_traversals(
    model: nn.Module,
    x: torch.Tensor,
    span: float = 3.0,
    steps: int = 9,
    dims: Sequence[int] | None = None,
    groups: Sequence[Sequence[int]] | None = None,
) -> Figure:
    """One row per latent dimension: that coordinate swept over ``[-span, span]`` around ``x``'s code.

    :param x: one image ``(C, H, W)``.
    :param dims: which rows to show (default all).
    :param groups: coordinate groups, e.g. ``model.subspaces()`` of an ISA-VAE: rows are ordered group by group,
        a line separates consecutive groups and each group is labelled ``subspace k`` on the right (1-based, the
        paper's :math:`\\mathcal{V}_k`). With ``dims``, only those coordinates of each group are shown.
    :raises ValueError: when a group names a coordinate the model does not have.
    """
    model.eval()
    values = torch.linspace(-span, span, steps, device=x.device)
    trav = model.traverse(x, values)
    latent_dim = trav.shape[0]
    if groups is None:
        blocks = [list(dims) if dims is not None else list(range(latent_dim))]
    else:
        for group in groups:
            if any(not 0 <= int(d) < latent_dim for d in group):
                raise ValueError(f"group {list(group)} names coordinates outside 0..{latent_dim - 1}")
        keep = set(dims) if dims is not None else None
        blocks = [[int(d) for d in group if keep is None or d in keep] for group in groups]
    labels = [f"subspace {k + 1}" for k in range(len(blocks))]
    labels, blocks = [lab for lab, b in zip(labels, blocks) if b], [b for b in blocks if b]
    rows = [d for block in blocks for d in block]
    if not rows:
        raise ValueError("no latent dimension left to show; check dims and groups")
    trav = trav[rows]
    grid = _grid(trav.reshape(-1, *trav.shape[2:]), steps)
    fig = _show(grid, f"latent traversals over [-{span:g}, {span:g}]", size=5.0)
    ax = fig.axes[0]
    tile = grid.shape[0] / len(rows)
    ax.axis("on")
    ax.set_xticks([])
    ax.set_yticks([tile * (i + 0.5) for i in range(len(rows))], [f"z{d}" for d in rows])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if groups is not None:
        start = 0
        for k, block in enumerate(blocks):
            if k:  # separator on the white padding between the last row of one group and the next
                ax.axhline(tile * start, color="tab:red", lw=1.2)
            ax.text(grid.shape[1] + 4, tile * (start + len(block) / 2), labels[k], va="center", ha="left", fontsize=8)
            start += len(block)
    fig.tight_layout()
    return fig


def plot_history(history: Sequence[dict[str, float]], key: str = "loss") -> Figure:
    """Training curve of ``key`` (default: loss per datapoint, the negative ELBO) against epoch."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row[key] for row in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{key} per datapoint" if key == "loss" else key)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
