"""``report.html``: one self-contained page for a run folder or a sweep folder.

The page needs nothing beside it: every figure is embedded as a base64 ``data:`` URI, the style sheet is inline, there
is no script, and it names no address outside the folder (its only links, in a sweep's page, are relative ones to
the cells' own pages). It can be mailed, attached to a lab notebook or opened from an archive years later.

A **run** page holds the settings of ``config.json`` (model config, objective, training, data) as tables, the training
curve (``figures/loss.png``, or drawn from ``history.csv`` with :func:`~untwine.plots.plot_history` when the run drew
no figures), the metrics of ``metrics.json`` with nested entries flattened into dotted names, and every figure of
``figures/``. A metric with a standard error beside it is shown as one ``value ± se`` cell (see
:func:`metric_rows`).

A **sweep** page holds the grid of ``sweep.json``, the claims (``claims.csv``) and results (``results.csv``) tables,
every figure of the sweep's ``figures/`` and a list of its cells, linked to each cell's ``report.html`` where the cell
has one.

:func:`write_report` writes the page atomically. Training, ``untwine eval``, ``untwine plot`` and a sweep's report
call it; ``untwine report RUN_OR_SWEEP`` rebuilds it.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from untwine.inference.train import HISTORY
from untwine.io import atomic_write_text
from untwine.plots import plot_history
from untwine.run_folder import (
    CONFIG,
    FIGURES,
    METRICS,
    REPORT,
    RunFolderError,
    read_history,
    read_metrics,
    read_settings,
    run_lock,
)

#: the training curve the model's ``loss`` figure writes (see :mod:`untwine.evaluations`)
CURVE = "loss.png"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       background: #fff; margin: 0; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5em 1.5em 3em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
p.folder, p.note { color: #555; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.matrix td { border-color: #ddd; padding: 0.1em 0.4em; }
div.wide { overflow-x: auto; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; color: #555; }
"""


def write_report(folder: str | Path) -> Path:
    """Write ``report.html`` into a run folder or a sweep folder, whichever ``folder`` is, atomically.

    A run folder's page is written holding the folder's lock (:func:`~untwine.run_folder.run_lock`), like every other
    write into a run.

    :param folder: a run folder (holding ``config.json``) or a sweep folder (holding ``sweep.json``).
    :returns: the path of ``report.html``.
    :raises RunFolderError: ``folder`` is missing, a file, or neither a run nor a sweep folder; a run folder is in use
        by another process, or its ``metrics.json`` is damaged.
    :raises ConfigError: a sweep folder's ``sweep.json`` is damaged.
    """
    # sweep sits above experiment, which writes run reports: imported here to keep that direction
    from untwine.sweep import SPEC, is_sweep

    folder = Path(folder)
    if not folder.exists():
        raise RunFolderError(f"{folder} does not exist; give a run folder (untwine train --out) or a sweep folder")
    if not folder.is_dir():
        raise RunFolderError(f"{folder} is a file; give a run folder (untwine train --out) or a sweep folder")
    if is_sweep(folder):
        return atomic_write_text(folder / REPORT, sweep_page(folder))
    if not (folder / CONFIG).is_file():
        raise RunFolderError(
            f"{folder} is neither a run folder (no {CONFIG}) nor a sweep folder (no {SPEC}); give the --out folder "
            "of untwine train or a sweep folder"
        )
    with run_lock(folder):
        return atomic_write_text(folder / REPORT, run_page(folder))


# --- pages ---------------------------------------------------------------------------------------------------------


def run_page(folder: str | Path) -> str:
    """The HTML of a run folder's report (see the module docstring); reads the folder, writes nothing.

    :raises RunFolderError: ``config.json`` is not a run config, or ``metrics.json`` is damaged.
    """
    folder = Path(folder)
    settings = read_settings(folder)
    data = settings["data"]
    title = f"{settings['model']} on {data['name']}"
    parts = [f"<h1>{_text(title)}</h1>", f'<p class="folder">run folder {_text(folder.name)}</p>', "<h2>Settings</h2>"]
    objective = settings.get("objective")
    for heading, values in (("Model config", settings["model_config"]), ("Objective", objective),
                            ("Training", settings["train"]), ("Data", data)):  # fmt: skip
        parts.append(f"<h3>{_text(heading)}</h3>")
        if values is None:
            parts.append('<p class="note">none: the model\'s own loss</p>')
        else:
            parts.append(_table(("setting", "value"), metric_rows(values)))
    parts += ["<h2>Training curve</h2>", _curve(folder)]
    parts += ["<h2>Metrics</h2>", _metrics(folder)]
    shown = {CURVE} if (folder / FIGURES / CURVE).is_file() else set()
    parts += ["<h2>Figures</h2>", _figures(folder / FIGURES, skip=shown)]
    return _page(title, parts)


def sweep_page(folder: str | Path) -> str:
    """The HTML of a sweep folder's report (see the module docstring); reads the folder, writes nothing.

    :raises ConfigError: ``sweep.json`` is damaged.
    """
    from untwine.sweep import CELLS, CLAIMS, RESULTS, cell_status, read_spec

    folder = Path(folder)
    spec = read_spec(folder)
    grid = spec.to_json()
    title = f"sweep {folder.name}" + (f" (protocol {spec.protocol})" if spec.protocol else "")
    cells = spec.cells()
    status = {cell.name: cell_status(folder, cell) for cell in cells}
    done = sum(s == "done" for s in status.values())
    parts = [f"<h1>{_text(title)}</h1>", f'<p class="folder">{done} of {len(cells)} cells done</p>']
    parts.append("<h2>Grid</h2>")
    shared = {k: v for k, v in grid.items() if k not in ("entries", "settings", "train")}
    parts.append(_table(("setting", "value"), metric_rows(shared)))
    entries = [
        {"label": e.label, "model": e.model, "strength": e.strength, "values": list(e.values), "settings": e.settings}
        for e in spec.entries
    ]
    parts += ["<h3>Models</h3>", _records(entries)]
    for heading, key in (("Settings every model gets", "settings"), ("Training", "train")):
        parts.append(f"<h3>{_text(heading)}</h3>")
        rows = metric_rows(grid[key])
        parts.append(_table(("setting", "value"), rows) if rows else '<p class="note">none: the defaults</p>')
    no_claims = "no paper claim has both of its models among the cells done"
    parts += ["<h2>Claims</h2>", _csv_table(folder / CLAIMS, no_claims)]
    parts += ["<h2>Results</h2>", _csv_table(folder / RESULTS, "no cell is listed")]
    parts += ["<h2>Figures</h2>", _figures(folder / FIGURES)]
    items = []
    for cell in cells:
        page = folder / CELLS / cell.name / REPORT
        name = _text(cell.name)
        if page.is_file():
            href = _text(quote(f"{CELLS}/{cell.name}/{REPORT}"))
            name = f'<a href="{href}">{name}</a>'
        items.append(f"<li>{name} ({_text(status[cell.name])})</li>")
    parts += ["<h2>Cells</h2>", f"<ul>{''.join(items)}</ul>"]
    return _page(title, parts)


def _page(title: str, parts: Sequence[str]) -> str:
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
        "</body>\n</html>\n"
    )


# --- sections ------------------------------------------------------------------------------------------------------


def _curve(folder: Path) -> str:
    """The run's training curve: its own figure when it drew one, else drawn from ``history.csv`` in memory."""
    if (folder / FIGURES / CURVE).is_file():
        return _figure((folder / FIGURES / CURVE).read_bytes(), f"{FIGURES}/{CURVE}")
    history = read_history(folder)
    if not history:
        return f'<p class="note">no epoch finished yet ({HISTORY} is missing or empty)</p>'
    buffer = io.BytesIO()
    plot_history(history).savefig(buffer, format="png", dpi=100)
    return _figure(buffer.getvalue(), f"loss per epoch, from {HISTORY}")


def _metrics(folder: Path) -> str:
    metrics = read_metrics(folder)
    if metrics is None:
        return f'<p class="note">no {METRICS} yet: untwine eval RUN computes it</p>'
    return _table(("metric", "value"), metric_rows(metrics))


def _figures(folder: Path, skip: Collection[str] = ()) -> str:
    paths = sorted(folder.glob("*.png")) if folder.is_dir() else []
    shown = [_figure(p.read_bytes(), f"{FIGURES}/{p.name}") for p in paths if p.name not in skip]
    if not shown:
        return f'<p class="note">no other figures in {FIGURES}/</p>' if skip else f'<p class="note">no {FIGURES}/</p>'
    return "\n".join(shown)


def _figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_text(caption)}">'
        f"<figcaption>{_text(caption)}</figcaption></figure>"
    )


def _csv_table(path: Path, empty: str) -> str:
    """A CSV file the sweep wrote, as an HTML table with numbers formatted and standard errors beside their values."""
    if not path.is_file():
        return f'<p class="note">no {path.name} yet: untwine plot SWEEP writes it</p>'
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return f'<p class="note">{_text(empty)}</p>'
    return _records([{k: _parse(v) for k, v in row.items()} for row in rows])


def _parse(text: str | None) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):  # text, or None in a row shorter than the header
            pass
    return text


def _records(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of dicts as one table, a column per key; an error column (``se_X``, ``X_se``, ``se``) joins its value's."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    errors = _error_columns(columns, lambda k: any(_is_number(row.get(k)) for row in rows))
    shown = [c for c in columns if c not in errors.values()]
    header = [f"{c} ± SE" if c in errors else c for c in shown]
    body = [[_value(row.get(c), row.get(errors[c]) if c in errors else None) for c in shown] for row in rows]
    return '<div class="wide">' + _markup_table(header, body) + "</div>"


# --- metric rows ---------------------------------------------------------------------------------------------------


def metric_rows(values: dict[str, Any]) -> list[tuple[str, str]]:
    """``(dotted name, cell markup)`` for every leaf of a nested dict, in its order, standard errors merged.

    A standard error is shown with its value as ``value ± se`` and gets no row of its own. It is found as

    * a sibling ``X_se`` or ``se_X`` of an entry ``X`` (also of ``X_mean`` / ``mean_X``);
    * a sibling ``se``: of the entry named like the dict itself (``mig.mig``) if there is one, else of the nearest
      number before it (``log_px``: ``iwae`` then ``se``);
    * a sibling ``stderr`` dict mirroring the entries it qualifies (``mig.stderr.per_factor.scale`` for
      ``mig.per_factor.scale``); ``"stderr": null`` (no error was computed) is left out.

    :param values: e.g. the contents of ``metrics.json`` or a settings dict.
    """
    rows: list[tuple[str, str]] = []
    _flatten(values, "", rows, None)
    return rows


def _flatten(values: dict[str, Any], prefix: str, rows: list[tuple[str, str]], mirror: dict[str, Any] | None) -> None:
    own = prefix.rstrip(".").rsplit(".", 1)[-1]
    errors = _error_columns(list(values), lambda k: _is_number(values[k]), own)
    stderr = values.get("stderr")
    if isinstance(stderr, dict) and _mirrors(stderr, values):
        mirror = {**(mirror or {}), **stderr}
        dropped = {"stderr"}
    else:
        dropped = {"stderr"} if "stderr" in values and stderr is None else set()
    dropped |= set(errors.values())
    for key, value in values.items():
        if key in dropped:
            continue
        name = f"{prefix}{key}"
        below = (mirror or {}).get(key)
        if isinstance(value, dict):
            if value:
                _flatten(value, f"{name}.", rows, below if isinstance(below, dict) else None)
            else:
                rows.append((_text(name), "—"))
            continue
        se = values[errors[key]] if key in errors else below if _is_number(below) else None
        rows.append((_text(name), _value(value, se)))


def _mirrors(stderr: dict[str, Any], values: dict[str, Any]) -> bool:
    """Whether every leaf of ``stderr`` is a number qualifying a number at the same place in ``values``."""
    for key, se in stderr.items():
        if isinstance(se, dict):
            if not isinstance(values.get(key), dict) or not _mirrors(se, values[key]):
                return False
        elif not (_is_number(se) and _is_number(values.get(key))):
            return False
    return True


def _error_columns(keys: list[str], numeric: Callable[[str], bool], own: str = "") -> dict[str, str]:
    """``value key -> its standard error's key`` among sibling ``keys`` (see :func:`metric_rows`)."""
    pairs: dict[str, str] = {}
    for i, key in enumerate(keys):
        if not numeric(key):
            continue
        if key == "se":
            before = [k for k in reversed(keys[:i]) if numeric(k) and k not in pairs]
            candidates = [own] + before[:1]
        elif key.endswith("_se"):
            base = key[: -len("_se")]
            candidates = [base, f"{base}_mean", f"mean_{base}"]
        elif key.startswith("se_"):
            base = key[len("se_") :]
            candidates = [base, f"mean_{base}", f"{base}_mean"]
        else:
            continue
        target = next((c for c in candidates if c in keys and c != key and numeric(c) and c not in pairs), None)
        if target is not None:
            pairs[target] = key
    return pairs


# --- cells ---------------------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: int | float, spec: str = ".5g") -> str:
    if isinstance(value, int):
        return str(value)
    return str(value) if not math.isfinite(value) else format(value, spec)


def _value(value: Any, se: Any = None) -> str:
    """Cell markup of one value (escaped): numbers formatted, ``value ± se`` with an error, lists inline, a list of
    lists as a small table."""
    if _is_number(value):
        shown = _number(value) + (f" ± {_number(se, '.2g')}" if _is_number(se) else "")
        return f'<td class="num">{_text(shown)}</td>'
    if value is None:
        return "<td>none</td>"
    if isinstance(value, bool):
        return f"<td>{str(value).lower()}</td>"
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, list | tuple) for v in value):
            cells = "".join(
                "<tr>" + "".join(f'<td class="num">{_text(_scalar(v, ".3g"))}</td>' for v in row) + "</tr>"
                for row in value
            )
            return f'<td><table class="matrix">{cells}</table></td>'
        return f"<td>{_text(', '.join(_scalar(v) for v in value))}</td>"
    if isinstance(value, dict):
        return f"<td>{_text(json.dumps(value))}</td>"
    return f"<td>{_text(str(value))}</td>" if value != "" else "<td>—</td>"


def _scalar(value: Any, spec: str = ".5g") -> str:
    if _is_number(value):
        return _number(value, spec)
    return json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)


def _table(header: Sequence[str], rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table of ``(escaped name, cell markup)`` rows."""
    return _markup_table(list(header), [[f"<td>{name}</td>", cell] for name, cell in rows])


def _markup_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_text(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text(text: str) -> str:
    return html.escape(str(text), quote=True)
