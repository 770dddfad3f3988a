"""The auxiliary update of a model with auxiliary parameters: a second optimiser over those parameters only, one step
on ``auxiliary_loss`` after every ELBO step, checkpointed and resumed bit for bit."""

import sys
from pathlib import Path

import pytest
import torch

from untwine.inference.elbo import SyncFreeTrace_ELBO
from untwine.inference.train import (
    Auxiliary,
    AuxiliaryObjective,
    TrainConfig,
    TrainingError,
    elbo_module,
    fit,
    load_checkpoint,
    make_optimizer,
    train_step,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_model import ProbedVAE, build, toy_data  # noqa: E402

PROBE = {"probe.weight", "probe.bias"}


def cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 16, "lr": 1e-2, "seed": 0, "device": "cpu", **kw})


def one_step(with_auxiliary: bool):
    """A fresh probed model after one :func:`train_step` on the first 16 toy images, with or without the auxiliary
    update, from the same weights and the same sampling noise."""
    model = build(ProbedVAE)
    x, y = toy_data().batch(torch.arange(16))
    auxiliary = None
    if with_auxiliary:
        groups = model.auxiliary_param_groups(1e-2)
        auxiliary = Auxiliary(AuxiliaryObjective(model, groups), torch.optim.Adam(groups, lr=1e-2))
    torch.manual_seed(1)
    value = train_step(elbo_module(model, SyncFreeTrace_ELBO()), make_optimizer(model, 1e-2), x, y, auxiliary)
    return model, value


def test_the_elbo_optimiser_holds_every_parameter_but_the_auxiliary_ones():
    model = build(ProbedVAE)
    held = [p for group in make_optimizer(model, 1e-3).param_groups for p in group["params"]]
    probe = list(model.probe.parameters())
    assert {id(p) for p in held} == {id(p) for p in model.parameters()} - {id(p) for p in probe}


def test_the_auxiliary_step_moves_the_auxiliary_parameters_and_nothing_else():
    start = build(ProbedVAE).state_dict()
    plain, plain_value = one_step(with_auxiliary=False)
    probed, probed_value = one_step(with_auxiliary=True)
    for name, value in probed.state_dict().items():
        if name in PROBE:
            assert torch.equal(plain.state_dict()[name], start[name]), f"the ELBO step moved {name}"
            assert not torch.equal(value, start[name]), f"the auxiliary step left {name} alone"
        else:
            assert not torch.equal(value, start[name]), f"the ELBO step left {name} alone"
            assert torch.equal(value, plain.state_dict()[name]), f"the auxiliary step moved {name}"
    # the probe reads the code undetached: its loss did reach the encoder, whose optimiser did not apply it
    assert not torch.equal(probed.encoder.weight.grad, plain.encoder.weight.grad)
    assert torch.equal(probed_value, plain_value) and not probed_value.requires_grad


def test_fit_trains_the_probe_and_checkpoints_its_optimiser(tmp_path):
    data = toy_data()
    model = build(ProbedVAE)
    x, _ = data.batch(torch.arange(len(data)))
    with torch.no_grad():
        before = float(model.auxiliary_loss(x))
    fit(model, data, cfg(epochs=6), out_dir=tmp_path, progress=False)
    with torch.no_grad():
        assert float(model.auxiliary_loss(x)) < before / 2
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert len(state["auxiliary_optimizer"]["state"]) == 2, "Adam moments of the probe's weight and bias"
    assert len(state["optimizer"]["state"]) == 4, "Adam moments of the encoder's and decoder's weights and biases"
    assert state["model_name"] == "probed-vae" and state["model_config"]["latent_dim"] == 2


@pytest.mark.parametrize("interrupt_at", [3, 4, 6])  # mid-epoch, at the epoch boundary, in the second epoch
def test_an_interrupted_auxiliary_run_resumes_to_the_uninterrupted_run(tmp_path, interrupt_at):
    data = toy_data()
    full = build(ProbedVAE)
    full_result = fit(full, data, cfg(), out_dir=tmp_path / "full", progress=False)

    fit(build(ProbedVAE), data, cfg(), out_dir=tmp_path / "part", progress=False, max_steps=interrupt_at)
    resumed = build(ProbedVAE, seed=1)  # other weights, another probe: resume must overwrite all of them
    res = fit(resumed, data, cfg(), out_dir=tmp_path / "part", resume=True, progress=False)

    assert res.step == full_result.step == 8
    for name, value in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    assert [r["loss"] for r in res.history] == [r["loss"] for r in full_result.history]
    a, b = (load_checkpoint(tmp_path / run / "checkpoint.pt")["auxiliary_optimizer"] for run in ("full", "part"))
    for key, moments in a["state"].items():
        assert all(torch.equal(moments[m], b["state"][key][m]) for m in moments), key


class ProbelessVAE(ProbedVAE):
    """The same name and config as :class:`ProbedVAE`, without auxiliary parameters."""

    def auxiliary_param_groups(self, lr):
        return []


def test_resume_needs_an_auxiliary_optimiser_state_exactly_when_the_model_has_auxiliary_parameters(tmp_path):
    data = toy_data()
    fit(build(ProbedVAE), data, cfg(epochs=1), out_dir=tmp_path / "probed", progress=False)
    with pytest.raises(TrainingError, match="holds the state of an auxiliary optimiser, which this model lacks"):
        fit(build(ProbelessVAE), data, cfg(), out_dir=tmp_path / "probed", resume=True, progress=False)
    fit(build(ProbelessVAE), data, cfg(epochs=1), out_dir=tmp_path / "plain", progress=False)
    with pytest.raises(TrainingError, match="lacks the state of an auxiliary optimiser, which this model has"):
        fit(build(ProbedVAE), data, cfg(), out_dir=tmp_path / "plain", resume=True, progress=False)
