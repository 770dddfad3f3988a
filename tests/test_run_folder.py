"""A run folder never loses what untwine did not write: ``--overwrite`` removes only a run's own entries, after every
check that can fail, without following links; one process writes a run folder at a time."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from untwine import experiment
from untwine.cli import main
from untwine.io import atomic_write_text
from untwine.run_folder import (
    LOCK,
    RunFolderError,
    check_run_folder,
    clear_run,
    foreign_entries,
    lock_holder,
    run_lock,
)

SMALL = ["--data", "dsprites", "--quick", "--subset", "256", "--epochs", "1", "--batch-size", "64",
         "--network", "mlp-256", "--no-progress"]  # fmt: skip


def _train(out, *extra) -> int:
    return main(["train", "vae", *SMALL, "--out", str(out), *extra])


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (links not followed) with its kind, bytes or link target, and mtime."""
    snap = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            snap[str(path.relative_to(folder))] = ("link", os.readlink(path), st.st_mtime_ns)
        elif path.is_dir():
            snap[str(path.relative_to(folder))] = ("dir", None, st.st_mtime_ns)
        else:
            snap[str(path.relative_to(folder))] = ("file", path.read_bytes(), st.st_mtime_ns)
    return snap


def _project(folder: Path) -> Path:
    """A user's project folder holding a thesis and an unrelated file named like a checkpoint."""
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "thesis.tex").write_text("\\chapter{Results}")
    (folder / "checkpoint.pt").write_bytes(b"not untwine's")
    return folder


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert _train(out) == 0
    return out


@pytest.fixture
def run_copy(small_run, tmp_path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(small_run, copy, symlinks=True)
    return copy


def test_folder_with_foreign_files_and_a_checkpoint_is_refused_and_left_byte_identical(tmp_path, capsys):
    folder = _project(tmp_path / "project")
    before = _snapshot(folder)
    assert _train(folder, "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an untwine run folder (no config.json)" in err
    assert "checkpoint.pt, src/" in err
    assert _snapshot(folder) == before


def test_out_dot_in_a_project_folder_is_refused_and_the_working_folder_survives(tmp_path, monkeypatch, capsys):
    folder = _project(tmp_path / "project")
    before = _snapshot(folder)
    monkeypatch.chdir(folder)
    assert _train(".", "--overwrite") == 2
    assert "--out . is not an untwine run folder" in capsys.readouterr().err
    assert folder.is_dir() and _snapshot(folder) == before


def test_a_folder_holding_only_run_file_names_but_no_config_is_refused(tmp_path, capsys):
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "checkpoint.pt").write_bytes(b"x")
    (folder / "history.csv").write_text("epoch,loss\n")
    before = _snapshot(folder)
    assert _train(folder, "--overwrite") == 2
    assert "no config.json" in capsys.readouterr().err
    assert _snapshot(folder) == before


def test_a_config_that_is_not_an_untwine_run_is_refused(tmp_path, capsys):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "config.json").write_text('{"lr": 0.1}')
    (folder / "checkpoint.pt").write_bytes(b"x")
    before = _snapshot(folder)
    assert _train(folder, "--overwrite") == 2
    assert "is not an untwine run config" in capsys.readouterr().err
    assert _snapshot(folder) == before


def test_a_new_run_never_writes_into_a_folder_of_other_files(tmp_path, capsys):
    """Without --overwrite too: a run's config.json would replace a user's file of the same name."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "config.json").write_text("my own settings")
    before = _snapshot(folder)
    assert _train(folder) == 2
    assert "no config.json" not in capsys.readouterr().err  # a config.json that is not a run's is refused all the same
    assert _snapshot(folder) == before


def test_foreign_files_beside_a_genuine_run_block_the_overwrite(run_copy, capsys):
    (run_copy / "notes.txt").write_text("keep me")
    (run_copy / "figures" / "annotated.pdf").write_text("keep me too")
    (run_copy / "figures" / "drafts").mkdir()
    before = _snapshot(run_copy)
    assert _train(run_copy, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "files untwine did not write (figures/annotated.pdf, figures/drafts/, notes.txt)" in err
    assert _snapshot(run_copy) == before


def test_a_genuine_run_folder_is_replaced(run_copy):
    old_config = (run_copy / "config.json").read_text()
    (run_copy / "figures" / "stale-from-an-older-version.png").write_bytes(b"\x89PNG")
    (run_copy / ".metrics.json.abc123.tmp").write_text("left by a killed write")
    assert _train(run_copy, "--overwrite", "--seed", "3") == 0
    assert (run_copy / "config.json").read_text() != old_config
    assert experiment.read_settings(run_copy)["train"]["seed"] == 3
    assert not (run_copy / "figures" / "stale-from-an-older-version.png").exists()
    assert not (run_copy / ".metrics.json.abc123.tmp").exists()
    experiment.load_run(run_copy, "cpu")


def test_out_dot_that_is_a_run_folder_is_replaced_and_the_working_folder_kept(run_copy, monkeypatch):
    monkeypatch.chdir(run_copy)
    inode = run_copy.stat().st_ino
    assert _train(".", "--overwrite") == 0
    assert run_copy.stat().st_ino == inode and (run_copy / "checkpoint.pt").is_file()


def test_symlinks_in_a_run_folder_are_removed_as_links_and_their_targets_untouched(run_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "metrics.json").write_text("precious")
    (elsewhere / "plots").mkdir()
    (elsewhere / "plots" / "fig.png").write_bytes(b"precious figure")
    before = _snapshot(elsewhere)
    (run_copy / "metrics.json").unlink()
    (run_copy / "metrics.json").symlink_to(elsewhere / "metrics.json")
    (run_copy / "figures" / "linked.png").symlink_to(elsewhere / "plots" / "fig.png")
    clear_run(run_copy)
    assert set(os.listdir(run_copy)) <= {LOCK}
    assert _snapshot(elsewhere) == before


def test_a_linked_figures_folder_is_unlinked_not_emptied(small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run, symlinks=True)
    target = tmp_path / "shared-figures"
    shutil.move(run / "figures", target)
    (target / "notes.txt").write_text("not a figure, but not in the run folder either")
    (run / "figures").symlink_to(target, target_is_directory=True)
    before = _snapshot(target)
    assert foreign_entries(run) == []
    clear_run(run)
    assert not (run / "figures").exists() and _snapshot(target) == before


def test_a_failure_after_overwrite_leaves_the_old_run_loadable(run_copy, tmp_path, capsys):
    before = _snapshot(run_copy)
    argv = ["train", "vae", *SMALL, "--data-root", str(tmp_path / "no-such-archive.npz")]
    assert main([*argv, "--out", str(run_copy), "--overwrite"]) == 2
    assert "no-such-archive.npz" in capsys.readouterr().err
    assert _snapshot(run_copy) == before
    experiment.load_run(run_copy, "cpu")


def test_a_bad_group_size_after_overwrite_leaves_the_old_run(run_copy):
    before = _snapshot(run_copy)
    argv = ["train", "ug-vae", "--data", "dsprites", "--quick", "--group-size", "100000", "--no-progress"]
    assert main([*argv, "--out", str(run_copy), "--overwrite"]) == 2
    assert _snapshot(run_copy) == before


def _holder(script: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


def _wait_for_lock(folder: Path, proc: subprocess.Popen, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = lock_holder(folder)
        if holder is not None:
            return holder
        assert proc.poll() is None, "the first process ended before it was seen holding the lock"
        time.sleep(0.02)
    raise AssertionError(f"no process took the lock of {folder}")


@pytest.mark.slow
def test_a_second_train_on_a_folder_in_use_is_refused_while_the_first_finishes(tmp_path, capsys):
    out = tmp_path / "busy"
    first = subprocess.Popen(
        [sys.executable, "-m", "untwine", "train", "vae", *SMALL, "--epochs", "4", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        holder = _wait_for_lock(out, first)
        assert holder == f"pid {first.pid} on {os.uname().nodename}"
        for argv in (["train", "vae", *SMALL], ["train", "vae", *SMALL, "--overwrite"], ["eval"], ["plot"]):
            assert main([*argv, str(out)] if argv in (["eval"], ["plot"]) else [*argv, "--out", str(out)]) == 2
            err = capsys.readouterr().err
            assert f"{out} is in use by another untwine process (pid {first.pid} on" in err, (argv, err)
    finally:
        stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert experiment.read_settings(out)["train"]["epochs"] == 4
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 4
    experiment.load_run(out, "cpu")


def test_a_lock_left_by_a_killed_process_does_not_block_the_next(tmp_path):
    folder = tmp_path / "run"
    proc = _holder(
        "import sys, time\nfrom untwine.run_folder import run_lock\n"
        f"with run_lock({str(folder)!r}):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    assert proc.stdout.readline().strip() == "held"
    assert lock_holder(folder) == f"pid {proc.pid} on {os.uname().nodename}"
    with pytest.raises(RunFolderError, match="in use by another untwine process"), run_lock(folder):
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert (folder / LOCK).exists() and lock_holder(folder) is None
    with run_lock(folder):
        assert (folder / LOCK).read_text().startswith(f"pid {os.getpid()} ")


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with run_lock(tmp_path / "r"), run_lock(tmp_path / "r"):
        assert lock_holder(tmp_path / "r") is None  # this process's own lock is no obstacle to it
    with run_lock(tmp_path / "r"):
        pass


def test_temporary_files_of_atomic_writes_belong_to_the_run(tmp_path):
    folder = tmp_path / "run"
    atomic_write_text(folder / "config.json", "{}")
    names = [".checkpoint.pt.k2_x9q.tmp", ".history.csv.a.tmp", "figures/.loss.png.zz1.tmp"]
    for name in names:
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text("")
    assert foreign_entries(folder) == []
    (folder / ".thesis.tex.abc.tmp").write_text("")  # a temporary file of something else is not ours
    (folder / "figures" / ".notes.txt.abc.tmp").write_text("")
    assert foreign_entries(folder) == [".thesis.tex.abc.tmp", "figures/.notes.txt.abc.tmp"]


def test_an_empty_or_missing_folder_may_hold_a_new_run(tmp_path):
    check_run_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    check_run_folder(tmp_path / "empty")
    assert not (tmp_path / "missing").exists()
