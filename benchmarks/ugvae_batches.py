r"""What UG-VAE's global latent carries under the paper's random batches, and what grouped training changes.

UG-VAE and the ML-VAE ablation are trained with :func:`untwine.inference.fit` (the authors' MNIST setting: groups of
128, one group per step, Adam 5e-3) under four regimes, several seeds each:

==========================  =========================  ===================================================
regime                      training data              training groups
==========================  =========================  ===================================================
``random``                  MNIST                      random batches (the paper's protocol)
``ink``                     MNIST                      one ink-quantity quartile per group
``random-mix``              MNIST + Fashion-MNIST      random batches, 50/50 per group (the paper's 4.2)
``domain``                  MNIST + Fashion-MNIST      one domain per group (ML-VAE's weak supervision)
==========================  =========================  ===================================================

and every trained model, with an untrained UG-VAE of each dataset as a control, is measured on held-out images:

* ``I rand`` / ``I grp``: :math:`I(X; \beta)` in nats (:func:`untwine.metrics.gaussian_information`) over random
  batches and over batches grouped as the regime trains (random regimes: the same);
* ``swap``: nats per image lost when :math:`\beta` is swapped with another random batch's posterior mean
  (``swap_cost`` of :func:`untwine.metrics.global_posterior_summary`);
* ``flip``: share of images decoded with a batch of the other domain's :math:`\beta` that a pixel classifier puts in
  :math:`\beta`'s domain (:func:`untwine.metrics.domain_transfer`; mixture regimes only);
* ``ink``: share of the real thin/thick ink gap that swapping :math:`\beta` moves (:func:`untwine.metrics.ink_transfer`,
  MNIST digits);
* ``T1 margin``: Table 1 test accuracy (digit-series batches, linear and RBF SVMs on :math:`\mu_\beta`) minus the best
  label-free baseline on the same batches (mean pixels, random ReLU features, untrained network), averaged over the
  twelve problem/classifier rows (:func:`untwine.metrics.batch_classification`); ``T1 acc`` the accuracy itself.

Each cell is mean ± standard error over seeds; Welch t-tests compare each grouped regime with its random one.

    python benchmarks/ugvae_batches.py --quick            # one seed, small data: a few minutes on a CPU
    python benchmarks/ugvae_batches.py --seeds 3 --out ug.jsonl   # the README's table (20,000 images per domain)
    python benchmarks/ugvae_batches.py --report ug.jsonl           # its tables again, from the saved rows

Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import setup_device, shared_root

from untwine.data import load_dataset
from untwine.data.groups import DomainMixture, GroupedDataset
from untwine.inference import TrainConfig, fit
from untwine.metrics import (
    batch_classification,
    domain_transfer,
    format_table,
    global_posterior_summary,
    ink_transfer,
)
from untwine.pyro_models import UGVAE, UGVAEConfig

#: regime -> (dataset, grouping)
REGIMES = {
    "random": ("mnist", "random"),
    "ink": ("mnist", "ink"),
    "random-mix": ("mnist+fashion-mnist", "random"),
    "domain": ("mnist+fashion-mnist", "domain"),
}
#: each grouped regime and the random regime it is compared with
CONTROLS = {"ink": "random", "domain": "random-mix"}
MODELS = {"UG-VAE": True, "ML-VAE": False}  # name -> mixture
COLUMNS = ("I rand", "I grp", "swap", "flip", "ink", "T1 acc", "T1 margin")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-root", help="folder holding MNIST/raw and FashionMNIST/raw (default: copy the shared data)")
    p.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of every regime and model (default 3)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10; quick 3)")
    p.add_argument("--subset", type=int, default=20_000, help="training images per domain (default 20,000)")
    p.add_argument("--num-batches", type=int, default=100, help="held-out batches per kind for each measurement")
    p.add_argument("--out", type=Path, help="JSON lines file: one line per trained model, appended as they finish")
    p.add_argument("--report", type=Path, metavar="FILE", help="print the tables of an --out file and train nothing")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--quick", action="store_true", help="one seed, 5,000 images per domain, 3 epochs, 30 batches")
    p.add_argument("--progress", action="store_true", help="progress bars while training")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.subset, args.num_batches = 1, 3, 5_000, 30
    return p, args


def load(root: Path, name: str, subset: int, seed: int):
    """Training data (``subset`` images per domain, seeded) and the test split."""
    domains = name.count("+") + 1
    return load_dataset(name, root, subset=subset * domains, seed=seed), load_dataset(name, root, train=False)


def measure(model, test, by: str, args, seed: int) -> dict[str, float]:
    """Every column for one model; ``test`` is the held-out data of the regime's dataset."""
    n = args.num_batches
    digits = test.domain(0) if isinstance(test, DomainMixture) else test
    row: dict[str, float] = {}
    summary = global_posterior_summary(model, test, num_batches=n, seed=seed)
    row["I rand"], row["swap"] = summary["information"], summary["swap_cost"]
    row["prior cost"], row["KL/group"] = summary["prior_cost"], summary["kl_per_group"]
    if by == "random":
        row["I grp"] = row["I rand"]
    else:
        index = GroupedDataset(test, by, model.group_size).batches(n, seed)
        row["I grp"] = global_posterior_summary(model, test, seed=seed, index=index)["information"]
    row["flip"] = (
        domain_transfer(model, test, num_batches=20, seed=seed)["beta_swap_flip_rate"]
        if digits is not test
        else float("nan")
    )
    row["ink"] = ink_transfer(model, digits, num_batches=20, seed=seed)["transfer"]
    table = batch_classification(model, digits, num_batches=n, seed=seed)
    row["T1 acc"] = float(np.mean([r["test_accuracy"] for r in table]))
    row["T1 margin"] = float(np.mean([r["margin"] for r in table]))
    row["table"] = table
    return row


def train(data, by: str, mixture: bool, args, device, seed: int) -> tuple[UGVAE, float]:
    torch.manual_seed(seed)
    model = UGVAE(UGVAEConfig(image_shape=data.image_shape, mixture=mixture))
    training = data if by == "random" else GroupedDataset(data, by, model.group_size)
    config = TrainConfig(
        epochs=args.epochs, batch_size=model.group_size, lr=UGVAE.default_lr, seed=seed, device=str(device)
    )
    t0 = time.perf_counter()
    fit(model, training, config, progress=args.progress)
    return model.eval(), time.perf_counter() - t0


def mean_se(values: list[float]) -> str:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(len(v)):.3f}"


def report(rows: list[dict]) -> None:
    """The side-by-side table (mean ± SE over seeds) and the Welch tests of each grouped regime against its control."""
    from scipy.stats import ttest_ind

    keys = sorted(
        {(r["regime"], r["model"]) for r in rows},
        key=lambda k: (list(REGIMES).index(k[0]) if k[0] in REGIMES else -1, k[1]),
    )
    print("\n| regime | model | seeds | " + " | ".join(COLUMNS) + " |")
    print("|" + " --- |" * (3 + len(COLUMNS)))
    for regime, model in keys:
        cell = [r for r in rows if r["regime"] == regime and r["model"] == model]
        print(
            f"| {regime} | {model} | {len(cell)} | " + " | ".join(mean_se([r[c] for r in cell]) for c in COLUMNS) + " |"
        )
    print("\nWelch t-tests, grouped regime vs its random control (two-sided p)")
    print("| model | comparison | column | difference | p |")
    print("| --- | --- | --- | --- | --- |")
    for grouped, control in CONTROLS.items():
        for model in MODELS:
            a = [r for r in rows if r["regime"] == grouped and r["model"] == model]
            b = [r for r in rows if r["regime"] == control and r["model"] == model]
            if len(a) < 2 or len(b) < 2:
                continue
            for column in ("flip" if grouped == "domain" else "ink", "I grp", "swap"):
                x, y = [r[column] for r in a], [r[column] for r in b]
                p = ttest_ind(x, y, equal_var=False).pvalue
                print(f"| {model} | {grouped} vs {control} | {column} | {np.mean(x) - np.mean(y):+.3f} | {p:.2g} |")


def main(argv: list[str] | None = None) -> None:
    parser, args = parse_args(argv)
    if args.report is not None:
        report([json.loads(line) for line in args.report.read_text().splitlines() if line.strip()])
        return
    device = setup_device(parser, args)
    start = time.perf_counter()
    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    print(f"{args.seeds} seeds, {args.epochs} epochs, {args.subset} training images per domain, groups of 128, "
          f"{args.num_batches} held-out batches per measurement")  # fmt: skip
    rows: list[dict] = []

    def keep(row: dict) -> None:
        rows.append(row)
        print(f"  seed {row['seed']} {row['regime']:10s} {row['model']}: trained in {row['seconds']:.0f} s; "
              + ", ".join(f"{c} {row[c]:.3f}" for c in COLUMNS), flush=True)  # fmt: skip
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")

    with tempfile.TemporaryDirectory(prefix="untwine-ug-") as scratch:
        root = Path(args.data_root) if args.data_root else None
        if root is None:
            root = shared_root("mnist", Path(scratch))
            shared_root("fashion-mnist", Path(scratch))
        datasets = {name for name, _ in (REGIMES[r] for r in args.regimes)}
        for seed in range(args.seeds):
            loaded = {name: load(root, name, args.subset, seed) for name in sorted(datasets)}
            for name, (data, test) in loaded.items():  # the control: fresh weights, measured the same way
                torch.manual_seed(seed)
                fresh = UGVAE(UGVAEConfig(image_shape=data.image_shape)).to(device).eval()
                row = {"regime": f"untrained ({name})", "model": "UG-VAE", "seed": seed, "seconds": 0.0}
                keep({**row, **measure(fresh, test, "random", args, seed)})
            for regime in args.regimes:
                name, by = REGIMES[regime]
                data, test = loaded[name]
                for model_name, mixture in MODELS.items():
                    model, seconds = train(data, by, mixture, args, device, seed)
                    row = {"regime": regime, "model": model_name, "seed": seed, "seconds": seconds}
                    keep({**row, **measure(model, test, by, args, seed)})
    report(rows)
    first = (
        next(r for r in rows if r["regime"] == "random" and r["model"] == "UG-VAE")
        if "random" in args.regimes
        else None
    )
    if first is not None:
        print("\nTable 1 with its baselines (regime random, UG-VAE, seed 0): model test accuracy, then the baselines'")
        print(format_table(first["table"]))
        for r in first["table"]:
            print(f"  {r['problem']:48s} {r['classifier']:10s} model {r['test_accuracy']:.2f}  "
                  + "  ".join(f"{k} {v:.2f}" for k, v in r["baselines"].items()))  # fmt: skip
    print(f"\ntotal: {time.perf_counter() - start:.0f} s ({torch.__version__}, {device})")


if __name__ == "__main__":
    main()
