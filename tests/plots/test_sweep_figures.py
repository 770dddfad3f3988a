"""Comparison figures of a sweep: read back what was drawn from synthetic results."""

import math

import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from untwine.plots import (
    plot_forest,
    plot_mig_distribution,
    plot_mig_per_algorithm,
    plot_mig_vs_reconstruction,
    plot_mig_vs_tc,
    save_figure,
    sweep_figures,
)

LABELS = {"vae": "kl_weight", "beta-tcvae": "tc_weight", "factor-vae": "gamma"}
VALUES = (1.0, 4.0)
SEEDS = (0, 1, 2)


def synthetic(status="done", mig=True):
    rows = []
    for i, (label, strength) in enumerate(LABELS.items()):
        for j, value in enumerate(VALUES):
            for seed in SEEDS:
                rows.append(
                    {"cell": len(rows), "label": label, "model": label, "data": "dsprites", "strength": strength,
                     "value": value, "seed": seed, "status": status,
                     "mig": 0.1 * (i + 1) + 0.05 * j + 0.01 * seed if mig else math.nan,
                     "discrete_mig": math.nan, "mig_grouped": math.nan, "log_px_z": -30.0 - 5 * j - i - seed,
                     "elbo": -50.0, "kl": 10.0, "mi": 1.0, "tc": 2.0 - 0.5 * j - 0.1 * seed, "dwkl": 1.0,
                     "train_seconds": 1.0, "seconds": 1.0}
                )  # fmt: skip
    return rows


def scatter_points(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def test_mig_vs_reconstruction_one_errorbar_line_per_label():
    rows = synthetic()
    fig = plot_mig_vs_reconstruction(rows)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    (ax,) = fig.axes
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3
    line = bars[0].lines[0]
    # vae at β = 1 and 4, joined in order of β: mean E[log p(x|z)] and mean MIG over the 3 seeds
    np.testing.assert_allclose(np.asarray(line.get_xdata(), dtype=float), [-31.0, -36.0])
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), [0.11, 0.16])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(LABELS)
    notes = sorted(t.get_text() for t in ax.texts)
    assert notes == sorted(["β=1", "β=4", "β=1", "β=4", "γ=1", "γ=4"])
    assert "MIG" in ax.get_ylabel() and "log p(x|z)" in ax.get_xlabel()


def test_mig_distribution_one_panel_per_value_or_one_value():
    rows = synthetic()
    fig = plot_mig_distribution(rows)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for ax in fig.axes:
        assert scatter_points(ax) == 9  # 3 labels × 3 seeds
        assert [t.get_text() for t in ax.get_xticklabels()] == list(LABELS)
    assert fig.axes[0].get_title() == "β/γ = 1"
    one = plot_mig_distribution(rows, value=4.0)
    assert len(one.axes) == 1 and scatter_points(one.axes[0]) == 9 and one.axes[0].get_title().endswith("= 4")
    assert plot_mig_distribution(rows, value=3.0) is None
    # the jitter is seeded: the same rows give the same points
    again = plot_mig_distribution(rows)
    for a, b in zip(fig.axes, again.axes):
        for ca, cb in zip(a.collections, b.collections):
            np.testing.assert_array_equal(ca.get_offsets(), cb.get_offsets())


def test_mig_per_algorithm_pools_strengths():
    fig = plot_mig_per_algorithm(synthetic())
    (ax,) = fig.axes
    assert scatter_points(ax) == 18
    assert [t.get_text() for t in ax.get_xticklabels()] == list(LABELS)


def test_mig_vs_tc_marker_size_grows_with_value():
    fig = plot_mig_vs_tc(synthetic())
    (ax,) = fig.axes
    collections = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(collections) == 3
    for c in collections:
        sizes = c.get_sizes()
        assert len(c.get_offsets()) == 2 and sizes[1] > sizes[0]
    np.testing.assert_allclose(collections[0].get_offsets()[:, 0], [1.9, 1.4])  # mean TC at β = 1, 4
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(LABELS)


def test_sweep_figures_names_and_nothing_to_draw(tmp_path):
    figures = sweep_figures(synthetic())
    names = [name for name, _ in figures]
    assert names == [
        "mig_vs_reconstruction.png", "mig_distribution.png", "mig_per_algorithm.png", "mig_vs_tc.png", "forest.png",
    ]  # fmt: skip
    path = save_figure(dict(figures)["mig_vs_tc.png"], tmp_path / "mig_vs_tc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    no_mig = synthetic(mig=False)
    for draw in (
        plot_mig_vs_reconstruction,
        plot_mig_distribution,
        plot_mig_per_algorithm,
        plot_mig_vs_tc,
        plot_forest,
    ):
        assert draw(no_mig) is None
    assert sweep_figures(no_mig) == []
    assert sweep_figures(synthetic(status="failed")) == []
    two = synthetic() + [dict(r, data="3dfaces") for r in synthetic()]
    assert len(sweep_figures(two)) == 10 and sweep_figures(two)[5][0] == "mig_vs_reconstruction-3dfaces.png"


def test_forest_draws_every_seed_and_one_mean_per_model_and_strength():
    rows = [dict(r, log_px=-100.0 - r["seed"], khat_share=0.1) for r in synthetic()]
    fig = plot_forest(rows)
    done = [r for r in rows if r["status"] == "done"]
    groups = {(r["label"], r["value"]) for r in done}
    assert len(fig.axes) == 3
    for ax in fig.axes:
        dots = [line for line in ax.lines if line.get_linestyle() == "None" and line.get_marker() == "o"]
        assert sum(len(line.get_xdata()) for line in dots) == len(done)
        assert len(ax.get_yticks()) == len(groups)
    only_mig = plot_forest(synthetic())
    assert len(only_mig.axes) == 1  # metrics no cell has are left out
