r"""The papers' ordering claims, tested on the finished cells of a sweep (see :mod:`untwine.sweep`).

Each :class:`Claim` says that one model (``better``) scores higher than another (``worse``) on a metric, either at one
regularisation strength, at every strength both models were trained at, or pooled over all their strengths. For each
such comparison :func:`compare` takes the per-seed scores of the two groups of runs and reports

* the difference of the means, :math:`\bar a - \bar b`, with its standard error
  :math:`\sqrt{s_a^2/n_a + s_b^2/n_b}` (sample variances);
* the one-sided Welch *t*-test of :math:`\mathbb{E}[a] > \mathbb{E}[b]` (no equal-variance assumption, since the
  spread of MIG differs a lot between models);
* the one-sided Mann-Whitney *U* test of the same direction, which does not assume normality: MIG is bounded in
  [0, 1] and its distribution over seeds is often skewed or bimodal.

:func:`verdict` calls a claim *reproduced* only when **both** one-sided tests give :math:`p < 0.05`, *reversed* when
both tests of the opposite direction do, *not reproduced* otherwise, and *too few runs* with fewer than two finite
scores on a side. No correction for the number of claims tested is applied; with a handful of seeds per cell the
tests have little power, so *not reproduced* mostly means "not shown by this sweep", not "refuted".

Only rows with ``status == "done"`` are used. A VAE is a β-VAE at β = 1, so the label ``"vae"`` at value 1 and the
label ``"beta-vae"`` at value 1 stand in for each other (:func:`cells`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

#: significance level of each one-sided test
ALPHA = 0.05

#: the metrics :func:`summarise` averages
SUMMARY_METRICS = ("mig", "discrete_mig", "log_px_z", "log_px", "khat_share", "tc")

#: the symbol of each strength setting in tables and figures
SYMBOL = {"kl_weight": "β", "tc_weight": "β", "gamma": "γ"}

#: labels that name the same model at one strength value: a VAE is a β-VAE with β = 1
ALIASES = {("vae", 1.0): "beta-vae", ("beta-vae", 1.0): "vae"}


@dataclass(frozen=True)
class Claim:
    """An ordering claim of a paper: ``better`` has a higher ``metric`` than ``worse``.

    :param paper: where the claim is made (paper and section or figure).
    :param text: the claim in a few words, without the strength value.
    :param better: label of the model claimed to score higher.
    :param worse: label of the model claimed to score lower.
    :param metric: a column of :func:`untwine.sweep.results` (higher is better).
    :param strength_value: test only at this strength value; ``None``: at every value both models have.
    :param pooled: ignore strengths and compare all runs of one model against all runs of the other (one test).
    :param skip_values: strength values at which the two models are the same objective (no claim to test there).
    """

    paper: str
    text: str
    better: str
    worse: str
    metric: str = "mig"
    strength_value: float | None = None
    pooled: bool = False
    skip_values: tuple[float, ...] = ()


ISA = "ISA-VAE paper"
POSTER = "β-TCVAE poster"

CLAIMS: list[Claim] = [
    Claim(f"{ISA} §4.1, Fig. 5a", "ISA-VAE has higher MIG than VAE", "isa-vae", "vae", strength_value=1.0),
    # at β = 1 the β-VAE is the VAE: that comparison is the claim above
    Claim(f"{ISA} Fig. 5b", "ISA-VAE has higher MIG than β-VAE", "isa-vae", "beta-vae", skip_values=(1.0,)),
    Claim(f"{ISA} Fig. 5b", "ISA-VAE has higher MIG than β-TCVAE", "isa-vae", "beta-tcvae"),
    # at β = 1 both are the ELBO itself (the TC-decomposed terms add back up to the KL): one model, no claim
    Claim(
        f"{POSTER}, quantitative comparisons",
        "β-TCVAE has higher MIG than β-VAE",
        "beta-tcvae",
        "beta-vae",
        skip_values=(1.0,),
    ),  # fmt: skip
    Claim(
        f"{POSTER}, quantitative comparisons",
        "β-TCVAE has higher MIG than FactorVAE (all strengths)",
        "beta-tcvae",
        "factor-vae",
        pooled=True,
    ),
    Claim(
        f"{ISA} §4.2",
        "ISA-VAE reconstructs better than β-TCVAE (E[log p(x|z)])",
        "isa-vae",
        "beta-tcvae",
        metric="log_px_z",
    ),
]


# --- two-sample comparison -------------------------------------------------------------------------------------------


def _finite(values: Iterable[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values], dtype=float)
    return a[~np.isnan(a)]


def _se(a: np.ndarray) -> float:
    return float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) >= 2 else math.nan


def _welch(a: np.ndarray, b: np.ndarray, alternative: str, se: float) -> float:
    if se == 0.0:
        # both samples constant: scipy warns and returns nan, but the ordering is then certain (or a tie)
        d = a.mean() - b.mean()
        sign = d if alternative == "greater" else -d
        return 0.0 if sign > 0 else (1.0 if sign < 0 else 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False, alternative=alternative).pvalue)


def _mannwhitney(a: np.ndarray, b: np.ndarray, alternative: str) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.mannwhitneyu(a, b, alternative=alternative).pvalue)


def compare(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Compare two samples of scores, testing whether ``a`` is higher than ``b``; ``nan`` values are dropped.

    :returns: ``n_a``, ``n_b``, ``mean_a``, ``mean_b``, ``se_a``, ``se_b`` (standard errors of the means),
        ``difference`` (mean of ``a`` minus mean of ``b``), ``se_difference`` (Welch's standard error),
        ``welch_p`` and ``mannwhitney_p`` (one-sided p-values for ``a`` > ``b``), ``welch_p_less`` and
        ``mannwhitney_p_less`` (the same for ``a`` < ``b``, which :func:`verdict` needs to call a claim reversed).
        The p-values are ``nan`` when either side has fewer than two values.
    """
    x, y = _finite(a), _finite(b)
    out: dict[str, float] = {
        "n_a": len(x),
        "n_b": len(y),
        "mean_a": float(x.mean()) if len(x) else math.nan,
        "mean_b": float(y.mean()) if len(y) else math.nan,
        "se_a": _se(x),
        "se_b": _se(y),
    }
    out["difference"] = out["mean_a"] - out["mean_b"]
    out["se_difference"] = math.sqrt(out["se_a"] ** 2 + out["se_b"] ** 2)
    p = dict.fromkeys(("welch_p", "mannwhitney_p", "welch_p_less", "mannwhitney_p_less"), math.nan)
    if len(x) >= 2 and len(y) >= 2:
        se = out["se_difference"]
        p = {
            "welch_p": _welch(x, y, "greater", se),
            "mannwhitney_p": _mannwhitney(x, y, "greater"),
            "welch_p_less": _welch(x, y, "less", se),
            "mannwhitney_p_less": _mannwhitney(x, y, "less"),
        }
    out.update(p)
    return out


def verdict(result: dict[str, float], alpha: float = ALPHA) -> str:
    """``"reproduced"``, ``"reversed"``, ``"not reproduced"`` or ``"too few runs"`` for a :func:`compare` result
    (see the module docstring)."""
    if result["n_a"] < 2 or result["n_b"] < 2:
        return "too few runs"
    if result["welch_p"] < alpha and result["mannwhitney_p"] < alpha:
        return "reproduced"
    if result.get("welch_p_less", math.nan) < alpha and result.get("mannwhitney_p_less", math.nan) < alpha:
        return "reversed"
    return "not reproduced"


# --- claims on a sweep -----------------------------------------------------------------------------------------------


def done(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of finished cells."""
    return [r for r in rows if r.get("status") == "done"]


def cells(rows: Sequence[dict[str, Any]], label: str, value: float | None = None) -> list[dict[str, Any]]:
    """Rows of ``label`` (at strength ``value`` unless ``None``).

    Alias rule: when no row of ``"vae"`` at value 1 exists, the rows of ``"beta-vae"`` at value 1 are used instead,
    and vice versa (:data:`ALIASES`). It is a fallback rather than a union because a grid holding both labels trains
    the same network at the same seeds twice, and counting both would double the apparent number of runs.
    """
    mine = [r for r in rows if r["label"] == label and (value is None or float(r["value"]) == value)]
    if not mine and value is not None and (label, float(value)) in ALIASES:
        other = ALIASES[label, float(value)]
        mine = [r for r in rows if r["label"] == other and float(r["value"]) == value]
    return mine


def _values(rows: Sequence[dict[str, Any]], label: str) -> set[float]:
    values = {float(r["value"]) for r in rows if r["label"] == label}
    values |= {v for (lab, v), other in ALIASES.items() if lab == label and cells(rows, label, v)}
    return values


def _symbol(group: Sequence[dict[str, Any]]) -> str:
    symbols = sorted({SYMBOL.get(r["strength"], r["strength"]) for r in group})
    return "/".join(symbols) or "β"


def claims_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every claim of :data:`CLAIMS` tested on the finished cells, per dataset.

    :returns: one dict per (claim, dataset, strength value or ``"pooled"``) whose two groups of cells both exist, with
        keys ``paper``, ``claim``, ``data``, ``better``, ``worse``, ``metric``, ``value``, ``mean_better``,
        ``se_better``, ``mean_worse``, ``se_worse``, ``n_better``, ``n_worse``, ``difference``, ``se_difference``,
        ``welch_p``, ``mannwhitney_p``, ``verdict``.
    """
    rows = done(rows)
    datasets = list(dict.fromkeys(r["data"] for r in rows))
    table = []
    for claim in CLAIMS:
        for data in datasets:
            here = [r for r in rows if r["data"] == data]
            if claim.pooled:
                groups = [("pooled", cells(here, claim.better), cells(here, claim.worse))]
            else:
                if claim.strength_value is not None:
                    values = [float(claim.strength_value)]
                else:
                    values = sorted(_values(here, claim.better) & _values(here, claim.worse) - set(claim.skip_values))
                groups = [(v, cells(here, claim.better, v), cells(here, claim.worse, v)) for v in values]
            for value, better, worse in groups:
                if not better or not worse:
                    continue
                result = compare([r[claim.metric] for r in better], [r[claim.metric] for r in worse])
                where = "" if value == "pooled" else f" at {_symbol(better + worse)} = {value:g}"
                table.append(
                    {
                        "paper": claim.paper,
                        "claim": claim.text + where,
                        "data": data,
                        "better": claim.better,
                        "worse": claim.worse,
                        "metric": claim.metric,
                        "value": value,
                        "mean_better": result["mean_a"],
                        "se_better": result["se_a"],
                        "mean_worse": result["mean_b"],
                        "se_worse": result["se_b"],
                        "n_better": result["n_a"],
                        "n_worse": result["n_b"],
                        "difference": result["difference"],
                        "se_difference": result["se_difference"],
                        "welch_p": result["welch_p"],
                        "mannwhitney_p": result["mannwhitney_p"],
                        "verdict": verdict(result),
                    }
                )
    return table


def _num(x: float, spec: str) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def format_claims(table: Sequence[dict[str, Any]]) -> str:
    """The claims table as fixed-width plain text for a terminal."""
    header = ("claim", "data", "n", "difference ± SE", "Welch p", "M-W p", "verdict")
    lines = [
        (
            row["claim"],
            row["data"],
            f"{row['n_better']}/{row['n_worse']}",
            f"{_num(row['difference'], '+.4f')} ± {_num(row['se_difference'], '.4f')}",
            _num(row["welch_p"], ".3g"),
            _num(row["mannwhitney_p"], ".3g"),
            row["verdict"],
        )
        for row in table
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    right = {2, 3, 4, 5}  # numbers line up on the right

    def fmt(line: Sequence[str]) -> str:
        cols = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(line, widths))]
        return "  ".join(cols).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])


def summarise(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = SUMMARY_METRICS) -> list[dict[str, Any]]:
    """Mean and standard error of each metric per (label, strength value), over the finished cells.

    :returns: one dict per (label, value), in order of first appearance of the label and increasing value, with keys
        ``label``, ``value``, ``strength``, ``n`` (cells done) and, for each metric ``m``, ``m_mean``, ``m_se`` and
        ``m_n`` (finite values; the mean is ``nan`` with none, the standard error with fewer than two).
    """
    rows = done(rows)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    out = []
    for label in labels:
        mine = [r for r in rows if r["label"] == label]
        for value in sorted({float(r["value"]) for r in mine}):
            group = [r for r in mine if float(r["value"]) == value]
            entry: dict[str, Any] = {"label": label, "value": value, "strength": group[0]["strength"], "n": len(group)}
            for m in metrics:
                x = _finite(r.get(m, math.nan) for r in group)
                entry[f"{m}_mean"] = float(x.mean()) if len(x) else math.nan
                entry[f"{m}_se"] = _se(x)
                entry[f"{m}_n"] = len(x)
            out.append(entry)
    return out
