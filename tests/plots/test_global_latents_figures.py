"""Figures of grouped models: read back the panels and pixels that were drawn and check their layout."""

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from untwine.plots import plot_global_tsne, plot_interpolation, plot_sampling_grid, save_figure
from untwine.pyro_models import UGVAE, UGVAEConfig

SHAPE = (1, 6, 6)
PAD = 2  # make_grid's padding between tiles


def tiny(mixture=True, clusters=4):
    torch.manual_seed(0)
    config = UGVAEConfig(
        image_shape=SHAPE, latent_dim=2, global_dim=3, num_clusters=clusters, group_size=4, hidden=8,
        mixture=mixture, likelihood="bernoulli", network="mlp-256",
    )  # fmt: skip
    return UGVAE(config)


def tile(array: np.ndarray, row: int, col: int, h: int = SHAPE[1], w: int = SHAPE[2]) -> np.ndarray:
    """Tile ``(row, col)`` of a grid drawn with padding 2, first channel."""
    top, left = PAD + row * (h + PAD), PAD + col * (w + PAD)
    return np.asarray(array)[top : top + h, left : left + w, 0]


def test_sampling_grid_draws_one_panel_per_cluster_with_beta_on_rows():
    model = tiny()
    fig = plot_sampling_grid(model, clusters=(0, 2, 3), rows=3, cols=5)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["cluster 0", "cluster 2", "cluster 3"]
    for ax, d in zip(fig.axes, (0, 2, 3)):
        (image,) = ax.get_images()
        drawn = image.get_array()
        assert drawn.shape[:2] == (3 * (6 + PAD) + PAD, 5 * (6 + PAD) + PAD)
        grid = model.sampling_grid(d, 3, 5)  # (rows, cols, C, H, W)
        for r, c in ((0, 0), (2, 1), (1, 4)):
            np.testing.assert_allclose(tile(drawn, r, c), grid[r, c, 0].numpy(), atol=1e-6)


def test_sampling_grid_of_the_ml_vae_has_a_single_unimodal_panel():
    fig = plot_sampling_grid(tiny(mixture=False), clusters=(0,), rows=2, cols=2)
    (ax,) = fig.axes
    assert "unimodal" in ax.get_title()


def test_interpolation_puts_beta_steps_on_rows_and_z_steps_on_columns():
    steps = 4
    # tile (i, j) is a flat image of value (i * steps + j) / 16, so every tile is recognisable
    values = torch.arange(steps * steps, dtype=torch.float32).reshape(steps, steps) / (steps * steps)
    images = values[:, :, None, None, None].expand(steps, steps, *SHAPE)
    fig = plot_interpolation(images, title="a -> b")
    (ax,) = fig.axes
    assert ax.get_title() == "a -> b"
    drawn = ax.get_images()[0].get_array()
    assert drawn.shape[:2] == (steps * (6 + PAD) + PAD,) * 2
    for i in range(steps):
        for j in range(steps):
            np.testing.assert_allclose(tile(drawn, i, j), float(values[i, j]))


def tsne_result(kinds, per_kind=4, path=0):
    rng = np.random.default_rng(0)
    labels = [k for k in kinds for _ in range(per_kind)] + ["interpolation"] * path
    embedding = rng.normal(size=(len(labels), 2))
    return {"kinds": list(kinds) + (["interpolation"] if path else []), "labels": labels, "embedding": embedding}


def test_global_tsne_scatters_each_kind_and_draws_the_interpolation_path():
    result = tsne_result(["mnist", "fashion-mnist", "mixed"], path=5)
    fig = plot_global_tsne(result)
    (ax,) = fig.axes
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 3
    emb, labels = result["embedding"], np.array(result["labels"])
    for scatter, kind in zip(scatters, ["mnist", "fashion-mnist", "mixed"]):
        np.testing.assert_allclose(scatter.get_offsets(), emb[labels == kind])
    (line,) = ax.get_lines()
    np.testing.assert_allclose(np.column_stack(line.get_data()), emb[labels == "interpolation"])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["mnist batches", "fashion-mnist batches", "mixed batches", "beta_1 -> beta_2"]


def test_global_tsne_without_a_path_draws_no_line():
    fig = plot_global_tsne(tsne_result(["even", "odd", "random"]), title="digits")
    (ax,) = fig.axes
    assert ax.get_title() == "digits" and not ax.get_lines()
    assert len([c for c in ax.collections if isinstance(c, PathCollection)]) == 3


def test_global_tsne_allows_five_kinds_and_rejects_six():
    plot_global_tsne(tsne_result(["a", "b", "c", "d", "e"], path=3))
    with pytest.raises(ValueError, match="at most 5 batch kinds.*got 6"):
        plot_global_tsne(tsne_result(["a", "b", "c", "d", "e", "f"]))


def test_save_figure_writes_a_png(tmp_path):
    fig = plot_sampling_grid(tiny(), clusters=(1,), rows=2, cols=2)
    path = save_figure(fig, tmp_path / "figures" / "grid.png")
    assert path == tmp_path / "figures" / "grid.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary file left behind


def test_observed_beta_path_runs_along_the_main_axis_between_the_extreme_batches():
    from untwine.plots.global_latents import observed_beta_path

    rng = np.random.default_rng(0)
    # batches spread along (1, 1, 0) / sqrt(2), with a little noise across it
    t = np.linspace(-2.0, 3.0, 40)
    means = 0.5 + t[:, None] * np.array([1.0, 1.0, 0.0]) / np.sqrt(2) + 0.01 * rng.normal(size=(40, 3))
    path, length = observed_beta_path(means, rows=5)
    assert path.shape == (5, 3) and length == pytest.approx(5.0, abs=0.05)
    steps = path[1:] - path[:-1]
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-5)  # evenly spaced on one line
    for end in (path[0], path[-1]):  # the ends sit next to the extreme batches
        assert np.min(np.linalg.norm(means - end.numpy(), axis=1)) < 0.05
    with pytest.raises(ValueError, match="at least 2 batches"):
        observed_beta_path(means[:1])


def test_sampling_grid_over_observed_means_decodes_the_path_and_says_so():
    from untwine.plots.global_latents import observed_beta_path

    model = tiny()
    means = torch.randn(10, 3, generator=torch.Generator().manual_seed(0)) * 0.01
    fig = plot_sampling_grid(model, clusters=(1,), rows=3, cols=2, beta_means=means)
    path, _ = observed_beta_path(means, rows=3)
    drawn = fig.axes[0].get_images()[0].get_array()
    expected = model.sampling_grid(1, 3, 2, beta_path=path)
    np.testing.assert_allclose(tile(drawn, 2, 1), expected[2, 1, 0].numpy(), atol=1e-6)
    assert "range of mu_beta over 10 real batches" in fig._suptitle.get_text()
    assert "prior's range" in plot_sampling_grid(model, clusters=(1,), rows=3, cols=2)._suptitle.get_text()
    with pytest.raises(ValueError, match="beta_path must be"):
        model.sampling_grid(1, beta_path=torch.zeros(3, 2))


def test_interpolation_rows_are_labelled_with_their_distance_from_both_posteriors():
    steps = 3
    images = torch.zeros(steps, steps, *SHAPE)
    betas = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]])
    scales = torch.tensor([[0.1, 1.0], [0.5, 1.0]])  # beta_2 is 10 sd of beta_1's posterior away, 2 sd of its own
    fig = plot_interpolation(images, "a -> b", betas, scales)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    # the middle row is 5 sd from beta_1 but 1 sd from beta_2, so it lies inside beta_2's posterior
    assert labels == ["* 0.0 | 2.0", "* 5.0 | 1.0", "* 10.0 | 0.0"]
    assert "10 posterior sd apart" in fig.axes[0].get_title()
