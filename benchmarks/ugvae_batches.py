r"""What UG-VAE's global latent knows about a batch, against the ML-VAE ablation and an untrained network.

Trains UG-VAE and the ML-VAE ablation (no cluster variable) on random MNIST batches of 128 with
:func:`untwine.inference.fit` (the authors' MNIST setting: Adam 5e-3, one group per step), then:

* **structured batches** (Table 1 and the supplementary MNIST experiment): linear and RBF SVMs tell batch kinds apart
  from the global posterior means of held-out batches (:func:`untwine.metrics.batch_classification`: digit series
  and random batches, training and test batches from disjoint halves of the MNIST test split);
* **domain alignment** (section 4.2, with ``--domains``): both models trained on MNIST + Fashion-MNIST batches mixed
  50/50, then SVM accuracy of pure-MNIST vs pure-Fashion batches from their global posterior means
  (:func:`untwine.metrics.domain_alignment`), and which latent carries the domain when z and beta are swapped between
  a pure batch of each domain (:func:`untwine.metrics.domain_transfer`).

An *untrained* UG-VAE (fresh weights) is scored the same way, because the global posterior mean averages per-image
features over the batch: batches whose digit histograms differ are separable by that average alone, so the baseline
says how much of a score is learned.

    python benchmarks/ugvae_batches.py --quick                 # a couple of minutes on a CPU
    python benchmarks/ugvae_batches.py --epochs 20 --domains   # the full comparison

Not run by CI; every number comes from one run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import shared_root

from untwine.data import load_dataset
from untwine.inference import TrainConfig, fit, resolve_device
from untwine.metrics import batch_classification, domain_alignment, domain_transfer, format_table
from untwine.pyro_models import UGVAE, UGVAEConfig

MODELS = {"UG-VAE": True, "ML-VAE": False}  # name -> mixture


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-root", help="folder holding MNIST/raw and FashionMNIST/raw (default: copy the shared data)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs of each model (default 10; quick 3)")
    p.add_argument("--num-batches", type=int, default=100, help="batches per kind for SVM training, and for testing")
    p.add_argument("--subset", type=int, help="train on this many images (quick: 10000)")
    p.add_argument("--domains", action="store_true", help="also run the MNIST + Fashion-MNIST domain experiment")
    p.add_argument("--only-domains", action="store_true", help="run only the domain experiment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--quick", action="store_true", help="10,000 training images, 3 epochs, 40 batches per kind")
    p.add_argument("--no-progress", action="store_true", help="no progress bars while training")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.num_batches, args.subset = 3, 40, args.subset or 10_000
    return args


def train_models(train, args, device) -> dict[str, UGVAE]:
    models = {}
    for name, mixture in MODELS.items():
        torch.manual_seed(args.seed)
        model = UGVAE(UGVAEConfig(image_shape=train.image_shape, mixture=mixture))
        config = TrainConfig(
            epochs=args.epochs, batch_size=model.group_size, lr=UGVAE.default_lr, seed=args.seed, device=str(device)
        )
        t0 = time.perf_counter()
        result = fit(model, train, config, progress=not args.no_progress)
        print(
            f"  trained {name} on {train.name}: {args.epochs} epochs in {time.perf_counter() - t0:.1f} s, "
            f"final loss {result.history[-1]['loss']:.2f} nats per image",
            flush=True,
        )
        models[name] = model
    torch.manual_seed(args.seed)
    models["untrained"] = UGVAE(UGVAEConfig(image_shape=train.image_shape)).to(device).eval()
    return models


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    device = resolve_device(args.device)
    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    with tempfile.TemporaryDirectory(prefix="untwine-ug-") as scratch:
        root = Path(args.data_root) if args.data_root else None
        if root is None:
            root = shared_root("mnist", Path(scratch))
            shared_root("fashion-mnist", Path(scratch))
        train = load_dataset("mnist", root, train=True, subset=args.subset, seed=args.seed)
        test = load_dataset("mnist", root, train=False)
        mixed_train = mixed_test = None
        if args.domains or args.only_domains:
            mixed_train = load_dataset("mnist+fashion-mnist", root, train=True, subset=args.subset, seed=args.seed)
            mixed_test = load_dataset("mnist+fashion-mnist", root, train=False)
    print(f"MNIST: {len(train)} training images, {len(test)} test images; device {device}; batches of 128")

    if not args.only_domains:
        models = train_models(train, args, device)
        results = {
            name: batch_classification(model, test, num_batches=args.num_batches, seed=args.seed)
            for name, model in models.items()
        }
        print(f"\nstructured batches ({args.num_batches} batches per kind for training and for testing)")
        print(format_table(results))

    if mixed_train is not None:
        print(f"\nMNIST + Fashion-MNIST: {len(mixed_train)} training images, {len(mixed_test)} test images")
        models = train_models(mixed_train, args, device)
        results = {
            name: domain_alignment(model, mixed_test, num_batches=args.num_batches, seed=args.seed)["separability"]
            for name, model in models.items()
        }
        for rows in results.values():
            for row in rows:
                row["problem"] = "pure mnist (0) vs pure fashion-mnist (1)"
        print(format_table(results))
        print("\nwhich latent carries the domain (decoded images judged by a linear pixel classifier)")
        print(
            "| model | pixel classifier accuracy | reconstruction accuracy | beta-swap flip rate | z-swap flip rate |"
        )
        print("| --- | --- | --- | --- | --- |")
        for name, model in models.items():
            t = domain_transfer(model, mixed_test, num_batches=max(args.num_batches // 5, 1), seed=args.seed)
            print(
                f"| {name} | {t['classifier_accuracy']:.3f} | {t['reconstruction_accuracy']:.3f} | "
                f"{t['beta_swap_flip_rate']:.3f} |"
            )
    print(f"\ntotal: {time.perf_counter() - start:.1f} s ({torch.__version__}, {device})")


if __name__ == "__main__":
    main()
