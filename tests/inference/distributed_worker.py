"""Run by ``torchrun --nproc_per_node 2`` from test_distributed.py: data-parallel fits on CPU with gloo.

Writes, per rank, the parameters and histories of an uninterrupted run and of a run interrupted after four steps
and resumed from its checkpoint, for a VAE on MNIST and for a model with an auxiliary probe on toy images.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from untwine.data import mnist
from untwine.inference.train import TrainConfig, fit
from untwine.pyro_models import VAE, VAEConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_model import DeterministicProbedVAE, build, toy_data  # noqa: E402

SETTINGS = dict(epochs=2, batch_size=100, lr=1e-3, seed=3, device="cpu")
# 64 toy images in global batches of 16: 4 steps per epoch
AUXILIARY_SETTINGS = dict(epochs=2, batch_size=16, lr=1e-2, seed=3, device="cpu")


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
    aux_config = TrainConfig(**AUXILIARY_SETTINGS, distributed=True)
    aux_full = build(DeterministicProbedVAE)
    aux_full_result = fit(aux_full, toy_data(), aux_config, out_dir=out / "aux-full", progress=False)
    fit(build(DeterministicProbedVAE), toy_data(), aux_config, out_dir=out / "aux-part", progress=False, max_steps=3)
    aux_part = build(DeterministicProbedVAE, seed=1)
    aux_part_result = fit(aux_part, toy_data(), aux_config, out_dir=out / "aux-part", resume=True, progress=False)
    torch.save(
        {
            "full": full.state_dict(),
            "resumed": part.state_dict(),
            "full_history": full_result.history,
            "resumed_history": part_result.history,
            "steps": full_result.step,
            "aux_full": aux_full.state_dict(),
            "aux_resumed": aux_part.state_dict(),
            "aux_full_history": aux_full_result.history,
            "aux_resumed_history": aux_part_result.history,
        },
        out / f"rank{dist.get_rank()}.pt",
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
