"""Every command against bad paths, shapes, dtypes, empty or NaN data and damaged or swapped run files: one line
``untwine: error: ...`` on stderr saying what was wrong and what to do, exit code 2, no traceback.

Runs are trained in-process on a 16-image dSprites-format archive, so the whole file takes seconds; what
``tests/test_cli.py`` already covers (unknown names, bad numbers, a corrupt checkpoint on resume) is not repeated.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.io import savemat

from untwine.cli import main
from untwine.data import DataError, ImageDataset

# a 4x4 grid of positions; every other factor fixed, as a user's own small archive may hold it
GRID = (1, 1, 1, 1, 4, 4)
TINY = ["--epochs", "1", "--batch-size", "8", "--network", "mlp-256", "--no-progress"]


def _npz(path, imgs=None, classes=None, values=None):
    """A dSprites-format archive of the grid ``GRID`` (or the given arrays)."""
    grid = np.stack([m.reshape(-1) for m in np.meshgrid(*map(np.arange, GRID), indexing="ij")], axis=1)
    if imgs is None:
        imgs = (np.random.default_rng(0).random((len(grid), 64, 64)) < 0.2).astype(np.uint8)
    classes = grid if classes is None else classes
    np.savez(path, imgs=imgs, latents_classes=classes, latents_values=grid.astype(float) if values is None else values)
    return path


def _yale(path, fea=None, gnd=None):
    """A Yale B-format ``.mat``: ``fea`` one 32x32 image per row (column-major), ``gnd`` subjects from 1."""
    fea = np.random.default_rng(0).integers(0, 256, (6, 1024), dtype=np.uint8) if fea is None else fea
    gnd = np.arange(1, len(fea) + 1).reshape(-1, 1) if gnd is None else gnd
    savemat(path, {"fea": fea, "gnd": gnd})
    return path


def _nan_images():
    imgs = np.zeros((16, 64, 64), np.float32)
    imgs[3, 10, 10] = np.nan
    return imgs


def _nan_yale():
    fea = np.full((6, 1024), 128.0)
    fea[2, 7] = np.nan
    return fea


def run_cli(argv):
    try:
        return main([str(a) for a in argv])
    except SystemExit as exit:
        return exit.code


def one_line_error(argv, capsys) -> str:
    code = run_cli(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("untwine: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished runs on the tiny archive: a VAE, a beta-VAE and a VAE with another latent size."""
    root = tmp_path_factory.mktemp("bad-input")
    data = _npz(root / "tiny.npz")
    made = {"root": root, "data": data}
    for name, argv in {
        "vae": ["vae"],
        "beta-vae": ["beta-vae"],
        "vae-4d": ["vae", "--latent-dim", "4"],
    }.items():
        made[name] = root / name
        assert main(["train", *argv, "--data-root", str(data), *TINY, "--out", str(made[name])]) == 0
    return made


def _copy_run(runs, tmp_path, name="vae"):
    run = tmp_path / f"copy-of-{name}"
    shutil.copytree(runs[name], run)
    return run


def _swap_checkpoint(source):
    def make(runs, tmp_path):
        run = _copy_run(runs, tmp_path)
        shutil.copy(runs[source] / "checkpoint.pt", run / "checkpoint.pt")
        return run

    return make


def _truncated_checkpoint(runs, tmp_path):
    run = _copy_run(runs, tmp_path)
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:4096])
    return run


def _without_checkpoint(runs, tmp_path):
    run = _copy_run(runs, tmp_path)
    (run / "checkpoint.pt").unlink()
    return run


def _config(text):
    def make(runs, tmp_path):
        run = _copy_run(runs, tmp_path)
        (run / "config.json").write_text(text)
        return run

    return make


def _a_file(runs, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a run")
    return path


def _data(make_file):
    """``train vae`` on the dSprites-format archive written by ``make_file(tmp_path)``."""
    return lambda runs, tmp_path: ["train", "vae", "--data-root", make_file(tmp_path), *TINY, "--out", tmp_path / "o"]


def _yale_data(**arrays):
    return lambda runs, tmp_path: [
        "train", "vae", "--data", "yaleb", "--data-root", _yale(tmp_path / "yale.mat", **arrays), *TINY,
        "--out", tmp_path / "o",
    ]  # fmt: skip


def _train_into(make_run, *extra):
    """``train vae --resume`` into the run folder ``make_run`` prepares, with the tiny archive."""
    return lambda runs, tmp_path: [
        "train", "vae", *extra, "--data-root", runs["data"], *TINY, "--resume", "--out", make_run(runs, tmp_path)
    ]  # fmt: skip


def _command(command, make_run, *extra):
    return lambda runs, tmp_path: [command, make_run(runs, tmp_path), *extra]


# case -> (argv builder, part of the message that says what was wrong, part that says what to do)
CASES = {
    # paths
    "eval of a missing run folder": (
        _command("eval", lambda r, t: t / "none"), "run folder", "give the --out folder"),
    "plot of a missing run folder": (
        _command("plot", lambda r, t: t / "none"), "does not exist", "give the --out folder"),
    "eval of a file instead of a run folder": (
        _command("eval", _a_file), "is not a run folder", "give the --out folder"),
    "train into a file instead of a folder": (
        lambda r, t: ["train", "vae", "--data-root", r["data"], *TINY, "--out", _a_file(r, t)],
        "is a file, not a folder", "give a folder"),
    "missing dsprites data root": (
        lambda r, t: ["train", "vae", "--data-root", t / "none", "--out", t / "o"], "does not exist",
        "leave out --data-root"),
    "data folder without the dsprites archive": (
        lambda r, t: ["train", "vae", "--data-root", t, "--out", t / "o"], "not found", "download"),
    "file as the mnist data root": (
        lambda r, t: ["train", "vae", "--data", "mnist", "--data-root", _a_file(r, t), "--out", t / "o"],
        "is a file, not a folder", "pass the folder that holds MNIST/raw"),
    "missing yale file": (
        lambda r, t: ["train", "vae", "--data", "yaleb", "--data-root", t, "--out", t / "o"], "not found",
        "pass the path of YaleB_32x32_ori.mat"),
    # shapes
    "dsprites archive of 32x32 images": (
        _data(lambda t: _npz(t / "small.npz", imgs=np.zeros((16, 32, 32), np.uint8))), "must be uint8 (N, 64, 64)",
        "got uint8 (16, 32, 32)"),
    "network for 28x28 images on 64x64 data": (
        lambda r, t: ["train", "vae", "--data-root", r["data"], *TINY, "--network", "conv", "--out", t / "o"],
        "takes 28x28, 32x32 images, got 64x64", "choose another network"),
    "yale rows that are not square images": (
        _yale_data(fea=np.zeros((6, 1000), np.uint8)), "rows of 1000 pixels are not square images", "pixels"),
    # dtypes
    "float dsprites images": (
        _data(lambda t: _npz(t / "f.npz", imgs=np.zeros((16, 64, 64), np.float32))), "must be uint8", "float32"),
    "string dsprites images": (
        _data(lambda t: _npz(t / "s.npz", imgs=np.full((16, 64, 64), "x"))), "must be uint8", "<U1"),
    "fractional dsprites factor classes": (
        _data(lambda t: _npz(t / "c.npz", classes=np.full((16, 6), 0.5))), "latents_classes", "integer array"),
    "fractional yale labels": (_yale_data(gnd=np.full((6, 1), 1.5)), "'gnd'", "whole-number subject label"),
    "yale labels below one": (_yale_data(gnd=np.zeros((6, 1))), "'gnd'", "start at 1"),
    "yale pixels above 255": (_yale_data(fea=np.full((6, 1024), 300.0)), "'fea'", "0..255"),
    "text instead of an archive": (
        _data(lambda t: (t / "t.npz").write_text("not an archive") and t / "t.npz"), "could not read dSprites archive",
        "t.npz"),
    # empty data
    "dsprites archive with no images": (
        _data(lambda t: _npz(t / "e.npz", imgs=np.zeros((0, 64, 64), np.uint8), classes=np.zeros((0, 6), np.int64),
                             values=np.zeros((0, 6)))),
        "latents_classes", "non-empty"),
    "subset larger than the data": (
        lambda r, t: ["train", "vae", "--data-root", r["data"], *TINY, "--subset", "17", "--out", t / "o"],
        "subset 17 is larger than the 16 images of dsprites", "give at most 16"),
    "yale file with no images": (_yale_data(fea=np.zeros((0, 1024), np.uint8), gnd=np.zeros((0, 1))), "'fea'",
                                 "one image per row"),
    # NaN images
    "NaN dsprites images": (_data(lambda t: _npz(t / "n.npz", imgs=_nan_images())), "must be uint8", "float32"),
    "NaN yale images": (_yale_data(fea=_nan_yale()), "'fea'", "no NaN"),
    # damaged or swapped run files
    "eval of another model's checkpoint": (
        _command("eval", _swap_checkpoint("beta-vae")), "holds a beta-vae model, but config.json says vae",
        "put back this run's checkpoint.pt"),
    "plot of another model's checkpoint": (
        _command("plot", _swap_checkpoint("beta-vae")), "holds a beta-vae model", "--overwrite"),
    "resume of another model's checkpoint": (
        _train_into(_swap_checkpoint("beta-vae")), "is for model 'beta-vae', not 'vae'", "checkpoint"),
    "eval of a checkpoint with another config": (
        _command("eval", _swap_checkpoint("vae-4d")), "another vae config than config.json records",
        "put back this run's checkpoint.pt"),
    "resume of a checkpoint with another config": (
        _train_into(_swap_checkpoint("vae-4d")), "different model config", "checkpoint"),
    "eval of a truncated checkpoint": (_command("eval", _truncated_checkpoint), "unreadable", "--overwrite"),
    "plot of a truncated checkpoint": (_command("plot", _truncated_checkpoint), "unreadable", "--overwrite"),
    "eval of a run without its checkpoint": (
        _command("eval", _without_checkpoint), "has no checkpoint.pt", "train the run again"),
    "eval of a config that is not json": (_command("eval", _config("{oops")), "is not valid JSON", "restore it"),
    "plot of a config that is not json": (
        _command("plot", _config("\x00\x01")), "is not valid JSON", "train into a new --out"),
    "resume of a config that is not json": (
        _train_into(_config("{oops")), "is not valid JSON", "train into a new --out"),
    "eval of a json config of the wrong form": (
        _command("eval", _config("[1, 2]")), "is not an untwine run config", "train into a new --out"),
    "resume of a config without its data settings": (
        _train_into(_config(json.dumps({"model": "vae", "model_config": {}, "train": {}, "data": {}}))),
        "bad or missing data.name", "train into a new --out"),
    # other arguments
    "negative seed": (
        lambda r, t: ["train", "vae", "--seed", "-1", "--out", t / "o"], "--seed: must lie in [0, 2**32)", "-1"),
    "unknown device for eval": (_command("eval", lambda r, t: r["vae"], "--device", "tpu"), "unknown device 'tpu'",
                                "use auto, cpu or cuda"),
    "list with an argument": (lambda r, t: ["list", "extra"], "unrecognized arguments: extra", "--help"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_ends_with_one_line_saying_what_was_wrong_and_what_to_do(case, runs, tmp_path, capsys):
    make_argv, what, todo = CASES[case]
    argv = make_argv(runs, tmp_path)
    good = runs["vae"] / "checkpoint.pt"
    before = good.stat().st_mtime_ns
    err = one_line_error(argv, capsys)
    assert what in err and todo in err, err
    assert good.stat().st_mtime_ns == before, "a failed command must not touch another run"
    assert not (tmp_path / "o" / "checkpoint.pt").exists(), "nothing may be trained from bad input"


def test_truncated_mnist_file_is_a_data_error(shared_data, tmp_path, capsys):
    """torchvision reads a truncated extracted file with a ValueError; the CLI must turn it into a clear error."""
    shutil.copytree(shared_data / "mnist" / "MNIST", tmp_path / "MNIST")
    for path in tmp_path.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    raw = tmp_path / "MNIST" / "raw"
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):  # fmt: skip
        (raw / name).write_bytes(b"")
    err = one_line_error(["train", "vae", "--data", "mnist", "--data-root", tmp_path, "--out", tmp_path / "o"], capsys)
    assert "could not load MNIST" in err and "put the four MNIST/raw/*-ubyte.gz files there" in err


def _registered(monkeypatch, images, labels):
    """Register a dataset ``toy`` whose loader hands over ``images`` and ``labels`` as they are."""
    import untwine.data as data

    spec = data.DataSpec(lambda root, train, quick: ImageDataset(images, labels, 1.0, "toy"), 8, False, None, "toy")
    monkeypatch.setitem(data.DATASETS, "toy", spec)


@pytest.mark.parametrize(
    "labels, dtype",
    [(torch.tensor([0.0, 1.0, 2.0, 0.0]), "float32"), (torch.tensor([True, False, True, True]), "bool")],
)
def test_labels_that_are_not_integers_are_a_data_error(labels, dtype, monkeypatch, tmp_path, capsys):
    _registered(monkeypatch, torch.rand(4, 1, 28, 28), labels)
    err = one_line_error(["train", "vae", "--data", "toy", *TINY, "--out", tmp_path / "o"], capsys)
    assert f"toy: labels must be integers, got torch.{dtype}; convert them to int64 when loading" in err


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_infinite_images_are_a_data_error(bad, monkeypatch, tmp_path, capsys):
    images = torch.rand(4, 1, 28, 28)
    images[2, 0, 5, 5] = bad
    _registered(monkeypatch, images, torch.zeros(4, dtype=torch.long))
    err = one_line_error(["train", "vae", "--data", "toy", *TINY, "--out", tmp_path / "o"], capsys)
    assert "toy: the images contain NaN or infinite values; clean or drop those images" in err
    assert not (tmp_path / "o").exists()


def test_subset_larger_than_a_test_split_is_capped_not_an_error(torchvision_root):
    """Evaluation reads the test split with the training subset size; only the training split is checked."""
    from untwine.data import load_dataset

    assert len(load_dataset("mnist", torchvision_root, train=False, subset=20_000)) == 10_000
    with pytest.raises(DataError, match="subset 20000 is larger than the 5000 images of mnist \\(quick\\)"):
        load_dataset("mnist", torchvision_root, quick=True, subset=20_000)


def test_console_script_exit_code_and_stderr_for_a_swapped_checkpoint(runs, tmp_path):
    run = _swap_checkpoint("beta-vae")(runs, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "untwine", "eval", str(run)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("untwine: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "holds a beta-vae model" in proc.stderr and proc.stdout == ""


def test_bad_training_settings_fail_before_an_existing_run_is_overwritten(tmp_path):
    from untwine import experiment
    from untwine.inference.train import TrainingError

    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"a finished run")
    with pytest.raises(TrainingError, match="learning rate"):
        experiment.train("vae", out=out, quick=True, overwrite=True, train_options={"lr": -1.0})
    assert (out / "checkpoint.pt").read_bytes() == b"a finished run"
