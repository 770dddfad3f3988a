"""Figures of class-conditional models (N-VAE, Antorán & Miguel 2019): KL detectors, traversals, samples, scatter.

Each function returns a matplotlib ``Figure`` built without pyplot (see :mod:`untwine.plots.images`). Models supply
the tensors (``traverse_class``, ``sample``); :func:`~untwine.metrics.classes.latent_kl` supplies the KL values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from untwine.metrics.classes import class_layout
from untwine.plots.images import _grid, _show


def plot_latent_kl(kl: dict, model: nn.Module, title: str = "KL cost per latent dimension") -> Figure:
    """Fig. 5: mean KL of every latent coordinate, class blocks and shared part coloured apart, plus the
    per-image totals of the true class's block (:math:`z_{cy}`), one other block and :math:`z_s`.

    :param kl: the result of :func:`~untwine.metrics.classes.latent_kl`.
    """
    num_classes, class_dim, shared_dim = class_layout(model)
    per_dim = np.asarray(kl["per_dimension"], dtype=float)
    fig = Figure(figsize=(10, 3.2))
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [4, 1]})
    colours = ["tab:blue" if j < num_classes * class_dim else "tab:orange" for j in range(len(per_dim))]
    ax.bar(np.arange(len(per_dim)), per_dim, color=colours, width=0.8)
    for k in range(1, num_classes):
        ax.axvline(k * class_dim - 0.5, color="0.85", lw=0.6)
    ax.set_xlabel(f"latent dimension (blue: z_c, {num_classes} blocks of {class_dim}; orange: z_s)")
    ax.set_ylabel("KL (nats)")
    ax.set_title(title)
    names = ["z_cy", "other z_c block", "z_s"]
    bx.bar(names, [kl["z_cy"], kl["z_c_other"], kl["z_s"]], color=["tab:blue", "tab:gray", "tab:orange"])
    bx.set_ylabel("KL per image (nats)")
    bx.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig


def plot_class_kl_matrix(kl: dict, class_names: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Fig. 10: mean KL of each class block (columns) for the images of each true class (rows)."""
    matrix = np.asarray(kl["class_matrix"], dtype=float)
    n = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(k) for k in range(n)]
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="viridis")
    ticks = range(n) if n <= 20 else range(0, n, max(1, n // 10))
    ax.set_xticks(list(ticks), [names[k] for k in ticks], rotation=90 if n > 10 else 0)
    ax.set_yticks(list(ticks), [names[k] for k in ticks])
    ax.set_xlabel("class block of z_c")
    ax.set_ylabel("true class")
    ratio = kl.get("min_diagonal_ratio")
    ax.set_title(title or (f"KL of z_c blocks (min diagonal ratio {ratio:.1f})" if ratio is not None else ""))
    fig.colorbar(im, ax=ax, label="KL (nats)")
    fig.tight_layout()
    return fig


@torch.no_grad()
def plot_class_traversals(
    model: nn.Module,
    classes: Sequence[int] | None = None,
    span: float = 3.0,
    steps: int = 9,
    shared: bool = False,
    dims: Sequence[int] | None = None,
) -> Figure:
    """Figs. 1 and 6 (``shared=False``): each class's own block swept over ``[-span, span]``, one row per dimension;
    figs. 2, 7 and 8 (``shared=True``): the shared dimensions swept, decoded as each class.

    :param classes: classes to show (default all).
    :param dims: which dimensions of the block (or of :math:`z_s`) to show, e.g. the most informative ones.
    """
    model.eval()
    num_classes, class_dim, shared_dim = class_layout(model)
    classes = list(range(num_classes)) if classes is None else list(classes)
    device = next(model.parameters()).device
    values = torch.linspace(-span, span, steps, device=device)
    width = shared_dim if shared else class_dim
    dims = list(range(width)) if dims is None else list(dims)
    rows = [model.traverse_class(k, values, shared=shared)[dims] for k in classes]  # each (len(dims), steps, C,H,W)
    images = torch.cat(rows).reshape(-1, *rows[0].shape[2:])
    what = "shared z_s" if shared else "class-dependent z_c"
    fig = _show(_grid(images, steps), f"{what} traversals over [-{span:g}, {span:g}]", size=5.0)
    ax = fig.axes[0]
    tile = ax.images[0].get_array().shape[0] / (len(classes) * len(dims))
    ax.axis("on")
    ax.set_xticks([])
    ax.set_yticks([tile * (i + 0.5) for i in range(len(classes) * len(dims))],
                  [f"class {k}, d{d}" for k in classes for d in dims], fontsize=6)  # fmt: skip
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    return fig


@torch.no_grad()
def plot_class_samples(model: nn.Module, sigma: float = 1.0, per_class: int = 8) -> Figure:
    """Fig. 11: ancestral samples with :math:`z \\sim \\mathcal{N}(0, \\sigma^2 I)`, one row per class."""
    model.eval()
    num_classes, _, _ = class_layout(model)
    device = next(model.parameters()).device
    labels = torch.arange(num_classes, device=device).repeat_interleave(per_class)
    return _show(_grid(model.sample(len(labels), y=labels, sigma=sigma), per_class), f"samples, sigma = {sigma:g}")


def plot_latent_scatter(
    codes: dict[str, torch.Tensor], labels: torch.Tensor, title: str = "2-D latent spaces of the test set"
) -> Figure:
    """Fig. 3: scatter of 2-D codes coloured by class, one panel per model (e.g. N-VAE's :math:`z_s`, a β-VAE's z).

    :param codes: panel title -> ``(N, 2)`` codes (posterior means).
    :param labels: ``(N,)`` classes for the colours.
    """
    fig = Figure(figsize=(4.2 * len(codes), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(codes)))
    y = labels.cpu().numpy()
    for ax, (name, z) in zip(axes, codes.items()):
        z = z.detach().cpu().numpy()
        if z.ndim != 2 or z.shape[1] != 2:
            raise ValueError(f"{name}: scatter needs (N, 2) codes, got {z.shape}")
        points = ax.scatter(z[:, 0], z[:, 1], c=y, s=2, cmap="tab10", alpha=0.6)
        ax.set_title(name)
        ax.set_aspect("equal", adjustable="datalim")
    fig.colorbar(points, ax=list(axes), label="class")
    fig.suptitle(title)
    return fig
