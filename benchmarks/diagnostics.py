r"""Importance-sampled :math:`\log p(x)` and Pareto :math:`\hat k` of every registered model after a quick run, what
they look like on an untrained network, and what the diagnostic costs next to a training epoch.

For each model (VAE, β-VAE, β-TCVAE, FactorVAE, ISA-VAE and ISA-β-TCVAE on procedural dSprites; N-VAE, UG-VAE and
ML-VAE on MNIST) a quick run is trained with :func:`untwine.experiment.train` (``quick=True``: the data's quick
version, :data:`~untwine.experiment.QUICK_EPOCHS` epochs, batches of at most
:data:`~untwine.experiment.QUICK_MAX_BATCH`, one group per step for a model with groups), and on its held-out split
(the MNIST test split, quick: a seeded 5,000 of it; dSprites has none, so its training data) a seeded random subset of
``--images`` images (a model with groups: at least 4 whole groups) is scored by

* :func:`untwine.diagnostics.importance_log_likelihood` with ``--samples`` guide draws per unit: the importance-weighted
  bound (nats per image, ± its standard error over units), its Pareto-smoothed version and :math:`\hat k` (median,
  90th percentile, share above 0.7: above it the estimate, and the guide as a proposal, is unreliable);
* :func:`untwine.metrics.evaluate_elbo` on the same images and groups (one particle), without labels as the bound has
  (N-VAE's class is then a latent), so the table shows :math:`\log p(x) \ge \mathrm{ELBO}`;
* the seconds of the diagnostic against the median seconds of a training epoch (the run's history): ``ratio`` is
  diagnostic / epoch, ``per img`` the same per image (diagnostic seconds per scored image over epoch seconds per
  training image).

Each trained model gets a control row: :func:`untwine.metrics.untrained_copy` (fresh weights, seed 0) scored the same
way, i.e. what :math:`\hat k` and :math:`\log p(x)` look like when nothing was learned.

    python benchmarks/diagnostics.py --threads 1 --out diag.jsonl        # every model
    python benchmarks/diagnostics.py --models vae ug-vae --samples 50   # a subset

``--data-root`` holds ``MNIST/raw`` (default ``/tmp/ugroot``, made from the shared data folder if missing). Not run by
CI; no timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from common import setup_device, shared_data

from untwine import experiment
from untwine.data import DATASETS, ImageDataset
from untwine.data import QUICK_DSPRITES_GRID as GRID
from untwine.diagnostics import importance_log_likelihood
from untwine.metrics import evaluate_elbo, untrained_copy
from untwine.pyro_models.registry import MODELS

#: models trained on MNIST; every other registered model is trained on procedural dSprites
ON_MNIST = ("n-vae", "ug-vae", "ml-vae")
#: a model with groups is scored on at least this many of them
MIN_GROUPS = 4
COLUMNS = ("model", "state", "data", "images (units)", "K", "log p(x) IWAE ± se", "PSIS", "ELBO", "k̂ med",
           "k̂ p90", "k̂>0.7", "diag s", "epoch s", "ratio", "per img")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="default: every one")
    p.add_argument("--samples", type=int, default=100, help="guide draws K per image or group (default 100)")
    p.add_argument("--images", type=int, default=512,
                   help=f"images scored (default 512; a model with groups: at least {MIN_GROUPS} groups)")  # fmt: skip
    p.add_argument("--inner", type=int, default=10, help="inner draws per image of a model with groups (default 10)")
    p.add_argument("--data-root", type=Path, default=Path("/tmp/ugroot"), help="folder holding MNIST/raw")
    p.add_argument("--out", type=Path, help="JSON lines file: one line per row, appended as they finish")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--progress", action="store_true", help="progress bars while training")
    return p, p.parse_args(argv)


class Unlabelled(ImageDataset):
    """``data`` whose batches come without labels, so :func:`evaluate_elbo` scores :math:`x` alone (as the bound
    does, ``labels=False``), and whose epoch order (the groups) is ``data``'s."""

    def __init__(self, data: ImageDataset):
        super().__init__(data.images, data.targets, data.max_value, data.name)
        self.data = data

    def batch(self, index: torch.Tensor, device: torch.device | str | None = None) -> tuple[torch.Tensor, None]:
        return self.data.batch(index, device)[0], None

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        return self.data.epoch_order(generator)


def mnist_root(root: Path) -> Path:
    """``root``, holding ``MNIST/raw`` (copied from the shared data folder, writable, when missing)."""
    if not (root / "MNIST" / "raw").is_dir():
        source = shared_data() / "mnist" / "MNIST"
        if not source.is_dir():
            sys.exit(f"{root / 'MNIST'} and {source} do not exist; pass --data-root with MNIST/raw in it")
        shutil.copytree(source, root / "MNIST", dirs_exist_ok=True)
        for path in [root / "MNIST", *(root / "MNIST").rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    return root


def header(args: argparse.Namespace) -> str:
    grid = ", ".join(f"{len(v)} {k}" for k, v in GRID.items())
    mnist = DATASETS["mnist"]
    return (
        f"quick runs: {experiment.QUICK_EPOCHS} epochs, batches of min(data's batch, {experiment.QUICK_MAX_BATCH}); "
        f"dSprites: procedural sub-grid (every shape and scale; {grid}), batch "
        f"{min(DATASETS['dsprites'].batch_size, experiment.QUICK_MAX_BATCH)}, held out = training data; "
        f"MNIST: seeded {mnist.quick_size} of the training split, batch {mnist.batch_size} (one group of group_size "
        f"per step for a model with groups), held out = seeded {mnist.quick_size} of the test split\n"
        f"scored: a seeded {args.images} of the held-out images (a model with groups: at least {MIN_GROUPS} groups), "
        f"K = {args.samples} guide draws per unit (a model with groups: K draws of the group's latent, each with "
        f"{args.inner} of every image's own), seed 0; ELBO: evaluate_elbo, 1 particle, same images, no labels"
    )


def score(net, scored: ImageDataset, n: int, args, device) -> dict[str, Any]:
    """The diagnostic and the ELBO of ``net`` on ``scored``, with their seconds."""
    pyro.clear_param_store()
    t0 = time.perf_counter()
    result = importance_log_likelihood(
        net, scored, num_samples=args.samples, max_images=n, seed=0, inner_samples=args.inner, device=device
    )
    diag_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    elbo = evaluate_elbo(net, Unlabelled(scored), device=device)
    elbo_s = time.perf_counter() - t0
    return {**result.summary(), "elbo": elbo, "diag_seconds": diag_s, "elbo_seconds": elbo_s}


def measure(name: str, args, device, scratch: Path) -> list[dict[str, Any]]:
    """Train ``name`` quickly, then one row for the trained model and one for its untrained copy."""
    data = "mnist" if name in ON_MNIST else "dsprites"
    root = mnist_root(args.data_root) if data == "mnist" else None
    t0 = time.perf_counter()
    run = experiment.train(name, data=data, data_root=root, out=scratch / name, quick=True, progress=args.progress,
                           figures=False, train_options={"device": str(device)})  # fmt: skip
    train_s = time.perf_counter() - t0
    training = run.data()
    held_out = run.held_out(training)
    group = int(run.model.group_size)
    n = max(args.images, MIN_GROUPS * group) if group > 1 else args.images
    n = min(n, len(held_out))
    n -= n % group
    scored = held_out.random_subset(n, seed=0)
    epochs = [float(row["seconds"]) for row in run.history]
    epoch_s = float(np.median(epochs))
    cfg = run.settings["train"]
    print(f"  {name}: trained on {len(training)} {data} images, {len(epochs)} epochs of batch {cfg['batch_size']} in "
          f"{train_s:.0f} s with metrics (epochs {', '.join(f'{s:.1f}' for s in epochs)} s); "
          f"scoring {n} {'test' if held_out is not training else 'training'} images", flush=True)  # fmt: skip
    rows = []
    for state, net in (("trained", run.model), ("untrained", untrained_copy(run.model, seed=0))):
        row = {"model": name, "state": state, "data": data, "split": "test" if held_out is not training else "train",
               "train_images": len(training), "epochs": len(epochs), "batch_size": cfg["batch_size"],
               "group_size": group, "epoch_seconds": epoch_s, "epoch_seconds_all": epochs,
               "train_seconds": train_s, **score(net, scored, n, args, device)}  # fmt: skip
        row["ratio"] = row["diag_seconds"] / epoch_s
        row["ratio_per_image"] = (row["diag_seconds"] / n) / (epoch_s / len(training))
        print(f"    {state}: log p(x) >= {row['log_px']['iwae']:.1f}, ELBO {row['elbo']['elbo']:.1f}, "
              f"k-hat median {row['khat']['median']}, diagnostic {row['diag_seconds']:.1f} s", flush=True)  # fmt: skip
        rows.append(row)
    return rows


def number(x: Any, digits: int = 1) -> str:
    if isinstance(x, str):  # "inf" / "-inf" from the summary
        return x.replace("inf", "∞")
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> None:
    print("\n| " + " | ".join(COLUMNS) + " |")
    print("|" + " --- |" * len(COLUMNS))
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['state']} | {r['data']} | failed: {r['error']} |" + " |" * (len(COLUMNS) - 4))
            continue
        lp, kh = r["log_px"], r["khat"]
        cells = [r["model"], r["state"], r["data"], f"{lp['images']} ({lp['units']} {lp['unit']}s)",
                 str(lp["num_samples"]), f"{number(lp['iwae'])} ± {number(lp['se'])}", number(lp["psis"]),
                 number(r["elbo"]["elbo"]), number(kh["median"], 2), number(kh["p90"], 2),
                 f"{100 * kh['share_above_0.7']:.0f} %", number(r["diag_seconds"]), number(r["epoch_seconds"]),
                 number(r["ratio"], 2), number(r["ratio_per_image"], 1)]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    parser, args = parse_args(argv)
    device = setup_device(parser, args)
    start = time.perf_counter()
    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    print(header(args), flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="untwine-diag-") as scratch:
        for name in args.models:
            try:
                new = measure(name, args, device, Path(scratch))
            except Exception as err:  # one model failing leaves the others' rows
                traceback.print_exc()
                data = "mnist" if name in ON_MNIST else "dsprites"
                new = [{"model": name, "state": "–", "data": data, "error": f"{type(err).__name__}: {err}"[:200]}]
            rows.extend(new)
            if args.out is not None:
                with args.out.open("a") as f:
                    f.writelines(json.dumps(row) + "\n" for row in new)
    table(rows)
    print(f"\ntotal: {time.perf_counter() - start:.0f} s ({torch.__version__}, {device})")


if __name__ == "__main__":
    main()
