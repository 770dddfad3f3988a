"""Sweeps: the grid (file, flags, protocols), one run folder per cell, restart skipping finished cells, failed cells
reported without stopping the rest, results.csv, claims.csv and the comparison figures."""

import csv
import json

import pytest

from untwine.cli import main
from untwine.inference.train import TrainingError
from untwine.pyro_models import ConfigError
from untwine.sweep import PROTOCOLS, SweepSpec, load_spec, protocol, read_spec, run_cell, start

GRID = """
seeds = 2
quick = true
strengths = [1, 2]
[settings]
latent_dim = 6
[train]
epochs = 1
batch_size = 2048
[[models]]
name = "beta-vae"
[[models]]
name = "factor-vae"
values = [3]
settings = {discriminator_units = 32}
"""


def test_a_grid_file_gives_every_cell_seed_major_with_its_strength(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID)
    spec = load_spec(tmp_path / "grid.toml")
    names = [c.name for c in spec.cells()]
    assert names == [
        "beta-vae-kl_weight1-seed0", "beta-vae-kl_weight2-seed0", "factor-vae-gamma3-seed0",
        "beta-vae-kl_weight1-seed1", "beta-vae-kl_weight2-seed1", "factor-vae-gamma3-seed1",
    ]  # fmt: skip
    assert spec.entries[1].settings == {"discriminator_units": 32} and spec.train["batch_size"] == 2048


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": 1}, "unknown key"),
        ({"models": [{"name": "no-such-model"}]}, "unknown model 'no-such-model'"),
        ({"models": [{"name": "beta-vae", "values": [-1]}]}, "kl_weight must be positive"),
        ({"settings": {"latent_dim": 0}}, "latent_dim must be a positive integer"),
        ({"settings": {"colour": 1}}, "has no setting 'colour'"),
        ({"models": [{"name": "n-vae"}]}, "no default strength"),
        ({"models": ["vae", "vae"]}, "share a label"),
        ({"seeds": []}, "seeds must be"),
        ({"models": []}, "no models"),
    ],
)
def test_a_bad_grid_fails_with_one_line_before_any_training(change, message):
    raw = {"seeds": 1, "models": ["vae"], **change}
    with pytest.raises(ConfigError, match=message) as err:
        SweepSpec.from_dict(raw)
    assert "\n" not in str(err.value)


def test_the_shipped_protocols_are_the_papers_grid_and_the_two_key_claims_on_a_cpu():
    paper = SweepSpec.from_dict(protocol("paper"))
    assert len(paper.cells()) == (9 * 3 + 10) * 10
    assert paper.train == {"epochs": 20, "batch_size": 2048, "lr": 1e-3} and paper.settings["latent_dim"] == 20
    cpu = SweepSpec.from_dict(protocol("cpu"))
    assert len(cpu.cells()) == 4 * 10 and cpu.quick
    assert {(e.label, e.values) for e in cpu.entries} == {
        ("vae", (1.0,)), ("isa-vae", (1.0,)), ("beta-vae", (2.0,)), ("beta-tcvae", (2.0,))
    }  # fmt: skip
    assert set(PROTOCOLS) == {"paper", "cpu"}
    with pytest.raises(ConfigError, match="unknown protocol"):
        protocol("gpu")


def test_a_sweep_folder_keeps_its_grid_and_refuses_another_or_a_foreign_folder(tmp_path):
    spec = SweepSpec.from_dict({"seeds": 1, "models": ["vae"]})
    start(tmp_path / "s", spec)
    assert read_spec(tmp_path / "s").to_json() == spec.to_json()
    other = SweepSpec.from_dict({"seeds": 2, "models": ["vae"]})
    with pytest.raises(ConfigError, match="holds another sweep"):
        start(tmp_path / "s", other)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not a sweep folder"):
        start(tmp_path / "mine", spec)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(ConfigError, match="cell 5 does not exist"):
        run_cell(tmp_path / "s", 5)


#: a grid entry that fails when it builds its networks (a conv net made for 28 and 32 pixels, on 64x64 dSprites)
FAILING = {"label": "vae-conv", "name": "vae", "settings": {"network": "conv"}}


def test_a_failed_cell_is_recorded_and_reported_in_one_line(tmp_path):
    spec = SweepSpec.from_dict({"seeds": 1, "models": [FAILING], "quick": True})
    with pytest.raises(TrainingError, match=r"cell 0 \(vae-conv-kl_weight1-seed0\) failed: NetworkError") as err:
        run_cell(tmp_path / "s", 0, spec)
    assert "\n" not in str(err.value)
    outcome = json.loads((tmp_path / "s" / "logs" / "vae-conv-kl_weight1-seed0.json").read_text())
    assert outcome["status"] == "failed" and "conv" in outcome["error"]


@pytest.mark.slow
def test_a_tiny_sweep_writes_results_and_figures_skips_finished_cells_and_survives_a_failed_one(tmp_path, capsys):
    """2 models x 2 strengths x 2 seeds, quick, plus an entry whose cells fail: the others finish, results.csv,
    claims.csv and the figures are written, and a restart runs only the failed cells again."""
    grid = {"seeds": 2, "quick": True, "strengths": [1, 2], "settings": {"latent_dim": 6}, "figures": False}
    grid["train"] = {"epochs": 1, "batch_size": 2048}
    grid["models"] = ["beta-vae", "beta-tcvae", {**FAILING, "values": [1]}]
    (tmp_path / "grid.toml").write_text(_toml(grid))
    out = tmp_path / "sweep"
    assert main(["sweep", str(out), "--spec", str(tmp_path / "grid.toml"), "--jobs", "2"]) == 2
    captured = capsys.readouterr()
    assert "2 cell(s) failed (vae-conv-kl_weight1-seed0, vae-conv-kl_weight1-seed1)" in captured.err
    assert captured.out.count("FAILED") == 2
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == (["done"] * 4 + ["failed"]) * 2
    done = [r for r in rows if r["status"] == "done"]
    assert {(r["label"], r["value"], r["seed"]) for r in done} == {
        (m, v, s) for m in ("beta-vae", "beta-tcvae") for v in ("1.0", "2.0") for s in ("0", "1")
    }
    for r in done:
        assert 0 <= float(r["mig"]) <= 1 and 0 <= float(r["discrete_mig"]) <= 1
        assert (
            float(r["log_px_z"]) < 0
            and float(r["log_px"]) < 0
            and float(r["tc"]) == float(r["tc"])
            and float(r["seconds"]) > 0
        )
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == [
        "forest.png", "mig_distribution.png", "mig_per_algorithm.png", "mig_vs_reconstruction.png", "mig_vs_tc.png",
    ]  # fmt: skip
    with open(out / "claims.csv", newline="") as f:
        claims = list(csv.DictReader(f))
    assert {c["value"] for c in claims if c["better"] == "beta-tcvae" and c["worse"] == "beta-vae"} == {"2.0"}
    cell = out / "cells" / "beta-vae-kl_weight1-seed0"
    assert sorted(p.name for p in cell.iterdir()) == [".untwine.lock", "checkpoint.pt", "config.json",
                                                      "history.csv", "metrics.json", "report.html"]  # fmt: skip
    stamp = (cell / "checkpoint.pt").stat().st_mtime_ns

    assert main(["sweep", str(out)]) == 2  # continue the sweep in the folder: only the failed cells run again
    assert "8 done, 2 to run" in capsys.readouterr().out
    assert (cell / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert main(["sweep", str(out), "--models", "vae", "--seeds", "1"]) == 2
    assert "holds another sweep" in capsys.readouterr().err
    (out / "results.csv").unlink()
    assert main(["plot", str(out)]) == 0 and (out / "results.csv").is_file()


def _toml(grid: dict) -> str:
    """The few TOML forms these grids need (tables of scalars, arrays of tables)."""
    value = json.dumps
    lines = [f"{k} = {str(v).lower() if isinstance(v, bool) else value(v)}" for k, v in grid.items()
             if not isinstance(v, dict) and k != "models"]  # fmt: skip
    for key in ("settings", "train"):
        lines += [f"[{key}]"] + [f"{k} = {value(v)}" for k, v in grid.get(key, {}).items()]
    for m in grid["models"]:
        m = {"name": m} if isinstance(m, str) else m
        lines.append("[[models]]")
        for k, v in m.items():
            inline = "{" + ", ".join(f"{a} = {value(b)}" for a, b in v.items()) + "}" if isinstance(v, dict) else None
            lines.append(f"{k} = {inline or value(v)}")
    return "\n".join(lines) + "\n"
