import json
import shutil
import subprocess
import sys

import pytest

from untwine.cli import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The README's main job: a quick VAE run on procedural dSprites."""
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", "--data", "dsprites", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.mark.slow
def test_quick_train_writes_a_complete_run_folder(quick_run):
    config = json.loads((quick_run / "config.json").read_text())
    assert config["model"] == "vae" and config["data"] == {
        "name": "dsprites", "root": None, "quick": True, "subset": None, "seed": 0, "group_by": "random",
        "labelled": None,
    }  # fmt: skip
    assert config["model_config"]["image_shape"] == [1, 64, 64]
    rows = (quick_run / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + 5
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert metrics["train"]["elbo"] < 0 and metrics["train"]["kl"] > 0
    assert metrics["log_px"]["num_samples"] == 100 and metrics["log_px"]["images"] == 128
    assert metrics["log_px"]["iwae"] < 0 and metrics["log_px"]["se"] > 0
    assert set(metrics["khat"]) == {
        "median", "p90", "share_above_0.5", "share_above_0.7", "threshold", "share_above_threshold", "share_unfitted",
    }  # fmt: skip
    assert metrics["khat"]["threshold"] == 0.5  # min(1 - 1/log10 K, 0.7) at K = 100
    # the disentanglement_lib study's scores beside both MIGs, on every factor that varies (shape included)
    assert metrics["mig"]["estimator"] == "grid" and 0 <= metrics["discrete_mig"]["mig"] <= 1
    for name, key in (("beta_vae_score", "eval_accuracy"), ("factor_vae_score", "eval_accuracy"),
                      ("dci", "disentanglement"), ("sap", "sap"), ("modularity", "modularity")):  # fmt: skip
        assert 0 <= metrics[name][key] <= 1 and metrics[name]["num_train"] == 1000, name
        assert metrics[name]["factors"] == ["shape", "scale", "orientation", "posX", "posY"], name
    assert metrics["gaussian_tc"] > 0
    names = sorted(p.name for p in (quick_run / "figures").iterdir())
    assert names == [
        "khat.png", "latent_vs_factors.png", "loss.png", "reconstructions.png", "samples.png", "traversals.png",
    ]  # fmt: skip
    assert all((quick_run / "figures" / n).read_bytes()[:4] == b"\x89PNG" for n in names)


@pytest.mark.slow
def test_eval_and_plot_work_on_a_finished_run(quick_run, capsys):
    before = json.loads((quick_run / "metrics.json").read_text())
    (quick_run / "metrics.json").unlink()
    shutil.rmtree(quick_run / "figures")
    assert main(["eval", str(quick_run)]) == 0
    after = json.loads((quick_run / "metrics.json").read_text())
    assert after["train"]["elbo"] == pytest.approx(before["train"]["elbo"], abs=2.0)  # fresh Monte Carlo draw
    assert after["log_px"] == before["log_px"] and after["khat"] == before["khat"]  # seeded draws
    assert main(["plot", str(quick_run)]) == 0
    assert len(list((quick_run / "figures").iterdir())) == 6
    assert "traversals.png" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_metrics_recomputes_only_the_named_scores_and_keeps_the_rest(quick_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(quick_run, run, ignore=shutil.ignore_patterns(".untwine.lock"))
    before = json.loads((run / "metrics.json").read_text())
    stale = {**before, "sap": {"sap": -1.0}, "dci": {"disentanglement": -1.0}}
    (run / "metrics.json").write_text(json.dumps(stale))
    assert main(["eval", str(run), "--metrics", "dci,sap"]) == 0
    after = json.loads((run / "metrics.json").read_text())
    assert after["sap"] == before["sap"] and after["dci"] == before["dci"]  # seeded: the same numbers again
    assert {k: v for k, v in after.items() if k not in ("sap", "dci")} == {
        k: v for k, v in stale.items() if k not in ("sap", "dci")
    }
    capsys.readouterr()
    assert main(["eval", str(run), "--metrics", "dci,classification"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no evaluation 'classification'" in err and "choose from" in err and "\n" not in err
    assert json.loads((run / "metrics.json").read_text()) == after  # nothing written


@pytest.mark.slow
def test_compare_scores_runs_on_the_same_images(quick_run, tmp_path, capsys):
    twin = tmp_path / "twin"
    shutil.copytree(quick_run, twin)
    table = tmp_path / "compare.csv"
    argv = ["compare", str(quick_run), str(twin), "--images", "64", "--samples", "30", "--out", str(table)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "elpd_diff" in out and "64 held-out images" in out
    rows = table.read_text().splitlines()
    header, first, second = rows[0].split(","), rows[1].split(","), rows[2].split(",")
    # the same model on the same images with the same seeded draws: no difference at all
    assert float(second[header.index("elpd_diff")]) == 0 and float(first[header.index("elpd")]) < 0


def test_compare_with_bad_input_says_what_was_wrong(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("untwine: error:") and err.count("\n") == 1
    kept = tmp_path / "table.csv"
    kept.write_text("mine")
    assert main(["compare", str(tmp_path / "missing"), "--out", str(kept)]) == 2
    assert "never replaces a file" in capsys.readouterr().err and kept.read_text() == "mine"


@pytest.mark.slow
def test_a_run_folder_of_the_old_layout_still_loads_but_does_not_resume(quick_run, tmp_path, capsys):
    """Run folders written before objectives were recorded separately named the KL weight ``beta``."""
    import torch

    run = tmp_path / "old"
    shutil.copytree(quick_run, run, ignore=shutil.ignore_patterns(".untwine.lock"))
    settings = json.loads((run / "config.json").read_text())
    settings.pop("objective")
    settings["model_config"]["beta"] = settings["model_config"].pop("kl_weight")
    (run / "config.json").write_text(json.dumps(settings))
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["model_config"]["beta"] = state["model_config"].pop("kl_weight")
    torch.save(state, run / "checkpoint.pt")
    assert main(["plot", str(run)]) == 0
    assert "traversals.png" in capsys.readouterr().out
    assert main(["train", "vae", "--quick", "--out", str(run), "--resume", "--no-progress"]) == 2
    assert "written by an older untwine" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_extends_a_finished_run(quick_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    assert main(["train", "vae", "--quick", "--out", str(run), "--resume", "--epochs", "6", "--no-progress"]) == 0
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 6


@pytest.mark.slow
def test_beta_tcvae_run_records_both_migs_and_the_decomposition(tmp_path):
    out = tmp_path / "tc"
    argv = ["train", "beta-tcvae", "--quick", "--epochs", "1", "--estimator", "mws", "--tc-weight", "3"]
    assert main(argv + ["--set", "mi_weight=0.5", "--out", str(out), "--no-progress"]) == 0
    settings = json.loads((out / "config.json").read_text())
    objective, config = settings["objective"], settings["model_config"]
    assert (objective["tc_weight"], objective["mi_weight"], objective["dw_weight"]) == (3.0, 0.5, 1.0)
    assert objective["name"] == "tc-decomposed" and objective["estimator"] == "mws" and config["kl_weight"] == 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mig"]["factors"] == ["scale", "orientation", "posX", "posY"]
    assert set(metrics["discrete_mig"]["per_factor"]) == {"shape", "scale", "orientation", "posX", "posY"}
    for variant in ("mig", "discrete_mig"):
        per_factor = metrics[variant]["per_factor"].values()
        assert metrics[variant]["mig"] == pytest.approx(sum(per_factor) / len(per_factor))
    dec = metrics["decomposition"]
    assert dec["mi"] + dec["tc"] + dec["dwkl"] == pytest.approx(dec["kl"], abs=1e-6)
    assert dec["num_samples"] == 2048 and dec["dataset_size"] == 11520 and dec["stderr"]["tc"] > 0


@pytest.mark.slow
def test_factor_vae_quick_run_writes_a_complete_run_folder_with_both_migs(tmp_path):
    import torch

    out = tmp_path / "factor"
    argv = ["train", "factor-vae", "--data", "dsprites", "--quick", "--epochs", "1", "--gamma", "3"]
    assert main(argv + ["--discriminator-units", "64", "--out", str(out), "--no-progress"]) == 0
    settings = json.loads((out / "config.json").read_text())
    assert settings["objective"] == {"name": "factor-tc", "gamma": 3.0}
    assert settings["model_config"]["discriminator_units"] == 64
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["mig"]["mig"] <= 1 and 0 <= metrics["discrete_mig"]["mig"] <= 1
    assert "tc" in metrics["decomposition"]
    assert len(list((out / "figures").iterdir())) == 6
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["auxiliary_optimizer"]["state"], "the discriminator's optimiser is checkpointed"


@pytest.mark.slow
def test_isa_vae_run_records_learned_exponents_and_the_grouped_mig(tmp_path):
    out = tmp_path / "isa"
    argv = ["train", "isa-vae", "--quick", "--epochs", "1", "--learn-exponents", "--subspace-sizes", "4,4,2"]
    assert main(argv + ["--latent-dim", "10", "--exponent-lr", "0.01", "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())["model_config"]
    assert config["subspace_sizes"] == [4, 4, 2] and config["learn_exponents"] and config["p0"] == 2.1
    header, row = (out / "history.csv").read_text().splitlines()
    values = dict(zip(header.split(","), map(float, row.split(","))))
    assert values["p0"] == pytest.approx(2.1) and all(values[f"p{k}"] != 2.0 for k in (1, 2, 3))
    metrics = json.loads((out / "metrics.json").read_text())
    grouped = metrics["mig_grouped"]
    assert grouped["factors"] == ["scale", "orientation", "posX", "posY"]
    assert len(grouped["mutual_info"]) == 4 and all(len(row) == 3 for row in grouped["mutual_info"])
    assert len(metrics["mig"]["mutual_info"][0]) == 10


@pytest.mark.slow
def test_semi_supervised_nvae_run_hides_all_but_the_labels_asked_for(tmp_path, torchvision_root, monkeypatch):
    from untwine.inference import train as train_module

    seen = []
    fit = train_module.fit

    def recording(model, data, *args, **kwargs):
        seen.append(data)
        return fit(model, data, *args, **kwargs)

    monkeypatch.setattr("untwine.experiment.fit", recording)
    out = tmp_path / "ss"
    argv = ["train", "n-vae", "--data", "mnist", "--data-root", str(torchvision_root), "--quick", "--subset", "1024",
            "--epochs", "1", "--labelled", "100", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    settings = json.loads((out / "config.json").read_text())
    assert settings["data"]["labelled"] == 100 and settings["model_config"]["semi_supervised"] is True
    (data,) = seen
    assert int((data.targets >= 0).sum()) == 100 and data.labelled_share == 0.25
    assert settings["model_config"]["num_classes"] == 10  # classes counted before the labels were hidden
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classification"]["split"] == "test"


@pytest.mark.slow
def test_nvae_run_records_classification_and_the_kl_detectors(tmp_path, torchvision_root):
    out = tmp_path / "nvae"
    argv = ["train", "n-vae", "--data", "mnist", "--data-root", str(torchvision_root), "--quick", "--epochs", "1"]
    assert main(argv + ["--objective", "exact", "--beta-c", "3", "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())["model_config"]
    assert (config["num_classes"], config["objective"], config["beta_c"]) == (10, "exact", 3.0)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classification"]["split"] == "test" and metrics["classification"]["num_images"] == 5000
    assert 0.0 <= metrics["classification"]["accuracy"] <= 1.0
    kl = metrics["latent_kl"]
    assert len(kl["per_dimension"]) == 42 and len(kl["class_matrix"]) == 10
    assert kl["z_c"] + kl["z_s"] == pytest.approx(sum(kl["per_dimension"]))
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert {"latent_kl.png", "class_kl_matrix.png", "class_traversals.png", "samples_sigma1.4.png"} <= set(names)


@pytest.mark.slow
def test_a_model_written_outside_the_package_trains_into_a_complete_run_folder(tmp_path):
    """``untwine train module:Class`` with a Model subclass in a file beside the command, nothing edited in untwine."""
    from custom_models import LAPLACE

    (tmp_path / "laplace_models.py").write_text(LAPLACE)
    command = [sys.executable, "-m", "untwine", "train", "laplace_models:LaplaceVAE", "--data", "dsprites", "--quick",
               "--epochs", "1", "--latent-dim", "6", "--network", "mlp-256", "--out", "run",
               "--no-progress"]  # fmt: skip
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    settings = json.loads((run / "config.json").read_text())
    assert settings["model"] == "laplace_models:LaplaceVAE" and settings["model_config"]["latent_dim"] == 6
    assert len((run / "history.csv").read_text().splitlines()) == 2 and (run / "checkpoint.pt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"train", "log_px", "khat", "mig", "discrete_mig", "decomposition"} <= set(metrics)
    names = {p.name for p in (run / "figures").iterdir()}
    assert names == {
        "khat.png", "latent_vs_factors.png", "loss.png", "reconstructions.png", "samples.png", "traversals.png",
    }  # fmt: skip
    (run / "figures" / "loss.png").unlink()
    command = [sys.executable, "-m", "untwine", "plot", "run"]
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0 and (run / "figures" / "loss.png").is_file(), again.stderr  # reloaded as module:Class


def test_list_names_models_and_datasets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "beta-vae" in out and "dsprites" in out and "chen-mlp" in out


def run_cli(argv):
    """Exit code of the CLI, whether it returns or argparse exits."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def corrupt(run, tmp_path):
    bad = tmp_path / "corrupt"
    shutil.copytree(run, bad)
    ckpt = bad / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    return bad


BAD_INPUTS = {
    "unknown model": (["train", "gan"], "unknown model 'gan'"),
    "unknown dataset": (["train", "vae", "--data", "cifar"], "unknown dataset 'cifar'"),
    "missing data root": (["train", "vae", "--data", "mnist", "--data-root", "/no/such/dir"], "does not exist"),
    "wrong image shape": (["train", "vae", "--data", "mnist", "--data-root", "{mnist}", "--network", "chen-conv"],
                          "takes 64x64 images, got 28x28"),
    "zero batch size": (["train", "vae", "--batch-size", "0"], "positive integer"),
    "negative learning rate": (["train", "vae", "--lr", "-0.1"], "positive"),
    "text learning rate": (["train", "vae", "--lr", "fast"], "expected a positive number"),
    "cuda without a gpu": (["train", "vae", "--quick", "--device", "cuda", "--out", "{tmp}/c"], "no CUDA GPU"),
    "corrupt checkpoint": (["train", "vae", "--quick", "--resume", "--out", "{corrupt}"], "unreadable"),
    "checkpoint of another model": (["train", "beta-vae", "--quick", "--resume", "--out", "{run}"], "holds a vae run"),
    "resume without a run": (["train", "vae", "--resume", "--out", "{tmp}/none"], "nothing to resume"),
    "existing run": (["train", "vae", "--quick", "--out", "{run}"], "--overwrite"),
    "eval of a non-run": (["eval", "{tmp}"], "not a run folder"),
    "bad kl weight": (["train", "beta-vae", "--kl-weight", "0"], "kl_weight must be positive"),
    "tc weight for a plain vae": (["train", "vae", "--set", "mi_weight=2", "--out", "{tmp}/a"],
                                  "no setting 'mi_weight'"),
    "tc flag for a plain vae": (["train", "vae", "--tc-weight", "2", "--out", "{tmp}/a"], "unrecognized arguments"),
    "bad tc weight": (["train", "beta-tcvae", "--tc-weight", "-1", "--out", "{tmp}/a"], "tc_weight must be positive"),
    "isa layout that misses the latents": (["train", "isa-vae", "--subspace-sizes", "4,4", "--out", "{tmp}/i"],
                                           "add up to 8, but latent_dim is 20"),
    "isa layout that is not a list": (["train", "isa-vae", "--subspace-sizes", "4;4"], "comma-separated"),
    "setting that is not key=value": (["train", "vae", "--set", "kl_weight"], "expected KEY=VALUE"),
    "model module that does not import": (["train", "no_such_module:Model"], "cannot import module 'no_such_module'"),
    "model attribute that is missing": (["train", "untwine.pyro_models:NoSuchModel"], "has no attribute 'NoSuchModel'"),
    "model attribute that is not a model": (["train", "untwine.pyro_models:VAEConfig"], "is not a subclass of"),
    "non-positive exponent": (["train", "isa-vae", "--p0", "0"], "positive"),
    "exponents for a plain vae": (["train", "vae", "--set", "learn_exponents=true", "--out", "{tmp}/e"],
                                  "no setting 'learn_exponents'"),
    "fewer classes than the labels": (["train", "n-vae", "--data", "mnist", "--data-root", "{mnist}", "--quick",
                                       "--num-classes", "5", "--out", "{tmp}/n"], "labels must lie in [0, 5)"),
    "n-vae without class labels": (["train", "n-vae", "--quick", "--out", "{tmp}/d"],
                                   "needs one class label per image, but dsprites has targets"),
    "unknown n-vae objective": (["train", "n-vae", "--objective", "elbo"], "objective must be one of"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_a_one_line_error(case, quick_run, torchvision_root, tmp_path, capsys):
    import torch

    if case == "cuda without a gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    argv, match = BAD_INPUTS[case]
    paths = {"mnist": torchvision_root, "tmp": tmp_path, "run": quick_run}
    if "{corrupt}" in " ".join(argv):
        paths["corrupt"] = corrupt(quick_run, tmp_path)
    argv = [a.format(**paths) for a in argv]
    before = (quick_run / "checkpoint.pt").read_bytes()
    code = run_cli(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("untwine: error:") and err.count("\n") == 1, err
    assert match in err
    assert "Traceback" not in err
    assert (quick_run / "checkpoint.pt").read_bytes() == before, "a failed command must not touch a good run"


def test_console_script_reports_errors_without_a_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "untwine", "train", "vae", "--data", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "untwine: error: unknown dataset 'nope'; choose one of: dsprites, mnist, "
        "fashion-mnist, mnist+fashion-mnist, yaleb, shapes3d, smallnorb, cars3d, mpi3d, celeba, faces3d"
    )


GROUP_BAD_INPUTS = {
    "group of one image": (["train", "ug-vae", "--group-size", "1", "--out", "{tmp}/g"], "group_size must be at least"),
    "group of no image": (["train", "ml-vae", "--group-size", "0", "--out", "{tmp}/g"], "group_size must be at least"),
    "no clusters": (["train", "ug-vae", "--num-clusters", "0", "--out", "{tmp}/k"], "num_clusters (K) must be at"),
    "no global latent": (["train", "ug-vae", "--global-dim", "0", "--out", "{tmp}/b"],
                         "global_dim must be a positive integer"),
    "group size for a plain vae": (["train", "vae", "--set", "group_size=8", "--out", "{tmp}/v"],
                                   "no setting 'group_size'"),
    "batch of part of a group": (["train", "ug-vae", "--data", "mnist", "--data-root", "{mnist}", "--quick",
                                  "--group-size", "4", "--batch-size", "6", "--out", "{tmp}/p"],
                                 "batch size 6 is not a multiple of the model's group size 4"),
    "unknown grouping": (["train", "ug-vae", "--group-by", "size", "--out", "{tmp}/u"], "unknown grouping 'size'"),
    "domain groups without domains": (["train", "ug-vae", "--data", "mnist", "--data-root", "{mnist}", "--quick",
                                       "--group-by", "domain", "--out", "{tmp}/d"],
                                      "grouping by domain needs a mixture of datasets"),
    "groups for a model without a global latent": (["train", "vae", "--group-by", "ink", "--out", "{tmp}/v"],
                                                   "--group-by ink forms groups for a global latent"),
    "labels for a model that reads none": (["train", "vae", "--labelled", "100", "--out", "{tmp}/l"],
                                           "--labelled trains on partly labelled data, which vae does not read"),
    "more labels than images": (["train", "n-vae", "--data", "mnist", "--data-root", "{mnist}", "--quick",
                                 "--labelled", "999999", "--out", "{tmp}/m"], "labelled must lie in [0, 5000]"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(GROUP_BAD_INPUTS))
def test_bad_group_settings_exit_2_with_a_one_line_error_naming_the_setting(case, torchvision_root, tmp_path, capsys):
    argv, match = GROUP_BAD_INPUTS[case]
    argv = [a.format(tmp=tmp_path, mnist=torchvision_root) for a in argv]
    code = run_cli(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("untwine: error:") and err.count("\n") == 1, err
    assert match in err
    assert not list(tmp_path.rglob("checkpoint.pt")), "nothing may be trained"
    assert not list(tmp_path.rglob("config.json")), "no run folder may be left behind"


def test_list_names_the_grouped_models_and_the_domain_mixture(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = {line.split()[0] for line in lines if line.startswith("  ")}
    assert {"ug-vae", "ml-vae", "mnist+fashion-mnist"} <= names
    models = lines[lines.index("models:") + 1 : lines.index("datasets:")]
    assert any(line.split()[0] == "ml-vae" for line in models)
    datasets = lines[lines.index("datasets:") + 1 :]
    assert any(line.split()[0] == "mnist+fashion-mnist" for line in datasets)
