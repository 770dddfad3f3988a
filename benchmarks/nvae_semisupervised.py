r"""Semi-supervised N-VAE on MNIST against a classifier that sees only the labelled images, and z_c's share of the
latent KL on Fashion-MNIST.

**MNIST part** (default). For each number of labels (100 and 1,000 of the 60,000 training images; the rest keep the
label ``-1``) and each seed, trains N-VAE with ``semi_supervised=True`` on the whole training split with
:func:`untwine.inference.fit` (labelled images spread over every batch, :meth:`~untwine.data.ImageDataset.hide_labels`
with ``labelled_share``; the labelled term weighted by ``class_weight``, :class:`~untwine.pyro_models.nvae.NVAEConfig`)
and reports the accuracy of :math:`\arg\max_y q(y \mid x)` on the 10,000 test images. Next to it, the control that
could fake the result: the same encoder (N-VAE's own, :meth:`~untwine.pyro_models.nvae.NVAE.classify`) trained as a
plain classifier, :math:`\max \sum \log q(y \mid x)`, on the labelled images alone, with the same seeds and label
draws. If the unlabelled images help, N-VAE beats the control; Welch's t-test (``scipy.stats.ttest_ind``,
``equal_var=False``) compares the two over seeds. Kingma et al. (2014)'s M2 test errors (11.97 % with 100 labels,
3.60 % with 1,000) are quoted from their table 1 as a reference, not run here. The default of 3 epochs (a few minutes
per run on one CPU thread) is a CPU budget, not convergence: each run prints its test accuracy after every epoch.

**Fashion-MNIST part** (``--fashion``). Trains N-VAE on the fully labelled Fashion-MNIST training split (the paper's
setting, section IV-A) for each seed and reports the class blocks' share of the latent KL,
:math:`\mathrm{KL}(z_c) / (\mathrm{KL}(z_c) + \mathrm{KL}(z_s))` per test image
(:func:`untwine.metrics.latent_kl`), with the test accuracy. The paper states no sizes for :math:`d_c` and
:math:`d_s`, so the library's defaults (4 and 2) are used unless ``--class-dim``/``--shared-dim`` say otherwise.

    python benchmarks/nvae_semisupervised.py --quick              # a few minutes on a CPU: 1 seed, small epochs
    python benchmarks/nvae_semisupervised.py --threads 1          # MNIST, 100 and 1,000 labels, 3 seeds
    python benchmarks/nvae_semisupervised.py --fashion --threads 1

Numbers are means ± standard errors over seeds (one training run per seed). ``--data-root`` is the folder
torchvision expects (it holds ``MNIST/raw`` or ``FashionMNIST/raw``); without it the shared data folder is copied to
a temporary folder first. Not run by CI; no timing is asserted.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from common import setup_device, shared_root
from scipy import stats
from torch import nn

from untwine.data import load_dataset
from untwine.inference import TrainConfig, fit
from untwine.metrics import classification_accuracy, latent_kl
from untwine.pyro_models.nvae import NVAE, NVAEConfig

#: Kingma et al. (2014), table 1, M2 test error (%) on MNIST by number of labels: quoted, not run here
M2_QUOTED = {100: 11.97, 1000: 3.60, 600: 4.94, 3000: 2.59}
QUICK = {"labels": [1000], "seeds": 1, "epochs": 1, "fashion_epochs": 2, "control_steps": 500}


class LabelledOnlyClassifier(nn.Module):
    r"""The control: N-VAE's encoder trained as a plain classifier, :math:`y \sim \mathrm{Cat}(q(y \mid x))` observed,
    with an empty guide, so that ``Trace_ELBO`` is the cross-entropy and :func:`~untwine.inference.fit` trains it;
    the class metrics read the trained encoder through ``self.net``."""

    def __init__(self, config: NVAEConfig):
        super().__init__()
        self.net = NVAE(config)  # only the encoder's q(y|x) head is used; the decoder gets no gradient

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("classifier", self.net.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(probs=self.net.classify(x)), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pass


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation over :math:`\\sqrt{n}`; 0 for one value)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0


def fmt(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    m, se = mean_se(values)
    return f"{scale * m:.{digits}f} ± {scale * se:.{digits}f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fashion", action="store_true", help="the Fashion-MNIST z_c share instead of the MNIST part")
    p.add_argument("--data-root", help="folder holding MNIST/raw or FashionMNIST/raw (default: copy the shared data)")
    p.add_argument("--labels", type=int, nargs="+", help="labelled training images (default 100 1000)")
    p.add_argument("--seeds", type=int, help="seeds 0..n-1 (default 3; quick 1)")
    p.add_argument("--epochs", type=int, help="semi-supervised N-VAE epochs (default 3; quick 1)")
    p.add_argument("--fashion-epochs", type=int, help="Fashion-MNIST N-VAE epochs (default 10; quick 2)")
    p.add_argument("--control-steps", type=int, help="optimiser steps of the control (default 2000; quick 500)")
    p.add_argument(
        "--class-weight", type=float, help="gamma, weight of the labelled log q(y|x) (default: NVAEConfig's)"
    )
    p.add_argument("--labelled-share", type=float, default=0.25, help="share of each batch given to labelled images")
    p.add_argument("--class-dim", type=int, default=4, help="d_c (Fashion-MNIST part)")
    p.add_argument("--shared-dim", type=int, default=2, help="d_s (Fashion-MNIST part)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--quick", action="store_true", help="1,000 labels, 1 seed, 1 epoch, 2 Fashion-MNIST epochs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars while training")
    args = p.parse_args(argv)
    quick = QUICK if args.quick else {}
    defaults = {"labels": [100, 1000], "seeds": 3, "epochs": 3, "fashion_epochs": 10, "control_steps": 2000}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick.get(key, value))
    return args, p


def load(data: str, data_root: str | None) -> tuple:
    with tempfile.TemporaryDirectory(prefix="untwine-ss-") as scratch:
        root = Path(data_root) if data_root else shared_root(data, Path(scratch))
        return load_dataset(data, root, train=True), load_dataset(data, root, train=False)


def mnist_part(args: argparse.Namespace, device: torch.device) -> None:
    train, test = load("mnist", args.data_root)
    print(f"data: MNIST, {len(train)} training and {len(test)} test images; device {device}")
    base = NVAEConfig(image_shape=train.image_shape, semi_supervised=True, class_weight=args.class_weight)
    print(
        f"N-VAE: semi-supervised, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, class_weight "
        f"{base.classifier_weight:g}, labelled share {args.labelled_share:g}; control: the same encoder, "
        f"{args.control_steps} steps on the labelled images alone"
    )
    rows = []
    for labels in args.labels:
        nvae, control, seconds = [], [], []
        for seed in range(args.seeds):
            data = train.hide_labels(labels, seed=seed, labelled_share=args.labelled_share)
            config = TrainConfig(
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, device=str(device)
            )
            t0 = time.perf_counter()
            torch.manual_seed(seed)  # the initial weights too depend on the seed only
            model = NVAE(base)
            # test accuracy after every epoch (about 2 % of an epoch's time), to show whether it is still rising
            curve = []

            def record(m: nn.Module, epoch: int) -> dict:
                curve.append(classification_accuracy(m, test, device=device)["accuracy"])
                return {"test_accuracy": curve[-1]}

            fit(model, data, config, callbacks=[record], progress=not args.no_progress)
            seconds.append(time.perf_counter() - t0)
            nvae.append(curve[-1])

            labelled = train.subset(torch.nonzero(data.targets >= 0).squeeze(1))
            batch = min(args.batch_size, len(labelled))
            steps = math.ceil(len(labelled) / batch)
            torch.manual_seed(seed)
            classifier = LabelledOnlyClassifier(base)
            control_config = TrainConfig(
                epochs=math.ceil(args.control_steps / steps), batch_size=batch, lr=args.lr, seed=seed,
                device=str(device),
            )  # fmt: skip
            fit(classifier, labelled, control_config, progress=False)
            control.append(classification_accuracy(classifier.net, test, device=device)["accuracy"])
            print(
                f"  {labels} labels, seed {seed}: N-VAE {nvae[-1]:.4f} ({seconds[-1]:.0f} s), "
                f"labelled-only {control[-1]:.4f}; N-VAE by epoch: {' '.join(f'{a:.3f}' for a in curve)}",
                flush=True,
            )
        p = stats.ttest_ind(nvae, control, equal_var=False).pvalue if args.seeds > 1 else float("nan")
        rows.append((labels, nvae, control, p, seconds))

    print()
    print(f"MNIST test accuracy (%, {len(test)} test images), mean ± SE over seeds")
    print()
    print("| labels | seeds | N-VAE | labelled-only classifier | Welch p | M2 (quoted, not run) | s per N-VAE run |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for labels, nvae, control, p, seconds in rows:
        m2 = f"{100 - M2_QUOTED[labels]:.2f}" if labels in M2_QUOTED else "–"
        print(f"| {labels} | {len(nvae)} | {fmt(nvae)} | {fmt(control)} | {p:.2g} | {m2} | {np.mean(seconds):.0f} |")


def fashion_part(args: argparse.Namespace, device: torch.device) -> None:
    train, test = load("fashion-mnist", args.data_root)
    print(f"data: Fashion-MNIST, {len(train)} training and {len(test)} test images, all labelled; device {device}")
    config = NVAEConfig(image_shape=train.image_shape, class_dim=args.class_dim, shared_dim=args.shared_dim)
    print(
        f"N-VAE: d_c {config.class_dim}, d_s {config.shared_dim}, beta_c {config.beta_c:g}, {args.fashion_epochs} "
        f"epochs, batch {args.batch_size}, lr {args.lr}; KL per test image"
    )
    shares, z_c, z_s, z_cy, accuracy, seconds = [], [], [], [], [], []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        model = NVAE(config)
        t0 = time.perf_counter()
        fit(
            model,
            train,
            TrainConfig(
                epochs=args.fashion_epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, device=str(device)
            ),
            progress=not args.no_progress,
        )
        seconds.append(time.perf_counter() - t0)
        kl = latent_kl(model, test, device=device)
        z_c.append(kl["z_c"])
        z_s.append(kl["z_s"])
        z_cy.append(kl["z_cy"])
        shares.append(kl["z_c"] / (kl["z_c"] + kl["z_s"]))
        accuracy.append(classification_accuracy(model, test, device=device)["accuracy"])
        print(
            f"  seed {seed}: z_c share {shares[-1]:.3f}, accuracy {accuracy[-1]:.4f} ({seconds[-1]:.0f} s)", flush=True
        )
    print()
    print(f"Fashion-MNIST, mean ± SE over {args.seeds} seeds")
    print()
    print(
        "| d_c | d_s | epochs | seeds | z_c share of latent KL (%) | KL z_c (nats) | KL z_cy | KL z_s | accuracy (%) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {config.class_dim} | {config.shared_dim} | {args.fashion_epochs} | {args.seeds} | {fmt(shares)} | "
        f"{fmt(z_c, 1, 3)} | {fmt(z_cy, 1, 3)} | {fmt(z_s, 1, 3)} | {fmt(accuracy)} |"
    )


def main(argv: list[str] | None = None) -> None:
    args, parser = parse_args(argv)
    start = time.perf_counter()
    device = setup_device(parser, args)
    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    (fashion_part if args.fashion else mnist_part)(args, device)
    print(f"\ntotal: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
