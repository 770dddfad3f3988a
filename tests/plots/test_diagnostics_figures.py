"""The k-hat histogram counts every finite k-hat once and states the shares it marks."""

import numpy as np

from untwine.diagnostics import khat_threshold
from untwine.plots import plot_khat


def test_khat_histogram_counts_units_and_reports_the_shares():
    khat = np.r_[np.full(6, 0.2), np.full(3, 0.6), np.full(1, 0.9), np.inf, -np.inf]
    fig = plot_khat(khat, "a model", unit="group", num_samples=1000)
    ax = fig.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 10  # the two infinite k-hats are not drawn
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].endswith("58%") and labels[1].endswith("25%") and labels[2].endswith("17%")  # of 12 units
    assert labels[3] == "threshold at K = 1000: 17% above"  # 1 - 1/3 = 0.667
    assert "12 groups (2 without a fitted tail)" in ax.get_title()
    assert all(float(t).is_integer() for t in ax.get_yticks())


def test_the_threshold_follows_the_number_of_draws():
    assert khat_threshold(100) == 0.5
    assert abs(khat_threshold(1000) - 2 / 3) < 1e-12
    assert khat_threshold(10**6) == 0.7
