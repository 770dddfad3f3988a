"""Run folders: what untwine writes into one, when it may replace it, and one writer at a time.

A run folder consists of exactly the entries listed here (:data:`RUN_FILES`, :data:`FIGURES` and the lock file),
plus the temporary files of :func:`~untwine.io.atomic_write` beside them. Nothing else in the folder belongs to
untwine, so nothing else is ever removed:

* a folder is **replaceable** (``--overwrite``) only when its ``config.json`` is an untwine run config and every
  entry in it (and in ``figures/``) is one of the run's own; otherwise :func:`check_run_folder` refuses and names
  what it found, touching nothing;
* :func:`clear_run` removes those entries one by one (files and symbolic links are unlinked, never followed;
  ``figures/`` is emptied the same way and then removed) and leaves the folder itself, so ``--out .`` survives;
* :func:`run_lock` holds an exclusive ``flock`` on ``.untwine.lock`` in the folder for the life of a run (and of
  ``eval``/``plot`` writes). The kernel releases it when the process ends, however it ends, so a run killed with
  ``kill -9`` never blocks the next one; a second process gets a one-line error naming the holder.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from untwine.inference.train import CHECKPOINT, HISTORY, TrainingError
from untwine.io import is_temporary_of

CONFIG = "config.json"
METRICS = "metrics.json"
#: the self-contained HTML page of the run (see untwine.report)
REPORT = "report.html"
FIGURES = "figures"
LOCK = ".untwine.lock"
#: the files a run folder consists of, besides ``figures/`` and the lock
RUN_FILES = (CONFIG, CHECKPOINT, HISTORY, METRICS, REPORT)
#: what :func:`~untwine.plots.save_figure` writes into ``figures/``
FIGURE_SUFFIXES = (".png",)

RETRAIN = "train the run again with untwine train ... --overwrite"
# --overwrite replaces only a folder whose config.json identifies a run, so a damaged config needs another way out
_REPAIR_CONFIG = "restore it, or train into a new --out"
SETTINGS_KEYS = {"model": str, "model_config": dict, "train": dict, "data": dict}
DATA_KEYS = ("name", "root", "quick", "subset", "seed")


class RunFolderError(TrainingError):
    """A run folder cannot be used or replaced as asked; the message says why and what to do."""


def _own_file(name: str, files: tuple[str, ...]) -> bool:
    return name in files or any(is_temporary_of(name, f) for f in files)


def _own_figure(name: str) -> bool:
    target = name[1:].rsplit(".", 2)[0] if name.startswith(".") and name.endswith(".tmp") else name
    return target.endswith(FIGURE_SUFFIXES) and (target == name or is_temporary_of(name, target))


def _entries(folder: str | os.PathLike) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return list(it)


def _shown(entry: os.DirEntry, parent: str = "") -> str:
    """An entry's name as an error message lists it: relative to the run folder, a trailing ``/`` on folders."""
    return parent + entry.name + ("/" if entry.is_dir(follow_symlinks=False) else "")


def foreign_entries(folder: str | Path) -> list[str]:
    """Entries of ``folder`` (relative paths, sorted) that untwine did not write as part of a run.

    A symbolic link is judged by its own name, never by what it points to; ``figures/`` counts as the run's only
    when it is a real folder holding nothing but figure files (or is itself a link).
    """
    folder = Path(folder)
    foreign = []
    for entry in _entries(folder):
        if entry.name == LOCK or _own_file(entry.name, RUN_FILES):
            if entry.is_dir(follow_symlinks=False):
                foreign.append(_shown(entry))
        elif entry.name == FIGURES and entry.is_dir(follow_symlinks=False):
            foreign += [
                _shown(e, f"{FIGURES}/")
                for e in _entries(entry.path)
                if e.is_dir(follow_symlinks=False) or not _own_figure(e.name)
            ]
        elif entry.name != FIGURES:
            foreign.append(_shown(entry))
    return sorted(foreign)


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds any entry of a run (the lock file alone does not count)."""
    folder = Path(folder)
    return folder.is_dir() and any(e.name != LOCK for e in _entries(folder))


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_run_folder(folder: str | Path) -> None:
    """Refuse, touching nothing, a folder that a run may not write into or replace: a file, or a non-empty folder
    that is not an untwine run folder (no valid ``config.json``) or that holds anything besides the run's entries.

    A run writes ``config.json``, ``checkpoint.pt`` and the rest into ``--out``; in a folder of other files it would
    replace any of the same names, and ``--overwrite`` would have no way to tell the run's files from the user's.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--out {folder} is a file, not a folder; give a folder for the run")
    if not holds_run(folder):
        return
    if (folder / CONFIG).is_symlink() or not (folder / CONFIG).is_file():
        entries = sorted(_shown(e) for e in _entries(folder) if e.name != LOCK)
        raise RunFolderError(
            f"--out {folder} is not an untwine run folder (no {CONFIG}) and holds {_listing(entries)}; "
            "give a new or empty folder for --out"
        )
    read_settings(folder)
    foreign = foreign_entries(folder)
    if foreign:
        raise RunFolderError(
            f"--out {folder} holds a run and files untwine did not write ({_listing(foreign)}); move them away or "
            "give another --out"
        )


def clear_run(folder: str | Path) -> None:
    """Remove a run's entries from ``folder`` (checked with :func:`check_run_folder` first), keeping the folder.

    Links are unlinked, never followed, so whatever a link in the run folder points to is left as it is. The lock file
    stays: the process replacing the run holds it.
    """
    folder = Path(folder)
    check_run_folder(folder)
    for entry in _entries(folder):
        if entry.name == LOCK:
            continue
        if entry.name == FIGURES and entry.is_dir(follow_symlinks=False):
            for figure in _entries(entry.path):
                os.unlink(figure.path)
            os.rmdir(entry.path)
        else:
            os.unlink(entry.path)


def read_settings(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a run folder, with a clear error when the folder is not a run or the file is damaged."""
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"run folder {path} does not exist; give the --out folder of untwine train")
    if not (path / CONFIG).is_file():
        raise RunFolderError(f"{path} is not a run folder (no {CONFIG}); give the --out folder of untwine train")
    try:
        settings = json.loads((path / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFolderError(f"{path / CONFIG} is not valid JSON ({err}); {_REPAIR_CONFIG}") from err
    fields = settings if isinstance(settings, dict) else {}
    bad = [key for key, kind in SETTINGS_KEYS.items() if not isinstance(fields.get(key), kind)]
    if not bad:
        bad = [f"data.{key}" for key in DATA_KEYS if key not in settings["data"]]
    if bad:
        raise RunFolderError(
            f"{path / CONFIG} is not an untwine run config (bad or missing {', '.join(bad)}); {_REPAIR_CONFIG}"
        )
    return settings


def read_metrics(folder: str | Path) -> dict[str, Any] | None:
    """``metrics.json`` of a run folder (``None`` while there is none), with a clear error when it is damaged."""
    path = Path(folder) / METRICS
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFolderError(f"{path} is not valid JSON ({err}); recompute it with untwine eval {folder}") from err
    if not isinstance(metrics, dict):
        raise RunFolderError(f"{path} holds no metrics (not a JSON object); recompute it with untwine eval {folder}")
    return metrics


def read_history(folder: str | Path) -> list[dict[str, float]]:
    """The rows of a run folder's ``history.csv`` as numbers (empty before the first epoch ends)."""
    path = Path(folder) / HISTORY
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: _float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _float(text: str | None) -> float:
    # a column that only some epochs have (an epoch summary added on resume) is empty in the others
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


_held: dict[str, int] = {}
_held_guard = threading.Lock()


def _in_use(folder: Path, holder: str) -> RunFolderError:
    return RunFolderError(
        f"{folder} is in use by another untwine process ({holder}); wait for it to finish or give another --out"
    )


def check_not_in_use(folder: str | Path) -> None:
    """Refuse a folder whose lock another process holds (a quick probe that creates nothing)."""
    holder = lock_holder(folder)
    if holder is not None:
        raise _in_use(Path(folder), holder)


def lock_holder(folder: str | Path) -> str | None:
    """Who holds the lock of ``folder`` (``"pid N on HOST"``), or ``None`` when nobody does. Creates nothing."""
    path = Path(folder) / LOCK
    if os.path.realpath(folder) in _held:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        return _try_lock(fd, path)
    finally:
        os.close(fd)  # closing drops a lock this probe took


def _try_lock(fd: int, path: Path) -> str | None:
    """Take the exclusive lock on ``fd`` without waiting; ``None`` on success, else what the lock file says."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer is then the user's to ensure
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with contextlib.suppress(OSError):
            return path.read_text().strip() or "another process"
        return "another process"
    return None


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Hold the run folder's exclusive lock (creating the folder) for the ``with`` block.

    Re-entrant within a process, so :func:`~untwine.experiment.train` can hold it around ``evaluate`` and ``plot``,
    which take it themselves when called alone.

    :raises RunFolderError: another process holds it.
    """
    folder = Path(folder)
    key = os.path.realpath(folder)
    with _held_guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        raise RunFolderError(f"cannot create the lock file {path} ({err.strerror}); give a writable --out") from err
    try:
        holder = _try_lock(fd, path)
        if holder is not None:
            raise _in_use(folder, holder)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        with _held_guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                del _held[key]
    finally:
        os.close(fd)
