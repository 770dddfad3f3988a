"""Toy pairs for the tests of the training loop's hooks: a :class:`~untwine.pyro_models.base.Model` with an auxiliary
linear probe, and the same pair as a bare ``nn.Module``.

Imported by test_auxiliary.py and by distributed_worker.py (run by torchrun, so not a test module itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from untwine.data.base import ImageDataset
from untwine.pyro_models.base import ImageConfig, Model, positive_scale

SHAPE = (1, 4, 4)


@dataclass
class ProbeConfig(ImageConfig):
    image_shape: tuple[int, int, int] = SHAPE
    latent_dim: int = 2


class _Pair(nn.Module):
    """A linear Gaussian VAE on 4x4 images; ``guide_noise=False`` makes the code the posterior mean (a ``Delta``
    guide), so a step has no randomness."""

    guide_noise = True

    def __init__(self, config: ProbeConfig | None = None):
        super().__init__()
        self.config = config if config is not None else ProbeConfig()
        pixels, d = self.config.image_shape[-1] * self.config.image_shape[-2], self.config.latent_dim
        self.encoder = nn.Linear(pixels, 2 * d)
        self.decoder = nn.Linear(d, pixels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.encoder(x.flatten(1)).chunk(2, -1)
        return loc, positive_scale(raw)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("probe_pair", self)
        d = self.config.latent_dim
        with pyro.plate("data", len(x)):
            prior = dist.Normal(x.new_zeros(d), x.new_ones(d)).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x.flatten(1))

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("probe_pair", self)
        loc, scale = self.encode(x)
        with pyro.plate("data", len(x)):
            posterior = dist.Normal(loc, scale) if self.guide_noise else dist.Delta(loc)
            pyro.sample("z", posterior.to_event(1))


class BarePair(_Pair):
    """The pair as a plain ``nn.Module`` (no :class:`Model` hooks)."""


class ProbedVAE(_Pair, Model):
    """The pair as a :class:`Model` with an auxiliary probe: a linear map from the code to the image's mean intensity,
    trained by the auxiliary optimiser on the squared error. The probe reads the code without detaching it, so the
    auxiliary loss also sends gradients into the encoder, which the ELBO optimiser must never apply."""

    name = "probed-vae"
    Config = ProbeConfig

    def __init__(self, config: ProbeConfig | None = None):
        super().__init__(config)
        self.probe = nn.Linear(self.config.latent_dim, 1)

    def auxiliary_param_groups(self, lr: float) -> list[dict]:
        return [{"params": list(self.probe.parameters())}]

    def auxiliary_loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        code = self.encode(x)[0]
        return (self.probe(code).squeeze(-1) - x.mean((1, 2, 3))).square().mean()


class DeterministicProbedVAE(ProbedVAE):
    """:class:`ProbedVAE` with a ``Delta`` guide: data-parallel runs match one process up to rounding."""

    name = "probed-vae-delta"
    guide_noise = False


def toy_data(n: int = 64, seed: int = 0) -> ImageDataset:
    """``n`` random 4x4 images whose mean intensities differ (something for the probe to learn)."""
    g = torch.Generator().manual_seed(seed)
    level = torch.randint(0, 256, (n, 1, 1, 1), generator=g)
    noise = torch.randint(-40, 41, (n, *SHAPE), generator=g)
    images = (level + noise).clamp(0, 255).to(torch.uint8)
    return ImageDataset(images, torch.zeros(n, dtype=torch.long), 255, "toy")


def build(cls: type, seed: int = 0) -> nn.Module:
    """A fresh pair with weights seeded by ``seed``."""
    torch.manual_seed(seed)
    return cls()
