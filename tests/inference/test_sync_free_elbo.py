"""The sync-free ELBOs compute Pyro's loss and gradient, and never read a tensor on the host in a step; the
enumeration ELBO is Pyro's own."""

from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from untwine.inference.elbo import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO
from untwine.inference.tc_elbo import TCDecomposedELBO
from untwine.pyro_models import build_model


class Gaussian(nn.Module):
    """A small VAE-like pair: Normal latent (scaled by 2 in model and guide, as a beta-VAE), Normal likelihood."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(5, 6)
        self.dec = nn.Linear(3, 5)

    def model(self, x):
        pyro.module("gaussian", self)
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=2.0):
                z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("gaussian", self)
        loc, raw = self.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=2.0):
                pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 0.1).to_event(1))


class HeavyTailed(Gaussian):
    """A Student-t prior: no closed-form KL from the Normal guide, so the mean-field ELBO falls back to sampling."""

    def model(self, x):
        pyro.module("gaussian", self)
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=2.0):
                z = pyro.sample("z", dist.StudentT(3.0, torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 0.5).to_event(1), obs=x)


class Switch(nn.Module):
    """A Bernoulli latent sampled (not enumerated) in the guide: its gradient needs the score-function term."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3, 3)
        self.dec = nn.Linear(2, 3)

    def model(self, x):
        pyro.module("switch", self)
        with pyro.plate("data", x.shape[0]):
            s = pyro.sample("s", dist.Bernoulli(0.3))
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(torch.cat([z, s[:, None]], -1)), 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("switch", self)
        h = self.enc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("s", dist.Bernoulli(logits=h[:, 0]))
            pyro.sample("z", dist.Normal(h[:, 1:2], nn.functional.softplus(h[:, 2:]) + 0.1).to_event(1))


def loss_and_grads(elbo, module: nn.Module, x: torch.Tensor, seed: int = 0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    module.zero_grad(set_to_none=True)
    loss = elbo.differentiable_loss(module.model, module.guide, x)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in module.parameters()]


CASES = [
    ("gaussian", Gaussian, (8, 5), Trace_ELBO, SyncFreeTrace_ELBO, {}),
    ("gaussian-mean-field", Gaussian, (8, 5), TraceMeanField_ELBO, SyncFreeTraceMeanField_ELBO, {}),
    ("mean-field-sampled-kl", HeavyTailed, (8, 5), TraceMeanField_ELBO, SyncFreeTraceMeanField_ELBO, {}),
    ("score-function", Switch, (8, 3), Trace_ELBO, SyncFreeTrace_ELBO, {}),
    ("two-particles", Switch, (8, 3), Trace_ELBO, SyncFreeTrace_ELBO, {"num_particles": 2}),
    ("vectorized", Gaussian, (8, 5), Trace_ELBO, SyncFreeTrace_ELBO, {"num_particles": 3, "vectorize_particles": True,
                                                                       "max_plate_nesting": 1}),
]  # fmt: skip
#: enumeration is Pyro's TraceEnum_ELBO itself (it reads values on the host), so every case here is untwine's
SYNC_FREE_CASES = CASES


@pytest.mark.parametrize("name, cls, shape, pyro_elbo, ours, kwargs", CASES, ids=[c[0] for c in CASES])
def test_same_loss_and_gradients_as_pyro(name, cls, shape, pyro_elbo, ours, kwargs):
    torch.manual_seed(1)
    module = cls()
    x = torch.randn(shape)
    expected, expected_grads = loss_and_grads(pyro_elbo(**kwargs), module, x)
    got, grads = loss_and_grads(ours(**kwargs), module, x)
    assert torch.allclose(got, torch.as_tensor(expected, dtype=got.dtype), rtol=1e-6, atol=1e-5)
    for g, e in zip(grads, expected_grads):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-6)


def test_score_function_gradient_is_not_the_pathwise_one():
    # Guards the test above: with the score-function term left out, the encoder's gradient would differ.
    torch.manual_seed(3)
    module = Switch()
    x = torch.randn(8, 3)
    _, grads = loss_and_grads(SyncFreeTrace_ELBO(), module, x)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(module.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(module.model, trace=guide_trace)).get_trace(x)
    module.zero_grad(set_to_none=True)
    (guide_trace.log_prob_sum() - model_trace.log_prob_sum()).backward()
    assert not torch.allclose(grads[0], module.enc.weight.grad)


@contextlib.contextmanager
def no_host_reads():
    """Make every way of reading a tensor's value on the host raise (a sync on a GPU)."""
    names = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy", "cpu")

    def forbidden(name):
        def raise_(*args, **kwargs):
            raise AssertionError(f"Tensor.{name} was called inside a training step")

        return raise_

    saved = {n: getattr(torch.Tensor, n) for n in names}
    try:
        for n in names:
            setattr(torch.Tensor, n, forbidden(n))
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


def step_without_host_reads(elbo, model, guide, *args):
    validation = pyro.infer.util.is_validation_enabled()
    pyro.enable_validation(False)  # as in fit
    try:
        with no_host_reads():
            loss = elbo.differentiable_loss(model, guide, *args)
            loss.backward()
    finally:
        pyro.enable_validation(validation)
    return loss


@pytest.mark.parametrize("elbo", [Trace_ELBO(), TraceMeanField_ELBO()], ids=["trace", "mean-field"])
def test_the_patch_catches_pyros_own_elbo(elbo):
    module = Gaussian()
    with pytest.raises(AssertionError, match="inside a training step"):
        step_without_host_reads(elbo, module.model, module.guide, torch.randn(4, 5))


@pytest.mark.parametrize(
    "name, cls, shape, pyro_elbo, ours, kwargs", SYNC_FREE_CASES, ids=[c[0] for c in SYNC_FREE_CASES]
)
def test_no_host_reads_in_a_step(name, cls, shape, pyro_elbo, ours, kwargs):
    module = cls()
    pyro.clear_param_store()
    loss = step_without_host_reads(ours(**kwargs), module.model, module.guide, torch.randn(shape))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("cls, shape", [(Gaussian, (8, 5)), (Switch, (8, 3))], ids=["gaussian", "score-function"])
def test_the_tc_objective_steps_without_host_reads(cls, shape):
    module = cls()
    pyro.clear_param_store()
    elbo = TCDecomposedELBO(100, mi_weight=2.0, tc_weight=6.0, dw_weight=0.5)
    loss = step_without_host_reads(elbo, module.model, module.guide, torch.randn(shape))
    assert torch.isfinite(loss)


# ug-vae's default loss enumerates its cluster with Pyro's TraceEnum_ELBO, which reads values on the host
@pytest.mark.parametrize("name", ["vae", "beta-tcvae", "isa-vae", "ml-vae"])
def test_default_losses_of_the_models_step_without_host_reads(name):
    shape = (1, 28, 28)
    model = build_model(
        name, image_shape=shape, network="mlp-256", **({"group_size": 4} if "ug" in name or "ml" in name else {})
    )
    x = (torch.rand(8, *shape) < 0.3).float()
    pyro.clear_param_store()
    loss = step_without_host_reads(model.default_loss(100), model.model, model.guide, x)
    assert torch.isfinite(loss)


SVI_CASES = [c for c in CASES if c[0] in ("gaussian", "gaussian-mean-field", "score-function", "enumerated")]


@pytest.mark.parametrize("name, cls, shape, pyro_elbo, ours, kwargs", SVI_CASES, ids=[c[0] for c in SVI_CASES])
def test_pyro_svi_takes_the_same_steps(name, cls, shape, pyro_elbo, ours, kwargs):
    x = torch.randn(shape)
    losses = []
    for elbo in (pyro_elbo(**kwargs), ours(**kwargs)):
        torch.manual_seed(4)
        module = cls()
        pyro.clear_param_store()
        pyro.set_rng_seed(5)
        svi = pyro.infer.SVI(module.model, module.guide, pyro.optim.Adam({"lr": 0.01}), elbo)
        losses.append([svi.step(x) for _ in range(3)])
    assert all(isinstance(v, float) for v in losses[1])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
