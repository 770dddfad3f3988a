r"""The disentanglement_lib study's scores (Locatello et al. 2019) next to both MIGs, for quick runs of VAE, β-VAE,
β-TCVAE and ISA-VAE over seeds, each beside its untrained control; and what each score costs on the whole of dSprites.

**Table.** For every run folder (``--runs``, written by ``untwine train MODEL --data dsprites --quick --seed S``; or
``--train``, which trains them with :func:`untwine.experiment.train`), the scores a run folder records
(:data:`untwine.pyro_models.base.SCORES`, both MIGs and the Gaussian total correlation, through the same
:data:`untwine.evaluations.EVALUATIONS` functions, with the points a quick run folder records,
:data:`~untwine.evaluations.QUICK_SCORE_POINTS`, or with ``--full-points`` disentanglement_lib's 10,000 and 5,000, at
most all the images) are computed for the trained encoder and for :func:`~untwine.metrics.untrained_copy` of it
(fresh weights, seed 0). Per model: mean ± standard error over seeds, and one-sided Welch and Mann-Whitney p-values
that the model scores higher than the VAE (lower, for the Gaussian total correlation) and higher than its untrained
control.

**Cost** (``--cost``): seconds of encoding all 737,280 dSprites images with Chen et al.'s MLP (the ``vae`` model's
network, untrained: cost does not depend on the weights) and of each score at its defaults on those codes, one after
another on one process.

    untwine train vae --data dsprites --quick --seed 0 --out runs/fm/vae-s0     # ... for each model and seed
    python benchmarks/field_metrics.py --runs runs/fm/* --threads 1
    python benchmarks/field_metrics.py --train --seeds 3 --out runs/fm --threads 1
    python benchmarks/field_metrics.py --cost --threads 2

Not run by CI. Every number comes from one run of this script.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import setup_device

from untwine import experiment
from untwine.data.dsprites import DSprites
from untwine.evaluations import EVALUATIONS, Context
from untwine.metrics import (
    beta_vae_score,
    dci,
    discrete_mig,
    encode_dataset,
    factor_vae_score,
    gaussian_total_correlation,
    modularity_explicitness,
    sap,
    untrained_copy,
)
from untwine.pyro_models import build_model
from untwine.sweep_stats import compare

MODELS = ("vae", "beta-vae", "beta-tcvae", "isa-vae")
#: (column, evaluation name, path into its entry, higher is better)
COLUMNS = (
    ("MIG", "mig", ("mig", "mig"), True),
    ("MIG disc", "discrete_mig", ("discrete_mig", "mig"), True),
    ("β-VAE", "beta_vae_score", ("beta_vae_score", "eval_accuracy"), True),
    ("FactorVAE", "factor_vae_score", ("factor_vae_score", "eval_accuracy"), True),
    ("DCI D", "dci", ("dci", "disentanglement"), True),
    ("DCI C", "dci", ("dci", "completeness"), True),
    ("DCI I", "dci", ("dci", "informativeness_test"), True),
    ("SAP", "sap", ("sap", "sap"), True),
    ("modularity", "modularity", ("modularity", "modularity"), True),
    ("explicit.", "modularity", ("modularity", "explicitness_test"), True),
    ("gauss TC", "gaussian_tc", ("gaussian_tc",), False),
)


def scores(run: experiment.Run, data, model, full: bool) -> dict[str, float]:
    """Every column for ``model`` (the run's, or its untrained copy) on the run's training data, with the points a
    run folder of the run's mode records, or with the full-size points (``full``)."""
    settings = run.settings
    if full:
        settings = {**settings, "data": {**settings["data"], "quick": False}}
    ctx = Context(experiment.Run(run.path, model, settings, run.history), data, data)
    out: dict[str, float] = {}
    entries: dict[str, Any] = {}
    for name in dict.fromkeys(c[1] for c in COLUMNS):
        entries.update(EVALUATIONS[name](ctx))
    for column, _, path, _ in COLUMNS:
        value: Any = entries
        for key in path:
            value = value[key]
        out[column] = float(value)
    return out


def table(rows: list[dict[str, Any]]) -> None:
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_model[row["model"]].append(row)
    print(f"\n{'model':<12} {'kind':<10} {'n':>2}  " + "  ".join(f"{c:>15}" for c, *_ in COLUMNS))
    for model, group in by_model.items():
        for kind in ("trained", "untrained"):
            cells = []
            for column, *_ in COLUMNS:
                v = np.array([r[kind][column] for r in group])
                se = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else math.nan
                cells.append(f"{v.mean():>7.3f} ± {se:<5.3f}")
            print(f"{model:<12} {kind:<10} {len(group):>2}  " + "  ".join(cells))
    print("\none-sided p-values (Welch / Mann-Whitney), 'better' = higher, lower for the Gaussian TC:")
    for model, group in by_model.items():
        against = [("untrained", [r["untrained"] for r in group])]
        if model != "vae" and "vae" in by_model:
            against.insert(0, ("vae", [r["trained"] for r in by_model["vae"]]))
        for name, other in against:
            cells = []
            for column, _, _, higher in COLUMNS:
                a = [r["trained"][column] for r in group]
                b = [o[column] for o in other]
                c = compare(a, b) if higher else compare(b, a)
                cells.append(f"{c['welch_p']:>7.3f} / {c['mannwhitney_p']:<5.3f}")
            print(f"{model:<12} > {name:<9}   " + "  ".join(cells))


def run_table(args: argparse.Namespace) -> None:
    paths = [Path(p) for p in args.runs]
    if args.train:
        out = Path(args.out)
        for seed in range(args.seeds):
            for model in args.models:
                path = out / f"{model}-s{seed}"
                if not (path / "metrics.json").is_file():
                    experiment.train(model, "dsprites", out=path, quick=True, progress=False,
                                     train_options={"seed": seed}, figures=False)  # fmt: skip
                paths.append(path)
    rows = []
    for path in paths:
        run = experiment.load_run(path, args.device)
        data = run.data()
        t0 = time.perf_counter()
        row = {
            "model": run.settings["model"],
            "trained": scores(run, data, run.model, args.full_points),
            "untrained": scores(run, data, untrained_copy(run.model), args.full_points),
        }
        print(f"{path}: {time.perf_counter() - t0:.0f} s", flush=True)
        rows.append(row)
    table(rows)


def run_cost(args: argparse.Namespace, device: torch.device) -> None:
    t0 = time.perf_counter()
    data = DSprites()
    print(f"full dSprites loaded ({len(data)} images) in {time.perf_counter() - t0:.0f} s")
    model = build_model("vae", image_shape=data.image_shape).to(device)
    t0 = time.perf_counter()
    loc, _ = encode_dataset(model, data)
    print(f"{'encode all images':<32} {time.perf_counter() - t0:>8.1f} s")
    codes = loc.cpu().numpy()
    keep = [k for k, s in enumerate(data.factor_sizes) if s > 1]
    factors = data.targets[:, keep].numpy()
    sample = np.random.default_rng(0).integers(len(codes), size=10_000)  # as discrete_mig_of draws
    for name, fn in (
        ("beta_vae_score", lambda: beta_vae_score(codes, factors)),
        ("factor_vae_score", lambda: factor_vae_score(codes, factors)),
        ("dci (gbt)", lambda: dci(codes, factors)),
        ("dci (lasso)", lambda: dci(codes, factors, regressor="lasso")),
        ("sap", lambda: sap(codes, factors)),
        ("modularity_explicitness", lambda: modularity_explicitness(codes, factors)),
        ("discrete_mig (10,000 images)", lambda: discrete_mig(codes[sample], factors[sample])),
        ("gaussian_total_correlation", lambda: gaussian_total_correlation(codes)),
    ):
        t0 = time.perf_counter()
        fn()
        print(f"{name:<32} {time.perf_counter() - t0:>8.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], help="quick dSprites run folders")
    parser.add_argument("--train", action="store_true", help="train the quick runs first (into --out)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="runs/field_metrics")
    parser.add_argument("--full-points", action="store_true", help="score quick runs with the full-size points")
    parser.add_argument("--cost", action="store_true", help="time each score on the whole of dSprites")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    device = setup_device(parser, args)
    if args.cost:
        run_cost(args, device)
    if args.runs or args.train:
        run_table(args)
    elif not args.cost:
        parser.error("give --runs, --train or --cost")


if __name__ == "__main__":
    main()
