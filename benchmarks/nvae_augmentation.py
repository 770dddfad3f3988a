r"""N-VAE vs. the conditional VAE as sources of artificial training data (N-VAE paper, section IV-C, fig. 9).

Trains N-VAE (default :class:`~untwine.pyro_models.nvae.NVAEConfig`) and the CVAE baseline
(:class:`~untwine.pyro_models.cvae.CVAE`) on the training split with :func:`untwine.inference.fit`, then trains MLP
classifiers on the training set with each image replaced, with probability 0.4 or 1, by a class-conditional sample
decoded from :math:`z \sim \mathcal{N}(0, \sigma^2 I)`, and prints the test error on the real test split for each
σ in 1.0..2.0 (mean ± std over 3 classifiers), with the baseline trained on real data only
(:func:`untwine.metrics.augmentation.augmentation_table`). The paper's finding to look for: only N-VAE's error keeps
falling (fraction 0.4) or degrades least (fraction 1) as σ grows. The paper's GAN baselines (CGAN, AC-GAN) are out of
scope: untwine implements VAEs as Pyro model/guide pairs, and the CVAE is the baseline of that kind.

    python benchmarks/nvae_augmentation.py --quick                    # a few minutes on a CPU: small subsets
    python benchmarks/nvae_augmentation.py --device cuda              # MNIST, 30 generative epochs
    python benchmarks/nvae_augmentation.py --data fashion-mnist --device cuda

``--data-root`` is the folder torchvision expects (it holds ``MNIST/raw`` or ``FashionMNIST/raw``). Without it the
shared data folder (``$UNTWINE_SHARED_DATA`` or ``../shared/data`` beside the repository) is copied to a temporary
folder first, since torchvision extracts the archives in place. Not run by CI; every number comes from one run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RAW_FOLDERS, shared_root

from untwine.data import load_dataset
from untwine.inference import TrainConfig, fit, resolve_device
from untwine.metrics.augmentation import augmentation_table, format_augmentation_table
from untwine.pyro_models.cvae import CVAE, CVAEConfig
from untwine.pyro_models.nvae import NVAE, NVAEConfig

QUICK = {"train": 5000, "test": 2000, "epochs": 2, "classifier_epochs": 2, "repeats": 2, "sigmas": [1.0, 1.4, 2.0]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", choices=sorted(RAW_FOLDERS), default="mnist")
    p.add_argument("--data-root", help="folder holding MNIST/raw or FashionMNIST/raw (default: copy the shared data)")
    p.add_argument("--epochs", type=int, help="epochs of N-VAE and CVAE training (default 30; quick 2)")
    p.add_argument("--classifier-epochs", type=int, help="epochs of each classifier (default 10; quick 2)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size of the generative models (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the generative models")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.4, 1.0])
    p.add_argument("--sigmas", type=float, nargs="+", help="default 1.0 1.2 ... 2.0 (quick: 1.0 1.4 2.0)")
    p.add_argument("--repeats", type=int, help="classifiers per cell (default 3; quick 2)")
    p.add_argument("--train-subset", type=int, help="use this many training images (quick: 5000)")
    p.add_argument("--test-subset", type=int, help="use this many test images (quick: 2000)")
    p.add_argument("--binarize", action="store_true", help="Bernoulli draws instead of mean images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--quick", action="store_true", help="small subsets, 2 epochs, 3 sigmas, 2 repeats")
    p.add_argument("--no-progress", action="store_true", help="no progress bars while training the models")
    args = p.parse_args(argv)
    quick = QUICK if args.quick else {}
    defaults = {"epochs": 30, "classifier_epochs": 10, "repeats": 3, "sigmas": [1.0, 1.2, 1.4, 1.6, 1.8, 2.0]}
    for key in ("epochs", "classifier_epochs", "repeats", "sigmas"):
        if getattr(args, key) is None:
            setattr(args, key, quick.get(key, defaults[key]))
    args.train_subset = args.train_subset or quick.get("train")
    args.test_subset = args.test_subset or quick.get("test")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="untwine-aug-") as scratch:
        root = Path(args.data_root) if args.data_root else shared_root(args.data, Path(scratch))
        train = load_dataset(args.data, root, train=True, subset=args.train_subset, seed=args.seed)
        test = load_dataset(args.data, root, train=False, subset=args.test_subset, seed=args.seed)
    num_classes = int(train.targets.max()) + 1
    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    print(f"data: {args.data}, {len(train)} training and {len(test)} test images; device {device}")

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=str(device))
    models = {
        "N-VAE": NVAE(NVAEConfig(image_shape=train.image_shape, num_classes=num_classes)),
        "CVAE": CVAE(CVAEConfig(image_shape=train.image_shape, num_classes=num_classes)),
    }
    for name, model in models.items():
        t0 = time.perf_counter()
        result = fit(model, train, config, progress=not args.no_progress)
        print(
            f"trained {name}: {args.epochs} epochs in {time.perf_counter() - t0:.1f} s, "
            f"final loss {result.history[-1]['loss']:.2f} nats per image"
        )

    t0 = time.perf_counter()
    rows = augmentation_table(
        models,
        train,
        test,
        fractions=args.fractions,
        sigmas=args.sigmas,
        repeats=args.repeats,
        epochs=args.classifier_epochs,
        seed=args.seed,
        device=device,
        binarize=args.binarize,
        progress=lambda line: print("  " + line, flush=True),
    )
    table_s = time.perf_counter() - t0
    print()
    print(
        f"classifiers: MLP 784-512-256-10, {args.classifier_epochs} epochs each, {args.repeats} repeats per cell; "
        f"artificial images are {'Bernoulli draws' if args.binarize else 'mean images'}"
    )
    print(format_augmentation_table(rows))
    print(f"\ntable: {table_s:.1f} s; total: {time.perf_counter() - start:.1f} s ({torch.__version__}, {device})")


if __name__ == "__main__":
    main()
