"""Run by ``torchrun --nproc_per_node 2`` from test_distributed.py: data-parallel fits on CPU with gloo.

Writes, per rank, the parameters and histories of an uninterrupted run and of a run interrupted after four steps
and resumed from its checkpoint.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from untwine.data import mnist
from untwine.inference.train import TrainConfig, fit
from untwine.pyro_models import VAE, VAEConfig

SETTINGS = dict(epochs=2, batch_size=100, lr=1e-3, seed=3, device="cpu")


def small_vae() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(image_shape=(1, 28, 28), latent_dim=4, network="mlp"))


def main(root: str, out: str) -> None:
    torch.set_num_threads(1)
    out = Path(out)
    data = mnist(root, train=True).random_subset(600, seed=1)
    config = TrainConfig(**SETTINGS, distributed=True)
    full = small_vae()
    full_result = fit(full, data, config, out_dir=out / "full", progress=False)
    part = small_vae()
    fit(part, data, config, out_dir=out / "part", progress=False, max_steps=4)
    part = small_vae()
    part_result = fit(part, data, config, out_dir=out / "part", resume=True, progress=False)
    torch.save(
        {
            "full": full.state_dict(),
            "resumed": part.state_dict(),
            "full_history": full_result.history,
            "resumed_history": part_result.history,
            "steps": full_result.step,
        },
        out / f"rank{dist.get_rank()}.pt",
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
