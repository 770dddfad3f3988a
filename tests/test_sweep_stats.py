"""Claims statistics of a sweep: the two-sample comparison against closed forms, verdicts, and which cells each
paper claim is tested on."""

import math

import numpy as np
import pytest
from scipy import stats

from untwine.sweep_stats import CLAIMS, Claim, cells, claims_table, compare, format_claims, summarise, verdict

A = [0.30, 0.42, 0.38, 0.51, 0.45]
B = [0.20, 0.26, 0.31, 0.22]


def test_compare_matches_closed_forms():
    r = compare(A, B)
    ma, mb = sum(A) / 5, sum(B) / 4
    va = sum((x - ma) ** 2 for x in A) / 4
    vb = sum((x - mb) ** 2 for x in B) / 3
    se = math.sqrt(va / 5 + vb / 4)
    assert r["n_a"] == 5 and r["n_b"] == 4
    assert r["mean_a"] == pytest.approx(ma) and r["mean_b"] == pytest.approx(mb)
    assert r["se_a"] == pytest.approx(math.sqrt(va / 5)) and r["se_b"] == pytest.approx(math.sqrt(vb / 4))
    assert r["difference"] == pytest.approx(ma - mb)
    assert r["se_difference"] == pytest.approx(se)
    # Welch-Satterthwaite degrees of freedom
    df = (va / 5 + vb / 4) ** 2 / ((va / 5) ** 2 / 4 + (vb / 4) ** 2 / 3)
    t = (ma - mb) / se
    assert r["welch_p"] == pytest.approx(stats.t.sf(t, df), rel=1e-9)
    assert r["welch_p_less"] == pytest.approx(stats.t.cdf(t, df), rel=1e-9)
    # every a is above every b: U = n_a * n_b, the most extreme value
    assert r["mannwhitney_p"] == pytest.approx(stats.mannwhitneyu(A, B, alternative="greater").pvalue)
    assert r["mannwhitney_p"] < 0.05


def test_compare_drops_nans_and_needs_two_values():
    r = compare([*A, math.nan], [math.nan, *B])
    assert (r["n_a"], r["n_b"]) == (5, 4)
    assert r["welch_p"] == pytest.approx(compare(A, B)["welch_p"])
    one = compare([0.5], B)
    assert one["n_a"] == 1 and math.isnan(one["se_a"]) and math.isnan(one["welch_p"])
    assert math.isnan(one["mannwhitney_p"])
    assert verdict(one) == "too few runs"
    assert verdict(compare([0.5, math.nan], B)) == "too few runs"


def test_verdicts():
    rng = np.random.default_rng(1)
    high, low = rng.normal(0.6, 0.02, 10), rng.normal(0.2, 0.02, 10)
    assert verdict(compare(high, low)) == "reproduced"
    assert verdict(compare(low, high)) == "reversed"
    assert verdict(compare(low, low)) == "not reproduced"
    same = rng.normal(0.4, 0.05, 12)
    assert verdict(compare(same, same[::-1])) == "not reproduced"
    # constant samples: scipy gives no t statistic, but the ordering is certain
    assert verdict(compare([0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1])) == "reproduced"


def row(label, value, seed, mig, strength="kl_weight", status="done", data="dsprites", log_px_z=-50.0, tc=1.0):
    return {
        "cell": 0, "label": label, "model": label, "data": data, "strength": strength, "value": value, "seed": seed,
        "status": status, "mig": mig, "discrete_mig": mig, "mig_grouped": math.nan, "log_px_z": log_px_z,
        "log_px": math.nan, "khat_share": math.nan, "elbo": -60.0,
        "kl": 10.0, "mi": 1.0, "tc": tc, "dwkl": 1.0, "train_seconds": 1.0, "seconds": 1.0,
    }  # fmt: skip


def group(label, value, migs, **kw):
    return [row(label, value, s, m, **kw) for s, m in enumerate(migs)]


HIGH = [0.50, 0.52, 0.55, 0.53, 0.51]
LOW = [0.10, 0.12, 0.11, 0.14, 0.13]


def by_claim(table, better, worse, metric="mig"):
    return [t for t in table if t["better"] == better and t["worse"] == worse and t["metric"] == metric]


def test_claims_cover_the_papers():
    assert all(isinstance(c, Claim) for c in CLAIMS)
    pairs = {(c.better, c.worse, c.metric, c.strength_value, c.pooled) for c in CLAIMS}
    assert ("isa-vae", "vae", "mig", 1.0, False) in pairs
    assert ("beta-tcvae", "factor-vae", "mig", None, True) in pairs
    assert ("isa-vae", "beta-tcvae", "log_px_z", None, False) in pairs
    with pytest.raises(AttributeError):
        CLAIMS[0].better = "x"


def test_isa_vae_against_vae_at_beta_one_only():
    rows = group("isa-vae", 1.0, HIGH) + group("vae", 1.0, LOW) + group("isa-vae", 2.0, LOW)
    table = claims_table(rows)
    (entry,) = by_claim(table, "isa-vae", "vae")
    assert entry["value"] == 1.0 and "β = 1" in entry["claim"]
    assert entry["n_better"] == 5 and entry["n_worse"] == 5
    assert entry["mean_better"] == pytest.approx(np.mean(HIGH))
    assert entry["verdict"] == "reproduced"
    # no beta-tcvae or factor-vae cells: their claims are not listed; the β-VAE claim skips β = 1 (the claim above)
    assert {(t["better"], t["worse"]) for t in table} == {("isa-vae", "vae")}


def test_beta_vae_at_one_stands_in_for_vae_and_back():
    rows = group("isa-vae", 1.0, HIGH) + group("beta-vae", 1.0, LOW) + group("beta-vae", 4.0, HIGH)
    table = claims_table(rows)
    (vae,) = by_claim(table, "isa-vae", "vae")
    assert vae["n_worse"] == 5 and vae["mean_worse"] == pytest.approx(np.mean(LOW))
    assert by_claim(table, "isa-vae", "beta-vae") == []  # only β = 1 is common, and that is the VAE claim
    # and a grid of "vae" only still gives the β-VAE's cells at β = 1
    rows = group("isa-vae", 1.0, HIGH) + group("vae", 1.0, LOW)
    assert cells(rows, "beta-vae", 1.0) == group("vae", 1.0, LOW)
    # when both labels exist at β = 1 the label's own cells are used, not both (they would be the same runs twice)
    rows += group("beta-vae", 1.0, HIGH)
    assert cells(rows, "vae", 1.0) == group("vae", 1.0, LOW)
    assert cells(rows, "beta-vae", 1.0) == group("beta-vae", 1.0, HIGH)
    assert cells(rows, "beta-vae", 2.0) == []


def test_one_test_per_common_value_and_reconstruction_claim():
    rows = (
        group("isa-vae", 1.0, HIGH, log_px_z=-40.0)
        + group("isa-vae", 2.0, HIGH)
        + group("isa-vae", 8.0, HIGH)
        + group("beta-tcvae", 1.0, LOW, strength="tc_weight", log_px_z=-45.0)
        + group("beta-tcvae", 2.0, HIGH, strength="tc_weight")
    )
    table = claims_table(rows)
    mig = by_claim(table, "isa-vae", "beta-tcvae")
    assert [t["value"] for t in mig] == [1.0, 2.0]
    assert [t["verdict"] for t in mig] == ["reproduced", "not reproduced"]
    recon = by_claim(table, "isa-vae", "beta-tcvae", metric="log_px_z")
    assert [t["value"] for t in recon] == [1.0, 2.0]
    assert recon[0]["difference"] == pytest.approx(5.0)


def test_beta_tcvae_against_beta_vae_is_not_tested_at_beta_one_where_both_are_the_elbo():
    rows = group("beta-tcvae", 1.0, HIGH, strength="tc_weight") + group("beta-tcvae", 2.0, HIGH, strength="tc_weight")
    rows += group("beta-vae", 1.0, LOW) + group("beta-vae", 2.0, LOW)
    assert [t["value"] for t in by_claim(claims_table(rows), "beta-tcvae", "beta-vae")] == [2.0]


def test_pooled_factor_vae_claim_and_ignored_rows():
    rows = (
        group("beta-tcvae", 1.0, HIGH[:3], strength="tc_weight")
        + group("beta-tcvae", 4.0, HIGH[3:], strength="tc_weight")
        + group("factor-vae", 10.0, LOW[:2], strength="gamma")
        + group("factor-vae", 40.0, LOW[2:], strength="gamma")
        + [row("factor-vae", 40.0, 9, 0.99, strength="gamma", status=s) for s in ("todo", "partial", "failed")]
    )
    (entry,) = by_claim(claims_table(rows), "beta-tcvae", "factor-vae")
    assert entry["value"] == "pooled" and "=" not in entry["claim"]
    assert entry["n_better"] == 5 and entry["n_worse"] == 5
    assert entry["mean_worse"] == pytest.approx(np.mean(LOW))  # the 0.99 of unfinished cells is not counted
    assert entry["verdict"] == "reproduced"
    # only unfinished cells on one side: the claim is skipped
    rows = group("beta-tcvae", 1.0, HIGH, strength="tc_weight") + [
        row("factor-vae", 10.0, 0, 0.1, strength="gamma", status="failed")
    ]
    assert claims_table(rows) == []


def test_claims_are_tested_per_dataset():
    rows = group("isa-vae", 1.0, HIGH) + group("vae", 1.0, LOW) + group("isa-vae", 1.0, LOW, data="3dfaces")
    table = claims_table(rows)
    assert {t["data"] for t in table} == {"dsprites"} and len(table) == 1


def test_format_claims_lines_up():
    rows = group("isa-vae", 1.0, HIGH) + group("vae", 1.0, LOW) + group("isa-vae", 2.0, HIGH)
    rows += group("beta-vae", 2.0, [0.3])
    table = claims_table(rows)
    text = format_claims(table)
    lines = text.splitlines()
    assert len(lines) == 2 + len(table)
    assert "reproduced" in text and "too few runs" in text and "±" in text
    welch = f"{table[0]['welch_p']:.3g}"
    assert welch in lines[2]


def test_summarise():
    rows = group("vae", 1.0, [0.1, 0.3]) + group("vae", 2.0, [0.2, math.nan]) + group("isa-vae", 1.0, [0.5])
    rows.append(row("vae", 1.0, 7, 0.9, status="todo"))
    s = summarise(rows)
    assert [(e["label"], e["value"], e["n"]) for e in s] == [("vae", 1.0, 2), ("vae", 2.0, 2), ("isa-vae", 1.0, 1)]
    assert s[0]["mig_mean"] == pytest.approx(0.2) and s[0]["mig_se"] == pytest.approx(0.1)
    assert s[1]["mig_n"] == 1 and s[1]["mig_mean"] == pytest.approx(0.2) and math.isnan(s[1]["mig_se"])
    assert s[0]["log_px_z_mean"] == pytest.approx(-50.0) and s[0]["tc_se"] == 0.0
