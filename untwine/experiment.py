"""Run folders: train a model on a registered dataset, evaluate it, draw its figures.

The CLI, the notebooks and scripts all go through these functions. A run folder holds::

    config.json      model name, its config and objective, training config, data settings
    checkpoint.pt    model + optimiser state, RNG states, history (see untwine.inference.train)
    history.csv      one row per epoch
    metrics.json     what the model's ``evaluations()`` name (see untwine.evaluations)
    figures/*.png    what the model's ``figures()`` name: reconstructions, samples, traversals, training curve,
                     latents vs factors (dSprites), and each paper's own figures
    report.html      all of the above on one self-contained page (see untwine.report), rewritten by eval and plot
    .untwine.lock    held by the process writing the run (see untwine.run_folder, which lists these entries and
                     decides when ``--overwrite`` may remove them)

A model is a registered name or ``package.module:ClassName`` (any :class:`~untwine.pyro_models.base.Model`
subclass); nothing here depends on which paper it implements.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from untwine.data import DataError, ImageDataset, data_spec, load_dataset
from untwine.data.groups import GroupedDataset, parse_grouping
from untwine.evaluations import EVALUATIONS, FIGURES, Context, check_registered
from untwine.inference.distributed import is_main_process
from untwine.inference.train import (
    CHECKPOINT,
    TrainConfig,
    TrainingError,
    fit,
    load_checkpoint,
    resolve_device,
    seed_everything,
    usable_images,
)
from untwine.io import atomic_write_text
from untwine.plots import save_figure
from untwine.pyro_models import ConfigError, Model, build_model, make_objective, make_settings, model_spec
from untwine.pyro_models.registry import upgrade_settings
from untwine.report import write_report
from untwine.run_folder import (
    CONFIG,
    METRICS,
    RETRAIN,
    check_not_in_use,
    check_run_folder,
    clear_run,
    holds_run,
    read_settings,
    run_lock,
)
from untwine.run_folder import (
    FIGURES as FIGURES_FOLDER,
)

# Quick runs: a few epochs, and batches small enough to take a useful number of steps on a small dataset.
QUICK_EPOCHS, QUICK_MAX_BATCH = 5, 256
#: share of every batch given to labelled images in semi-supervised runs (``--labelled``)
LABELLED_SHARE = 0.25


@dataclass
class Run:
    """A trained (or loaded) run: its folder, model, saved settings and history."""

    path: Path
    model: Model
    settings: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    #: False on the ranks other than 0 of a data-parallel run, which train but write nothing
    is_main: bool = True

    def data(self, train: bool = True) -> ImageDataset:
        """The dataset this run was trained on (or its test split), loaded as it was for training."""
        d = self.settings["data"]
        return load_dataset(d["name"], d["root"], train=train, quick=d["quick"], subset=d["subset"], seed=d["seed"])

    def held_out(self, data: ImageDataset | None = None) -> ImageDataset:
        """The test split where the dataset has one, else the training data (``data``, when already loaded)."""
        if data_spec(self.settings["data"]["name"]).has_test:
            return self.data(train=False)
        return data if data is not None else self.data()


def train(
    model_name: str,
    data: str = "dsprites",
    data_root: str | Path | None = None,
    out: str | Path | None = None,
    quick: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    subset: int | None = None,
    progress: bool = True,
    model_options: dict[str, Any] | None = None,
    train_options: dict[str, Any] | None = None,
    figures: bool = True,
    group_by: str = "random",
    labelled: int | None = None,
) -> Run:
    """Train ``model_name`` on ``data`` into run folder ``out``, then write metrics and figures.

    :param model_name: a registered name (``untwine list``) or ``package.module:ClassName``.
    :param model_options: settings of the model's config and of its objective (``None`` values ignored), e.g.
        ``{"kl_weight": 4}`` or, for ``beta-tcvae``, ``{"tc_weight": 3}``.
    :param train_options: :class:`~untwine.inference.train.TrainConfig` overrides (``None`` values ignored).
    :param resume: continue the run in ``out`` from its checkpoint.
    :param overwrite: replace an existing run folder (otherwise an existing run is an error, so that a
        finished run is never clobbered by accident).
    :param figures: draw the model's figures after the metrics (``untwine plot RUN`` draws them later and rewrites
        ``report.html``, which every run gets).
    :param group_by: how a model with a global latent gets its training groups: ``"random"`` (the UG-VAE paper's
        random batches) or groups sharing a ``"domain"``, ``"label"`` or ``"ink"`` quantile
        (:class:`~untwine.data.groups.GroupedDataset`); metrics and figures always use the data as loaded.
    :param labelled: semi-supervised training (N-VAE): keep this many labels (seeded), hide the rest, and give
        labelled images :data:`LABELLED_SHARE` of every batch (:meth:`~untwine.data.ImageDataset.hide_labels`); the
        model's ``semi_supervised`` is switched on. Metrics and figures use the labels as loaded.
    """
    out = Path(out) if out is not None else Path("runs") / f"{model_name.replace(':', '.')}-{data}"
    spec = model_spec(model_name)
    given = {k: v for k, v in (model_options or {}).items() if v is not None}
    if labelled is not None:
        if "semi_supervised" not in {f.name for f in dataclasses.fields(spec.config_cls)}:
            raise ConfigError(
                f"--labelled trains on partly labelled data, which {model_name} does not read; use n-vae or drop it"
            )
        given["semi_supervised"] = True
    model_config, objective = make_settings(model_name, **given)  # bad settings fail before data is read
    parse_grouping(group_by)
    options: dict[str, Any] = {"batch_size": data_spec(data).batch_size}
    if quick:
        options = {"epochs": QUICK_EPOCHS, "batch_size": min(options["batch_size"], QUICK_MAX_BATCH)}
    if spec.cls.default_lr is not None:
        options["lr"] = spec.cls.default_lr
    chosen = {k: v for k, v in (train_options or {}).items() if v is not None}
    train_config = TrainConfig(**{**options, **chosen})  # bad settings fail before an existing run folder is touched
    # under torchrun only rank 0 touches the run folder; the other ranks train and return
    main = is_main_process(train_config.distributed)
    if main:
        _check_out(out, resume, overwrite)
    seed = train_config.seed
    dataset = load_dataset(data, data_root, quick=quick, subset=subset, seed=seed)
    fields = {f.name for f in dataclasses.fields(model_config)}
    model_config = dataclasses.replace(model_config, image_shape=dataset.image_shape)
    if "num_classes" in fields and "num_classes" not in given:  # one latent block per class: count them
        model_config = dataclasses.replace(model_config, num_classes=num_classes(dataset, model_name))
    seed_everything(seed)  # the initial weights are part of what a seed reproduces
    model = build_model(model_name, model_config, objective)
    try:
        check_registered(model)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if model.group_size > 1 and "batch_size" not in chosen:  # one group per step, the UG-VAE paper's setting
        train_config = dataclasses.replace(train_config, batch_size=model.group_size)
    usable_images(model, train_config.batch_size, dataset)  # a bad group or batch size fails before the folder is made
    training = _grouped(dataset, group_by, model)  # a bad grouping fails before the folder is made too
    if labelled is not None:  # after counting the classes, which hidden labels would hide
        training = training.hide_labels(labelled, seed=seed, labelled_share=LABELLED_SHARE)
    settings = {
        "model": model_name,
        "model_config": dataclasses.asdict(model_config),
        "objective": objective.settings() if objective is not None else None,
        "train": dataclasses.asdict(train_config),
        "data": {
            "name": data,
            "root": str(data_root) if data_root is not None else None,
            "quick": quick,
            "subset": subset,
            "seed": seed,
            "group_by": group_by,
            "labelled": labelled,
        },
    }
    if resume and main:
        saved = read_settings(out)
        if "objective" not in saved:
            raise TrainingError(f"{out} was written by an older untwine (no objective in {CONFIG}); it can be "
                                "evaluated and plotted but not resumed: train into a new --out")  # fmt: skip
        before = {"group_by": "random", "labelled": None, **saved["data"]}  # runs written before these settings
        if saved["model"] != model_name or before != settings["data"]:
            raise TrainingError(f"{out} holds a {saved['model']} run on {saved['data']}; resume it with those settings")
    with run_lock(out) if main else contextlib.nullcontext():
        if main:
            _check_out(out, resume, overwrite)  # again, now that no other process can write here
            if overwrite and not resume:
                clear_run(out)  # every check that can fail has passed: the old run goes only now
            atomic_write_text(out / CONFIG, json.dumps(settings, indent=2))
        result = fit(model, training, train_config, out_dir=out, resume=resume, progress=progress)
        run = Run(out, model, settings, result.history, is_main=main)
        if main:
            # one context, so the encoder's pass over the data serves both the metrics and the figures
            ctx = Context(run, dataset, run.held_out(dataset))
            _evaluate(ctx, ctx.model.evaluations())
            if figures:
                _plot(ctx)
            write_report(out)  # without figures, the page still has the settings, metrics and training curve
    return run


def _grouped(data: ImageDataset, group_by: str, model: Model) -> ImageDataset:
    """The training data in groups sharing a key, or ``data`` itself for random batches."""
    if parse_grouping(group_by)[0] == "random":
        return data
    if model.group_size < 2:
        raise ConfigError(
            f"--group-by {group_by} forms groups for a global latent, which {model.name} does not have; "
            "use a model with one (ug-vae, ml-vae) or drop --group-by"
        )
    return GroupedDataset(data, group_by, model.group_size)


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, touching nothing, an ``--out`` a run may not use: in use by another process, not a run folder (or a
    run folder with other files in it), an existing run without ``resume``/``overwrite``, or nothing to resume."""
    check_not_in_use(out)
    check_run_folder(out)
    if resume and not (out / CHECKPOINT).is_file():
        raise TrainingError(f"nothing to resume: {out / CHECKPOINT} does not exist")
    if holds_run(out) and not resume and not overwrite:
        raise TrainingError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")


def num_classes(data: ImageDataset, model_name: str) -> int:
    """Number of classes of a labelled dataset (largest label + 1), for models with one latent block per class."""
    y = data.targets
    if y.dim() != 1 or y.is_floating_point():
        raise DataError(f"{model_name} needs one class label per image, but {data.name} has targets {tuple(y.shape)}")
    return int(y.max()) + 1


def load_run(path: str | Path, device: str = "auto") -> Run:
    """Rebuild the model of a run folder from its config and checkpoint, on ``device``.

    Run folders written before objectives were recorded separately (``beta`` as the KL or TC weight) load too:
    their settings are read in today's names (:func:`~untwine.pyro_models.registry.upgrade_settings`).
    """
    path = Path(path)
    settings = read_settings(path)
    if not (path / CHECKPOINT).is_file():
        raise TrainingError(f"{path} has no {CHECKPOINT} (its training never saved one); {RETRAIN}")
    try:
        state = load_checkpoint(path / CHECKPOINT)
    except TrainingError as err:
        raise TrainingError(f"{err}; {RETRAIN}") from err
    if state["model_name"] != settings["model"]:
        raise TrainingError(
            f"{path / CHECKPOINT} holds a {state['model_name']} model, but {CONFIG} says {settings['model']}: "
            f"the checkpoint belongs to another run; put back this run's {CHECKPOINT} or {RETRAIN}"
        )
    if json.loads(json.dumps(state["model_config"])) != settings["model_config"]:
        raise TrainingError(
            f"{path / CHECKPOINT} was written with another {settings['model']} config than {CONFIG} records: "
            f"the checkpoint belongs to another run; put back this run's {CHECKPOINT} or {RETRAIN}"
        )
    config, objective = settings["model_config"], settings.get("objective")
    if "objective" not in settings:  # written before objectives had their own entry
        config, objective, _ = upgrade_settings(settings["model"], config)
    model = build_model(settings["model"], config, make_objective(objective) if objective else None)
    model.load_state_dict(state["model"])
    model.to(resolve_device(device)).eval()
    return Run(path, model, settings, list(state["history"]))


def _holding_run_lock(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``func(run, ...)`` holding ``run.path``'s lock, so a training process cannot replace the run meanwhile."""

    @functools.wraps(func)
    def locked(run: Run, *args: Any, **kwargs: Any) -> Any:
        with run_lock(run.path):
            return func(run, *args, **kwargs)

    return locked


@_holding_run_lock
def evaluate(
    run: Run,
    data: ImageDataset | None = None,
    codes: tuple[torch.Tensor, torch.Tensor] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics of a run, written to ``metrics.json`` and returned: every evaluation the model's ``evaluations()``
    names, in order (see :mod:`untwine.evaluations` for what each one adds). ``report.html`` is rewritten with them.

    :param data: the run's training data, if already loaded. :param codes: posterior ``(loc, scale)`` of every image
        of ``data``, if already computed.
    :param names: only these evaluations (each one the model's ``evaluations()`` lists); their entries replace
        those of the same name in the existing ``metrics.json`` and the rest of the file is kept.
    :raises ConfigError: on a name the model does not list.
    """
    chosen = list(run.model.evaluations())
    if names is not None:
        unknown = [n for n in names if n not in chosen]
        if unknown or not names:
            raise ConfigError(
                f"{type(run.model).__name__} has no evaluation {', '.join(map(repr, unknown)) or 'named'}; choose "
                f"from: {', '.join(chosen)}"
            )
        chosen = [n for n in chosen if n in names]
    data = data if data is not None else run.data()
    metrics = _evaluate(Context(run, data, run.held_out(data), codes), chosen, keep=names is not None)
    write_report(run.path)
    return metrics


def _evaluate(ctx: Context, names: Sequence[str], keep: bool = False) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    path = ctx.run.path / METRICS
    if keep and path.is_file():
        with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
            old = json.loads(path.read_text())
            metrics = old if isinstance(old, dict) else {}
    for name in names:
        metrics.update(EVALUATIONS[name](ctx))
    atomic_write_text(path, json.dumps(metrics, indent=2))
    return metrics


@_holding_run_lock
def plot(
    run: Run, data: ImageDataset | None = None, codes: tuple[torch.Tensor, torch.Tensor] | None = None
) -> list[Path]:
    """Draw the figures the model's ``figures()`` names into ``figures/`` and return their paths (``data`` and
    ``codes`` as in :func:`evaluate`); ``report.html`` is rewritten with them."""
    data = data if data is not None else run.data()
    paths = _plot(Context(run, data, run.held_out(data), codes))
    write_report(run.path)
    return paths


def _plot(ctx: Context) -> list[Path]:
    folder = ctx.run.path / FIGURES_FOLDER
    return [save_figure(figure, folder / file) for name in ctx.model.figures() for file, figure in FIGURES[name](ctx)]
