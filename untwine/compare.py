r"""``untwine compare``: models side by side on held-out log p(x), image by image, and a sweep's seeds per model.

Runs are compared the way ArviZ's ``compare`` ranks models by ELPD, but on the importance-sampled
:math:`\log \hat p_K(x)` of :func:`~untwine.diagnostics.importance_log_likelihood` (a lower bound per image, not a
leave-one-out estimate): every model scores the **same** held-out images, so differences are paired. For units
:math:`u = 1..U` (images, or groups when a model has a global latent; a model without one is summed over the same
groups) and the best model :math:`b`,

.. math::

    \mathrm{elpd}_m = \sum_u \ell_{mu}, \quad \mathrm{se}_m = \sqrt{U}\, \mathrm{sd}_u(\ell_{mu}), \\
    \Delta_m = \mathrm{elpd}_b - \mathrm{elpd}_m, \\
    \mathrm{dse}_m = \sqrt{U}\, \mathrm{sd}_u(\ell_{bu} - \ell_{mu}),

the standard errors of Vehtari, Gelman & Gabry (2017, eqs. 23-24). A difference of several ``dse`` is one the images
support; the share of :math:`\hat k > 0.7` says whether the bound behind it can be trusted.

A sweep is compared over seeds, not images: each model's per-seed MIG, log p(x) and share of :math:`\hat k > 0.7`,
with mean ± standard error (:func:`untwine.plots.plot_forest`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from untwine.diagnostics import DiagnosticError, ImportanceResult, default_order, importance_log_likelihood
from untwine.evaluations import LOG_PX_IMAGES, LOG_PX_SAMPLES
from untwine.plots.sweeps import FOREST_METRICS

#: what a run's data settings must share with another's to be compared image by image
SAME_DATA = ("name", "quick", "subset", "seed")


def compare_results(results: dict[str, ImportanceResult]) -> list[dict[str, Any]]:
    """The ELPD-difference table of results on the same images (see the module docstring), best model first.

    :param results: by model name; each scored the same images in the same order, in groups whose sizes divide the
        largest.
    :returns: one row per model: ``rank``, ``model``, ``elpd``, ``se``, ``per_image`` (mean nats per image),
        ``elpd_diff``, ``dse``, ``khat_share`` (above 0.7), ``units``, ``images``.
    """
    if len(results) < 1:
        raise DiagnosticError("nothing to compare")
    group = max(r.group_size for r in results.values())
    first = next(iter(results.values()))
    images = first.index.reshape(-1)
    units = {}
    for name, r in results.items():
        if group % r.group_size:
            raise DiagnosticError(f"{name} scores groups of {r.group_size}, which do not divide groups of {group}")
        flat = r.index.reshape(-1)
        n = min(len(flat), len(images)) // group * group
        if n == 0 or not np.array_equal(flat[:n], images[:n]):
            raise DiagnosticError(f"{name} was scored on other images than {next(iter(results))}; score all alike")
        units[name] = r.iwae[: n // r.group_size].reshape(-1, group // r.group_size).sum(1)
    n_units = min(len(u) for u in units.values())
    units = {name: u[:n_units] for name, u in units.items()}
    best = max(units, key=lambda name: units[name].sum())
    root = math.sqrt(n_units)
    rows = []
    for name, u in sorted(units.items(), key=lambda item: -item[1].sum()):
        diff = units[best] - u
        khat = results[name].khat
        rows.append({
            "model": name,
            "elpd": float(u.sum()),
            "se": float(root * u.std(ddof=1)) if n_units > 1 else math.nan,
            "per_image": float(u.mean() / group),
            "elpd_diff": float(diff.sum()),
            "dse": float(root * diff.std(ddof=1)) if n_units > 1 and name != best else 0.0,
            "khat_share": float((khat > 0.7).mean()),
            "units": n_units,
            "images": n_units * group,
        })  # fmt: skip
    for rank, row in enumerate(rows):
        row["rank"] = rank
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as text, in ArviZ's column order."""
    header = f"{'rank':>4}  {'model':<24} {'elpd':>12} {'se':>9} {'nats/img':>9} {'elpd_diff':>10} {'dse':>9} " \
             f"{'k>0.7':>6}"  # fmt: skip
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['rank']:>4}  {r['model']:<24} {r['elpd']:>12.1f} {r['se']:>9.1f} {r['per_image']:>9.2f} "
            f"{r['elpd_diff']:>10.1f} {r['dse']:>9.1f} {r['khat_share']:>6.0%}"
        )
    units, images = rows[0]["units"], rows[0]["images"]
    scored = f"{images} held-out images" if units == images else f"{units} held-out groups ({images} images)"
    lines.append(f"{scored}; elpd in nats (a lower bound)")
    return "\n".join(lines)


def compare_runs(
    paths: Sequence[str | Path],
    num_samples: int = LOG_PX_SAMPLES,
    max_images: int = LOG_PX_IMAGES,
    seed: int = 0,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Load the runs, score the same held-out images with each, and return :func:`compare_results`'s table.

    :raises DiagnosticError: when the runs were trained on different data (they would not score the same images).
    """
    from untwine.experiment import load_run

    runs = [load_run(p, device=device) for p in paths]
    names = _names(paths)
    data = [run.settings["data"] for run in runs]
    for name, d in zip(names[1:], data[1:]):
        if any(d.get(key) != data[0].get(key) for key in SAME_DATA):
            what = ", ".join(f"{k}={d.get(k)!r}" for k in SAME_DATA)
            was = ", ".join(f"{k}={data[0].get(k)!r}" for k in SAME_DATA)
            raise DiagnosticError(f"{name} was trained on other data ({what}) than {names[0]} ({was}); compare runs "
                                  "on the same data")  # fmt: skip
    held_out = runs[0].held_out()
    group = max(int(getattr(run.model, "group_size", 1)) for run in runs)
    order = default_order(runs[0].model, held_out, group)
    n = max(max_images - max_images % group, group)
    results = {
        name: importance_log_likelihood(run.model, held_out, num_samples, order=order[:n], seed=seed)
        for name, run in zip(names, runs)
    }
    return compare_results(results)


def _names(paths: Sequence[str | Path]) -> list[str]:
    """Each run's folder name, or its whole path where two share a name."""
    short = [Path(p).name or str(p) for p in paths]
    return short if len(set(short)) == len(short) else [str(p) for p in paths]


def sweep_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± standard error over seeds of each :data:`FOREST_METRICS` per model (label) and strength value."""
    from untwine.sweep_stats import summarise

    return summarise(rows, [m for m, _ in FOREST_METRICS])


def format_sweep_table(table: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'model':<20} {'value':>7} {'n':>3}  " + "  ".join(f"{label:>24}" for _, label in FOREST_METRICS)]
    for t in table:
        cells = [f"{t[f'{m}_mean']:>12.3f} ± {t[f'{m}_se']:<9.3f}" for m, _ in FOREST_METRICS]
        lines.append(f"{t['label']:<20} {t['value']:>7g} {t['n']:>3}  " + "  ".join(cells))
    return "\n".join(lines)
