"""Command line: ``untwine train|eval|plot|list``.

Bad input (unknown model or dataset, missing files, wrong image shape, bad numbers, a corrupt or mismatched
checkpoint) ends with a one-line ``untwine: error: ...`` message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must lie in [0, 2**32), got {value}")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 4,4,4,4,4, got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"subspace sizes must be positive integers, got {text!r}")
    return sizes


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"untwine: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="untwine", description="Disentangling VAEs as Pyro model/guide pairs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model and write a run folder")
    t.add_argument("model", help="registered model name (see `untwine list`)")
    t.add_argument("--data", default="dsprites", help="dataset name (default: procedural dSprites)")
    t.add_argument("--data-root", default=None, help="folder (or file) holding the dataset's files")
    t.add_argument("--subset", type=_positive_int, default=None, help="train on a seeded random subset of N images")
    t.add_argument("--epochs", type=_positive_int, default=None)
    t.add_argument("--batch-size", type=_positive_int, default=None)
    t.add_argument("--lr", type=_positive_float, default=None, help="Adam learning rate")
    t.add_argument("--beta", type=_positive_float, default=None, help="KL weight (beta-VAE) or TC weight (beta-TCVAE)")
    t.add_argument("--alpha", type=float, default=None, help="beta-TCVAE: weight of the index-code MI (default 1)")
    t.add_argument("--gamma", type=float, default=None, help="beta-TCVAE: weight of the dimension-wise KL (default 1)")
    t.add_argument("--tc-estimator", choices=["mss", "mws"], default=None, help="beta-TCVAE: log q(z) estimator")
    t.add_argument("--latent-dim", type=_positive_int, default=None)
    t.add_argument("--subspaces", type=_sizes, default=None, help="ISA-VAE: coordinates per subspace, e.g. 4,4,4,4,4")
    t.add_argument("--p0", type=_positive_float, default=None, help="ISA-VAE: root exponent (default 2.1)")
    t.add_argument("--exponent", type=_positive_float, default=None, help="ISA-VAE: subspace exponent (default 2.2)")
    t.add_argument("--prior-scale", type=_positive_float, default=None, help="ISA-VAE: scale s of the radial law")
    t.add_argument(
        "--learn-exponents", action="store_const", const=True, default=None,
        help="ISA-VAE: learn the subspace exponents (start at 2.0, root fixed)",
    )  # fmt: skip
    t.add_argument("--exponent-lr", type=_positive_float, default=None, help="ISA-VAE: Adam lr of learned exponents")
    t.add_argument("--num-classes", type=_positive_int, default=None, help="N-VAE: classes (default: from the labels)")
    t.add_argument("--class-dim", type=_positive_int, default=None, help="N-VAE: latent dimensions per class block")
    t.add_argument("--shared-dim", type=_positive_int, default=None, help="N-VAE: shared latent dimensions")
    t.add_argument("--beta-c", type=_positive_float, default=None, help="N-VAE: KL weight of the class blocks (2)")
    t.add_argument(
        "--objective", choices=["surrogate", "exact"], default=None, help="N-VAE: eq. 7 or the bound of eq. 3"
    )
    t.add_argument("--alpha-p", type=_positive_float, default=None, help="N-VAE: Dirichlet prior concentration")
    t.add_argument("--alpha-q", type=_positive_float, default=None, help="N-VAE: total concentration of q(pi|x)")
    t.add_argument(
        "--no-class-bias", dest="class_bias", action="store_const", const=False, default=None,
        help="N-VAE: drop the class-dependent bias of appendix B (the fig. 10 ablation)",
    )  # fmt: skip
    t.add_argument("--global-dim", type=_positive_int, default=None, help="UG-VAE: size of the global latent (20)")
    t.add_argument("--clusters", type=_positive_int, default=None, help="UG-VAE: mixture components K (10)")
    t.add_argument(
        "--group-size", type=int, default=None, help="UG-VAE: images sharing one global latent (128; at least 2)"
    )
    t.add_argument(
        "--global-prior-factor", action="store_const", const=True, default=None,
        help="UG-VAE: include the N(0, I) prior in the product of Gaussians of q(beta|X, Z)",
    )  # fmt: skip
    t.add_argument("--network", default=None, help="encoder/decoder family (default: chosen by image shape)")
    t.add_argument("--likelihood", choices=["bernoulli", "gaussian"], default=None)
    t.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument(
        "--distributed", action="store_const", const=True, default=None,
        help="data-parallel over the processes of a torchrun launch (on by itself under torchrun with >1 process)",
    )  # fmt: skip
    t.add_argument(
        "--checkpoint-every", type=_positive_int, default=None, metavar="N",
        help="also checkpoint every N steps inside an epoch (default: at the end of each epoch)",
    )  # fmt: skip
    t.add_argument("--out", default=None, help="run folder (default: runs/MODEL-DATA)")
    t.add_argument("--quick", action="store_true", help="small data and few epochs: about a minute on a CPU")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    for name, text in (("eval", "recompute metrics.json of a run"), ("plot", "redraw the figures of a run")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", help="run folder written by `untwine train`")
        p.add_argument("--device", default="auto")

    sub.add_parser("list", help="list models, datasets and networks")
    return parser


def _train(args: argparse.Namespace) -> None:
    from untwine import experiment

    run = experiment.train(
        args.model,
        data=args.data,
        data_root=args.data_root,
        out=args.out,
        quick=args.quick,
        resume=args.resume,
        overwrite=args.overwrite,
        subset=args.subset,
        progress=not args.no_progress,
        model_options={
            "beta": args.beta,
            "alpha": args.alpha,
            "gamma": args.gamma,
            "estimator": args.tc_estimator,
            "latent_dim": args.latent_dim,
            "subspace_sizes": args.subspaces,
            "p0": args.p0,
            "exponent": args.exponent,
            "prior_scale": args.prior_scale,
            "learn_exponents": args.learn_exponents,
            "exponent_lr": args.exponent_lr,
            "num_classes": args.num_classes,
            "class_dim": args.class_dim,
            "shared_dim": args.shared_dim,
            "beta_c": args.beta_c,
            "objective": args.objective,
            "alpha_p": args.alpha_p,
            "alpha_q": args.alpha_q,
            "class_bias": args.class_bias,
            "global_dim": args.global_dim,
            "num_clusters": args.clusters,
            "group_size": args.group_size,
            "global_prior_factor": args.global_prior_factor,
            "network": args.network,
            "likelihood": args.likelihood,
        },
        train_options={
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "device": args.device,
            "distributed": args.distributed,
            "checkpoint_every": args.checkpoint_every,
        },
    )
    if not run.is_main:
        return
    last = run.history[-1] if run.history else {}
    print(f"trained {args.model} on {args.data}: loss {last.get('loss', float('nan')):.2f} nats/image")
    print(f"run folder: {run.path}")
    print(f"figures:    {run.path / experiment.FIGURES}")


def _eval(args: argparse.Namespace) -> None:
    from untwine import experiment
    from untwine.run_folder import check_not_in_use

    check_not_in_use(args.run)  # a run still training has no final checkpoint to evaluate
    metrics = experiment.evaluate(experiment.load_run(args.run, args.device))
    print(json.dumps(metrics, indent=2))


def _plot(args: argparse.Namespace) -> None:
    from untwine import experiment
    from untwine.run_folder import check_not_in_use

    check_not_in_use(args.run)
    for path in experiment.plot(experiment.load_run(args.run, args.device)):
        print(path)


def _list(args: argparse.Namespace) -> None:
    from untwine.data import DATASETS
    from untwine.pyro_models import MODELS
    from untwine.pyro_models.networks import NETWORKS

    print("models:")
    for name, spec in MODELS.items():
        print(f"  {name:<14} {spec.summary}")
    print("datasets:")
    for name, spec in DATASETS.items():
        print(f"  {name:<14} {spec.summary}")
    print("networks:", ", ".join(NETWORKS))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``untwine`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from untwine.data import DataError
    from untwine.inference.train import TrainingError
    from untwine.pyro_models.networks import NetworkError
    from untwine.pyro_models.vae import ConfigError

    handlers = {"train": _train, "eval": _eval, "plot": _plot, "list": _list}
    try:
        handlers[args.command](args)
    except (DataError, TrainingError, NetworkError, ConfigError) as err:
        print(f"untwine: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("untwine: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
        return 130
    finally:
        _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """End a torchrun process group that training joined, so every rank exits cleanly."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
