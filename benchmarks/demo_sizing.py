r"""How ``make demo`` was chosen: which model, network, batch and learning rate disentangle most per CPU-second.

Each candidate trains on the quick dSprites sub-grid (11,520 images) with two torch threads (the demo's machine: 2
CPU cores) for a fixed budget of training seconds (``--budget``; the number of epochs is what fits after one timed
epoch), then is scored by the sampling MIG and by E[log p(x|z)] on 4,096 images. The untrained encoder's MIG is the
control. With ``--figures DIR`` each candidate's reconstructions and traversals are written there to be looked at.

    python benchmarks/demo_sizing.py --budget 80 --seeds 2 --figures /tmp/demo-sizing
    python benchmarks/demo_sizing.py --epochs 6 --seeds 3 --only "vae small-mlp" "beta-tcvae6 small-mlp"

``--epochs`` trains every candidate for the same number of epochs instead (a wall-clock budget means little on a
machine shared with other work); the ``cpu s`` column (process time, both threads) is then the comparable cost.

Not run by CI. Every number comes from one run of this script.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from common import setup_device

from untwine.data import load_dataset
from untwine.inference import TrainConfig, fit
from untwine.metrics import DSPRITES_MIG_FACTORS, encode_dataset, evaluate_elbo, sampling_mig
from untwine.plots import plot_reconstructions, plot_traversals, save_figure
from untwine.pyro_models import build_model

#: (label, model, settings, network, batch size, learning rate)
CANDIDATES = [
    ("vae mlp b256 (old demo)", "vae", {}, "chen-mlp", 256, 1e-3),
    ("vae mlp b64", "vae", {}, "chen-mlp", 64, 1e-3),
    ("beta-tcvae6 mlp b64", "beta-tcvae", {"tc_weight": 6.0}, "chen-mlp", 64, 1e-3),
    ("beta-tcvae6 mlp b64 lr3e-3", "beta-tcvae", {"tc_weight": 6.0}, "chen-mlp", 64, 3e-3),
    ("beta-tcvae6 mlp b128", "beta-tcvae", {"tc_weight": 6.0}, "chen-mlp", 128, 1e-3),
    ("beta-tcvae6 conv b64", "beta-tcvae", {"tc_weight": 6.0}, "burgess-conv", 64, 1e-3),
    ("beta-tcvae6 conv b64 lr3e-3", "beta-tcvae", {"tc_weight": 6.0}, "burgess-conv", 64, 3e-3),
    ("vae small-mlp b32", "vae", {}, "mlp", 32, 1e-3),
    ("beta-tcvae6 small-mlp b32", "beta-tcvae", {"tc_weight": 6.0}, "mlp", 32, 1e-3),
    ("beta-tcvae6 mlp b32", "beta-tcvae", {"tc_weight": 6.0}, "chen-mlp", 32, 1e-3),
    ("beta-vae4 mlp b64", "beta-vae", {"kl_weight": 4.0}, "chen-mlp", 64, 1e-3),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=80.0, help="training seconds (wall) per run")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="train this many epochs instead of a time budget")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL", help="candidates whose label starts so")
    parser.add_argument("--figures", default=None, metavar="DIR")
    args = parser.parse_args()
    device = setup_device(parser, args)
    data = load_dataset("dsprites", quick=True)
    held = data.random_subset(4096, seed=0)
    names = data.factor_names
    probe = data.batch(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:32], device)[0]
    figures = Path(args.figures) if args.figures else None
    if figures:
        figures.mkdir(parents=True, exist_ok=True)
    print(f"budget {args.budget:.0f} s training per run, {len(data)} images, {args.latent_dim} latents")
    print(f"{'candidate':<28} {'s/epoch':>7} {'epochs':>6} {'steps':>6} {'cpu s':>6}  MIG (mean ± SE; per seed)"
          "      E[log p(x|z)]")  # fmt: skip
    untrained = []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        model = build_model("vae", image_shape=data.image_shape, latent_dim=args.latent_dim, network="chen-mlp")
        loc, scale = encode_dataset(model, data)
        untrained.append(sampling_mig(loc, scale, data.factor_sizes, DSPRITES_MIG_FACTORS, names, seed=seed)["mig"])
    print(f"{'control: untrained mlp':<28} {'':>30}  {statistics.mean(untrained):.4f}")
    for label, name, settings, network, batch, lr in CANDIDATES:
        if args.only and not any(label.startswith(o) for o in args.only):
            continue
        migs, recon, cpu = [], [], []
        per_epoch = epochs = None
        for seed in range(args.seeds):
            opts = dict(image_shape=data.image_shape, latent_dim=args.latent_dim, network=network, **settings)
            if per_epoch is None and args.epochs is not None:
                per_epoch, epochs = float("nan"), args.epochs
            if per_epoch is None:
                torch.manual_seed(seed)
                t0 = time.perf_counter()
                fit(build_model(name, **opts), data, TrainConfig(epochs=1, batch_size=batch, lr=lr, seed=seed,
                                                                 device=str(device)), progress=False)  # fmt: skip
                per_epoch = time.perf_counter() - t0
                epochs = max(1, round(args.budget / per_epoch))
            torch.manual_seed(seed)
            model = build_model(name, **opts)
            c0 = time.process_time()
            fit(model, data, TrainConfig(epochs=epochs, batch_size=batch, lr=lr, seed=seed, device=str(device)),
                progress=False)  # fmt: skip
            cpu.append(time.process_time() - c0)
            loc, scale = encode_dataset(model, data)
            migs.append(sampling_mig(loc, scale, data.factor_sizes, DSPRITES_MIG_FACTORS, names, seed=seed)["mig"])
            recon.append(evaluate_elbo(model, held)["log_likelihood"])
            if figures and seed == 0:
                slug = label.replace(" ", "_").replace("(", "").replace(")", "")
                save_figure(plot_reconstructions(model, probe), figures / f"{slug}-recon.png")
                save_figure(plot_traversals(model, probe[0]), figures / f"{slug}-traversal.png")
        se = statistics.stdev(migs) / math.sqrt(len(migs)) if len(migs) > 1 else float("nan")
        steps = epochs * math.ceil(len(data) / batch)
        print(
            f"{label:<28} {per_epoch:7.1f} {epochs:6d} {steps:6d} {statistics.mean(cpu):6.0f}  "
            f"{statistics.mean(migs):.3f} ± {se:.3f} ({', '.join(f'{m:.3f}' for m in migs)})"
            f"      {statistics.mean(recon):.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
