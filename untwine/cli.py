"""Command line: ``untwine train|eval|plot|report|sweep|compare|list``.

Bad input (unknown model or dataset, missing files, wrong image shape, bad numbers, a corrupt or mismatched
checkpoint) ends with a one-line ``untwine: error: ...`` message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _name_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated evaluation names such as dci,sap, got {text!r}")
    return names


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


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), value


def _number(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")

    return parse


def _text(text: str) -> str:
    return text


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "yes", "1", "on"):
        return True
    if text.lower() in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _converter(hint: Any) -> Callable[[str], Any]:
    """How a command-line string becomes a value of a config field annotated ``hint``; range checks are the
    config's own (``__post_init__``), so a bad value gets the same message from Python and from the CLI."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _converter(args[0])
    if typing.get_origin(hint) is tuple:
        return _sizes
    return {bool: _boolean, int: _number(int), float: _number(float)}.get(hint, _text)


def _field_help(cls: type) -> dict[str, str]:
    """``:param name: text`` entries of the docstrings of ``cls`` and its bases, by name, without Sphinx markup."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        for name, text in re.findall(r":param (\w+):(.*?)(?=\n\s*:param |\n\s*\n|\Z)", doc, flags=re.S):
            text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([^`]+)`", r"\1", text).replace("``", "")
            found[name] = " ".join(text.split()).replace("%", "%%")
    return found


_FIELD = "setting_"  # namespace prefix of the generated flags


def _model_fields(model: str) -> dict[str, tuple[Any, Callable[[str], Any], Any, str]]:
    """``name -> (field, converter, default, help)`` for the config and objective settings of ``model``."""
    from untwine.pyro_models import model_spec

    spec = model_spec(model)
    fields = {}
    for cls, chosen, owned in ((spec.config_cls, spec.defaults, spec.config_fields()),
                               (spec.objective, spec.objective_defaults, spec.objective_fields())):  # fmt: skip
        if cls is None:
            continue
        hints, helps = typing.get_type_hints(cls), _field_help(cls)
        for f in owned:
            default = chosen.get(f.name, f.default)
            fields[f.name] = (f, _converter(hints[f.name]), default, helps.get(f.name, ""))
    return fields


def _add_model_flags(parser: argparse.ArgumentParser, model: str) -> None:
    """One flag per setting of ``model``'s config and objective dataclasses (``--latent-dim``, ``--tc-weight``)."""
    group = parser.add_argument_group(f"settings of {model}")
    for name, (_, convert, default, text) in _model_fields(model).items():
        flag = "--" + name.replace("_", "-")
        shown = f"{text} (default: {default})".strip()
        if convert is _boolean:
            group.add_argument(
                flag, dest=_FIELD + name, action=argparse.BooleanOptionalAction, default=None, help=shown
            )
        else:
            group.add_argument(flag, dest=_FIELD + name, type=convert, default=None, metavar="VALUE", help=shown)


def _model_name(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """The model of an ``untwine train`` command line (its first positional argument), before parsing it."""
    if len(argv) < 2 or argv[0] != "train":
        return None
    valued = {o for a in parser.train._actions for o in a.option_strings if a.nargs != 0}
    skip = False
    for token in argv[1:]:
        if skip:
            skip = False
        elif token.startswith("-"):
            skip = token in valued
        else:
            return token
    return None


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"untwine: error: {message} (see `{self.prog} --help`)\n")


def build_parser(model: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``model`` (a registered name or ``module:Class``) ``train`` also takes that model's settings."""
    parser = _Parser(prog="untwine", description="Disentangling VAEs as Pyro model/guide pairs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser(
        "train", help="train a model and write a run folder",
        epilog="The model's own settings (its config and objective fields, e.g. --latent-dim, --kl-weight, "
               "--tc-weight) are listed by `untwine train MODEL --help`; --set KEY=VALUE sets any of them.",
    )  # fmt: skip
    t.add_argument("model", help="registered model name (see `untwine list`) or package.module:ClassName")
    t.add_argument("--data", default="dsprites", help="dataset name (default: procedural dSprites)")
    t.add_argument("--data-root", default=None, help="folder (or file) holding the dataset's files")
    t.add_argument("--subset", type=_positive_int, default=None, help="train on a seeded random subset of N images")
    t.add_argument(
        "--group-by", default="random", metavar="KEY",
        help="training groups of a global-latent model (ug-vae, ml-vae): random (the paper's random batches), "
             "domain, label, or ink (ink:Q for Q ink-quantity quantiles; default 4)",
    )  # fmt: skip
    t.add_argument(
        "--labelled", type=_positive_int, default=None, metavar="N",
        help="semi-supervised (n-vae): keep N seeded labels, hide the rest, a quarter of every batch labelled",
    )  # fmt: skip
    t.add_argument("--epochs", type=_positive_int, default=None)
    t.add_argument("--batch-size", type=_positive_int, default=None)
    t.add_argument("--lr", type=_positive_float, default=None, help="Adam learning rate")
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
    t.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", type=_setting,
        help="set a model or objective setting by its field name, e.g. --set kl_weight=4 (repeatable)",
    )  # fmt: skip
    if model is not None:
        _add_model_flags(t, model)
    parser.train = t

    for name, text in (("eval", "recompute metrics.json of a run"), ("plot", "redraw the figures of a run")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", help="run folder written by `untwine train` (plot: or a sweep folder)")
        p.add_argument("--device", default="auto")
        if name == "eval":
            p.add_argument(
                "--metrics", type=_name_list, default=None, metavar="NAME,...",
                help="only these evaluations (e.g. dci,sap), replacing their entries in metrics.json and keeping the "
                     "rest; default: all of the model's",
            )  # fmt: skip

    r = sub.add_parser(
        "report", help="rebuild report.html, the self-contained page of a run or a sweep",
        description="Write report.html into a run folder (settings, training curve, metrics, figures) or a sweep "
                    "folder (grid, claims and results tables, figures, links to the cells' pages): one HTML file with "
                    "every figure embedded, readable offline. Training, eval, plot and sweep keep it current; this "
                    "rebuilds it from the folder as it is and prints its path.",
    )  # fmt: skip
    r.add_argument("path", metavar="RUN_OR_SWEEP", help="run folder written by `untwine train`, or a sweep folder")

    _add_sweep_parser(sub)
    c = sub.add_parser(
        "compare", help="rank runs by held-out log p(x), image by image, or a sweep's models over seeds",
        description="With run folders: score the same held-out images with each run (importance-sampled log p(x), "
                    "the guide as proposal) and print the ELPD-difference table with paired standard errors. With "
                    "one sweep folder: mean ± SE over seeds of MIG, log p(x) and the share of k-hat > 0.7 per model, "
                    "and the forest plot figures/forest.png.",
    )  # fmt: skip
    c.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP", help="run folders trained on the same data, or a sweep")
    c.add_argument("--samples", type=_positive_int, default=None, metavar="K", help="guide draws per image (100)")
    c.add_argument("--images", type=_positive_int, default=None, metavar="N", help="held-out images scored (2000)")
    c.add_argument("--out", default=None, metavar="FILE.csv", help="also write the table as CSV")
    c.add_argument("--device", default="auto")
    sub.add_parser("list", help="list models, datasets and networks")
    return parser


def _add_sweep_parser(sub) -> None:
    s = sub.add_parser(
        "sweep", help="train a grid of models x strengths x seeds into one folder, then compare them",
        description="Run (or continue) the sweep in DIR. A new sweep needs a grid: --spec FILE.toml, --protocol NAME "
                    "(cpu, paper) or --models; the other grid flags override the file's or protocol's values. Finished "
                    "cells are skipped, failed cells are reported and retried on the next call. `untwine plot DIR` "
                    "redraws results.csv, claims.csv and the figures.",
    )  # fmt: skip
    s.add_argument("dir", help="sweep folder")
    grid = s.add_mutually_exclusive_group()
    grid.add_argument("--spec", default=None, metavar="FILE", help="the grid as a TOML file")
    grid.add_argument("--protocol", default=None, help="a named grid shipped with untwine: cpu or paper")
    grid.add_argument("--models", nargs="+", default=None, metavar="MODEL", help="models of a grid given by flags")
    s.add_argument("--strengths", type=_positive_float, nargs="+", default=None, metavar="VALUE",
                   help="values of each model's regularisation strength (beta, or gamma for factor-vae)")  # fmt: skip
    s.add_argument("--seeds", type=_positive_int, default=None, metavar="N", help="seeds 0..N-1")
    s.add_argument("--data", nargs="+", default=None, metavar="NAME", help="datasets (default: dsprites)")
    s.add_argument("--data-root", default=None)
    s.add_argument("--quick", action="store_const", const=True, default=None, help="the datasets' quick versions")
    s.add_argument("--subset", type=_positive_int, default=None)
    s.add_argument("--epochs", type=_positive_int, default=None)
    s.add_argument("--batch-size", type=_positive_int, default=None)
    s.add_argument("--lr", type=_positive_float, default=None)
    s.add_argument("--device", default=None, help="auto, cpu or cuda for every cell")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", type=_setting,
                   help="a setting every model gets, e.g. --set latent_dim=20 (repeatable)")  # fmt: skip
    s.add_argument("--no-figures", action="store_true", help="skip each cell's own figures (the sweep's are drawn)")
    s.add_argument("--jobs", type=_positive_int, default=1, help="cells run at once, each in its own process")
    s.add_argument("--threads", type=_positive_int, default=None, help="torch threads per cell (default: CPUs / jobs)")
    s.add_argument("--cell", type=_number(int), default=None, metavar="K",
                   help="run only cell K in this process (e.g. one task of a Slurm array)")  # fmt: skip
    s.add_argument("--list", action="store_true", help="list the cells and their state, and run nothing")


def _train(args: argparse.Namespace) -> None:
    from untwine import experiment
    from untwine.pyro_models.base import ConfigError
    from untwine.run_folder import FIGURES, REPORT, read_metrics

    fields = _model_fields(args.model)
    options = {}
    for key, text in args.set:
        if key not in fields:
            raise ConfigError(
                f"--set {key}: model {args.model!r} has no setting {key!r}; settings: {', '.join(fields)}"
            )
        try:
            options[key] = fields[key][1](text)
        except argparse.ArgumentTypeError as err:
            raise ConfigError(f"--set {key}: {err}") from err
    flags = {k.removeprefix(_FIELD): v for k, v in vars(args).items() if k.startswith(_FIELD) and v is not None}
    run = experiment.train(
        args.model,
        data=args.data,
        data_root=args.data_root,
        out=args.out,
        quick=args.quick,
        resume=args.resume,
        overwrite=args.overwrite,
        subset=args.subset,
        group_by=args.group_by,
        labelled=args.labelled,
        progress=not args.no_progress,
        model_options={**options, **flags},
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
    print(f"figures:    {run.path / FIGURES}")
    mig = (read_metrics(run.path) or {}).get("mig")
    if isinstance(mig, dict) and mig.get("mig") is not None:
        stderr = mig.get("stderr") or {}
        se = f" ± {stderr['mig']:.3f}" if isinstance(stderr.get("mig"), float) else ""  # the estimator's sampling error
        print(f"MIG:        {mig['mig']:.3f}{se} (Chen et al.'s, over {', '.join(mig.get('factors', []))})")
    if (run.path / REPORT).exists():
        print(f"report:     {run.path / REPORT}")


def _eval(args: argparse.Namespace) -> None:
    from untwine import experiment
    from untwine.run_folder import check_not_in_use

    check_not_in_use(args.run)  # a run still training has no final checkpoint to evaluate
    metrics = experiment.evaluate(experiment.load_run(args.run, args.device), names=args.metrics)
    print(json.dumps(metrics, indent=2))


def _plot(args: argparse.Namespace) -> None:
    from untwine import experiment, sweep
    from untwine.run_folder import check_not_in_use

    if sweep.is_sweep(args.run):
        for path in sweep.report(args.run):
            print(path)
        return
    check_not_in_use(args.run)
    for path in experiment.plot(experiment.load_run(args.run, args.device)):
        print(path)


def _report(args: argparse.Namespace) -> None:
    from untwine.report import write_report

    print(write_report(args.path))


def _compare(args: argparse.Namespace) -> None:
    from untwine import compare, sweep
    from untwine.data import DataError
    from untwine.io import atomic_write_csv
    from untwine.plots import plot_forest, save_figure
    from untwine.run_folder import check_not_in_use

    if args.out and Path(args.out).exists():
        raise DataError(f"{args.out} exists; untwine compare never replaces a file: name a new one")
    sweeps = [p for p in args.paths if sweep.is_sweep(p)]
    if sweeps:
        if len(args.paths) > 1:
            raise DataError(f"{sweeps[0]} is a sweep; compare one sweep at a time, or run folders without sweeps")
        rows = sweep.results(sweeps[0])
        table = compare.sweep_table(rows)
        if not table:
            raise DataError(f"no cell of the sweep in {sweeps[0]} is done yet; run `untwine sweep {sweeps[0]}` first")
        print(compare.format_sweep_table(table))
        fig = plot_forest(rows)
        if fig is not None:
            print(save_figure(fig, Path(sweeps[0]) / "figures" / "forest.png"))
    else:
        for path in args.paths:
            check_not_in_use(path)
        options = {"num_samples": args.samples, "max_images": args.images}
        table = compare.compare_runs(args.paths, device=args.device, **{k: v for k, v in options.items() if v})
        print(compare.format_table(table))
    if args.out:
        print(atomic_write_csv(Path(args.out), table))


def _sweep_grid(args: argparse.Namespace) -> Any:
    """The :class:`~untwine.sweep.SweepSpec` the flags give (``None``: continue the sweep in the folder)."""
    from untwine import sweep

    if args.spec is not None:
        raw, where = sweep.read_toml(args.spec), args.spec
    elif args.protocol is not None:
        raw, where = sweep.protocol(args.protocol), f"protocol {args.protocol!r}"
    elif args.models is not None:
        raw, where = {"models": list(args.models)}, "--models"
    else:
        return None
    if args.strengths is not None:
        raw["strengths"] = list(args.strengths)
        raw["models"] = [{**({"name": m} if isinstance(m, str) else m), "values": list(args.strengths)}
                         for m in raw.get("models", [])]  # fmt: skip
    overrides = {"seeds": args.seeds, "data": args.data, "data_root": args.data_root, "quick": args.quick,
                 "subset": args.subset}  # fmt: skip
    raw.update({k: v for k, v in overrides.items() if v is not None})
    train = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "device": args.device}
    raw["train"] = {**raw.get("train", {}), **{k: v for k, v in train.items() if v is not None}}
    raw["settings"] = {**raw.get("settings", {}), **{k: _guess(v) for k, v in args.set}}
    if args.no_figures:
        raw["figures"] = False
    return sweep.SweepSpec.from_dict(raw, where=where)


def _guess(text: str) -> Any:
    """A ``--set`` value of a sweep (which spans models) as TOML would read it: number, boolean or text."""
    from untwine.sweep import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _sweep(args: argparse.Namespace) -> None:
    import torch

    from untwine import sweep
    from untwine.inference.train import TrainingError

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    spec = _sweep_grid(args)
    if args.list:
        spec = spec if spec is not None else sweep.read_spec(args.dir)
        for cell in spec.cells():
            print(f"{cell.index:>4} {sweep.cell_status(Path(args.dir), cell):<8} {cell.name}")
        return
    if args.cell is not None:
        outcome = sweep.run_cell(args.dir, args.cell, spec)
        print(f"cell {outcome['cell']} ({outcome['name']}): {outcome['status']}")
        return
    failed = sweep.run_sweep(args.dir, spec, jobs=args.jobs, threads=args.threads)
    for path in sweep.report(args.dir):
        print(path)
    if failed:
        names = ", ".join(c.name for c in failed[:3]) + (", ..." if len(failed) > 3 else "")
        raise TrainingError(f"{len(failed)} cell(s) failed ({names}); see {Path(args.dir) / sweep.LOGS}, then run "
                            f"`untwine sweep {args.dir}` again to retry them")  # fmt: skip


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
    from untwine.data import DataError
    from untwine.diagnostics import DiagnosticError
    from untwine.inference.train import TrainingError
    from untwine.pyro_models.base import ConfigError
    from untwine.pyro_models.networks import NetworkError

    argv = list(sys.argv[1:] if argv is None else argv)
    errors = (DataError, TrainingError, NetworkError, ConfigError, DiagnosticError)
    try:
        model = _model_name(build_parser(), argv)
        parser = build_parser(model)  # an unknown model, or a module that does not import, fails here
    except errors as err:
        print(f"untwine: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    handlers = {
        "train": _train,
        "eval": _eval,
        "plot": _plot,
        "report": _report,
        "sweep": _sweep,
        "compare": _compare,
        "list": _list,
    }
    try:
        handlers[args.command](args)
    except errors as err:
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
