"""The training loop and ELBO evaluation with a grouped model (UG-VAE): whole groups in every batch."""

import json
import math

import pytest
import torch

from untwine import experiment
from untwine.cli import main
from untwine.data import DomainMixture, ImageDataset
from untwine.inference.train import TrainConfig, TrainingError, fit, load_checkpoint
from untwine.metrics import evaluate_elbo
from untwine.pyro_models import UGVAE, VAE, UGVAEConfig, VAEConfig

SHAPE = (1, 6, 6)


def tiny_ugvae(group_size=4, mixture=True):
    torch.manual_seed(0)
    config = UGVAEConfig(
        image_shape=SHAPE, latent_dim=2, global_dim=2, num_clusters=3, group_size=group_size, hidden=8,
        mixture=mixture, likelihood="bernoulli", network="mlp-256",
    )  # fmt: skip
    return UGVAE(config)


def toy(n, low=0, high=256, name="toy", seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(low, high, (n, *SHAPE), dtype=torch.uint8, generator=g)
    return ImageDataset(images, torch.arange(n) % 10, 255, name)


def cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 8, "lr": 1e-3, "seed": 0, "device": "cpu", **kw})


def record_batches(model, data):
    """Wrap ``model.model`` and ``data.batch`` so that each step's image count and indices are recorded."""
    sizes, indices = [], []
    model_fn, batch_fn = model.model, data.batch

    def model_recording(x, y=None):
        sizes.append(x.shape[0])
        return model_fn(x, y)

    def batch_recording(index, device=None):
        indices.append(index.clone())
        return batch_fn(index, device)

    model.model = model_recording
    data.batch = batch_recording
    return sizes, indices


def test_every_step_sees_whole_groups_and_left_over_images_wait():
    model, data = tiny_ugvae(group_size=4), toy(22)  # 22 = 5 groups of 4 + 2 left over
    sizes, indices = record_batches(model, data)
    result = fit(model, data, cfg(epochs=3), progress=False)
    # 20 usable images per epoch in batches of 8: 8, 8, 4
    assert result.step == 3 * 3 and len(result.history) == 3
    assert sizes == [8, 8, 4] * 3
    assert all(s % 4 == 0 for s in sizes)
    left_out = []
    for epoch in range(3):
        seen = torch.cat(indices[3 * epoch : 3 * epoch + 3])
        assert len(seen) == 20 and len(seen.unique()) == 20, "an epoch visits 20 distinct images"
        left_out.append(set(range(22)) - set(seen.tolist()))
    assert len(set.union(*left_out)) > 2, "the images left out should change from epoch to epoch"
    assert [row["step"] for row in result.history] == [3, 6, 9]


def test_a_dataset_of_exact_groups_uses_every_image():
    model, data = tiny_ugvae(group_size=4), toy(16)
    sizes, indices = record_batches(model, data)
    fit(model, data, cfg(epochs=1), progress=False)
    assert sizes == [8, 8]
    assert sorted(torch.cat(indices).tolist()) == list(range(16))


def test_batch_size_must_be_a_multiple_of_the_group_size():
    match = r"batch size 6 is not a multiple of the model's group size 4.*--batch-size 4"
    with pytest.raises(TrainingError, match=match):
        fit(tiny_ugvae(group_size=4), toy(40), cfg(batch_size=6), progress=False)


def test_a_dataset_smaller_than_one_group_is_a_training_error():
    with pytest.raises(TrainingError, match="3 images, fewer than one group of 4"):
        fit(tiny_ugvae(group_size=4), toy(3), cfg(batch_size=4), progress=False)


def test_models_without_groups_still_see_every_image():
    torch.manual_seed(0)
    model, data = VAE(VAEConfig(image_shape=SHAPE, latent_dim=2, network="mlp")), toy(22)
    sizes, _ = record_batches(model, data)
    fit(model, data, cfg(epochs=1), progress=False)
    assert sizes == [8, 8, 6]


def two_domains(n_dark, n_bright):
    return DomainMixture.of([toy(n_dark, 0, 60, "dark"), toy(n_bright, 190, 256, "bright", seed=1)])


def test_training_batches_of_a_domain_mixture_hold_both_domains_in_equal_parts():
    model, data = tiny_ugvae(group_size=4), two_domains(12, 12)
    _, indices = record_batches(model, data)
    fit(model, data, cfg(epochs=2), progress=False)
    assert len(indices) == 2 * 3
    for index in indices:
        domains = data.domains[index]
        assert int((domains == 0).sum()) == int((domains == 1).sum()) == len(index) // 2
        # each group of 4 too: a pure group would let the global latent see only one domain
        assert (domains.reshape(-1, 4).sum(1) == 2).all()


def test_mixture_batches_stay_balanced_while_the_smaller_domain_lasts():
    model, data = tiny_ugvae(group_size=4), two_domains(10, 15)  # 25 images: 24 usable, 20 in pairs
    _, indices = record_batches(model, data)
    fit(model, data, cfg(epochs=1), progress=False)
    assert [len(i) for i in indices] == [8, 8, 8]
    for index in indices[:2]:
        assert int((data.domains[index] == 0).sum()) == 4
    last = data.domains[indices[2]]
    assert last[:4].sum() == 2 and (last[4:] == 1).all()  # the last pair of dark images, then bright ones only


def test_resume_mid_epoch_with_left_over_images_matches_an_uninterrupted_run(tmp_path):
    data = toy(22)
    full = tiny_ugvae()
    full_result = fit(full, data, cfg(), out_dir=tmp_path / "full", progress=False)
    part = tiny_ugvae()
    fit(part, data, cfg(), out_dir=tmp_path / "part", progress=False, max_steps=2)
    assert len(load_checkpoint(tmp_path / "part" / "checkpoint.pt")["perm"]) == 20
    resumed = tiny_ugvae()
    res = fit(resumed, data, cfg(), out_dir=tmp_path / "part", resume=True, progress=False)
    assert res.step == full_result.step == 6
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["loss"] for r in res.history] == [r["loss"] for r in full_result.history]


# --- evaluation --------------------------------------------------------------------------------


def elbo_with_seed(model, data, **kw):
    torch.manual_seed(0)
    return evaluate_elbo(model, data, **kw)


@pytest.mark.parametrize("mixture", [True, False])
def test_evaluation_leaves_out_the_images_after_the_last_whole_group(mixture):
    model, data = tiny_ugvae(group_size=4, mixture=mixture), toy(18)  # 4 groups + 2 images
    got = elbo_with_seed(model, data)
    assert all(math.isfinite(v) for v in got.values())
    assert got["elbo"] == pytest.approx(got["log_likelihood"] - got["kl"], abs=1e-9)
    # groups follow the dataset's seeded epoch order, as in training; the two images after the last whole group of
    # that order do not count, whatever they hold, while a counted image does
    order = data.epoch_order(torch.Generator().manual_seed(0))
    changed = ImageDataset(data.images.clone(), data.targets, 255, "toy")
    changed.images[order[16:]] = 255 - changed.images[order[16:]]
    assert elbo_with_seed(model, changed) == got
    changed.images[order[0]] = 255 - changed.images[order[0]]
    assert elbo_with_seed(model, changed) != got


def test_evaluation_groups_mix_domains_like_training_groups():
    from untwine.data.groups import DomainMixture

    a = ImageDataset(torch.zeros(64, *SHAPE, dtype=torch.uint8), torch.zeros(64, dtype=torch.long), 255, "a")
    b = ImageDataset(torch.full((64, *SHAPE), 255, dtype=torch.uint8), torch.zeros(64, dtype=torch.long), 255, "b")
    mix = DomainMixture.of([a, b])  # stored domain after domain
    model = tiny_ugvae(group_size=8)
    seen = []
    guide = model.guide

    def recording_guide(x, y=None):
        seen.append(x.reshape(-1, 8, *SHAPE).flatten(2).mean(-1).mean(-1))  # fraction of "b" images per group
        return guide(x, y)

    model.guide = recording_guide
    evaluate_elbo(model, mix)
    fractions = torch.cat(seen)
    assert torch.allclose(fractions, torch.full_like(fractions, 0.5))


@pytest.mark.parametrize("batch_size, expected", [(1024, [16]), (10, [8, 8]), (3, [4, 4, 4, 4]), (12, [12, 4])])
def test_evaluation_batches_hold_whole_groups(batch_size, expected):
    model, data = tiny_ugvae(group_size=4), toy(18)
    sizes = []
    guide = model.guide

    def recording(x, y=None):
        sizes.append(x.shape[0])
        return guide(x, y)

    model.guide = recording
    got = evaluate_elbo(model, data, batch_size=batch_size)
    assert sizes == expected
    assert math.isfinite(got["elbo"])


def test_evaluation_of_fewer_images_than_one_group_is_an_error():
    with pytest.raises(ValueError, match="3 images, fewer than one group of 4"):
        evaluate_elbo(tiny_ugvae(group_size=4), toy(3))


# --- run folders: registry names in checkpoints ------------------------------------------------


@pytest.mark.slow
def test_a_beta_vae_run_reloads_and_evaluates(tmp_path):
    # regression: checkpoints stored the class name "vae", so load_run of a beta-vae run failed
    out = tmp_path / "r"
    experiment.train(
        "beta-vae", data="dsprites", quick=True, subset=256, train_options={"epochs": 1}, progress=False, out=out
    )
    assert load_checkpoint(out / "checkpoint.pt")["model_name"] == "beta-vae"
    run = experiment.load_run(out, device="cpu")
    assert run.settings["model"] == "beta-vae" and run.model.name == "beta-vae"
    assert run.model.config.kl_weight == 4.0
    assert main(["eval", str(out), "--device", "cpu"]) == 0


def test_grouped_training_feeds_groups_that_share_a_label():
    from untwine.data.groups import GroupedDataset

    model, data = tiny_ugvae(group_size=4), toy(40)
    grouped = GroupedDataset(data, "label", model.group_size)
    _, indices = record_batches(model, grouped)
    fit(model, grouped, cfg(epochs=2), progress=False)
    for index in indices:
        labels = data.targets[index].reshape(-1, 4)
        assert (labels == labels[:, :1]).all(), labels


def test_a_grouped_run_folder_records_its_grouping_and_the_global_latent_measurements(tmp_path, torchvision_root):
    out = tmp_path / "run"
    argv = ["train", "ug-vae", "--data", "mnist", "--data-root", str(torchvision_root), "--quick", "--epochs", "1",
            "--group-size", "32", "--global-dim", "4", "--group-by", "ink", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["data"]["group_by"] == "ink"
    metrics = json.loads((out / "metrics.json").read_text())
    summary = metrics["global_posterior"]
    for key in ("information", "prior_cost", "swap_cost", "mu_min", "mu_max", "prior_distance_sd"):
        assert key in summary, key
    assert len(summary["mu_min"]) == 4 and summary["information"] >= 0
    assert metrics["global_posterior_grouped"]["group_by"] == "ink"
    assert set(metrics["ink_transfer"]) >= {"real_gap", "transfer"} and metrics["ink_transfer"]["real_gap"] > 0
    row = metrics["batch_classification"][0]
    assert set(row["baselines"]) == {"mean pixels", "random features", "untrained network"}
    assert row["margin"] == pytest.approx(row["test_accuracy"] - max(row["baselines"].values()))
    # one importance weight per group of 32: quick mode scores max(128 images, 2 groups) = 4 groups
    assert metrics["log_px"]["unit"] == "group" and metrics["log_px"]["units"] == 4
    assert metrics["log_px"]["images"] == 128 and metrics["log_px"]["split"] == "test"
    assert (out / "figures" / "khat.png").is_file()


def test_group_by_is_refused_for_a_model_without_groups_before_anything_is_written(tmp_path):
    with pytest.raises(experiment.ConfigError, match="--group-by ink forms groups for a global latent"):
        experiment.train("vae", data="dsprites", out=tmp_path / "vae", quick=True, progress=False, group_by="ink")
    assert not (tmp_path / "vae").exists()
