r"""Disentangling VAEs compared on procedural dSprites: MIG (sampling, grouped, discrete) and reconstruction.

Without ``--models`` it compares VAE, β-VAE and β-TCVAE at matched β (``--betas``). With ``--models`` it trains any
registered models, each entry ``NAME:BETA`` (``untwine list`` names them); the suffix ``+learned`` on an ISA model
(``isa-vae+learned:1``) trains its subspace exponents (``learn_exponents=True``: start at 2.0, own Adam rate, as in
the ISA-VAE paper), and the learned values are printed after the table.

Columns: MIG (sampling) is Chen et al.'s estimator, one coordinate at a time; MIG (grouped) is the same estimator
with the coordinates of each independent subspace scored jointly (``sampling_mig(..., groups=model.subspaces())``,
the ISA-VAE paper's "MIG grouped by subspaces"), for models that have ``subspaces()`` ('-' otherwise); MIG
(discrete) is disentanglement_lib's. ``--latent-dim`` sets every model's latent size (default: each model's own,
10 for the VAE family and 20 = five subspaces of 4 for ISA-VAE); for ISA models the subspaces are then chunks of 4.
The ISA-VAE paper's Table 1 uses 20 latents for every model, so pass ``--latent-dim 20`` for its comparison.

When a β-TCVAE is in the run, it also prints how far the minibatch estimators of the total correlation (MWS, MSS)
are from the exact value over all N posteriors of the trained β-TCVAE, at several batch sizes.

    python benchmarks/disentanglement.py                      # β in {2, 4, 6}, 3 seeds, quick dSprites sub-grid
    python benchmarks/disentanglement.py --betas 2 6 --epochs 5
    python benchmarks/disentanglement.py --grid full --epochs 50 --batch-size 2048 --device cuda   # paper setting

    # ISA-VAE vs VAE (ISA-VAE paper, Table 1 / appendix A.5), 20 latents for every model
    python benchmarks/disentanglement.py --latent-dim 20 --epochs 5 --models vae:1 isa-vae:1
    python benchmarks/disentanglement.py --latent-dim 20 --epochs 5 \
        --models vae:1 isa-vae:1 isa-vae+learned:1 beta-vae:2 isa-vae:2 beta-vae:3 isa-vae:3
    python benchmarks/disentanglement.py --latent-dim 20 --grid full --epochs 50 --batch-size 2048 --device cuda \
        --models vae:1 isa-vae:1 isa-vae+learned:1                # the paper's setting

On a CPU shared with other processes, ``--threads 1`` is often much faster than torch's default (an intra-op
thread that loses its core stalls every parallel op; see ``benchmarks/lp_nested_speed.py``).

Not run by CI. Every number comes from one run of this script.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import fields

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
from untwine.pyro_models.registry import MODELS

LEARNED = "+learned"


def parse_model(entry: str) -> tuple[str, float]:
    """``"NAME:BETA"`` (NAME optionally ending in ``+learned``) -> (name, beta); argparse type for ``--models``."""
    name, sep, beta = entry.rpartition(":")
    try:
        value = float(beta)
    except ValueError:
        value = float("nan")
    if not sep or not name or not value > 0:
        raise argparse.ArgumentTypeError(f"{entry!r} is not NAME:BETA with BETA > 0, e.g. isa-vae:1")
    base = name.removesuffix(LEARNED)
    if base not in MODELS:
        raise argparse.ArgumentTypeError(f"unknown model {base!r} in {entry!r}; choose one of: {', '.join(MODELS)}")
    if name.endswith(LEARNED) and not {"learn_exponents"} <= {f.name for f in fields(MODELS[base].config_cls)}:
        raise argparse.ArgumentTypeError(f"{base!r} has no exponents to learn; {LEARNED} needs an ISA model")
    return name, value


def make_model(name: str, beta: float, data, args):
    """``build_model`` for a benchmark entry: ``--latent-dim``, ``+learned`` and β applied, β being the TC weight
    for an entry trained with the TC-decomposed objective and the KL weight otherwise."""
    base = name.removesuffix(LEARNED)
    learned = {"learn_exponents": True} if name.endswith(LEARNED) else {}
    weight = "tc_weight" if MODELS[base].objective is not None else "kl_weight"
    return build_model(base, image_shape=data.image_shape, latent_dim=args.latent_dim, **{weight: beta}, **learned)


def train_and_score(name: str, beta: float, seed: int, data, args) -> dict[str, float]:
    torch.manual_seed(seed)
    model = make_model(name, beta, data, args)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, device=args.device)
    t0 = time.perf_counter()
    fit(model, data, config, progress=False)
    seconds = time.perf_counter() - t0
    loc, scale = encode_dataset(model, data)
    mig = sampling_mig(loc, scale, data.factor_sizes, DSPRITES_MIG_FACTORS, factor_names=data.factor_names, seed=seed)
    grouped = float("nan")
    if hasattr(model, "subspaces"):
        grouped = sampling_mig(
            loc,
            scale,
            data.factor_sizes,
            DSPRITES_MIG_FACTORS,
            factor_names=data.factor_names,
            seed=seed,
            groups=model.subspaces(),
        )["mig"]
    dmig = discrete_mig_of(model, data, factors=DSPRITES_MIG_FACTORS, seed=seed)
    elbo = evaluate_elbo(model, data.random_subset(args.eval_images, seed=seed))
    return {
        "mig": mig["mig"],
        "grouped_mig": grouped,
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
    if any(math.isnan(v) for v in values):
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):7.3f} ± {sd:5.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betas", type=float, nargs="+", default=[2.0, 4.0, 6.0])
    parser.add_argument(
        "--models",
        type=parse_model,
        nargs="+",
        metavar="NAME:BETA",
        help="models to train, e.g. vae:1 isa-vae:1 isa-vae+learned:1 beta-vae:2 (default: vae, then beta-vae and "
        "beta-tcvae at each of --betas)",
    )
    parser.add_argument("--latent-dim", type=int, default=None, help="latent size of every model (default: each own)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--grid", choices=["quick", "full"], default="quick")
    parser.add_argument("--eval-images", type=int, default=4096)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    data = load_dataset("dsprites", quick=args.grid == "quick")
    print(f"data: dSprites {args.grid} grid, {len(data)} images, factor sizes {data.factor_sizes}")
    latent = args.latent_dim if args.latent_dim is not None else "each model's default"
    print(f"training: {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, {args.seeds} seeds,", end=" ")
    print(f"latent size: {latent}\n")
    runs = args.models or [("vae", 1.0)] + [(m, b) for b in args.betas for m in ("beta-vae", "beta-tcvae")]
    width = max(11, *(len(name) for name, _ in runs))
    header = f"{'model':<{width}} {'beta':>5} {'D':>3} {'MIG (sampling)':>16} {'MIG (grouped)':>16}"
    header += f" {'MIG (discrete)':>16} {'E[log p(x|z)]':>18} {'s/run':>6}"
    print(header)
    print("-" * len(header))
    tcvae_for_bias = None
    learned_exponents = []
    per_seed = []
    for name, beta in runs:
        results = [train_and_score(name, beta, seed, data, args) for seed in range(args.seeds)]
        model = results[0]["model"]
        if name == "beta-tcvae" and tcvae_for_bias is None:
            tcvae_for_bias = model
        if name.endswith(LEARNED):
            learned_exponents.append((name, beta, [r["model"].exponents.tolist() for r in results]))
        cols = [fmt([r[k] for r in results]) for k in ("mig", "grouped_mig", "discrete_mig", "log_px")]
        per_seed.append((name, beta, [(r["mig"], r["grouped_mig"]) for r in results]))
        secs = statistics.mean(r["seconds"] for r in results)
        dim = model.config.latent_dim
        print(
            f"{name:<{width}} {beta:5g} {dim:3d} {cols[0]:>16} {cols[1]:>16} {cols[2]:>16} {cols[3]:>18} {secs:6.0f}",
            flush=True,
        )
    print("\nMIG: sampling = Chen et al.'s estimator per coordinate; grouped = the same with each subspace of an ISA")
    print("model scored jointly; discrete = disentanglement_lib's (20 bins); all on scale, orientation, posX, posY.")
    print("Mean ± sd over seeds. E[log p(x|z)] in nats per image. D = latent size. s/run = training seconds.")
    print(f"\nMIG (sampling) per seed 0..{args.seeds - 1}, grouped in brackets:")
    for name, beta, values in per_seed:
        cells = [f"{m:.3f}" + ("" if math.isnan(g) else f" [{g:.3f}]") for m, g in values]
        print(f"  {name:<{width}} {beta:5g}  " + "  ".join(cells))
    for name, beta, exps_per_seed in learned_exponents:
        print(f"\nlearned exponents of {name} (beta {beta:g}), (p0 fixed, p1..pK) per seed:")
        for seed, exps in enumerate(exps_per_seed):
            print(f"  seed {seed}: " + " ".join(f"{p:.3f}" for p in exps))
    print()

    if tcvae_for_bias is not None:
        n, d = len(data), tcvae_for_bias.config.latent_dim
        print(f"Total-correlation estimates on a trained beta-TCVAE's posteriors (N = {n}, D = {d}), 5 batches each:")
        print(f"{'batch':>6} {'exact':>9} {'MSS':>9} {'MWS':>9} {'MSS-exact':>10} {'MWS-exact':>10} {'(D-1)logN':>10}")
        for b, exact, mss, mws in estimator_bias(tcvae_for_bias, data, (64, 256, 2048), repeats=5, seed=0):
            print(f"{b:6d} {exact:9.3f} {mss:9.3f} {mws:9.3f} {mss - exact:10.3f} {mws - exact:10.3f} "
                  f"{(d - 1) * math.log(n):10.1f}")  # fmt: skip
        print()
    print(f"total wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
