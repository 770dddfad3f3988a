"""The ELPD-difference table: paired standard errors against their definitions, groups, and refusals."""

import math

import numpy as np
import pytest

from untwine.compare import compare_results, format_table
from untwine.diagnostics import DiagnosticError, ImportanceResult


def result(per_unit: np.ndarray, index: np.ndarray, khat: np.ndarray | None = None) -> ImportanceResult:
    """An importance result whose bound per unit is ``per_unit`` (all K = 2 weights equal)."""
    khat = np.zeros(len(per_unit)) if khat is None else khat
    return ImportanceResult(np.repeat(per_unit[:, None], 2, 1), index, per_unit, per_unit, khat)


def test_paired_differences_and_their_standard_errors():
    g = np.random.default_rng(0)
    a = g.normal(-100, 5, size=400)
    b = a - 0.5 + g.normal(0, 0.2, size=400)  # worse by 0.5 nats per image, tightly paired
    index = np.arange(400)[:, None]
    rows = compare_results({"b": result(b, index), "a": result(a, index, khat=np.r_[np.ones(40), np.zeros(360)])})
    assert [r["model"] for r in rows] == ["a", "b"] and [r["rank"] for r in rows] == [0, 1]
    top, second = rows
    assert top["elpd"] == pytest.approx(a.sum()) and top["se"] == pytest.approx(math.sqrt(400) * a.std(ddof=1))
    assert top["elpd_diff"] == 0 and top["dse"] == 0 and top["khat_share"] == pytest.approx(0.1)
    assert second["elpd_diff"] == pytest.approx((a - b).sum())
    assert second["dse"] == pytest.approx(math.sqrt(400) * (a - b).std(ddof=1))
    # pairing: the difference is many dse away, but within two standard errors of unpaired totals
    unpaired = math.hypot(top["se"], second["se"])
    assert second["elpd_diff"] > 10 * second["dse"] and second["elpd_diff"] < 2 * unpaired
    assert second["per_image"] == pytest.approx(b.mean())
    assert "elpd_diff" in format_table(rows)


def test_a_model_without_groups_is_summed_over_the_grouped_models_groups():
    g = np.random.default_rng(1)
    order = g.permutation(32)
    images = g.normal(-10, 1, size=32)
    groups = g.normal(-300, 3, size=8)
    rows = compare_results({
        "image model": result(images, order[:, None]),
        "group model": result(groups, order.reshape(8, 4)),
    })  # fmt: skip
    by = {r["model"]: r for r in rows}
    assert by["image model"]["units"] == 8 and by["image model"]["images"] == 32
    assert by["image model"]["elpd"] == pytest.approx(images.sum())
    assert by["image model"]["per_image"] == pytest.approx(images.mean())
    assert by["group model"]["per_image"] == pytest.approx(groups.mean() / 4)


def test_results_on_other_images_or_incompatible_groups_are_refused():
    index = np.arange(12)[:, None]
    with pytest.raises(DiagnosticError, match="other images"):
        compare_results({"a": result(np.zeros(12), index), "b": result(np.zeros(12), index[::-1].copy())})
    with pytest.raises(DiagnosticError, match="do not divide"):
        compare_results({"a": result(np.zeros(3), np.arange(12).reshape(3, 4)),
                         "b": result(np.zeros(4), np.arange(12).reshape(4, 3))})  # fmt: skip
