"""Figures of the importance-sampling diagnostics (:mod:`untwine.diagnostics`): the distribution of Pareto k-hat."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from untwine.diagnostics import KHAT_BAD, KHAT_GOOD, khat_threshold


def plot_khat(khat: np.ndarray, title: str = "", unit: str = "image", num_samples: int | None = None) -> Figure:
    """Histogram of :math:`\\hat k` over units with 0.5 (finite variance below) and 0.7 (unreliable above) marked,
    and the share of units in each region in the legend; given the draws per unit, also the threshold of
    :func:`~untwine.diagnostics.khat_threshold` where it differs from both. Units with no fitted tail (``±inf``) are
    counted in the title and left out of the bars."""
    khat = np.asarray(khat, dtype=np.float64)
    finite = khat[np.isfinite(khat)]
    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    if len(finite):
        low, high = min(finite.min(), 0.0), max(finite.max(), 1.0)
        ax.hist(finite, bins=np.linspace(low, high, 31), color="0.55", edgecolor="white")
    shares = [(khat <= KHAT_GOOD).mean(), ((khat > KHAT_GOOD) & (khat <= KHAT_BAD)).mean(), (khat > KHAT_BAD).mean()]
    labels = [f"k ≤ {KHAT_GOOD}: {shares[0]:.0%}", f"{KHAT_GOOD} < k ≤ {KHAT_BAD}: {shares[1]:.0%}",
              f"k > {KHAT_BAD}: {shares[2]:.0%}"]  # fmt: skip
    ax.axvline(KHAT_GOOD, color="tab:orange", linestyle="--", label=labels[0])
    ax.axvline(KHAT_BAD, color="tab:red", linestyle="--", label=labels[1])
    ax.plot([], [], " ", label=labels[2])
    if num_samples is not None and khat_threshold(num_samples) not in (KHAT_GOOD, KHAT_BAD, -np.inf):
        threshold = khat_threshold(num_samples)
        share = (khat > threshold).mean()
        ax.axvline(threshold, color="k", linestyle=":", label=f"threshold at K = {num_samples}: {share:.0%} above")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Pareto k-hat of the importance weights")
    ax.set_ylabel(f"{unit}s")
    unfitted = int((~np.isfinite(khat)).sum())
    extra = f" ({unfitted} without a fitted tail)" if unfitted else ""
    ax.set_title((title + "\n" if title else "") + f"{len(khat)} {unit}s{extra}", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
