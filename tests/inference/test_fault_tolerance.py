"""A run killed with SIGKILL (mid-epoch, even mid-write) resumes to the numbers of an uninterrupted run, and runs
with one seed repeat their numbers exactly across processes.

Every run here is a real ``python -m untwine train`` process, on one thread so that float reductions happen in the
same order in every process.
"""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from untwine.inference.train import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
# wall-clock columns: the only ones allowed to differ between two runs
TIMING = {"seconds", "images_per_s"}
# 512 images in batches of 32: 16 steps per epoch, two epochs; the small network keeps checkpoints at ~25 MB
TINY = ["--data", "dsprites", "--quick", "--subset", "512", "--epochs", "2", "--batch-size", "32"]
TINY += ["--network", "mlp-256", "--no-progress"]
STEPS_PER_EPOCH = 16
START_TIMEOUT = 180.0  # seconds until the first checkpoint; generous for a loaded CI machine


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _command(model: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "untwine", "train", model, "--out", str(out), *extra]


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300.0) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err


def _train(model: str, out: Path, *extra: str) -> None:
    _finish(_start(_command(model, out, *extra)))


def _history(run: Path) -> list[dict[str, str]]:
    """The run's history without wall-clock columns, as the exact strings written to history.csv."""
    with open(run / "history.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _temp_files(run: Path) -> list[Path]:
    return sorted(run.glob(".checkpoint.pt.*.tmp"))


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll ``condition()`` in a tight loop (a checkpoint write lasts milliseconds) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"training ended (exit {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.0005)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = load_checkpoint(a / "checkpoint.pt")["model"], load_checkpoint(b / "checkpoint.pt")["model"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """Two uninterrupted seed-0 runs and one seed-1 run, each in its own process (started together)."""
    root = tmp_path_factory.mktemp("reference")
    runs = {name: root / name for name in ("seed0", "seed0-again", "seed1")}
    procs = [_start(_command("vae", runs[name], *TINY, "--seed", name[4])) for name in runs]
    for proc in procs:
        _finish(proc)
    return runs


@pytest.mark.slow
def test_sigkill_mid_epoch_leaves_a_loadable_checkpoint_and_resume_matches_an_uninterrupted_run(
    reference_runs, tmp_path
):
    run = tmp_path / "killed"
    argv = _command("vae", run, *TINY, "--seed", "0", "--checkpoint-every", "4")
    proc = _start(argv)
    _wait_for((run / "checkpoint.pt").exists, proc, "mid-epoch checkpoint")
    _kill(proc)

    state = load_checkpoint(run / "checkpoint.pt")
    assert state["batch"] in (4, 8, 12), "the checkpoint on disk must be a mid-epoch one"
    assert state["step"] == state["epoch"] * STEPS_PER_EPOCH + state["batch"]
    assert len(state["history"]) == state["epoch"] < 2

    _train("vae", run, *TINY, "--seed", "0", "--checkpoint-every", "4", "--resume")
    assert _history(run) == _history(reference_runs["seed0"])
    assert [int(row["step"]) for row in _history(run)] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert _same_weights(run, reference_runs["seed0"])


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_never_leaves_a_corrupt_checkpoint(reference_runs, tmp_path):
    """Checkpoint after every step and kill as soon as a temporary checkpoint file appears, once in a fresh run and
    once in its resumed run; each time the checkpoint on disk must load, and the twice-killed run must still resume
    to the uninterrupted numbers."""
    run = tmp_path / "killed-while-writing"
    argv = _command("vae", run, *TINY, "--seed", "0", "--checkpoint-every", "1")
    during_write = 0
    steps = []
    for attempt in range(2):
        proc = _start(argv + (["--resume"] if attempt else []))
        before = set(_temp_files(run))
        if attempt == 0:
            _wait_for((run / "checkpoint.pt").exists, proc, "first checkpoint")
        _wait_for(lambda: set(_temp_files(run)) - before, proc, "checkpoint write")
        _kill(proc)
        during_write += bool(set(_temp_files(run)) - before)  # the kill landed before the rename
        state = load_checkpoint(run / "checkpoint.pt")  # never half a file
        assert state["step"] >= 1
        steps.append(state["step"])
    assert during_write >= 1, "no kill landed inside a checkpoint write"
    assert steps == sorted(steps), "each resume continues from the last checkpoint, never from an older one"

    _train("vae", run, *TINY, "--seed", "0", "--checkpoint-every", "1", "--resume")
    assert _history(run) == _history(reference_runs["seed0"])
    assert _same_weights(run, reference_runs["seed0"])


@pytest.mark.slow
def test_same_seed_gives_the_same_history_in_separate_processes(reference_runs):
    first, again, other = (_history(reference_runs[k]) for k in ("seed0", "seed0-again", "seed1"))
    assert len(first) == 2 and set(first[0]) == {"epoch", "step", "loss"}
    assert first == again
    assert _same_weights(reference_runs["seed0"], reference_runs["seed0-again"])
    assert [row["loss"] for row in other] != [row["loss"] for row in first]


@pytest.mark.slow
def test_same_seed_gives_the_same_labelled_n_vae_history(torchvision_root, tmp_path):
    tiny = ["--data", "mnist", "--data-root", str(torchvision_root), "--quick", "--subset", "512", "--epochs", "2"]
    tiny += ["--no-progress"]
    runs = {name: tmp_path / name for name in ("seed0", "seed0-again")}
    procs = [_start(_command("n-vae", runs[name], *tiny, "--seed", "0")) for name in runs]
    for proc in procs:
        _finish(proc)
    first, again = (_history(runs[k]) for k in runs)
    assert len(first) == 2 and first == again
    assert _same_weights(*runs.values())
