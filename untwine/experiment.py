"""Run folders: train a registered model on a registered dataset, evaluate it, draw its figures.

The CLI, the notebooks and scripts all go through these functions. A run folder holds::

    config.json      model name and config, training config, data settings
    checkpoint.pt    model + optimiser state, RNG states, history (see untwine.inference.train)
    history.csv      one row per epoch
    metrics.json     ELBO terms (and any metric the model's paper defines)
    figures/*.png    reconstructions, samples, traversals, training curve, latents vs factors (dSprites), and each
                     paper's own figures (class traversals for N-VAE, sampling grids and t-SNE for UG-VAE)
    .untwine.lock    held by the process writing the run (see untwine.run_folder, which lists these entries and
                     decides when ``--overwrite`` may remove them)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from untwine.data import DataError, DomainMixture, FactorDataset, ImageDataset, data_spec, load_dataset
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
from untwine.metrics import (
    DSPRITES_MIG_FACTORS,
    batch_classification,
    batch_embedding,
    classification_accuracy,
    discrete_mig_of,
    domain_alignment,
    domain_transfer,
    elbo_decomposition,
    encode_dataset,
    evaluate_elbo,
    global_posterior_summary,
    latent_kl,
    sampling_mig,
)
from untwine.plots import (
    plot_class_kl_matrix,
    plot_class_samples,
    plot_class_traversals,
    plot_global_tsne,
    plot_history,
    plot_interpolation,
    plot_latent_kl,
    plot_latent_vs_factors,
    plot_reconstructions,
    plot_samples,
    plot_sampling_grid,
    plot_traversals,
    save_figure,
)
from untwine.pyro_models import build_model, make_config, model_spec
from untwine.run_folder import (
    CONFIG,
    FIGURES,
    METRICS,
    RETRAIN,
    check_not_in_use,
    check_run_folder,
    clear_run,
    holds_run,
    read_settings,
    run_lock,
)

# Quick runs: a few epochs, and batches small enough to take a useful number of steps on a small dataset.
QUICK_EPOCHS, QUICK_MAX_BATCH = 5, 256
EVAL_SIZE, QUICK_EVAL_SIZE = 10_000, 2_048
# batches of each kind for UG-VAE's batch experiments, for SVM training and as many again for testing
GLOBAL_BATCHES, QUICK_GLOBAL_BATCHES = 100, 30


@dataclass
class Run:
    """A trained (or loaded) run: its folder, model, saved settings and history."""

    path: Path
    model: nn.Module
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
) -> Run:
    """Train ``model_name`` on ``data`` into run folder ``out``, then write metrics and figures.

    :param model_options: config overrides for the model (``None`` values ignored), e.g. ``{"beta": 4}``.
    :param train_options: :class:`~untwine.inference.train.TrainConfig` overrides (``None`` values ignored).
    :param resume: continue the run in ``out`` from its checkpoint.
    :param overwrite: replace an existing run folder (otherwise an existing run is an error, so that a
        finished run is never clobbered by accident).
    """
    out = Path(out) if out is not None else Path("runs") / f"{model_name}-{data}"
    spec = data_spec(data)
    model_config = make_config(model_name, **(model_options or {}))  # bad settings fail before data is read
    options: dict[str, Any] = {"batch_size": spec.batch_size}
    if quick:
        options = {"epochs": QUICK_EPOCHS, "batch_size": min(spec.batch_size, QUICK_MAX_BATCH)}
    if hasattr(model_config, "group_size"):  # one group per step, the UG-VAE paper's setting
        options["batch_size"] = model_config.group_size
    default_lr = getattr(model_spec(model_name).cls, "default_lr", None)
    if default_lr is not None:
        options["lr"] = default_lr
    options.update({k: v for k, v in (train_options or {}).items() if v is not None})
    train_config = TrainConfig(**options)  # bad settings fail before an existing run folder is touched
    # under torchrun only rank 0 touches the run folder; the other ranks train and return
    main = is_main_process(train_config.distributed)
    if main:
        _check_out(out, resume, overwrite)
    seed = train_config.seed
    dataset = load_dataset(data, data_root, quick=quick, subset=subset, seed=seed)
    model_config = dataclasses.replace(model_config, image_shape=dataset.image_shape)
    if hasattr(model_config, "num_classes") and (model_options or {}).get("num_classes") is None:
        model_config = dataclasses.replace(model_config, num_classes=num_classes(dataset, model_name))
    seed_everything(seed)  # the initial weights are part of what a seed reproduces
    model = build_model(model_name, model_config)
    usable_images(model, train_config.batch_size, dataset)  # a bad group or batch size fails before the folder is made
    settings = {
        "model": model_name,
        "model_config": dataclasses.asdict(model_config),
        "train": dataclasses.asdict(train_config),
        "data": {
            "name": data,
            "root": str(data_root) if data_root is not None else None,
            "quick": quick,
            "subset": subset,
            "seed": seed,
        },
    }
    if resume and main:
        saved = read_settings(out)
        if saved["model"] != model_name or saved["data"] != settings["data"]:
            raise TrainingError(f"{out} holds a {saved['model']} run on {saved['data']}; resume it with those settings")
    with run_lock(out) if main else contextlib.nullcontext():
        if main:
            _check_out(out, resume, overwrite)  # again, now that no other process can write here
            if overwrite and not resume:
                clear_run(out)  # every check that can fail has passed: the old run goes only now
            atomic_write_text(out / CONFIG, json.dumps(settings, indent=2))
        result = fit(model, dataset, train_config, out_dir=out, resume=resume, progress=progress)
        run = Run(out, model, settings, result.history, is_main=main)
        if not main:
            return run
        # one pass of the encoder over a factor dataset serves both the MIG and the latent-vs-factor figure
        codes = encode_dataset(model, dataset) if isinstance(dataset, FactorDataset) else None
        evaluate(run, dataset, codes)
        plot(run, dataset, codes)
    return run


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
    """Rebuild the model of a run folder from its config and checkpoint, on ``device``."""
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
    model = build_model(settings["model"], state["model_config"])
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
    run: Run, data: ImageDataset | None = None, codes: tuple[torch.Tensor, torch.Tensor] | None = None
) -> dict[str, Any]:
    """Metrics of a run, written to ``metrics.json`` and returned.

    * ``train`` / ``test``: ELBO, E[log p(x|z)] and KL per image on (a seeded subset of) the training data and,
      when the dataset has one, its test split;
    * on a dataset with ground-truth factors (dSprites): ``decomposition`` (β-TCVAE's index-code MI, total
      correlation, dimension-wise KL against all N posteriors, from a seeded subsample with standard errors),
      ``mig`` (Chen et al.'s sampling estimator; shape excluded on dSprites), ``mig_grouped`` (the same with each
      independent subspace scored as one variable, for models with ``subspaces()`` such as ISA-VAE) and
      ``discrete_mig`` (disentanglement_lib's binned estimator on 10,000 encoder means);
    * for class-conditional models (N-VAE, with ``classify``): ``classification`` (accuracy of q(y|x) on the test
      split, else the training data) and ``latent_kl`` (KL per dimension, per class block and true class, z_c vs
      z_s totals; :func:`~untwine.metrics.classes.latent_kl`);
    * for models with a global latent (UG-VAE, ML-VAE): ``global_posterior`` (KL per group, posterior scale and the
      spread of the posterior mean across random batches; :func:`~untwine.metrics.global_posterior_summary`), on MNIST
      ``batch_classification`` (Table 1 for digit series, on the test split;
      :func:`~untwine.metrics.global_latents.batch_classification`), on a two-domain mixture
      ``domain_separability`` (SVM accuracy, pure batches of one domain vs the other) and ``domain_transfer`` (which
      latent carries the domain; :func:`~untwine.metrics.global_latents.domain_transfer`).

    :param codes: posterior ``(loc, scale)`` of every image of ``data`` if already computed.
    """
    d = run.settings["data"]
    size = QUICK_EVAL_SIZE if d["quick"] else EVAL_SIZE
    data = data if data is not None else run.data()
    seed = d["seed"]
    held_out = run.held_out(data)  # read once: the test ELBO, the class metrics and the batch experiments share it
    metrics: dict[str, Any] = {"train": evaluate_elbo(run.model, data.random_subset(size, seed=seed))}
    if held_out is not data:
        metrics["test"] = evaluate_elbo(run.model, held_out.random_subset(size, seed=seed))
    metrics["eval_images"] = min(size, len(data))
    if hasattr(run.model, "classify"):
        # q(y|x) and the KL detector on held-out images where the dataset has a test split
        metrics["classification"] = classification_accuracy(run.model, held_out)
        metrics["classification"]["split"] = "test" if held_out is not data else "train"
        metrics["latent_kl"] = _jsonable(latent_kl(run.model, held_out))
    if hasattr(run.model, "global_posterior"):
        metrics.update(_global_metrics(run, held_out))
    if isinstance(data, FactorDataset):
        loc, scale = codes if codes is not None else encode_dataset(run.model, data)
        default = DSPRITES_MIG_FACTORS if data.name == "dsprites" else None
        if default is not None:  # a factor a sub-grid holds fixed carries no information to score
            default = [f for f in default if data.factor_sizes[data.factor_names.index(f)] > 1] or None
        sampled = sampling_mig(loc, scale, data.factor_sizes, default, factor_names=data.factor_names, seed=seed)
        metrics["mig"] = _jsonable(sampled)
        if hasattr(run.model, "subspaces"):
            metrics["mig_grouped"] = _jsonable(
                sampling_mig(loc, scale, data.factor_sizes, default, factor_names=data.factor_names, seed=seed,
                             groups=run.model.subspaces())
            )  # fmt: skip
        metrics["discrete_mig"] = _jsonable(discrete_mig_of(run.model, data, seed=seed))
        metrics["decomposition"] = _jsonable(
            elbo_decomposition(run.model, data, num_samples=min(size, len(data)), seed=seed, codes=(loc, scale))
        )
    atomic_write_text(run.path / METRICS, json.dumps(metrics, indent=2))
    return metrics


def _global_batches(run: Run) -> int:
    return QUICK_GLOBAL_BATCHES if run.settings["data"]["quick"] else GLOBAL_BATCHES


def _global_metrics(run: Run, held_out: ImageDataset) -> dict[str, Any]:
    """UG-VAE's batch experiments on held-out images: digit series (MNIST) or domains (a two-dataset mixture)."""
    name, seed = run.settings["data"]["name"], run.settings["data"]["seed"]
    num_batches = _global_batches(run)
    metrics: dict[str, Any] = {
        "global_posterior": global_posterior_summary(run.model, held_out, num_batches=num_batches, seed=seed)
    }
    if name == "mnist":
        metrics["batch_classification"] = batch_classification(run.model, held_out, num_batches=num_batches, seed=seed)
    if isinstance(held_out, DomainMixture):
        result = domain_alignment(run.model, held_out, num_batches=num_batches, seed=seed, embed=False)
        metrics["domain_separability"] = result["separability"]
        metrics["domain_transfer"] = domain_transfer(run.model, held_out, num_batches=num_batches // 5, seed=seed)
    return metrics


def _jsonable(value: Any) -> Any:
    """Numpy arrays and scalars, tensors and nested containers as plain JSON types."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


@_holding_run_lock
def plot(
    run: Run, data: ImageDataset | None = None, codes: tuple[torch.Tensor, torch.Tensor] | None = None
) -> list[Path]:
    """Draw the run's figures into ``figures/`` and return their paths (``codes`` as in :func:`evaluate`)."""
    data = data if data is not None else run.data()
    device = next(run.model.parameters()).device
    g = torch.Generator().manual_seed(run.settings["data"]["seed"])
    x, _ = data.batch(torch.randperm(len(data), generator=g)[:32], device)
    folder = run.path / FIGURES
    paths = [
        save_figure(plot_reconstructions(run.model, x), folder / "reconstructions.png"),
        save_figure(plot_samples(run.model, 64), folder / "samples.png"),
    ]
    if hasattr(run.model, "classify"):
        paths += _class_figures(run, run.held_out(data), folder)
    elif hasattr(run.model, "global_posterior"):
        paths += _global_figures(run, run.held_out(data), folder)
    else:
        groups = run.model.subspaces() if hasattr(run.model, "subspaces") else None
        paths.append(save_figure(plot_traversals(run.model, x[0], groups=groups), folder / "traversals.png"))
    if run.history:
        paths.append(save_figure(plot_history(run.history), folder / "loss.png"))
    if isinstance(data, FactorDataset):
        loc = codes[0] if codes is not None else encode_dataset(run.model, data)[0]
        paths.append(save_figure(plot_latent_vs_factors(loc, data), folder / "latent_vs_factors.png"))
    return paths


def _class_figures(run: Run, held_out: ImageDataset, folder: Path) -> list[Path]:
    """N-VAE's figures: KL per dimension (fig. 5) and per class block (fig. 10), class-dependent and shared
    traversals (figs. 1, 2, 6-8) and samples per class at sigma 1 and 1.4 (fig. 11)."""
    kl = latent_kl(run.model, held_out)
    classes = list(range(min(run.model.config.num_classes, 10)))
    return [
        save_figure(plot_latent_kl(kl, run.model), folder / "latent_kl.png"),
        save_figure(plot_class_kl_matrix(kl), folder / "class_kl_matrix.png"),
        save_figure(plot_class_traversals(run.model, classes), folder / "class_traversals.png"),
        save_figure(plot_class_traversals(run.model, classes[:5], shared=True), folder / "shared_traversals.png"),
        save_figure(plot_class_samples(run.model, 1.0), folder / "samples_sigma1.png"),
        save_figure(plot_class_samples(run.model, 1.4), folder / "samples_sigma1.4.png"),
    ]


def _global_figures(run: Run, held_out: ImageDataset, folder: Path) -> list[Path]:
    """UG-VAE's figures: the sampling grid for the three most used clusters (fig. 3), an interpolation between the
    posteriors of two held-out batches (fig. 5) and the t-SNE of global posterior means (fig. 5(b) for a domain
    mixture: pure and mixed batches; fig. 7 for MNIST: even, odd and random batches)."""
    model = run.model
    d = run.settings["data"]
    device = next(model.parameters()).device
    sample = held_out.random_subset(min(len(held_out), 2048), seed=d["seed"])
    usage = model.cluster_usage(sample.batch(torch.arange(len(sample)), device)[0])
    clusters = usage.argsort(descending=True)[:3].tolist()  # the most used clusters, as fig. 3 shows three
    paths = [save_figure(plot_sampling_grid(model, clusters), folder / "sampling_grid.png")]
    num_batches = _global_batches(run)
    if isinstance(held_out, DomainMixture):
        result = domain_alignment(model, held_out, num_batches=num_batches, seed=d["seed"])
        first, second = (held_out.batch(torch.tensor(b), device)[0] for b in result["batches"])
        title = f"{held_out.domain_names[0]} -> {held_out.domain_names[1]}: beta on rows, z on columns"
    else:
        result = (
            batch_embedding(model, held_out, num_batches=num_batches, seed=d["seed"]) if d["name"] == "mnist" else None
        )
        size = min(model.group_size, len(held_out) // 2)
        g = torch.Generator().manual_seed(d["seed"])
        index = torch.randperm(len(held_out), generator=g)[: 2 * size].reshape(2, size)
        first, second = (held_out.batch(i, device)[0] for i in index)
        title = f"two random batches of {size}: beta on rows, z on columns"
    if len(first) >= 2:
        images, _ = model.interpolate(first, second)
        paths.append(save_figure(plot_interpolation(images, title), folder / "interpolation.png"))
    if result is not None:
        paths.append(save_figure(plot_global_tsne(result), folder / "global_tsne.png"))
    return paths
