r"""Figures for the Lp-nested ISA prior (ISA-VAE paper, section 3.2 and section 4).

* :func:`plot_lp_nested_contours`: iso-contours of the Lp-nested function of eq. 6 for a grid of exponents (the
  paper's Fig. 2), evaluated with :meth:`~untwine.distributions.LpNestedSymmetric.lp_nested_norm`;
* :func:`plot_prior_samples`: samples of a prior for pairs of coordinates inside one subspace and across two;
* :func:`plot_exponent_history`: learned exponents against epoch, from the history ``fit`` records.

Like :mod:`untwine.plots.images`, every function returns a :class:`matplotlib.figure.Figure` built without pyplot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from untwine.distributions import LpNestedSymmetric
from untwine.metrics.utils import seeded

_R = 1.0 / math.sqrt(2.0)
#: Default slice for :func:`plot_lp_nested_contours`: the plane :math:`z_1 = z_3`, spanned by
#: :math:`(e_1 + e_3)/\sqrt{2}` (horizontal) and :math:`e_2` (vertical).
DIAGONAL_PLANE = ((_R, 0.0, _R), (0.0, 1.0, 0.0))
#: The tree of eq. 6, :math:`(|z_1|^{p_0} + (|z_2|^{p_1} + |z_3|^{p_1})^{p_0/p_1})^{1/p_0}`.
EQ6_TREE = (1, (2,))
_EXPONENT_KEY = re.compile(r"^p(\d+)$")


def _plane_basis(plane: Sequence[Sequence[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two orthonormal 3-vectors spanning the slice, or a ``ValueError`` saying what is wrong."""
    basis = torch.as_tensor(plane, dtype=torch.float64)
    if basis.shape != (2, 3):
        raise ValueError(f"plane needs two 3-vectors (the slice's horizontal and vertical axes), got {plane!r}")
    gram = basis @ basis.T
    if not torch.allclose(gram, torch.eye(2, dtype=torch.float64), atol=1e-6):
        raise ValueError(
            f"the two vectors of plane must be orthonormal (so that the slice keeps lengths and angles); "
            f"their Gram matrix is {gram.tolist()}"
        )
    return basis[0], basis[1]


def _direction_label(u: torch.Tensor) -> str:
    """``z2``, ``(z1 + z3)/√2`` or ``0.6 z1 + 0.8 z2``: the coordinate combination a slice axis moves along."""
    nonzero = [(j, float(c)) for j, c in enumerate(u.tolist()) if abs(c) > 1e-9]
    mags = {round(abs(c), 6) for _, c in nonzero}
    if len(mags) == 1:
        terms = "".join(f"{' - ' if c < 0 else (' + ' if k else '')}z{j + 1}" for k, (j, c) in enumerate(nonzero))
        terms = ("-" + terms[3:]) if terms.startswith(" - ") else terms
        return terms if len(nonzero) == 1 else f"({terms})/√{len(nonzero)}"
    return " + ".join(f"{c:.2g} z{j + 1}" for j, c in nonzero).replace("+ -", "- ")


def _eq6_on_plane(
    p0: float, p1: float, basis: tuple[torch.Tensor, torch.Tensor], extent: float, resolution: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid ``(s, t)`` over ``[-extent, extent]^2`` and :math:`f(s u + t v)` of eq. 6 on it (float64 numpy)."""
    axis = torch.linspace(-extent, extent, resolution, dtype=torch.float64)
    s, t = torch.meshgrid(axis, axis, indexing="xy")
    u, v = basis
    z = s[..., None] * u + t[..., None] * v  # (R, R, 3) points of the plane in (z1, z2, z3)
    f = LpNestedSymmetric(EQ6_TREE, torch.tensor([p0, p1], dtype=torch.float64)).lp_nested_norm(z)
    return s.numpy(), t.numpy(), f.numpy()


def plot_lp_nested_contours(
    p0_values: Sequence[float] = (1.0, 2.0, 9.0),
    p1_values: Sequence[float] = (1.0, 2.0, 9.0),
    levels: Sequence[float] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5),
    extent: float = 2.0,
    resolution: int = 201,
    plane: Sequence[Sequence[float]] = DIAGONAL_PLANE,
) -> Figure:
    r"""Iso-contours of the Lp-nested function of eq. 6 for every pair of exponents (the paper's Fig. 2).

    .. math::

        f(z_1, z_2, z_3) = \Big(|z_1|^{p_0} + \big(|z_2|^{p_1} + |z_3|^{p_1}\big)^{p_0/p_1}\Big)^{1/p_0}

    is a function of three coordinates (the tree ``[1, [2]]``), so a flat figure shows a slice of it: the points
    :math:`z = s\,u + t\,v` of the plane spanned by the orthonormal ``plane = (u, v)``, with :math:`s` on the
    horizontal and :math:`t` on the vertical axis. The coordinate planes each hide one exponent (with
    :math:`z_3 = 0` the function is the plain :math:`L^{p_0}` norm of :math:`(z_1, z_2)`, with :math:`z_1 = 0` the
    :math:`L^{p_1}` norm of :math:`(z_2, z_3)`), so the default slice is the plane :math:`z_1 = z_3`
    (:data:`DIAGONAL_PLANE`): the vertical axis moves :math:`z_2` inside the subspace :math:`\{z_2, z_3\}`, the
    horizontal one moves the lone coordinate :math:`z_1` and the subspace's :math:`z_3` together, and the contours
    change shape with both exponents. With :math:`p_0 = p_1 = 2` they are circles of radius equal to the level.

    The values are those of :meth:`~untwine.distributions.LpNestedSymmetric.lp_nested_norm` on a
    ``resolution`` x ``resolution`` grid over :math:`[-\text{extent}, \text{extent}]^2`; the level
    :math:`f = 1` (the unit sphere of eq. 8) is drawn thicker.

    :param p0_values: root exponents, one row each.
    :param p1_values: exponents of the inner node, one column each.
    :param levels: values of :math:`f` to draw, increasing.
    :param extent: half-width of the square shown.
    :param resolution: grid points per axis.
    :param plane: two orthonormal 3-vectors in :math:`(z_1, z_2, z_3)`, the slice's horizontal and vertical axes.
    :raises ValueError: for non-positive exponents, levels or extent, or a plane that is not orthonormal.
    """
    p0_values, p1_values = [float(p) for p in p0_values], [float(p) for p in p1_values]
    levels = sorted(float(level) for level in levels)
    if not p0_values or not p1_values or min(p0_values + p1_values) <= 0:
        raise ValueError(f"exponents must be positive and non-empty, got p0 {p0_values} and p1 {p1_values}")
    if not levels or levels[0] <= 0 or extent <= 0 or resolution < 2:
        raise ValueError("levels and extent must be positive and resolution at least 2")
    basis = _plane_basis(plane)
    rows, cols = len(p0_values), len(p1_values)
    fig = Figure(figsize=(2.3 * cols + 0.4, 2.3 * rows + 0.8))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    widths = [2.2 if math.isclose(level, 1.0) else 0.9 for level in levels]
    for r, p0 in enumerate(p0_values):
        for c, p1 in enumerate(p1_values):
            ax = axes[r, c]
            s, t, f = _eq6_on_plane(p0, p1, basis, extent, resolution)
            ax.contour(s, t, f, levels=levels, cmap="viridis", linewidths=widths)
            ax.set_aspect("equal")
            ax.set_title(f"$p_0 = {p0:g},\\ p_1 = {p1:g}$", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.2)
    for c in range(cols):
        axes[-1, c].set_xlabel(_direction_label(basis[0]), fontsize=8)
    for r in range(rows):
        axes[r, 0].set_ylabel(_direction_label(basis[1]), fontsize=8)
    levels_text = ", ".join(f"{level:g}" for level in levels)
    fig.suptitle(
        r"iso-contours of eq. 6, $f(z) = (|z_1|^{p_0} + (|z_2|^{p_1} + |z_3|^{p_1})^{p_0/p_1})^{1/p_0}$"
        f"\nlevels {levels_text} (thick: f = 1); rows $p_0$, columns $p_1$",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _exponent_keys(row: Mapping[str, float]) -> list[str]:
    keys = [k for k in row if _EXPONENT_KEY.match(k)]
    return sorted(keys, key=lambda k: int(k[1:]))


def plot_exponent_history(
    history: Sequence[Mapping[str, float]],
    initial: Mapping[str, float] | None = None,
    keys: Sequence[str] | None = None,
) -> Figure:
    """The prior's exponents against epoch, one line each (ISA-VAE section 4, "Learning the exponents").

    ``fit`` adds :meth:`~untwine.pyro_models.ISAVAE.epoch_summary` (``p0``, ``p1``, ...) to every history row, so
    ``plot_exponent_history(fit(...).history)`` or ``plot_exponent_history(load_run(path).history)`` draws how
    each subspace exponent moved. ``p0`` is the root (kept fixed by ISA-VAE), ``pk`` the :math:`k`-th subspace's
    exponent; the dotted line :math:`p = 2` is the Gaussian case (below it: heavier tails, above: lighter).

    :param history: rows with ``epoch`` and the exponent columns.
    :param initial: exponents before training (e.g. ``model.epoch_summary()`` before ``fit``), drawn at epoch 0.
    :param keys: which columns to draw (default every ``p<number>`` column of the first row, in order).
    :raises ValueError: when the history is empty or has no exponent columns.
    """
    if not history:
        raise ValueError("history is empty; train for at least one epoch")
    keys = list(keys) if keys is not None else _exponent_keys(history[0])
    if not keys:
        raise ValueError(
            f"history has no exponent columns (p0, p1, ...), only {sorted(history[0])}; they are recorded for "
            "models whose epoch_summary() returns them, such as ISA-VAE"
        )
    epochs = [float(row["epoch"]) for row in history]
    if initial is not None:
        epochs = [0.0] + epochs
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    ax.axhline(2.0, color="0.6", ls=":", lw=1, label="_gaussian")
    for key in keys:
        values = [float(row[key]) for row in history]
        if initial is not None:
            values = [float(initial[key])] + values
        index = int(key[1:]) if _EXPONENT_KEY.match(key) else None
        label = f"{key} (root)" if index == 0 else (f"{key} (subspace {index})" if index else key)
        style = {"color": "0.3", "ls": "--"} if index == 0 else {}
        ax.plot(epochs, values, marker="o", ms=3, label=label, **style)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("exponent")
    ax.set_title("exponents of the prior during training", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def _square_correlation(a: np.ndarray, b: np.ndarray) -> float:
    r""":math:`\mathrm{corr}(a^2, b^2)`: zero for independent coordinates, positive when their magnitudes move
    together (as inside an :math:`L^p`-spherical subspace with a non-Gaussian radius)."""
    a2, b2 = a.astype(np.float64) ** 2, b.astype(np.float64) ** 2
    return float(np.corrcoef(a2, b2)[0, 1])


def _device_of(prior: torch.distributions.Distribution) -> torch.device:
    """Where ``prior`` samples (its mean's device; CPU when the mean is not implemented)."""
    try:
        return prior.mean.device
    except (AttributeError, NotImplementedError):
        return torch.device("cpu")


def _default_pairs(subspaces: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """One pair inside the first subspace with two coordinates, one pair across it and the next subspace."""
    pairs = []
    inside = next((k for k, g in enumerate(subspaces) if len(g) >= 2), None)
    if inside is not None:
        pairs.append((subspaces[inside][0], subspaces[inside][1]))
    if len(subspaces) >= 2:
        k = inside if inside is not None and inside + 1 < len(subspaces) else 0
        pairs.append((subspaces[k][0], subspaces[k + 1][0]))
    return pairs


@torch.no_grad()
def plot_prior_samples(
    prior: torch.distributions.Distribution | torch.Tensor,
    n: int = 3000,
    pairs: Sequence[tuple[int, int]] | None = None,
    subspaces: Sequence[Sequence[int]] | None = None,
    seed: int | None = 0,
    title: str | None = None,
) -> Figure:
    r"""Scatter plots of prior samples for pairs of coordinates, inside one subspace and across subspaces.

    For an ISA prior (eq. 9 with the radial law of eq. 11) the subspaces are independent while the coordinates
    inside one subspace share its radius, so they are uncorrelated but dependent. Each panel's title reports
    :math:`\mathrm{corr}(z_i^2, z_j^2)`, which is about zero for independent coordinates; a Gaussian prior (every
    exponent 2) gives zero for every pair.

    :param prior: a distribution with event shape ``(D,)`` and empty batch shape (e.g.
        :meth:`LpNestedSymmetric.isa <untwine.distributions.LpNestedSymmetric.isa>` or ``model.prior()``), or
        samples ``(N, D)``.
    :param n: samples to draw from a distribution.
    :param pairs: coordinate pairs, one panel each (default: the first two coordinates of the first subspace with
        two, and the first coordinates of that subspace and the next).
    :param subspaces: coordinate groups used for the default pairs and the titles (default: ``prior.tree.subspaces()``
        for an Lp-nested prior, else one group per coordinate).
    :param seed: seeds the draw without touching the global RNG state (``None``: use the global RNG).
    :raises ValueError: when there is no pair to draw or a coordinate is out of range.
    """
    if isinstance(prior, torch.Tensor):
        samples = prior.detach()
    else:
        if n < 2:
            raise ValueError(f"n must be at least 2, got {n}")
        if seed is None:
            samples = prior.sample((n,))
        else:
            device = _device_of(prior)
            with seeded(seed, device):
                samples = prior.sample((n,))
    if samples.dim() != 2:
        raise ValueError(f"samples must be (N, D), got shape {tuple(samples.shape)}")
    samples = samples.cpu().double().numpy()
    d = samples.shape[1]
    if subspaces is None:
        tree = getattr(prior, "tree", None)
        subspaces = tree.subspaces() if tree is not None else [[j] for j in range(d)]
    owner = {j: k for k, group in enumerate(subspaces) for j in group}
    pairs = list(pairs) if pairs is not None else _default_pairs(subspaces)
    if not pairs:
        raise ValueError("no pair of coordinates to draw; pass pairs=[(i, j), ...]")
    for i, j in pairs:
        if not (0 <= i < d and 0 <= j < d) or i == j:
            raise ValueError(f"pair ({i}, {j}) must name two different coordinates in 0..{d - 1}")
    lim = float(np.quantile(np.abs(samples[:, sorted({c for p in pairs for c in p})]), 0.99)) * 1.05
    fig = Figure(figsize=(3.2 * len(pairs), 3.6))
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, (i, j) in zip(axes, pairs):
        a, b = samples[:, i], samples[:, j]
        ax.scatter(a, b, s=2, alpha=0.35, linewidths=0, color="tab:blue")
        gi, gj = owner.get(i), owner.get(j)
        if gi is not None and gi == gj:
            where = f"same subspace ({gi + 1})"
        elif gi is not None and gj is not None:
            where = f"subspaces {gi + 1} and {gj + 1}"
        else:
            where = ""
        ax.set_title(f"z{i} vs z{j}: {where}\ncorr(z{i}², z{j}²) = {_square_correlation(a, b):.2f}", fontsize=8)
        ax.set_xlabel(f"z{i}", fontsize=8)
        ax.set_ylabel(f"z{j}", fontsize=8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    fig.suptitle(title if title is not None else f"{len(samples)} prior samples", fontsize=9)
    fig.tight_layout()
    return fig
