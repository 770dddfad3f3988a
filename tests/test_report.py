"""report.html: one self-contained page per run folder and per sweep folder, written by training, eval, plot and a
sweep's report, rebuilt by ``untwine report``; every figure embedded, no address outside the folder."""

import base64
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import browser  # docs/browser.py, on the path by conftest.py
import pytest

from untwine import sweep
from untwine.cli import main
from untwine.io import atomic_write_csv
from untwine.report import metric_rows, write_report
from untwine.run_folder import REPORT, foreign_entries
from untwine.sweep_stats import claims_table

SMALL = ["--data", "dsprites", "--quick", "--subset", "256", "--epochs", "1", "--batch-size", "64",
         "--network", "mlp-256", "--no-progress"]  # fmt: skip


class Page(HTMLParser):
    """What a test needs of a report: image sources, every src/href, tags, and the text of each table row."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[str] = []
        self.refs: list[str] = []
        self.tags: set[str] = set()
        self.captions: list[str] = []
        self.rows: list[list[str]] = []
        self._row: list[list[str]] = []
        self._cell: list[list[str]] = []
        self._caption = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        self.refs += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "tr":
            self._row.append([])
        elif tag in ("td", "th"):
            self._cell.append([])
        elif tag == "figcaption":
            self._caption = True
            self.captions.append("")

    def handle_endtag(self, tag):
        if tag == "tr":
            self.rows.append(self._row.pop())
        elif tag in ("td", "th"):
            self._row[-1].append("".join(self._cell.pop()))
        elif tag == "figcaption":
            self._caption = False

    def handle_data(self, data):
        if self._cell:
            self._cell[-1].append(data)
        if self._caption:
            self.captions[-1] += data

    def row(self, name: str) -> list[str] | None:
        return next((r for r in self.rows if r and r[0] == name), None)


def _page(folder: Path) -> Page:
    return Page((folder / REPORT).read_text())


def _self_contained(page: Page) -> None:
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG" for src in page.images)
    assert not [r for r in page.refs if r.lower().startswith(("http://", "https://", "//"))]
    assert not page.tags & {"script", "link", "iframe", "object"}


def _embedded(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", *SMALL, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(small_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(small_run, copy, ignore=shutil.ignore_patterns(".untwine.lock"))
    return copy


@pytest.mark.slow
def test_training_writes_a_self_contained_report_with_every_figure_and_errors_beside_their_values(small_run):
    page = _page(small_run)
    _self_contained(page)
    figures = sorted((small_run / "figures").glob("*.png"))
    assert figures and len(page.images) == len(figures)
    for png in figures:
        assert _embedded(png) in page.images and f"figures/{png.name}" in page.captions
    assert "<title>vae on dsprites</title>" in (small_run / REPORT).read_text()
    assert page.row("latent_dim") == ["latent_dim", "10"] and page.row("network") == ["network", "mlp-256"]
    iwae = page.row("log_px.iwae")[1]
    assert "±" in iwae and page.row("log_px.se") is None  # the error joins its value instead of a row of its own
    assert page.row("mig.mig") is not None and page.row("train.elbo") is not None
    assert foreign_entries(small_run) == []  # the report is the run's own: --overwrite may replace it


def test_metric_rows_put_each_kind_of_standard_error_beside_its_value():
    metrics = {
        "log_px": {"iwae": -80.0, "se": 0.5, "psis": -81.0, "num_samples": 100},
        "mig": {"mig": 0.25, "per_factor": {"scale": 0.5, "posX": 0.1}, "stderr": {"mig": 0.01, "per_factor": {
            "scale": 0.02, "posX": 0.03}}},
        "decomposition": {"tc": 3.0, "mi": 2.0, "stderr": None},
        "summary": {"mig_mean": 0.2, "mig_se": 0.04, "difference": 1.5, "se_difference": 0.3, "n": 4},
        "odd": {"value": 1.0, "stderr": {"other": 2.0}},
        "note": "a <b>bold</b> & plain claim",
    }  # fmt: skip
    rows = dict(metric_rows(metrics))

    def cell(name: str) -> str:
        return Page(f"<table><tr>{rows[name]}</tr></table>").rows[0][0]

    assert cell("log_px.iwae") == "-80 ± 0.5" and cell("log_px.psis") == "-81" and "log_px.se" not in rows
    assert cell("mig.mig") == "0.25 ± 0.01" and cell("mig.per_factor.posX") == "0.1 ± 0.03"
    assert not [name for name in rows if "stderr" in name and not name.startswith("odd.")]
    assert cell("summary.mig_mean") == "0.2 ± 0.04" and cell("summary.difference") == "1.5 ± 0.3"
    assert cell("summary.n") == "4" and "summary.mig_se" not in rows and "summary.se_difference" not in rows
    assert cell("odd.value") == "1" and cell("odd.stderr.other") == "2"  # an error of nothing here stays visible
    assert rows["note"] == "<td>a &lt;b&gt;bold&lt;/b&gt; &amp; plain claim</td>"
    assert cell("decomposition.tc") == "3"


def test_a_run_that_drew_no_figures_gets_its_training_curve_drawn_from_its_history(run_copy):
    shutil.rmtree(run_copy / "figures")
    (run_copy / REPORT).unlink()
    assert write_report(run_copy) == run_copy / REPORT
    page = _page(run_copy)
    _self_contained(page)
    assert len(page.images) == 1 and page.captions == ["loss per epoch, from history.csv"]
    assert not (run_copy / "figures").exists()  # drawn into the page only


def test_untwine_report_rebuilds_a_deleted_report_and_prints_its_path(run_copy, capsys):
    (run_copy / REPORT).unlink()
    assert main(["report", str(run_copy)]) == 0
    assert capsys.readouterr().out == f"{run_copy / REPORT}\n"
    _self_contained(_page(run_copy))


@pytest.mark.slow
def test_untwine_plot_rewrites_the_report_with_the_figures(run_copy, capsys):
    (run_copy / REPORT).unlink()
    assert main(["plot", str(run_copy)]) == 0
    assert len(_page(run_copy).images) == len(list((run_copy / "figures").glob("*.png")))


@pytest.mark.parametrize("kind", ["missing", "empty folder", "foreign folder", "file"])
def test_untwine_report_on_a_folder_that_is_no_run_or_sweep_fails_in_one_line_writing_nothing(kind, tmp_path, capsys):
    target = tmp_path / "target"
    if kind == "empty folder":
        target.mkdir()
    elif kind == "foreign folder":
        target.mkdir()
        (target / "notes.txt").write_text("keep")
    elif kind == "file":
        target.write_text("not a folder")
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("untwine: error: ") and err.count("\n") == 1
    assert ("does not exist" if kind == "missing" else "is a file" if kind == "file" else "neither a run") in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ([] if kind == "missing" else
                                                           ["notes.txt", "target"] if kind == "foreign folder" else
                                                           ["target"])  # fmt: skip


def test_a_sweep_report_holds_its_grid_tables_figures_and_links_to_the_cells_pages(small_run, tmp_path, capsys):
    folder = tmp_path / "sweep"
    spec = sweep.start(folder, sweep.SweepSpec.from_dict({"seeds": 1, "models": ["vae", "isa-vae"]}))
    done, todo = spec.cells()
    shutil.copytree(small_run, folder / "cells" / done.name, ignore=shutil.ignore_patterns(".untwine.lock"))
    written = sweep.report(folder, echo=lambda *_: None)
    assert folder / REPORT in written
    page = _page(folder)
    _self_contained(page)
    figures = sorted((folder / "figures").glob("*.png"))
    assert figures and sorted(page.captions) == [f"figures/{p.name}" for p in figures]
    assert all(_embedded(p) in page.images for p in figures)
    assert [r for r in page.refs if not r.startswith("data:")] == [f"cells/{done.name}/{REPORT}"]
    assert (folder / page.refs[-1]).is_file()
    assert page.row("0")[1:3] == ["vae", "vae"] and page.row("1")[7] == "todo"  # results.csv, one row per cell
    assert f"{todo.name} (todo)" in (folder / REPORT).read_text()

    # a claims table puts each mean's and the difference's standard error beside it
    rows = [{"label": label, "value": 1.0, "data": "dsprites", "strength": "kl_weight", "status": "done", "mig": mig}
            for label, migs in (("isa-vae", (0.4, 0.5, 0.6)), ("vae", (0.1, 0.2, 0.15))) for mig in migs]  # fmt: skip
    atomic_write_csv(folder / sweep.CLAIMS, claims_table(rows))
    assert main(["report", str(folder)]) == 0 and capsys.readouterr().out == f"{folder / REPORT}\n"
    page = _page(folder)
    claim = next(r for r in page.rows if r and r[0] == "ISA-VAE paper §4.1, Fig. 5a")
    header = next(r for r in page.rows if r and r[0] == "paper")
    assert "mean_better ± SE" in header and "se_better" not in header and "difference ± SE" in header
    assert claim[header.index("mean_better ± SE")] == f"0.5 ± {0.1 / math.sqrt(3):.2g}"


@pytest.mark.slow
@pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))
def test_every_image_of_a_run_report_loads_in_headless_chromium(small_run):
    with browser.chromium() as driver:
        browser.open_page(driver, small_run / REPORT)
        loaded = [ok for _, ok in browser.image_states(driver)]
        assert driver.title == "vae on dsprites"
    assert loaded and all(loaded)
    assert len(loaded) == len(list((small_run / "figures").glob("*.png")))
