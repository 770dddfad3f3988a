import csv
import math

import pytest
import torch
from pyro.infer import Trace_ELBO

from untwine.data import ImageDataset
from untwine.inference.train import (
    NonFiniteLossError,
    TrainConfig,
    TrainingError,
    fit,
    load_checkpoint,
)
from untwine.metrics import evaluate_elbo
from untwine.pyro_models import VAE, VAEConfig


def small_vae(shape=(1, 28, 28), latent_dim=4):
    torch.manual_seed(0)
    return VAE(VAEConfig(image_shape=shape, latent_dim=latent_dim, network="mlp"))


@pytest.fixture(scope="module")
def mnist_slice(mnist_train):
    return mnist_train.random_subset(600, seed=1)


def cfg(**kw):
    base = dict(epochs=2, batch_size=100, lr=1e-3, seed=3, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_training_on_real_mnist_raises_the_elbo(mnist_slice):
    model = small_vae()
    before = evaluate_elbo(model, mnist_slice)["elbo"]
    result = fit(model, mnist_slice, cfg(epochs=4), progress=False)
    after = evaluate_elbo(model, mnist_slice)["elbo"]
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] - 50, losses
    assert after > before + 200, (before, after)
    assert result.step == 4 * 6


def test_training_updates_the_module_parameters(mnist_slice):
    model = small_vae()
    start = [p.detach().clone() for p in model.parameters()]
    fit(model, mnist_slice, cfg(epochs=1), progress=False)
    assert all(not torch.equal(a, b) for a, b in zip(start, model.parameters()))


@pytest.mark.parametrize("interrupt_at", [3, 6, 8])  # mid-epoch, at an epoch boundary, in the second epoch
def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(mnist_slice, tmp_path, interrupt_at):
    full = small_vae()
    full_result = fit(full, mnist_slice, cfg(), out_dir=tmp_path / "full", progress=False)

    part = small_vae()
    fit(part, mnist_slice, cfg(), out_dir=tmp_path / "part", progress=False, max_steps=interrupt_at)
    resumed = small_vae()  # a fresh process would start from new weights; resume must overwrite them
    torch.nn.init.zeros_(resumed.encoder.net[1].weight)
    res = fit(resumed, mnist_slice, cfg(), out_dir=tmp_path / "part", resume=True, progress=False)

    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert res.step == full_result.step == 12
    assert [r["loss"] for r in res.history] == [r["loss"] for r in full_result.history]


def test_checkpoint_holds_model_optimizer_config_and_rng(mnist_slice, tmp_path):
    model = small_vae()
    fit(model, mnist_slice, cfg(epochs=1), out_dir=tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["model_name"] == "vae" and state["model_config"]["latent_dim"] == 4
    assert state["train_config"]["batch_size"] == 100
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python", "data"}
    assert state["optimizer"]["state"], "optimizer moments must be saved for exact resume"
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1] and float(rows[0]["images_per_s"]) > 0


class FailingELBO(Trace_ELBO):
    """Trace_ELBO whose loss is NaN from step ``bad_step`` on (counting from 1)."""

    def __init__(self, bad_step):
        super().__init__()
        self.bad_step, self.calls = bad_step, 0

    def differentiable_loss(self, model, guide, *args, **kwargs):
        self.calls += 1
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        return loss * math.nan if self.calls >= self.bad_step else loss


def test_nan_guard_names_the_step_and_keeps_the_last_good_checkpoint(mnist_slice, tmp_path):
    model = small_vae()
    # 6 steps per epoch: epoch 1 checkpoints cleanly, step 9 (inside epoch 2) fails
    with pytest.raises(NonFiniteLossError, match="step 9") as info:
        fit(model, mnist_slice, cfg(epochs=3), loss=FailingELBO(9), out_dir=tmp_path, progress=False)
    assert info.value.step == 9
    assert str(tmp_path / "checkpoint.pt") in str(info.value)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 6 and state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    # and the run can be resumed from it with a healthy loss
    res = fit(small_vae(), mnist_slice, cfg(epochs=2), out_dir=tmp_path, resume=True, progress=False)
    assert res.step == 12 and math.isfinite(res.history[-1]["loss"])


def test_nan_images_stop_training_at_the_first_step(tmp_path):
    images = torch.rand(20, 1, 28, 28)
    images[5] = math.nan
    data = ImageDataset(images, torch.zeros(20, dtype=torch.long), 1.0, "nan-images")
    with pytest.raises(NonFiniteLossError, match="step 1;.*no checkpoint"):
        fit(small_vae(), data, cfg(batch_size=20), out_dir=tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_resume_rejects_corrupt_foreign_and_mismatched_checkpoints(mnist_slice, tmp_path):
    fit(small_vae(), mnist_slice, cfg(epochs=1), out_dir=tmp_path, progress=False)
    with pytest.raises(TrainingError, match="different model config"):
        fit(small_vae(latent_dim=5), mnist_slice, cfg(), out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(TrainingError, match="other data"):
        fit(small_vae(), mnist_slice.random_subset(300), cfg(), out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(TrainingError, match="batch size"):
        fit(small_vae(), mnist_slice, cfg(batch_size=50), out_dir=tmp_path, resume=True, progress=False)
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(TrainingError, match="unreadable"):
        fit(small_vae(), mnist_slice, cfg(), out_dir=tmp_path, resume=True, progress=False)
    torch.save({"weights": torch.zeros(1)}, ckpt)
    with pytest.raises(TrainingError, match="not an untwine checkpoint"):
        load_checkpoint(ckpt)
    with pytest.raises(TrainingError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_wrong_image_shape_for_the_network_is_a_clear_error(mnist_slice):
    with pytest.raises(TrainingError, match=r"expects images of shape \(1, 64, 64\).*\(1, 28, 28\)"):
        fit(small_vae(shape=(1, 64, 64)), mnist_slice, cfg(), progress=False)


@pytest.mark.parametrize(
    "kw,match",
    [({"batch_size": 0}, "batch size"), ({"lr": -1.0}, "learning rate"), ({"lr": math.nan}, "learning rate"),
     ({"epochs": 0}, "epochs"), ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*32\)"),
     ({"seed": 2**32}, "seed"), ({"seed": 1.5}, "seed")],
)  # fmt: skip
def test_train_config_rejects_out_of_range_values(kw, match):
    with pytest.raises(TrainingError, match=match):
        cfg(**kw)


def test_cuda_request_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(TrainingError, match="no CUDA GPU"):
        fit(small_vae(), ImageDataset(torch.rand(2, 1, 28, 28), torch.zeros(2), 1, "t"), cfg(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_runs_on_cuda(mnist_slice):
    model = small_vae()
    res = fit(model, mnist_slice, cfg(epochs=1, device="cuda"), progress=False)
    assert next(model.parameters()).is_cuda and math.isfinite(res.history[-1]["loss"])
