"""The model contract as the training loop reads it: the defaults a bare ``nn.Module`` gets, the history columns of
``epoch_summary`` and of user callbacks, and checkpoints of the first format."""

import csv
import sys
from pathlib import Path

import pytest
import torch

from untwine.inference.elbo import SyncFreeTrace_ELBO
from untwine.inference.train import (
    CHECKPOINT_FORMAT,
    ModelDefaults,
    TrainConfig,
    TrainingError,
    contract,
    fit,
    load_checkpoint,
    save_checkpoint,
)
from untwine.pyro_models.base import Model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_model import BarePair, ProbeConfig, ProbedVAE, build, toy_data  # noqa: E402


def cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 16, "lr": 1e-2, "seed": 0, "device": "cpu", **kw})


def test_a_model_is_its_own_contract_and_a_bare_module_gets_the_defaults_of_model():
    model = build(ProbedVAE)
    assert contract(model) is model
    bare = build(BarePair)
    hooks = contract(bare)
    assert isinstance(hooks, ModelDefaults) and contract(hooks) is hooks
    assert hooks.name == "BarePair" and hooks.config is bare.config
    assert [p for g in hooks.param_groups(1e-3) for p in g["params"]] == list(bare.parameters())
    # every other hook answers as the base class's default does
    plain = Model(ProbeConfig())
    assert type(hooks.default_loss(64)) is type(plain.default_loss(64)) is SyncFreeTrace_ELBO
    assert hooks.group_size == plain.group_size == 1
    assert hooks.auxiliary_param_groups(1e-3) == plain.auxiliary_param_groups(1e-3) == []
    assert hooks.epoch_summary() == plain.epoch_summary() == {}
    labels = torch.arange(3)
    assert hooks.check_labels(labels) is labels and plain.check_labels(labels) is labels
    for name in ("latent_site", "default_lr", "find_unused_parameters"):
        assert getattr(hooks, name) == getattr(Model, name), name


def test_a_bare_module_trains_and_resumes_exactly(tmp_path):
    data = toy_data()
    full = build(BarePair)
    full_result = fit(full, data, cfg(), out_dir=tmp_path / "full", progress=False)
    fit(build(BarePair), data, cfg(), out_dir=tmp_path / "part", progress=False, max_steps=5)
    resumed = build(BarePair, seed=1)
    res = fit(resumed, data, cfg(), out_dir=tmp_path / "part", resume=True, progress=False)
    for name, value in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    assert [r["loss"] for r in res.history] == [r["loss"] for r in full_result.history]
    state = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    assert state["model_name"] == "BarePair" and state["model_config"]["latent_dim"] == 2


class SummarisedVAE(ProbedVAE):
    def epoch_summary(self):
        return {"probe_bias": float(self.probe.bias.detach())}


def test_epoch_summary_and_callbacks_add_history_columns(tmp_path):
    seen = []

    def callback(model, epoch):
        seen.append((epoch, model.training))
        return {"double_epoch": 2.0 * epoch}

    model = build(SummarisedVAE)
    result = fit(model, toy_data(), cfg(), out_dir=tmp_path, callbacks=[callback], progress=False)
    assert seen == [(1, False), (2, False)], "callbacks run once per epoch, in eval mode"
    assert [row["double_epoch"] for row in result.history] == [2.0, 4.0]
    assert result.history[-1]["probe_bias"] == float(model.probe.bias.detach())
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "step", "loss", "images_per_s", "seconds", "probe_bias", "double_epoch"]


def test_a_checkpoint_of_the_first_format_still_resumes(tmp_path):
    """Checkpoints written before the auxiliary optimiser existed lack its key; they load and resume as before."""
    data = toy_data()
    full = build(BarePair)
    fit(full, data, cfg(), out_dir=tmp_path / "full", progress=False)
    fit(build(BarePair), data, cfg(), out_dir=tmp_path / "part", progress=False, max_steps=3)
    path = tmp_path / "part" / "checkpoint.pt"
    state = load_checkpoint(path)
    assert state.pop("auxiliary_optimizer") is None and state["format"] == CHECKPOINT_FORMAT
    save_checkpoint(path, state)
    resumed = build(BarePair, seed=1)
    fit(resumed, data, cfg(), out_dir=tmp_path / "part", resume=True, progress=False)
    for name, value in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_a_checkpoint_missing_a_field_is_a_clear_error(tmp_path):
    fit(build(BarePair), toy_data(), cfg(epochs=1), out_dir=tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    del state["optimizer"]
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(TrainingError, match="lacks optimizer; it may be corrupt"):
        fit(build(BarePair), toy_data(), cfg(), out_dir=tmp_path, resume=True, progress=False)


def test_a_loss_that_is_not_a_pyro_elbo_is_a_clear_error():
    with pytest.raises(TrainingError, match="loss must be a Pyro ELBO"):
        fit(build(BarePair), toy_data(), cfg(), loss=object(), progress=False)
