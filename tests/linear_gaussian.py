"""A VAE with linear encoder and decoder and Gaussian likelihood, whose ELBO has a closed form."""

import math

import torch
from torch import nn

from untwine.pyro_models import VAE, VAEConfig

SIGMA = 0.5  # fixed observation noise of the linear-Gaussian case


class Linear3d(nn.Module):
    """Linear map from codes (..., D) to 1x1x3 'images' (..., 1, 1, 3)."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, z):
        return self.lin(z).reshape(*z.shape[:-1], 1, 1, -1)


def linear_gaussian_vae(beta):
    torch.manual_seed(1)
    cfg = VAEConfig(image_shape=(1, 1, 3), latent_dim=2, kl_weight=beta, likelihood="gaussian", obs_scale=SIGMA)
    vae = VAE(cfg)
    vae.encoder = nn.Sequential(nn.Flatten(), nn.Linear(3, 4))
    vae.decoder = Linear3d(2, 3)
    return vae


def closed_form(vae, x, beta):
    """E_q[log p(x|z)] - beta * KL(q || N(0, I)) for the linear-Gaussian VAE, summed over the batch."""
    loc, scale = vae.encode(x)
    w, c = vae.decoder.lin.weight, vae.decoder.lin.bias
    xf = x.reshape(len(x), 3)
    mean = loc @ w.T + c
    sq = (xf - mean) ** 2 + (scale**2) @ (w**2).T
    expected_loglik = (-0.5 * math.log(2 * math.pi * SIGMA**2) - sq / (2 * SIGMA**2)).sum(-1)
    kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
    return (expected_loglik - beta * kl).sum(), kl.sum()
