r"""Sweeps: a grid of models × regularisation strengths × seeds (× datasets), one ordinary run folder per cell.

A sweep folder holds::

    sweep.json        the grid (what ``untwine sweep DIR`` continues); written once, checked on every restart
    cells/NAME/       one run folder per cell (``untwine eval``/``plot`` work on it), written by experiment.train
    logs/NAME.log     the cell's output; logs/NAME.json its outcome (done or failed, the error, seconds)
    results.csv       one row per cell: settings, both MIGs, grouped MIG, E[log p(x|z)], ELBO, MI/TC/dim-wise KL, time
    claims.csv        each paper's ordering claim tested on the cells it needs (see :mod:`untwine.sweep_stats`)
    figures/*.png     the papers' comparison figures (see :mod:`untwine.plots.sweeps`)
    report.html       all of the above on one self-contained page, linking each cell's own (see untwine.report)

A grid is a :class:`SweepSpec`: from a TOML file (``untwine sweep DIR --spec grid.toml``), from flags, or a named
protocol (:data:`PROTOCOLS`). Cells are numbered seed-major (every entry at seed 0, then at seed 1, ...), so a sweep
cut short still holds balanced seeds. A finished cell (its ``metrics.json`` written) is skipped on restart, a
cell with a checkpoint resumes, and a failed cell is reported and does not stop the rest. ``--jobs N`` runs N cells
at once as child processes (``untwine sweep DIR --cell K``), which is also how one cell runs alone, e.g. as a task of
a Slurm array across machines.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from untwine.inference.train import CHECKPOINT, TrainingError
from untwine.io import atomic_write_csv, atomic_write_text
from untwine.pyro_models import ConfigError, model_spec
from untwine.run_folder import CONFIG, METRICS, read_history

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SPEC, RESULTS, CLAIMS = "sweep.json", "results.csv", "claims.csv"
CELLS, LOGS = "cells", "logs"

#: the setting a sweep varies for each model unless its entry names another (the β of each paper, FactorVAE's γ)
STRENGTH = {
    "vae": "kl_weight",
    "beta-vae": "kl_weight",
    "isa-vae": "kl_weight",
    "beta-tcvae": "tc_weight",
    "isa-beta-tcvae": "tc_weight",
    "factor-vae": "gamma",
}


@dataclass(frozen=True)
class Entry:
    """One model line of the grid: ``model`` trained at each of ``values`` of its setting ``strength``, with the
    fixed ``settings``; ``label`` names it in tables and figures (default: the model)."""

    model: str
    values: tuple[float, ...]
    strength: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    label: str = ""


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    index: int
    entry: Entry
    value: float
    seed: int
    data: str

    @property
    def name(self) -> str:
        """Folder name: label, strength, seed (and dataset), e.g. ``beta-tcvae-tc_weight2-seed3``."""
        data = f"-{self.data}" if self.data != "dsprites" else ""
        return f"{self.entry.label}-{self.entry.strength}{self.value:g}-seed{self.seed}{data}"


@dataclass
class SweepSpec:
    """A grid: entries × seeds × datasets, with the settings every cell shares.

    :param entries: the models and their strengths.
    :param seeds: training seeds (each cell's :class:`~untwine.inference.train.TrainConfig` seed).
    :param data: dataset names.
    :param quick: the datasets' quick versions (the dSprites sub-grid).
    :param settings: model/objective settings every entry gets (e.g. ``latent_dim``, ``network``).
    :param train: :class:`~untwine.inference.train.TrainConfig` fields (``epochs``, ``batch_size``, ``lr``, ``device``).
    :param figures: draw each cell's own figures (off saves a few seconds per cell; ``untwine plot CELL`` draws them).
    """

    entries: list[Entry]
    seeds: list[int]
    data: list[str] = field(default_factory=lambda: ["dsprites"])
    quick: bool = False
    subset: int | None = None
    data_root: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    figures: bool = True
    protocol: str = ""

    def cells(self) -> list[Cell]:
        """Every cell, seed-major."""
        order = [(s, d, e, v) for s in self.seeds for d in self.data for e in self.entries for v in e.values]
        return [Cell(k, e, v, s, d) for k, (s, d, e, v) in enumerate(order)]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "the sweep") -> SweepSpec:
        """A spec from the TOML/JSON layout (see the README's "Sweeps"); one-line :class:`ConfigError`\\ s."""
        raw = dict(raw)
        known = {f.name for f in dataclasses.fields(cls)} | {"strengths", "models"}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; keys: {', '.join(sorted(known))}")
        seeds = raw.pop("seeds", 3)
        seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        if not seeds:
            raise ConfigError(f"{where}: seeds must be a positive count or a non-empty list")
        data = raw.pop("data", ["dsprites"])
        default_values = raw.pop("strengths", [1.0])
        models = raw.pop("models", raw.pop("entries", None))
        if not models:
            raise ConfigError(f"{where}: no models; add [[models]] tables with a name (and values)")
        entries = [_entry(m, default_values, where) for m in models]
        labels = [e.label for e in entries]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{where}: two entries share a label ({', '.join(labels)}); give each a label")
        spec = cls(entries, seeds, [data] if isinstance(data, str) else list(data), **raw)
        spec.check()
        return spec

    def check(self) -> None:
        """Build every entry's settings once (unknown settings, bad values fail here, before any training)."""
        from untwine.inference.train import TrainConfig
        from untwine.pyro_models import make_settings

        for e in self.entries:
            for v in e.values:
                make_settings(e.model, **{**self.settings, **e.settings, e.strength: v})
        TrainConfig(**self.train)


def _entry(raw: Any, default_values: list[float], where: str) -> Entry:
    if isinstance(raw, Entry):
        return raw
    if isinstance(raw, str):
        raw = {"model": raw}
    raw = dict(raw)
    model = raw.pop("model", raw.pop("name", None))
    if not model:
        raise ConfigError(f'{where}: a model entry has no name; give name = "beta-vae"')
    model_spec(model)  # unknown model: the registry's message
    strength = raw.pop("strength", STRENGTH.get(model, ""))
    if not strength:
        raise ConfigError(f"{where}: model {model!r} has no default strength; name the setting to vary with "
                          'strength = "SETTING" in its [[models]] entry of a grid file (--spec)')  # fmt: skip
    values = raw.pop("values", default_values)
    values = tuple(float(v) for v in (values if isinstance(values, list | tuple) else [values]))
    entry = Entry(model, values, strength, dict(raw.pop("settings", {})), raw.pop("label", model))
    if raw:
        raise ConfigError(f"{where}: model entry {model!r} has unknown key(s) {', '.join(sorted(raw))}")
    return entry


def read_toml(path: str | Path) -> dict[str, Any]:
    """The grid layout of a TOML file, unchecked (:meth:`SweepSpec.from_dict` checks it)."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"sweep file {path} does not exist; give the path of a .toml grid") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid TOML ({err}); fix the file") from None


def load_spec(path: str | Path) -> SweepSpec:
    """A :class:`SweepSpec` from a TOML file."""
    return SweepSpec.from_dict(read_toml(path), where=str(path))


# --- protocols ------------------------------------------------------------------------------------------------------

#: the ISA-VAE paper's Table 1 (appendix A.3): β for β-VAE, β-TCVAE and ISA-VAE; γ for FactorVAE
TABLE1_BETAS = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0]
TABLE1_GAMMAS = [float(g) for g in range(1, 11)]

PROTOCOLS: dict[str, dict[str, Any]] = {
    # full dSprites with Table 1's settings: for a GPU (370 runs of 20 epochs on 737,280 images)
    "paper": {
        "seeds": 10,
        "data": ["dsprites"],
        "settings": {"latent_dim": 20, "network": "chen-mlp"},
        "train": {"epochs": 20, "batch_size": 2048, "lr": 1e-3},
        "models": [
            {"name": "beta-vae", "values": TABLE1_BETAS},
            {"name": "beta-tcvae", "values": TABLE1_BETAS},
            {"name": "isa-vae", "values": TABLE1_BETAS},
            {"name": "factor-vae", "values": TABLE1_GAMMAS},
        ],
    },
    # the two key claims on 2 CPU cores (ISA-VAE vs VAE at beta = 1, beta-TCVAE vs beta-VAE at beta = 2), 10 seeds
    # each, sized by benchmarks/cpu_protocol_sizing.py (see the README's "Sweeps")
    "cpu": {
        "seeds": 10,
        "data": ["dsprites"],
        "quick": True,
        "figures": False,
        "settings": {"latent_dim": 20, "network": "chen-mlp"},
        "train": {"epochs": 10, "batch_size": 256, "lr": 1e-3},
        "models": [
            {"name": "vae", "values": [1.0]},
            {"name": "isa-vae", "values": [1.0]},
            {"name": "beta-vae", "values": [2.0]},
            {"name": "beta-tcvae", "values": [2.0]},
        ],
    },
}


def protocol(name: str) -> dict[str, Any]:
    """A copy of protocol ``name``'s grid layout (:meth:`SweepSpec.from_dict` builds it)."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}")
    return {**copy.deepcopy(PROTOCOLS[name]), "protocol": name}


# --- the sweep folder -----------------------------------------------------------------------------------------------


def is_sweep(path: str | Path) -> bool:
    return (Path(path) / SPEC).is_file()


def read_spec(path: str | Path) -> SweepSpec:
    """The grid a sweep folder was started with."""
    file = Path(path) / SPEC
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is not a sweep folder (no {SPEC}); start one with --spec, --protocol or --models")
    except json.JSONDecodeError as err:
        raise ConfigError(f"{file} is damaged ({err}); restore it, or start the sweep in a new folder") from None
    raw["entries"] = [Entry(**{**e, "values": tuple(e["values"])}) for e in raw["entries"]]
    return SweepSpec(**raw)


def start(path: str | Path, spec: SweepSpec | None) -> SweepSpec:
    """The sweep in ``path``: ``spec`` written there if the folder is new (or empty), checked against the grid there
    if not; ``None`` continues the sweep there."""
    path = Path(path)
    if spec is None:
        return read_spec(path)
    if is_sweep(path):
        saved = read_spec(path)
        if saved.to_json() != spec.to_json():
            raise ConfigError(f"{path} holds another sweep ({SPEC} differs); continue it without a grid "
                              "(`untwine sweep DIR`) or give a new folder")  # fmt: skip
        return saved
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{path} exists and is not a sweep folder; give a new or empty folder")
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / SPEC, json.dumps(spec.to_json(), indent=2))
    return spec


def cell_status(path: Path, cell: Cell) -> str:
    """``done`` (metrics written), ``partial`` (a checkpoint to resume), ``failed`` (its last attempt raised), or
    ``todo``."""
    run = path / CELLS / cell.name
    if (run / METRICS).is_file():
        return "done"
    log = path / LOGS / f"{cell.name}.json"
    if log.is_file() and json.loads(log.read_text()).get("status") == "failed":
        return "failed"
    return "partial" if (run / CHECKPOINT).is_file() else "todo"


def run_cell(path: str | Path, index: int, spec: SweepSpec | None = None, progress: bool = False) -> dict[str, Any]:
    """Train and evaluate cell ``index`` of the sweep in ``path`` (resuming its checkpoint if it has one); its
    outcome goes to ``logs/NAME.json``. A finished cell is left as it is.

    :raises TrainingError: the cell failed (the outcome file says why).
    """
    from untwine import experiment

    path = Path(path)
    spec = start(path, spec)
    cells = spec.cells()
    if not 0 <= index < len(cells):
        raise ConfigError(f"cell {index} does not exist; the sweep in {path} has cells 0 to {len(cells) - 1}")
    cell = cells[index]
    run = path / CELLS / cell.name
    outcome: dict[str, Any] = {"cell": index, "name": cell.name}
    if cell_status(path, cell) == "done":
        return {**outcome, "status": "done", "skipped": True}
    (path / LOGS).mkdir(exist_ok=True)
    resume = (run / CHECKPOINT).is_file()
    t0 = time.perf_counter()
    try:
        experiment.train(
            cell.entry.model,
            data=cell.data,
            data_root=spec.data_root,
            out=run,
            quick=spec.quick,
            subset=spec.subset,
            resume=resume,
            overwrite=not resume and (run / CONFIG).is_file(),  # a cell killed before its first checkpoint
            progress=progress,
            figures=spec.figures,
            model_options={**spec.settings, **cell.entry.settings, cell.entry.strength: cell.value},
            train_options={**spec.train, "seed": cell.seed},
        )
    except Exception as err:  # a failed cell is recorded and the sweep goes on
        outcome.update(status="failed", error=f"{type(err).__name__}: {err}", seconds=time.perf_counter() - t0)
        atomic_write_text(path / LOGS / f"{cell.name}.json", json.dumps(outcome, indent=2))
        raise TrainingError(f"cell {index} ({cell.name}) failed: {outcome['error']}") from err
    outcome.update(status="done", seconds=time.perf_counter() - t0, resumed=resume)
    atomic_write_text(path / LOGS / f"{cell.name}.json", json.dumps(outcome, indent=2))
    return outcome


def run_sweep(
    path: str | Path, spec: SweepSpec | None = None, jobs: int = 1, threads: int | None = None, echo=print
) -> list[Cell]:
    """Run every cell not yet done, ``jobs`` at a time in child processes (``untwine sweep DIR --cell K``), each with
    ``threads`` torch threads (default: the CPUs divided among the jobs). Failed cells are retried once per call.

    :returns: the cells that failed.
    """
    path = Path(path)
    spec = start(path, spec)
    todo = [c for c in spec.cells() if cell_status(path, c) != "done"]
    done = len(spec.cells()) - len(todo)
    echo(f"sweep {path}: {len(spec.cells())} cells, {done} done, {len(todo)} to run, {jobs} at a time")
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    (path / LOGS).mkdir(exist_ok=True)
    running: dict[subprocess.Popen, tuple[Cell, float, Any]] = {}
    failed: list[Cell] = []
    queue: Iterator[Cell] = iter(todo)
    pending = True
    while pending or running:
        while pending and len(running) < jobs:
            cell = next(queue, None)
            if cell is None:
                pending = False
                break
            log = open(path / LOGS / f"{cell.name}.log", "a")  # noqa: SIM115 (closed when the child ends)
            argv = [sys.executable, "-m", "untwine", "sweep", str(path), "--cell", str(cell.index)]
            argv += ["--threads", str(threads)]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            running[subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)] = (cell, time.time(), log)
        for proc in [p for p in running if p.poll() is not None]:
            cell, started, log = running.pop(proc)
            log.close()
            ok = proc.returncode == 0
            if not ok:
                failed.append(cell)
            what = "done" if ok else f"FAILED (exit {proc.returncode}, see {LOGS}/{cell.name}.log)"
            echo(f"  cell {cell.index:>3} {cell.name}: {what} in {time.time() - started:.0f} s")
        time.sleep(0.2)
    return failed


# --- results --------------------------------------------------------------------------------------------------------

COLUMNS = [
    "cell", "label", "model", "data", "strength", "value", "seed", "status", "mig", "discrete_mig", "mig_grouped",
    "log_px_z", "elbo", "kl", "log_px", "khat_share", "mi", "tc", "dwkl", "train_seconds", "seconds",
]  # fmt: skip


def results(path: str | Path) -> list[dict[str, Any]]:
    """One row per cell (see :data:`COLUMNS`); numbers missing for a cell that is not done (``nan``)."""
    path = Path(path)
    spec = read_spec(path)
    rows = []
    for cell in spec.cells():
        run = path / CELLS / cell.name
        row: dict[str, Any] = {c: math.nan for c in COLUMNS}
        row.update(
            cell=cell.index,
            label=cell.entry.label,
            model=cell.entry.model,
            data=cell.data,
            strength=cell.entry.strength,
            value=cell.value,
            seed=cell.seed,
            status=cell_status(path, cell),
        )
        if row["status"] == "done":
            m = json.loads((run / METRICS).read_text())
            dec = m.get("decomposition", {})
            row.update(
                mig=m.get("mig", {}).get("mig", math.nan),
                discrete_mig=m.get("discrete_mig", {}).get("mig", math.nan),
                mig_grouped=m.get("mig_grouped", {}).get("mig", math.nan),
                log_px_z=m["train"]["log_likelihood"], elbo=m["train"]["elbo"], kl=m["train"]["kl"],
                log_px=m.get("log_px", {}).get("iwae", math.nan),
                khat_share=m.get("khat", {}).get("share_above_0.7", math.nan),
                mi=dec.get("mi", math.nan), tc=dec.get("tc", math.nan), dwkl=dec.get("dwkl", math.nan),
            )  # fmt: skip
            history = read_history(run)
            row["train_seconds"] = sum(r["seconds"] for r in history) if history else math.nan
        log = path / LOGS / f"{cell.name}.json"
        if log.is_file():
            row["seconds"] = json.loads(log.read_text()).get("seconds", math.nan)
        rows.append(row)
    return rows


def write_results(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    return atomic_write_csv(Path(path) / RESULTS, rows)


def report(path: str | Path, echo=print) -> list[Path]:
    """Write ``results.csv``, ``claims.csv``, the comparison figures and ``report.html`` of the sweep in ``path`` from
    the cells done so far, and print the claims table.

    :returns: the files written.
    """
    from untwine.plots import save_figure, sweep_figures
    from untwine.report import write_report
    from untwine.sweep_stats import claims_table, format_claims

    path = Path(path)
    rows = results(path)
    written = [write_results(path, rows)]
    table = claims_table(rows)
    written.append(atomic_write_csv(path / CLAIMS, table))
    (path / "figures").mkdir(exist_ok=True)
    for name, fig in sweep_figures(rows):
        written.append(save_figure(fig, path / "figures" / name))
    written.append(write_report(path))
    done = sum(r["status"] == "done" for r in rows)
    echo(f"{done} of {len(rows)} cells done")
    echo(format_claims(table) if table else "no paper claim has both of its models in this sweep")
    return written
