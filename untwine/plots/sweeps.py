"""The papers' comparison figures drawn from a sweep's results (one row per cell, see :func:`untwine.sweep.results`).

Only finished cells (``status == "done"``) are drawn. Each function returns ``None`` when there is nothing finite to
draw, so a sweep with few cells done yields fewer figures rather than empty ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from untwine.sweep_stats import SYMBOL, done, summarise

Rows = Sequence[dict[str, Any]]

JITTER = 0.12  # half-width of the horizontal scatter of points over a box
SEED = 0  # the jitter is seeded so that a figure redrawn from the same results is the same image


def _colours(rows: Rows) -> dict[str, str]:
    """One colour per label, fixed by order of first appearance so that every figure of a sweep agrees."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    return {label: f"C{i % 10}" for i, label in enumerate(labels)}


def _symbol(strength: str) -> str:
    return SYMBOL.get(strength, strength)


def _finite(x: float) -> bool:
    return x is not None and not math.isnan(float(x))


def _zero_nan(x: float) -> float:
    # a group of one run has no standard error; draw it without a bar rather than drop the point
    return 0.0 if not _finite(x) else float(x)


def plot_mig_vs_reconstruction(rows: Rows) -> Figure | None:
    """Mean MIG against mean :math:`\\mathbb{E}[\\log p(x|z)]` per model and strength (ISA-VAE paper, Fig. 5b/6).

    One line per label through its strength values in increasing order, with standard-error bars in both directions;
    each point is annotated with its value (β or γ). Better models sit towards the top right.
    """
    rows = done(rows)
    colours = _colours(rows)
    summary = [s for s in summarise(rows) if _finite(s["mig_mean"]) and _finite(s["log_px_z_mean"])]
    if not summary:
        return None
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.subplots()
    for label in dict.fromkeys(s["label"] for s in summary):
        points = [s for s in summary if s["label"] == label]
        ax.errorbar(
            [s["log_px_z_mean"] for s in points],
            [s["mig_mean"] for s in points],
            xerr=[_zero_nan(s["log_px_z_se"]) for s in points],
            yerr=[_zero_nan(s["mig_se"]) for s in points],
            marker="o",
            ms=4,
            capsize=2,
            lw=1.2,
            color=colours[label],
            label=label,
        )
        for s in points:
            ax.annotate(
                f"{_symbol(s['strength'])}={s['value']:g}",
                (s["log_px_z_mean"], s["mig_mean"]),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
                color=colours[label],
            )
    ax.set_xlabel("E[log p(x|z)] per image (nats, higher is better)")
    ax.set_ylabel("MIG")
    ax.set_title("MIG against reconstruction quality (mean ± standard error)")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _boxes(ax, groups: list[tuple[str, np.ndarray]], colours: dict[str, str], rng: np.random.Generator) -> None:
    """A box per group with its runs scattered over it."""
    positions = np.arange(1, len(groups) + 1)
    ax.boxplot([g for _, g in groups], positions=positions, widths=0.5, showfliers=False, medianprops={"color": "k"})
    for pos, (label, values) in zip(positions, groups):
        x = pos + rng.uniform(-JITTER, JITTER, size=len(values))
        ax.scatter(x, values, s=12, alpha=0.7, color=colours[label], zorder=3)
    ax.set_xticks(positions, [label for label, _ in groups], rotation=30, ha="right", fontsize=8)


def _mig_groups(rows: Rows, labels: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    groups = []
    for label in labels:
        values = np.asarray([float(r["mig"]) for r in rows if r["label"] == label], dtype=float)
        values = values[~np.isnan(values)]
        if len(values):
            groups.append((label, values))
    return groups


def plot_mig_distribution(rows: Rows, value: float | None = None) -> Figure | None:
    """MIG of every run per model at one strength value (ISA-VAE paper §4.1, Fig. 5a, at β = 1), box and points.

    :param value: only the cells at this strength value; ``None``: one panel per value, side by side.
    """
    rows = done(rows)
    colours = _colours(rows)
    labels = list(colours)
    values = [float(value)] if value is not None else sorted({float(r["value"]) for r in rows})
    panels = []
    for v in values:
        here = [r for r in rows if float(r["value"]) == v]
        groups = _mig_groups(here, labels)
        if groups:
            symbols = "/".join(sorted({_symbol(r["strength"]) for r in here if r["label"] in dict(groups)}))
            panels.append((f"{symbols} = {v:g}", groups))
    if not panels:
        return None
    rng = np.random.default_rng(SEED)
    fig = Figure(figsize=(0.6 + sum(0.7 * len(g) + 0.8 for _, g in panels), 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (title, groups) in zip(axes, panels):
        _boxes(ax, groups, colours, rng)
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("MIG")
    fig.suptitle("MIG per model and strength (every run)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_mig_per_algorithm(rows: Rows) -> Figure | None:
    """MIG of every run of each model, pooled over its strengths (the β-TCVAE poster's comparison), box and points."""
    rows = done(rows)
    colours = _colours(rows)
    groups = _mig_groups(rows, list(colours))
    if not groups:
        return None
    fig = Figure(figsize=(1.2 + 0.8 * len(groups), 4.0))
    ax = fig.subplots()
    _boxes(ax, groups, colours, np.random.default_rng(SEED))
    ax.set_ylabel("MIG")
    ax.set_title("MIG per model, all strengths pooled", fontsize=10)
    fig.tight_layout()
    return fig


def plot_mig_vs_tc(rows: Rows) -> Figure | None:
    """Mean MIG against mean total correlation per model and strength (the β-TCVAE poster), larger markers for
    larger strength values. A low TC with a low MIG shows independent but not disentangled latents."""
    rows = done(rows)
    colours = _colours(rows)
    summary = [s for s in summarise(rows) if _finite(s["mig_mean"]) and _finite(s["tc_mean"])]
    if not summary:
        return None
    lo, hi = min(s["value"] for s in summary), max(s["value"] for s in summary)
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.subplots()
    for label in dict.fromkeys(s["label"] for s in summary):
        points = [s for s in summary if s["label"] == label]
        sizes = [20 + 160 * ((s["value"] - lo) / (hi - lo) if hi > lo else 0.5) for s in points]
        ax.scatter(
            [s["tc_mean"] for s in points],
            [s["mig_mean"] for s in points],
            s=sizes,
            color=colours[label],
            alpha=0.7,
            edgecolors="k",
            linewidths=0.5,
            label=label,
        )
    ax.set_xlabel("total correlation (nats)")
    ax.set_ylabel("MIG")
    ax.set_title("MIG against total correlation (marker size grows with β/γ)", fontsize=10)
    legend = ax.legend(fontsize=8, frameon=False)
    for handle in legend.legend_handles:
        handle.set_sizes([30])  # the legend shows colours; sizes there would suggest one strength
    fig.tight_layout()
    return fig


#: file name of each figure :func:`sweep_figures` draws
#: the metrics of the forest plot, with their axis labels
FOREST_METRICS = (("mig", "MIG"), ("log_px", "log p(x), nats/image"), ("khat_share", "share of k-hat > 0.7"))


def plot_forest(rows: Rows, metrics: Sequence[tuple[str, str]] = FOREST_METRICS) -> Figure | None:
    """A forest plot of per-seed metrics: one row per model and strength, one panel per metric, each seed a dot and
    the mean with a standard-error bar. ArviZ's ``plot_forest`` draws credible intervals of posterior draws; seeds
    are runs, not draws, so their mean ± SE is drawn here instead, with every seed shown."""
    rows = done(rows)
    metrics = [(m, label) for m, label in metrics if any(_finite(r.get(m, math.nan)) for r in rows)]
    if not metrics:
        return None
    colours = _colours(rows)
    summary = summarise(rows, [m for m, _ in metrics])
    fig = Figure(figsize=(3.6 * len(metrics), 0.45 * len(summary) + 1.4))
    axes = np.atleast_1d(fig.subplots(1, len(metrics), sharey=True))
    y = np.arange(len(summary))[::-1]
    for ax, (metric, label) in zip(axes, metrics):
        for yi, s in zip(y, summary):
            cells = [r for r in rows if r["label"] == s["label"] and float(r["value"]) == s["value"]]
            values = [float(r.get(metric, math.nan)) for r in cells]
            colour = colours[s["label"]]
            ax.plot(values, [yi] * len(values), "o", color=colour, alpha=0.35, markersize=4)
            if _finite(s[f"{metric}_mean"]):
                ax.errorbar(s[f"{metric}_mean"], yi, xerr=_zero_nan(s[f"{metric}_se"]), fmt="D", color=colour,
                            capsize=3, markersize=5)  # fmt: skip
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y, [f"{s['label']} {_symbol(s['strength'])}={s['value']:g}" for s in summary], fontsize=8)
    fig.suptitle("per seed (dots) and mean ± SE (diamonds)", fontsize=9)
    fig.tight_layout()
    return fig


FIGURES = {
    "mig_vs_reconstruction.png": plot_mig_vs_reconstruction,
    "mig_distribution.png": plot_mig_distribution,
    "mig_per_algorithm.png": plot_mig_per_algorithm,
    "mig_vs_tc.png": plot_mig_vs_tc,
    "forest.png": plot_forest,
}


def sweep_figures(rows: Rows) -> list[tuple[str, Figure]]:
    """Every figure of :data:`FIGURES` that has something to draw, with its file name.

    Scores of different datasets are not comparable, so a sweep over several datasets gets one set of figures per
    dataset, named e.g. ``mig_vs_tc-3dfaces.png``; a sweep over one dataset keeps the plain names.
    """
    rows = done(rows)
    datasets = list(dict.fromkeys(r["data"] for r in rows))
    out = []
    for data in datasets:
        here = [r for r in rows if r["data"] == data]
        for name, draw in FIGURES.items():
            fig = draw(here)
            if fig is not None:
                out.append((name if len(datasets) == 1 else name.replace(".png", f"-{data}.png"), fig))
    return out
