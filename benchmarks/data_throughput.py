"""Data speed: rendering and loading dSprites, and the training loop's data path next to a real training step.

Part 1 times, once each:

* the full procedural render (737,280 images of 64x64, :func:`untwine.data.dsprites.render` over the whole grid);
* a cached load (``DSprites()`` reading the bit-packed cache, written first into a temporary cache folder, so the
  user's own cache is neither read nor touched);
* a load of the real ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (``--npz``, by default looked for in the
  shared data folder); ``n/a`` when the file is not there.

Part 2 runs the real training loop, :func:`untwine.inference.train.fit`, for ``--steps`` steps at each setting:

* with a no-op model/guide pair (one parameter; the model adds ``pyro.factor(w * x.mean())``), so the loop draws and
  converts its batches exactly as in training but computes next to nothing: the loader's images/s;
* with the default model of that setting: Chen's MLP ``vae`` on dSprites at batch 2048, Chen's conv ``vae`` on
  dSprites at batch 64, the MLP ``vae`` on MNIST at batch 128.

``loader share`` is model images/s over no-op images/s: the share of a training step that the data path (with the
loop's own overhead) takes. Each ``fit`` is timed from its first step to its last (``steps`` minus the time of a
one-step call), so set-up is left out. ``batch()`` images/s is :meth:`ImageDataset.batch` alone over the same order.

    python benchmarks/data_throughput.py                     # CPU, torch's thread count
    python benchmarks/data_throughput.py --device cuda --steps 50
    python benchmarks/data_throughput.py --skip-render       # part 2 only (renders the cache if it is missing)

On a CPU shared with other processes the times inflate (every op split across threads waits for a descheduled
thread); run it with the CPU to itself. Not run by CI. Every number comes from one run of this script.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyro
import torch
from common import setup_device, shared_data
from torch import nn

from untwine.data import DSPRITES_FILE
from untwine.data import dsprites as ds_module
from untwine.data.base import ImageDataset
from untwine.data.images import mnist
from untwine.inference.train import TrainConfig, fit
from untwine.pyro_models import build_model


class NoOpPair(nn.Module):
    """A model/guide pair that touches each batch once (its mean) and has one parameter, so ``fit`` runs unchanged."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def model(self, x, y=None):
        pyro.module("noop", self)
        pyro.factor("touch", self.w * x.mean())

    def guide(self, x, y=None):
        pyro.module("noop", self)


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def fit_seconds_per_step(model: nn.Module, data: ImageDataset, batch: int, steps: int, device: str) -> float:
    """Seconds per step of ``fit`` between its first and last step (a one-step call measures the set-up)."""
    config = TrainConfig(epochs=1, batch_size=batch, device=device, seed=0)
    fit(model, data, config, progress=False, max_steps=2)  # warm-up: allocator, oneDNN/cuBLAS kernels
    t_one, _ = timed(lambda: fit(model, data, config, progress=False, max_steps=1))
    t_all, _ = timed(lambda: fit(model, data, config, progress=False, max_steps=steps + 1))
    return max(t_all - t_one, 1e-9) / steps


def batch_images_per_s(data: ImageDataset, batch: int, steps: int, device: torch.device) -> float:
    order = data.epoch_order(torch.Generator().manual_seed(0))
    data.batch(order[:batch], device)
    t0 = time.perf_counter()
    for b in range(steps):
        x, _ = data.batch(order[b * batch : (b + 1) * batch], device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - t0)


def part1(args, cache: Path) -> tuple[float, float, str]:
    rows = ds_module._grid_rows(ds_module._resolve_subgrid(None))
    t_render, images = timed(lambda: ds_module.render(rows))
    cache.mkdir(parents=True, exist_ok=True)
    ds_module._write_packed(ds_module._cache_path(ds_module._resolve_subgrid(None)), ds_module._pack(images))
    del images
    t_cached, data = timed(lambda: ds_module.DSprites())
    del data
    npz = Path(args.npz) if args.npz else shared_data() / "dsprites" / DSPRITES_FILE
    if npz.is_file():
        t_npz, data = timed(lambda: ds_module.DSprites(path=npz))
        del data
        npz_cell = f"{t_npz:.2f}"
    else:
        npz_cell = f"n/a ({npz} not found)"
    return t_render, t_cached, npz_cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per setting")
    parser.add_argument("--npz", default=None, help="the real dSprites .npz (default: in the shared data folder)")
    parser.add_argument("--mnist-root", default=None, help="folder holding MNIST/raw (default: shared data)")
    parser.add_argument("--skip-render", action="store_true", help="only part 2")
    args = parser.parse_args()

    device = setup_device(parser, args)
    print()
    t_start = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["UNTWINE_CACHE"] = str(Path(tmp) / "cache")
        if not args.skip_render:
            t_render, t_cached, npz_cell = part1(args, Path(tmp) / "cache")
            print("Part 1: dSprites, 737,280 images of 64x64")
            print(f"{'full render (s)':<28} {t_render:8.2f}")
            print(f"{'cached load (s)':<28} {t_cached:8.2f}")
            print(f"{'real .npz load (s)':<28} {npz_cell:>8}\n", flush=True)

        dsprites = ds_module.DSprites()
        mnist_src = Path(args.mnist_root) if args.mnist_root else shared_data() / "mnist"
        # torchvision extracts the archives next to them, so it reads a copy
        shutil.copytree(mnist_src / "MNIST", Path(tmp) / "mnist" / "MNIST")
        digits = mnist(Path(tmp) / "mnist", train=True)
        settings = [
            ("dsprites", dsprites, 2048, "chen-mlp"),
            ("dsprites", dsprites, 64, "chen-conv"),
            ("mnist", digits, 128, "mlp"),
        ]
        print(f"Part 2: fit() on {device.type}, {args.steps} timed steps per setting (images/s)")
        header = (
            f"{'data':<9} {'batch':>6} {'network':<10} {'batch() only':>13} {'no-op fit':>10} {'model fit':>10} "
            f"{'loader share':>13}"
        )
        print(header)
        print("-" * len(header))
        for name, data, batch, network in settings:
            only = batch_images_per_s(data, batch, args.steps, device)
            noop = batch / fit_seconds_per_step(NoOpPair(), data, batch, args.steps, str(device))
            model = build_model("vae", image_shape=data.image_shape, network=network)
            step = batch / fit_seconds_per_step(model, data, batch, args.steps, str(device))
            print(
                f"{name:<9} {batch:6d} {network:<10} {only:13.0f} {noop:10.0f} {step:10.0f} {step / noop:13.3f}",
                flush=True,
            )
    print("\nloader share: model images/s / no-op images/s, the share of a training step spent drawing the batch and")
    print("running the loop; batch() only: ImageDataset.batch alone (uint8 rows gathered, moved, converted to float).")
    print(f"total wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
