"""Figures of the Lp-nested prior and grouped traversals: read back what was drawn and check it."""

import math

import numpy as np
import pytest
import torch
from matplotlib.contour import ContourSet
from torch import nn

from untwine.distributions import LpNestedSymmetric
from untwine.plots import plot_exponent_history, plot_lp_nested_contours, plot_prior_samples, plot_traversals
from untwine.plots.lp_nested import DIAGONAL_PLANE, EQ6_TREE


def _contours(ax) -> ContourSet:
    (cs,) = [c for c in ax.collections if isinstance(c, ContourSet)]
    return cs


def _level_vertices(ax, level: float) -> np.ndarray:
    cs = _contours(ax)
    k = int(np.argmin(np.abs(np.asarray(cs.levels) - level)))
    assert cs.levels[k] == pytest.approx(level)
    verts = cs.get_paths()[k].vertices
    assert len(verts) > 50, "the level set should be drawn"
    return verts


def test_level_sets_for_two_and_two_are_circles_of_the_level_radius():
    fig = plot_lp_nested_contours(p0_values=(2.0,), p1_values=(2.0,), levels=(0.5, 1.0, 1.5))
    (ax,) = fig.axes
    for level in (0.5, 1.0, 1.5):
        radius = np.linalg.norm(_level_vertices(ax, level), axis=1)
        np.testing.assert_allclose(radius, level, atol=2e-3)


def test_l1_level_set_on_the_diagonal_plane_is_the_expected_diamond():
    # z = s (e1 + e3)/sqrt2 + t e2 with every exponent 1: f = |z1| + |z2| + |z3| = sqrt2 |s| + |t|
    fig = plot_lp_nested_contours(p0_values=(1.0,), p1_values=(1.0,), levels=(1.0,))
    s, t = _level_vertices(fig.axes[0], 1.0).T
    np.testing.assert_allclose(math.sqrt(2) * np.abs(s) + np.abs(t), 1.0, atol=1e-2)
    assert np.abs(s).max() == pytest.approx(1 / math.sqrt(2), abs=1e-2)


def test_rows_are_p0_and_columns_p1_and_every_panel_draws_its_own_function():
    p0s, p1s = (1.0, 9.0), (2.0, 9.0, 1.0)
    fig = plot_lp_nested_contours(p0_values=p0s, p1_values=p1s, levels=(0.5, 1.0))
    axes = [ax for ax in fig.axes if ax.collections]
    assert len(axes) == len(p0s) * len(p1s)
    u, v = torch.tensor(DIAGONAL_PLANE, dtype=torch.float64)
    for i, p0 in enumerate(p0s):
        for j, p1 in enumerate(p1s):
            ax = axes[i * len(p1s) + j]
            assert f"p_0 = {p0:g}" in ax.get_title() and f"p_1 = {p1:g}" in ax.get_title()
            st = torch.as_tensor(_level_vertices(ax, 1.0), dtype=torch.float64)
            z = st[:, :1] * u + st[:, 1:] * v
            f = LpNestedSymmetric(EQ6_TREE, torch.tensor([p0, p1], dtype=torch.float64)).lp_nested_norm(z)
            np.testing.assert_allclose(f.numpy(), 1.0, atol=2e-2)
            # along the horizontal axis z1 = z3 = a, z2 = 0, so f = 2^(1/p0) |a| and the unit level sits at
            # s = sqrt2 * 2^(-1/p0): a check of the row's exponent that does not go through the library
            assert np.abs(st[:, 0].numpy()).max() == pytest.approx(math.sqrt(2) * 2 ** (-1 / p0), abs=1e-2)


def test_another_plane_and_bad_arguments():
    # the plane z3 = 0 only sees p0: (|z1|^9 + |z2|^9)^(1/9) = 1
    fig = plot_lp_nested_contours(p0_values=(9.0,), p1_values=(1.0,), levels=(1.0,), plane=((1, 0, 0), (0, 1, 0)))
    s, t = _level_vertices(fig.axes[0], 1.0).T
    np.testing.assert_allclose((np.abs(s) ** 9 + np.abs(t) ** 9) ** (1 / 9), 1.0, atol=1e-2)
    assert fig.axes[0].get_xlabel() == "z1" and fig.axes[0].get_ylabel() == "z2"
    with pytest.raises(ValueError, match="orthonormal"):
        plot_lp_nested_contours(plane=((1, 0, 0), (1, 1, 0)))
    with pytest.raises(ValueError, match="positive"):
        plot_lp_nested_contours(p0_values=(0.0,))


HISTORY = [
    {"epoch": 1, "step": 10, "loss": 300.0, "p0": 2.1, "p1": 2.05, "p2": 1.9, "p10": 2.2},
    {"epoch": 2, "step": 20, "loss": 250.0, "p0": 2.1, "p1": 2.10, "p2": 1.8, "p10": 2.3},
    {"epoch": 3, "step": 30, "loss": 240.0, "p0": 2.1, "p1": 2.12, "p2": 1.7, "p10": 2.4},
]


def _exponent_lines(fig):
    return {line.get_label().split()[0]: line for line in fig.axes[0].lines if not line.get_label().startswith("_")}


def test_exponent_history_draws_one_line_per_exponent_with_its_values():
    lines = _exponent_lines(plot_exponent_history(HISTORY))
    assert list(lines) == ["p0", "p1", "p2", "p10"]  # numeric order, loss and step left out
    for key, line in lines.items():
        np.testing.assert_allclose(line.get_xdata(), [1, 2, 3])
        np.testing.assert_allclose(line.get_ydata(), [row[key] for row in HISTORY])


def test_exponent_history_with_initial_values_and_chosen_keys():
    initial = {"p0": 2.1, "p1": 2.0, "p2": 2.0, "p10": 2.0}
    lines = _exponent_lines(plot_exponent_history(HISTORY, initial=initial, keys=["p2", "p1"]))
    assert list(lines) == ["p2", "p1"]
    np.testing.assert_allclose(lines["p2"].get_xdata(), [0, 1, 2, 3])
    np.testing.assert_allclose(lines["p2"].get_ydata(), [2.0, 1.9, 1.8, 1.7])
    with pytest.raises(ValueError, match="no exponent columns"):
        plot_exponent_history([{"epoch": 1, "loss": 3.0}])
    with pytest.raises(ValueError, match="empty"):
        plot_exponent_history([])


def test_prior_samples_default_pairs_inside_and_across_subspaces():
    prior = LpNestedSymmetric.isa(0.5, [2.0, 2.0], [2, 2], scale=1.0)  # heavy-tailed subspace radii
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    fig = plot_prior_samples(prior, n=4000, seed=0)
    assert torch.equal(torch.rand(3), before), "a seeded draw must leave the global RNG alone"
    within, across = fig.axes
    assert "z0 vs z1: same subspace (1)" in within.get_title()
    assert "z0 vs z2: subspaces 1 and 2" in across.get_title()
    corr = [float(ax.get_title().rsplit("=", 1)[1]) for ax in (within, across)]
    assert corr[0] > 0.15 and abs(corr[1]) < 0.1, corr  # dependent inside a subspace, independent across
    again = plot_prior_samples(prior, n=4000, seed=0)
    np.testing.assert_array_equal(again.axes[0].collections[0].get_offsets(), within.collections[0].get_offsets())


def test_prior_samples_from_a_tensor_draw_the_named_coordinates():
    samples = torch.randn(500, 5)
    fig = plot_prior_samples(samples, pairs=[(3, 1)], subspaces=[[0, 1], [2, 3, 4]])
    (ax,) = fig.axes
    np.testing.assert_allclose(ax.collections[0].get_offsets(), samples[:, [3, 1]].double().numpy())
    assert "subspaces 2 and 1" in ax.get_title()
    with pytest.raises(ValueError, match="two different coordinates"):
        plot_prior_samples(samples, pairs=[(2, 2)])


class _Traverser(nn.Module):
    """Traversal row d is a constant image of intensity (d + 1) / 10, so rows can be read back."""

    latent_dim = 6

    def traverse(self, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        level = (torch.arange(self.latent_dim, dtype=x.dtype) + 1) / 10
        return level.view(-1, 1, 1, 1, 1).expand(self.latent_dim, len(values), *x.shape).clone()


def _row_intensities(ax, rows: int) -> list[float]:
    img = ax.images[0].get_array()
    tile = img.shape[0] / rows
    return [round(float(img[int(tile * (i + 0.5)), img.shape[1] // 2, 0]), 3) for i in range(rows)]


def test_grouped_traversals_order_label_and_separate_the_subspaces():
    x = torch.zeros(1, 8, 8)
    fig = plot_traversals(_Traverser(), x, steps=5, groups=[[4, 5], [0, 1, 2, 3]])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z4", "z5", "z0", "z1", "z2", "z3"]
    assert _row_intensities(ax, 6) == [0.5, 0.6, 0.1, 0.2, 0.3, 0.4]
    assert [t.get_text() for t in ax.texts] == ["subspace 1", "subspace 2"]
    assert len(ax.lines) == 1  # one separator between two groups
    tile = ax.images[0].get_array().shape[0] / 6
    assert ax.lines[0].get_ydata()[0] == pytest.approx(2 * tile)


def test_grouped_traversals_with_dims_and_errors():
    x = torch.zeros(1, 8, 8)
    fig = plot_traversals(_Traverser(), x, steps=3, dims=[0, 5, 3], groups=[[0, 1], [2], [3, 4, 5]])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z0", "z3", "z5"]  # group 2 has none of dims
    assert [t.get_text() for t in ax.texts] == ["subspace 1", "subspace 3"]
    plain = plot_traversals(_Traverser(), x, steps=3)
    assert not plain.axes[0].texts and not plain.axes[0].lines
    assert _row_intensities(plain.axes[0], 6) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    with pytest.raises(ValueError, match="outside"):
        plot_traversals(_Traverser(), x, groups=[[0, 6]])
