"""Encoder and decoder families used by the papers, chosen from the image shape by default.

Every encoder maps images ``(B, C, H, W)`` to ``(B, out_dim)`` raw features (a model splits them into
posterior parameters); every decoder maps codes ``(..., in_dim)`` to ``(..., C, H, W)`` (logits or means),
so vectorised ELBO particles (an extra leading dimension) pass through unchanged.

================  ============  ===============================================================
name              image shapes  source
================  ============  ===============================================================
``chen-mlp``      any           Chen et al. (2018) dSprites MLP: 1200-1200 ReLU encoder, 3x1200 tanh
                                decoder (also the ISA-VAE paper, appendix A.4)
``chen-conv``     64x64         Chen et al. (2018) conv net: 4x4 stride-2 convs 32-32-64-64, 512
                                bottleneck, batch norm; transposed mirror for the decoder
``burgess-conv``  64x64         Burgess et al. (2018): four 4x4 stride-2 convs of 32 channels,
                                two dense 256 layers; mirrored decoder
``mlp``           any           small MLP (512-256 ReLU) for 28x28 and 32x32 images
``conv``          28x28, 32x32  small conv net: 4x4 stride-2 convs 32-64, dense 256
``mlp-256``       any           one hidden layer of 256 ReLU units each way (UG-VAE's MNIST setting)
================  ============  ===============================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

ImageShape = tuple[int, int, int]


class NetworkError(ValueError):
    """A network was asked for images it cannot handle."""


def _flat(shape: ImageShape) -> int:
    return math.prod(shape)


def _dense(dims: tuple[int, ...], act: type[nn.Module], out_dim: int) -> list[nn.Module]:
    """Linear + activation for each consecutive pair of ``dims``, then a linear layer to ``out_dim``."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), act()]
    return layers + [nn.Linear(dims[-1], out_dim)]


class MLPEncoder(nn.Module):
    """Flatten, then dense layers with ReLU; the last layer is linear."""

    def __init__(self, image_shape: ImageShape, out_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), *_dense((_flat(image_shape),) + hidden, nn.ReLU, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """Dense layers with the given activation, reshaped to the image."""

    def __init__(self, image_shape: ImageShape, in_dim: int, hidden: tuple[int, ...], act: type[nn.Module]):
        super().__init__()
        self.net = nn.Sequential(*_dense((in_dim,) + hidden, act, _flat(image_shape)), nn.Unflatten(-1, image_shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ChenConvEncoder(nn.Module):
    """Chen et al. (2018) conv encoder for 64x64 images (32x32x32 -> ... -> 4x4x64 -> 1x1x512)."""

    def __init__(self, image_shape: ImageShape, out_dim: int):
        super().__init__()
        c = image_shape[0]
        chans = (c, 32, 32, 64, 64)
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU()]
        layers += [nn.Conv2d(64, 512, 4), nn.BatchNorm2d(512), nn.ReLU(), nn.Conv2d(512, out_dim, 1), nn.Flatten()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ConvDecoder(nn.Module):
    """Runs ``self.net`` on codes flattened to ``(N, D)`` and restores the leading dimensions."""

    net: nn.Module

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z.reshape(-1, z.shape[-1]))
        return out.reshape(*z.shape[:-1], *out.shape[1:])


class ChenConvDecoder(_ConvDecoder):
    """Chen et al. (2018) transposed-conv decoder to 64x64 images."""

    def __init__(self, image_shape: ImageShape, in_dim: int):
        super().__init__()
        c = image_shape[0]
        self.net = nn.Sequential(
            nn.Unflatten(1, (in_dim, 1, 1)),
            nn.ConvTranspose2d(in_dim, 512, 1), nn.BatchNorm2d(512), nn.ReLU(),
            nn.ConvTranspose2d(512, 64, 4), nn.BatchNorm2d(64), nn.ReLU(),
            nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.ConvTranspose2d(32, c, 4, 2, 1),
        )  # fmt: skip


class StridedConvEncoder(nn.Module):
    """4x4 stride-2 convolutions with ReLU, then dense layers (Burgess et al. 2018 and the small conv net)."""

    def __init__(self, image_shape: ImageShape, out_dim: int, channels: tuple[int, ...], hidden: tuple[int, ...]):
        super().__init__()
        c, h, w = image_shape
        chans = (c,) + channels
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.ReLU()]
        down = 2 ** len(channels)
        dims = (channels[-1] * (h // down) * (w // down),) + hidden
        self.net = nn.Sequential(*layers, nn.Flatten(), *_dense(dims, nn.ReLU, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class StridedConvDecoder(_ConvDecoder):
    """Mirror of :class:`StridedConvEncoder` with transposed convolutions."""

    def __init__(self, image_shape: ImageShape, in_dim: int, channels: tuple[int, ...], hidden: tuple[int, ...]):
        super().__init__()
        c, h, w = image_shape
        down = 2 ** len(channels)
        start = (channels[-1], h // down, w // down)
        dims = (in_dim,) + hidden + (_flat(start),)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Unflatten(1, start))
        chans = channels[::-1] + (c,)
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            layers.append(nn.ConvTranspose2d(a, b, 4, 2, 1))
            if i < len(chans) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)


def _needs(shape: ImageShape, sizes: tuple[int, ...], name: str) -> None:
    if shape[1:] not in [(s, s) for s in sizes]:
        allowed = ", ".join(f"{s}x{s}" for s in sizes)
        raise NetworkError(
            f"network {name!r} takes {allowed} images, got {shape[1]}x{shape[2]}; "
            f"choose another network (see untwine list) or resize the data"
        )


def _chen_mlp(shape: ImageShape, latent: int, out: int) -> tuple[nn.Module, nn.Module]:
    return MLPEncoder(shape, out, (1200, 1200)), MLPDecoder(shape, latent, (1200, 1200, 1200), nn.Tanh)


def _chen_conv(shape: ImageShape, latent: int, out: int) -> tuple[nn.Module, nn.Module]:
    _needs(shape, (64,), "chen-conv")
    return ChenConvEncoder(shape, out), ChenConvDecoder(shape, latent)


def _burgess(shape: ImageShape, latent: int, out: int) -> tuple[nn.Module, nn.Module]:
    _needs(shape, (64,), "burgess-conv")
    ch, hid = (32, 32, 32, 32), (256, 256)
    return StridedConvEncoder(shape, out, ch, hid), StridedConvDecoder(shape, latent, ch, hid)


def _mlp(shape: ImageShape, latent: int, out: int) -> tuple[nn.Module, nn.Module]:
    return MLPEncoder(shape, out, (512, 256)), MLPDecoder(shape, latent, (256, 512), nn.ReLU)


def _mlp256(shape: ImageShape, latent: int, out: int) -> tuple[nn.Module, nn.Module]:
    return MLPEncoder(shape, out, (256,)), MLPDecoder(shape, latent, (256,), nn.ReLU)


def _conv(shape: ImageShape, latent: int, out: int) -> tuple[nn.Module, nn.Module]:
    _needs(shape, (28, 32), "conv")
    ch, hid = (32, 64), (256,)
    return StridedConvEncoder(shape, out, ch, hid), StridedConvDecoder(shape, latent, ch, hid)


NETWORKS: dict[str, Callable[[ImageShape, int, int], tuple[nn.Module, nn.Module]]] = {
    "chen-mlp": _chen_mlp,
    "chen-conv": _chen_conv,
    "burgess-conv": _burgess,
    "mlp": _mlp,
    "mlp-256": _mlp256,
    "conv": _conv,
}


def default_network(image_shape: ImageShape) -> str:
    """The papers' choice for an image shape: Chen's MLP for 64x64 (dSprites), the small MLP otherwise."""
    return "chen-mlp" if tuple(image_shape[1:]) == (64, 64) else "mlp"


def labelled_network(image_shape: ImageShape) -> str:
    """N-VAE's (and its CVAE baseline's) family: the small MLP for 28x28 digits, a conv net for 32/64-pixel faces."""
    side = tuple(image_shape[1:])
    return "mlp" if side == (28, 28) else "burgess-conv" if side == (64, 64) else "conv"


def build_networks(
    name: str, image_shape: ImageShape, latent_dim: int, encoder_out: int | None = None
) -> tuple[nn.Module, nn.Module]:
    """Encoder and decoder of family ``name`` (``"auto"`` picks :func:`default_network`).

    :param image_shape: ``(C, H, W)`` of the data.
    :param latent_dim: width of the decoder's input.
    :param encoder_out: width of the encoder's output (default ``2 * latent_dim``: location and scale).
    """
    if len(image_shape) != 3 or min(image_shape) <= 0:
        raise NetworkError(f"image shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}")
    image_shape = tuple(int(s) for s in image_shape)
    if name == "auto":
        name = default_network(image_shape)
    if name not in NETWORKS:
        raise NetworkError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    return NETWORKS[name](image_shape, latent_dim, 2 * latent_dim if encoder_out is None else encoder_out)


class ClusterHeads(nn.Module):
    """``K`` independent two-layer MLPs evaluated in one batched call (UG-VAE's per-cluster prior networks, eq. 3).

    Weights are stacked ``(K, in, out)`` and applied with ``einsum``, so the ``K`` heads cost one kernel per layer
    instead of a Python loop; each head is initialised like an ``nn.Linear`` of its own.

    :returns: ``(..., K, out_dim)`` for inputs ``(..., in_dim)``.
    """

    def __init__(self, num_heads: int, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_heads, in_dim, hidden))
        self.b1 = nn.Parameter(torch.empty(num_heads, hidden))
        self.w2 = nn.Parameter(torch.empty(num_heads, hidden, out_dim))
        self.b2 = nn.Parameter(torch.empty(num_heads, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh weights, each head as ``nn.Linear`` initialises its own (what an untrained copy of a model calls)."""
        for w, b in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(torch.einsum("...i,kio->...ko", h, self.w1) + self.b1)
        return torch.einsum("...ki,kio->...ko", hidden, self.w2) + self.b2
