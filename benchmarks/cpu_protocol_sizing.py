r"""How the ``cpu`` sweep protocol was sized: which network disentangles more per CPU-second, and how long a run takes.

For each network (Chen et al.'s MLP, Burgess et al.'s conv net) and each model of the protocol's key claims, it
trains on the quick dSprites sub-grid (11,520 images) for a fixed budget of CPU seconds per run (``--budget``; the
number of epochs is what fits after one timed epoch), with one torch thread per run as the sweep's ``--jobs 2``
gives each process, then scores the sampling MIG. It prints, per network: seconds per epoch, epochs in budget, and
MIG mean ± standard error over seeds, plus the evaluation's seconds (a run's cost = training + evaluation), and first
the MIG of the same encoder untrained (the control).

    python benchmarks/cpu_protocol_sizing.py --network chen-mlp --budget 150 --seeds 2
    python benchmarks/cpu_protocol_sizing.py --network burgess-conv --budget 150 --seeds 2

Run the two networks side by side (two processes, one core each) to measure them as the sweep runs them. Not run
by CI. Every number comes from one run of this script.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from common import setup_device

from untwine.data import load_dataset
from untwine.inference import TrainConfig, fit
from untwine.metrics import DSPRITES_MIG_FACTORS, encode_dataset, evaluate_elbo, sampling_mig
from untwine.pyro_models import build_model

#: the protocol's key claims: (model, regularisation setting)
ENTRIES = [("beta-tcvae", {"tc_weight": 2.0}), ("beta-vae", {"kl_weight": 2.0}), ("vae", {}), ("isa-vae", {})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="chen-mlp")
    parser.add_argument("--budget", type=float, default=150.0, help="training seconds per run")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=[m for m, _ in ENTRIES])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = setup_device(parser, args)
    data = load_dataset("dsprites", quick=True)
    settings = dict(ENTRIES)
    print(f"network {args.network}, batch {args.batch_size}, budget {args.budget:.0f} s per run, {len(data)} images")
    # the control every trained MIG stands next to: the same encoder before any training
    untrained = []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        model = build_model("vae", image_shape=data.image_shape, latent_dim=args.latent_dim, network=args.network)
        loc, scale = encode_dataset(model, data)
        names = data.factor_names
        mig = sampling_mig(loc, scale, data.factor_sizes, DSPRITES_MIG_FACTORS, factor_names=names, seed=seed)
        untrained.append(mig["mig"])
    se = statistics.stdev(untrained) / math.sqrt(len(untrained)) if len(untrained) > 1 else float("nan")
    print(f"{args.network:<13} {'untrained':<11} MIG {statistics.mean(untrained):.4f} ± {se:.4f}", flush=True)
    for name in args.models:
        migs, epochs_run, evals = [], [], []
        per_epoch = None
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            opts = dict(image_shape=data.image_shape, latent_dim=args.latent_dim, network=args.network)
            model = build_model(name, **opts, **settings[name])
            cfg = TrainConfig(epochs=1, batch_size=args.batch_size, seed=seed, device=str(device))
            if per_epoch is None:
                t0 = time.perf_counter()
                fit(model, data, cfg, progress=False)
                per_epoch = time.perf_counter() - t0
                torch.manual_seed(seed)
                model = build_model(name, **opts, **settings[name])
            epochs = max(1, round(args.budget / per_epoch))
            cfg = TrainConfig(epochs=epochs, batch_size=args.batch_size, seed=seed, device=str(device))
            fit(model, data, cfg, progress=False)
            t0 = time.perf_counter()
            loc, scale = encode_dataset(model, data)
            migs.append(
                sampling_mig(
                    loc, scale, data.factor_sizes, DSPRITES_MIG_FACTORS, factor_names=data.factor_names, seed=seed
                )["mig"]
            )
            evaluate_elbo(model, data.random_subset(4096, seed=seed))
            evals.append(time.perf_counter() - t0)
            epochs_run.append(epochs)
        se = statistics.stdev(migs) / math.sqrt(len(migs)) if len(migs) > 1 else float("nan")
        print(
            f"{args.network:<13} {name:<11} {per_epoch:6.1f} s/epoch {epochs_run[0]:3d} epochs "
            f"MIG {statistics.mean(migs):.3f} ± {se:.3f} ({', '.join(f'{m:.3f}' for m in migs)}) "
            f"eval {statistics.mean(evals):.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
