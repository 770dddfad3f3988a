"""VAE vs β-VAE vs β-TCVAE at matched β on procedural dSprites: MIG (both estimators) and reconstruction.

Also prints how far the minibatch estimators of the total correlation (MWS, MSS) are from the exact value over all
N posteriors of a trained β-TCVAE, at several batch sizes.

    python benchmarks/disentanglement.py                      # β in {2, 4, 6}, 3 seeds, quick dSprites sub-grid
    python benchmarks/disentanglement.py --betas 2 6 --epochs 5
    python benchmarks/disentanglement.py --grid full --epochs 50 --batch-size 2048 --device cuda   # paper setting

Not run by CI. Every number comes from one run of this script.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from untwine.data import load_dataset
from untwine.inference import TrainConfig, fit
from untwine.inference.tc_elbo import aggregate_log_density
from untwine.metrics import (
    DSPRITES_MIG_FACTORS,
    discrete_mig_of,
    encode_dataset,
    evaluate_elbo,
    full_aggregate_log_density,
    sampling_mig,
)
from untwine.pyro_models import build_model


def train_and_score(name: str, beta: float, seed: int, data, args) -> dict[str, float]:
    torch.manual_seed(seed)
    model = build_model(name, image_shape=data.image_shape, beta=beta)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, device=args.device)
    t0 = time.perf_counter()
    fit(model, data, config, progress=False)
    seconds = time.perf_counter() - t0
    loc, scale = encode_dataset(model, data)
    mig = sampling_mig(loc, scale, data.factor_sizes, DSPRITES_MIG_FACTORS, factor_names=data.factor_names, seed=seed)
    dmig = discrete_mig_of(model, data, factors=DSPRITES_MIG_FACTORS, seed=seed)
    elbo = evaluate_elbo(model, data.random_subset(args.eval_images, seed=seed))
    return {
        "mig": mig["mig"],
        "discrete_mig": dmig["mig"],
        "log_px": elbo["log_likelihood"],
        "kl": elbo["kl"],
        "seconds": seconds,
        "model": model,
    }


def estimator_bias(model, data, batch_sizes, repeats: int, seed: int) -> list[tuple[int, float, float, float]]:
    """Mean TC of each estimator and of the exact aggregate posterior, on batches of the trained model's codes."""
    loc, scale = encode_dataset(model, data)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in batch_sizes:
        tc = {"exact": [], "mss": [], "mws": []}
        for _ in range(repeats):
            idx = torch.randperm(len(data), generator=g)[:b]
            z = loc[idx] + scale[idx] * torch.randn(b, loc.shape[1], generator=g)
            lq, lqj = full_aggregate_log_density(z, loc, scale)
            tc["exact"].append((lq - lqj.sum(-1)).mean().item())
            for est in ("mss", "mws"):
                q, qj = aggregate_log_density(z, loc[idx], scale[idx], len(data), est)
                tc[est].append((q - qj.sum(-1)).mean().item())
        rows.append((b, *(statistics.mean(tc[k]) for k in ("exact", "mss", "mws"))))
    return rows


def fmt(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):7.3f} ± {sd:5.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betas", type=float, nargs="+", default=[2.0, 4.0, 6.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--grid", choices=["quick", "full"], default="quick")
    parser.add_argument("--eval-images", type=int, default=4096)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    data = load_dataset("dsprites", quick=args.grid == "quick")
    print(f"data: dSprites {args.grid} grid, {len(data)} images, factor sizes {data.factor_sizes}")
    print(f"training: {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, {args.seeds} seeds\n")
    runs = [("vae", 1.0)] + [(m, b) for b in args.betas for m in ("beta-vae", "beta-tcvae")]
    header = f"{'model':<11} {'beta':>5} {'MIG (sampling)':>16} {'MIG (discrete)':>16} {'E[log p(x|z)]':>18}"
    header += f" {'s/run':>6}"
    print(header)
    print("-" * len(header))
    tcvae_for_bias = None
    for name, beta in runs:
        results = [train_and_score(name, beta, seed, data, args) for seed in range(args.seeds)]
        if name == "beta-tcvae":
            tcvae_for_bias = results[0]["model"]
        cols = [fmt([r[k] for r in results]) for k in ("mig", "discrete_mig", "log_px")]
        secs = statistics.mean(r["seconds"] for r in results)
        print(f"{name:<11} {beta:5g} {cols[0]:>16} {cols[1]:>16} {cols[2]:>18} {secs:6.0f}", flush=True)
    print("\nMIG: sampling = Chen et al.'s estimator; discrete = disentanglement_lib's (20 bins); both on scale,")
    print("orientation, posX, posY. Mean ± sd over seeds. E[log p(x|z)] in nats per image.\n")

    if tcvae_for_bias is not None:
        n = len(data)
        print(f"Total-correlation estimates on a trained beta-TCVAE's posteriors (N = {n}, D = 10), 5 batches each:")
        print(f"{'batch':>6} {'exact':>9} {'MSS':>9} {'MWS':>9} {'MSS-exact':>10} {'MWS-exact':>10} {'(D-1)logN':>10}")
        for b, exact, mss, mws in estimator_bias(tcvae_for_bias, data, (64, 256, 2048), repeats=5, seed=0):
            print(f"{b:6d} {exact:9.3f} {mss:9.3f} {mws:9.3f} {mss - exact:10.3f} {mws - exact:10.3f} "
                  f"{9 * math.log(n):10.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
