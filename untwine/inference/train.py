"""The one training loop of untwine: stochastic variational inference for any model/guide pair.

As in Pyro's ``examples/svi_torch.py``, the ELBO of a pair is an ``nn.Module``: Pyro's ``ELBOModule``
(``loss(model.model, model.guide)``), whose forward is ``loss.differentiable_loss(model.model, model.guide, x, y)``.
A step divides it by the batch size (loss per datapoint), calls ``backward()`` and takes one step of a single
``torch.optim.Adam`` over the ELBO's parameters. This is the update ``pyro.infer.SVI.step`` makes, but with one
fused optimiser instead of one per tensor and with ``state_dict`` checkpoints that resume exactly; under DDP the same
module is what ``DistributedDataParallel`` wraps.

The pieces, each small enough to read on its own:

* :func:`contract`: the training hooks of a model, i.e. the model itself when it is a
  :class:`~untwine.pyro_models.base.Model`, else :class:`ModelDefaults` (the base class's defaults) for a bare
  ``nn.Module`` with ``model``/``guide``;
* :func:`train_step`: one ELBO step on one batch, then one step of the auxiliary optimiser when the model has
  auxiliary parameters (``Model.auxiliary_param_groups``, e.g. FactorVAE's discriminator) on
  ``Model.auxiliary_loss(x, y)`` of the same batch;
* :class:`TrainState`: what a checkpoint holds, with atomic :meth:`~TrainState.save`, :meth:`~TrainState.load` and
  the checks a resumed run must pass;
* :class:`LoopState`: what the pieces of one :func:`fit` share (model, optimisers, data position, the running loss
  in a :class:`LossMeter`, the history);
* :class:`LoopCallback` pieces called at fixed points of the loop: :class:`ProgressBar`, :class:`NonFiniteGuard`,
  :class:`EpochColumns` (``epoch_summary()`` and the user's ``f(model, epoch) -> dict`` callbacks),
  :class:`Checkpointer` and :class:`HistoryWriter`;
* :func:`fit`: the loop itself.

What :func:`fit` guarantees:

* the ELBO is minimised with validation off (it is restored afterwards);
* no host-device synchronisation inside a step on CUDA: the loss sum and the first non-finite step are
  tracked on the device and read every ``log_every`` steps and at checkpoints (every step on a CPU);
* checkpoints are written atomically (temporary file, then ``os.replace``) and hold the model and
  optimiser states (the auxiliary optimiser's too), both configs, every RNG state of every rank and the position in
  the epoch, so ``resume=True`` continues bit-for-bit where an uninterrupted run would be;
* a non-finite loss stops the run with :class:`NonFiniteLossError` naming the step; no checkpoint is
  written after it, so the last good one stays on disk;
* under ``torchrun`` (or with ``TrainConfig.distributed``) the same loop runs data-parallel: each rank reads its
  shard of every global batch and DDP averages the gradients of the ELBO and of the auxiliary loss (see
  :mod:`untwine.inference.distributed`); rank 0 writes the checkpoints and the history, and a resumed run restores
  every rank's random state.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyro
import torch
from pyro.infer import ELBO
from pyro.infer.elbo import ELBOModule
from torch import nn
from tqdm.auto import tqdm

from untwine.data.base import ImageDataset
from untwine.inference import distributed
from untwine.inference.distributed import DistributedError, Replica
from untwine.inference.elbo import SyncFreeTrace_ELBO
from untwine.io import atomic_write, atomic_write_csv

# untwine.pyro_models.base imports untwine.inference.elbo, and importing that package imports this module: binding
# the module (rather than its names) lets either package be imported first; its names are read when fit runs
from untwine.pyro_models import base as model_base

if TYPE_CHECKING:
    from untwine.pyro_models.base import Model

CHECKPOINT_FORMAT = "untwine-checkpoint-v1"
_START_OVER = "resume with the settings the run started with, or start over with --overwrite"
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says why and what to do."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite at ``step``; the last good checkpoint was kept."""

    def __init__(self, step: int, checkpoint: Path | None):
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written"
        super().__init__(
            f"loss became NaN/inf at step {step}; training stopped and {kept}. "
            "Lower the learning rate or check the data for NaN values."
        )
        self.step = step


@dataclass
class TrainConfig:
    """Settings of :func:`fit`; defaults are Chen et al.'s dSprites setting (Adam, lr 1e-3, batch 2048).

    :param epochs: passes over the data.
    :param batch_size: images per step.
    :param lr: Adam learning rate (parameter groups a model defines may override it).
    :param seed: seeds torch, numpy, Python and the data order.
    :param device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` (``"cuda:1"`` etc.).
    :param log_every: steps between progress updates and non-finite checks on a GPU.
    :param checkpoint_every: steps between mid-epoch checkpoints (0: only at the end of each epoch).
    :param distributed: train data-parallel over the processes of a ``torchrun`` launch (also switched on when
        ``torchrun`` started more than one process); ``batch_size`` is then the global batch, split evenly over
        the ranks.
    """

    epochs: int = 50
    batch_size: int = 2048
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    checkpoint_every: int = 0
    distributed: bool = False

    def __post_init__(self):
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise TrainingError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise TrainingError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**32):
            raise TrainingError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise TrainingError(f"learning rate must be a positive number, got {self.lr!r}")
        if self.log_every < 1 or self.checkpoint_every < 0:
            raise TrainingError("log_every must be >= 1 and checkpoint_every >= 0")


@dataclass
class FitResult:
    """What :func:`fit` returns: the per-epoch history rows and the number of optimiser steps taken."""

    history: list[dict[str, float]] = field(default_factory=list)
    step: int = 0
    epoch: int = 0


# --- the model contract --------------------------------------------------------------------------------------------


class ModelDefaults:
    """The training hooks of :class:`~untwine.pyro_models.base.Model` with the base class's defaults, for an
    ``nn.Module`` that has ``model``/``guide`` but is not a ``Model`` (a pair written in a notebook or a test): Pyro's
    ``Trace_ELBO`` (sync-free), one parameter group, any image with any other, labels as given, no history columns
    and no auxiliary parameters. Its ``name`` is the module's class name; its ``config`` dataclass, if it has one, is
    recorded in checkpoints as a ``Model``'s is.
    """

    latent_site = "z"
    default_lr = None
    find_unused_parameters = False
    group_size = 1

    def __init__(self, module: nn.Module):
        self.module = module
        self.name = type(module).__name__
        # a bare module may still carry a config dataclass; checkpoints record it so that resume can compare it
        self.config = getattr(module, "config", None)

    def default_loss(self, dataset_size: int) -> ELBO:
        return SyncFreeTrace_ELBO()

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": list(self.module.parameters())}]

    def auxiliary_param_groups(self, lr: float) -> list[dict]:
        return []

    def auxiliary_loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} has no auxiliary parameters")

    def check_labels(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def epoch_summary(self) -> dict[str, float]:
        return {}


def contract(model: nn.Module) -> Model | ModelDefaults:
    """The training hooks of ``model``: the model itself when it is a :class:`~untwine.pyro_models.base.Model`, else
    :class:`ModelDefaults` for it. The training loop reads every hook through this, never by probing attributes."""
    return model if isinstance(model, (model_base.Model, ModelDefaults)) else ModelDefaults(model)


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    """The model's config dataclass as a JSON-friendly dict (empty when the model has none)."""
    cfg = contract(model).config
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {}


def _check_data(hooks: Model | ModelDefaults, data: ImageDataset) -> None:
    """A :class:`TrainingError` when the model's image shape or its labels do not fit ``data``."""
    expected = tuple(hooks.config.image_shape) if isinstance(hooks.config, model_base.ImageConfig) else None
    if expected is not None and expected != tuple(data.image_shape):
        raise TrainingError(
            f"the model expects images of shape {expected} but {data.name} has {tuple(data.image_shape)}"
        )
    try:
        hooks.check_labels(data.targets)
    except ValueError as err:
        raise TrainingError(f"{data.name}: {err}") from err


def usable_images(model: nn.Module, batch_size: int, data: ImageDataset) -> int:
    """How many images of ``data`` one epoch uses: all of them, or whole groups for a model with ``group_size``.

    Models with a global latent per group (UG-VAE) read a batch as consecutive groups of ``group_size``, so batches
    hold whole groups, and the images after the last whole group of an epoch's order wait for the next epoch.

    :raises TrainingError: when ``batch_size`` is not a multiple of the group size, or ``data`` is smaller than a group.
    """
    group = int(contract(model).group_size)
    if batch_size % group:
        raise TrainingError(
            f"batch size {batch_size} is not a multiple of the model's group size {group}; "
            f"use --batch-size {group} (one group per step) or a multiple of it"
        )
    n = len(data)
    if n < group:
        raise TrainingError(f"{data.name} has {n} images, fewer than one group of {group}; lower the group size")
    return n - n % group


# --- the objectives and one step -----------------------------------------------------------------------------------


def _adam(groups: list[dict], lr: float) -> torch.optim.Adam:
    params = [p for g in groups for p in g["params"]]
    fusable = all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_ADAM_DTYPES for p in params)
    return torch.optim.Adam(groups, lr=lr, **({"fused": True} if fusable else {}))


_FUSED_ADAM_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """One Adam over the ELBO's parameters, in the groups of ``param_groups(lr)`` (per-group rates; auxiliary
    parameters are left out).

    The update is fused into a few kernels (``fused=True``) on CPU and CUDA: torch's default per-tensor loop costs
    several times more per step (about 4x on Chen et al.'s MLP on a CPU, 20x on UG-VAE's small networks), which is
    most of a small-batch step. Elsewhere torch picks its default implementation.
    """
    return _adam(contract(model).param_groups(lr), lr)


def elbo_module(model: nn.Module, loss: ELBO) -> ELBOModule:
    """Pyro's ``ELBOModule`` of the pair: ``forward(x, y)`` is ``loss.differentiable_loss(model.model, model.guide,
    x, y)`` (the loss of the whole batch).

    Pyro's module keeps ``model``/``guide`` as given, here bound methods and so no submodules; the pair's networks
    are registered on it as ``networks``, so that its parameters are the model's and DDP broadcasts and averages them.
    """
    if not isinstance(loss, ELBO):
        raise TrainingError(f"loss must be a Pyro ELBO (e.g. Trace_ELBO()), got {type(loss).__name__}")
    module = loss(model.model, model.guide)
    module.networks = model
    return module


class AuxiliaryObjective(nn.Module):
    """``forward(x, y)`` is ``model.auxiliary_loss(x, y)`` (a loss per image), as a module that holds the auxiliary
    parameters only: DDP then averages their gradients and no others."""

    def __init__(self, model: nn.Module, groups: list[dict]):
        super().__init__()
        self.auxiliary = nn.ParameterList([p for g in groups for p in g["params"]])
        self.loss = contract(model).auxiliary_loss  # a bound method, not a submodule

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.loss(x, y)


class Auxiliary(NamedTuple):
    """The second update of a model with auxiliary parameters: its objective (maybe DDP-wrapped) and optimiser."""

    objective: nn.Module
    optimizer: torch.optim.Optimizer


def train_step(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor | None,
    auxiliary: Auxiliary | None = None,
) -> torch.Tensor:
    """One optimiser step on one batch: minimise ``objective(x, y) / len(x)`` (the ELBO loss per image), then, when
    ``auxiliary`` is given, take one step of its optimiser on its loss per image on the same batch.

    The ELBO optimiser does not hold the auxiliary parameters and the auxiliary optimiser holds nothing else, so
    each update moves only its own parameters, whatever gradients the other loss leaves behind.

    :returns: the ELBO loss per image, detached, on the device (nothing is read to the host).
    """
    optimizer.zero_grad(set_to_none=True)
    value = objective(x, y) / len(x)
    value.backward()
    optimizer.step()
    if auxiliary is not None:
        auxiliary.optimizer.zero_grad(set_to_none=True)
        auxiliary.objective(x, y).backward()
        auxiliary.optimizer.step()
    return value.detach()


# --- checkpoints ---------------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; a clear error when CUDA is asked for but missing."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise TrainingError(f"unknown device {device!r}; use auto, cpu or cuda") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device cuda was requested but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch (CPU and CUDA) and Pyro."""
    random.seed(seed)
    np.random.seed(seed)
    pyro.set_rng_seed(seed)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
        "data": generator.get_state(),
    }


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.set_state(state["data"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` atomically."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read an untwine checkpoint, with a clear error when it is missing, corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}; train first, or drop --resume")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise TrainingError(f"checkpoint {path} is unreadable ({type(err).__name__}); it may be corrupt") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not an untwine checkpoint")
    return state


#: fields of :class:`TrainState` that checkpoints of the first format may lack (they load as ``None``)
_ADDED_TO_V1 = ("auxiliary_optimizer",)


def _json_equal(a: Any, b: Any) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


@dataclass
class TrainState:
    """What a checkpoint holds: everything a resumed :func:`fit` needs to continue bit-for-bit.

    The file is a dict with these fields as keys plus ``format``, ``world_size`` and, at the top level too, rank 0's
    ``rng`` and ``partial`` (the keys of the first format, kept); checkpoints written before ``auxiliary_optimizer``
    existed load with it ``None``.

    :param ranks: per rank, in rank order, ``{"rng": every RNG state, "partial": [loss sum, images]}`` (the running
        loss of the epoch so far, so that a resumed epoch reports the number an uninterrupted one does).
    :param epoch: epochs completed; ``batch`` batches of the next one are done, in the order ``perm`` (``None``
        at an epoch boundary: the next epoch draws its own).
    """

    model_name: str
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    data: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    ranks: list[dict[str, Any]]
    epoch: int
    batch: int
    perm: torch.Tensor | None
    step: int
    history: list[dict[str, float]]
    auxiliary_optimizer: dict[str, Any] | None = None

    @property
    def world_size(self) -> int:
        """Processes of the run that wrote it."""
        return len(self.ranks)

    def save(self, path: Path) -> None:
        """Write the checkpoint atomically (a killed process leaves the previous one)."""
        save_checkpoint(
            path, {"format": CHECKPOINT_FORMAT, **vars(self), **self.ranks[0], "world_size": self.world_size}
        )

    @classmethod
    def load(cls, path: Path) -> TrainState:
        """Read a checkpoint (:func:`load_checkpoint`'s errors for a missing, corrupt or foreign file)."""
        state = load_checkpoint(path)
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in state and name not in _ADDED_TO_V1]
        if missing:
            raise TrainingError(f"checkpoint {path} lacks {', '.join(missing)}; it may be corrupt")
        return cls(**{name: state.get(name) for name in names})

    def check_resumable(
        self, path: Path, hooks: Model | ModelDefaults, config: TrainConfig, data_info: dict, world_size: int
    ) -> None:
        """A :class:`TrainingError` unless this checkpoint continues the run ``fit`` was asked for: the same model
        name and config, data, batch size and number of processes, and an auxiliary optimiser exactly when the
        model has auxiliary parameters."""
        if self.model_name != hooks.name:
            raise TrainingError(
                f"checkpoint {path} is for model {self.model_name!r}, not {hooks.name!r}; {_START_OVER}"
            )
        if not _json_equal(self.model_config, model_config_dict(hooks)):
            raise TrainingError(f"checkpoint {path} was written with a different model config; {_START_OVER}")
        if not _json_equal(self.data, data_info):
            raise TrainingError(
                f"checkpoint {path} was trained on other data ({self.data}), not {data_info}; {_START_OVER}"
            )
        if self.train_config["batch_size"] != config.batch_size:
            raise TrainingError("resume with the batch size the run started with")
        if self.world_size != world_size:
            raise TrainingError(
                f"checkpoint {path} was written by a run of {self.world_size} process(es); resume it with as many "
                "(torchrun --nproc_per_node for more than one)"
            )
        has_auxiliary = bool(hooks.auxiliary_param_groups(config.lr))
        if (self.auxiliary_optimizer is not None) != has_auxiliary:
            what = (
                "lacks the state of an auxiliary optimiser, which this model has"
                if has_auxiliary
                else "holds the state of an auxiliary optimiser, which this model lacks"
            )
            raise TrainingError(f"checkpoint {path} {what}; {_START_OVER}")


# --- what the pieces of the loop share -----------------------------------------------------------------------------


class LossMeter:
    """The epoch's running loss, on the device: a sum of per-image losses times images and the first step whose loss
    was not finite (``-1``: none yet), updated without reading anything to the host."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.seen = 0  # images of the epoch in ``total`` (a resumed epoch's included)
        self.timed, self.started = 0, time.perf_counter()  # images this process trained on since ``started``

    def start_epoch(self) -> None:
        self.timed, self.started = 0, time.perf_counter()

    def add(self, value: torch.Tensor, images: int, step: int) -> None:
        self.total += value * images
        self.seen += images
        self.timed += images
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(value), step, self.first_bad)

    def mean(self) -> float:
        """The loss per image so far (a host read)."""
        return float(self.total) / max(self.seen, 1)

    def partial(self) -> list[float | int]:
        return [float(self.total), self.seen]

    def restore(self, partial: list[float | int]) -> None:
        self.total.fill_(partial[0])
        self.seen = int(partial[1])

    def epoch_row(self, epoch: int, step: int, replica: Replica | None) -> dict[str, float]:
        """The epoch's history row (summed over ranks), after which the sum starts again from zero."""
        elapsed = time.perf_counter() - self.started
        counts = torch.tensor([self.seen, self.timed], dtype=torch.float64, device=self.total.device)
        totals = torch.cat([self.total.double().reshape(1), counts])
        loss, seen, timed = (distributed.all_sum(totals) if replica else totals).tolist()
        self.total.zero_()
        self.seen = 0
        return {"epoch": epoch, "step": step, "loss": loss / max(seen, 1), "images_per_s": timed / max(elapsed, 1e-9),
                "seconds": elapsed}  # fmt: skip


@dataclass
class LoopState:
    """What the pieces of one :func:`fit` share: the model and its hooks, the optimisers, the data and this rank's
    place in it, the running loss, the result so far and the last checkpoint on disk.

    ``result.epoch`` epochs are done; ``batch`` batches of the current one are taken (or being taken), in the order
    ``perm`` (``None`` until the epoch draws it).
    """

    model: nn.Module
    hooks: Model | ModelDefaults
    data: ImageDataset
    config: TrainConfig
    device: torch.device
    replica: Replica | None
    optimizer: torch.optim.Optimizer
    auxiliary_optimizer: torch.optim.Optimizer | None
    meter: LossMeter
    usable: int  # images of an epoch's order this run trains on
    unit: int  # images that stay together (the group size)
    checkpoint: Path | None
    generator: torch.Generator = field(default_factory=torch.Generator)
    result: FitResult = field(default_factory=FitResult)
    batch: int = 0
    perm: torch.Tensor | None = None
    last_checkpoint: Path | None = None

    @classmethod
    def start(
        cls, model: nn.Module, data: ImageDataset, config: TrainConfig, out_dir: str | Path | None, resume: bool
    ) -> LoopState:
        """Join the process group if the run is data-parallel, check model and data against each other, move the
        model to its device, build the optimisers, and either seed every random stream or restore them and the rest
        of the checkpoint."""
        device, replica = resolve_device(config.device), None
        if config.distributed or distributed.launched_by_torchrun():
            try:
                replica, device = distributed.setup(device)
            except DistributedError as err:
                raise TrainingError(str(err)) from err
        hooks = contract(model)
        _check_data(hooks, data)
        pyro.clear_param_store()  # pyro.module would hand a stale tensor of the same name to a second model
        model.to(device)
        path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
        if resume and path is None:
            raise TrainingError("resume needs out_dir, the run folder holding checkpoint.pt")
        state = TrainState.load(path) if resume else None
        world = replica.world_size if replica else 1
        if state is not None:
            state.check_resumable(path, hooks, config, _data_info(data), world)
            model.load_state_dict(state.model)
        auxiliary_groups = hooks.auxiliary_param_groups(config.lr)
        loop = cls(
            model=model,
            hooks=hooks,
            data=data,
            config=config,
            device=device,
            replica=replica,
            optimizer=make_optimizer(model, config.lr),
            auxiliary_optimizer=_adam(auxiliary_groups, config.lr) if auxiliary_groups else None,
            meter=LossMeter(device),
            usable=_usable(hooks, config, data, replica),
            unit=int(hooks.group_size),
            checkpoint=path,
            last_checkpoint=path if path is not None and path.exists() else None,
        )
        if state is not None:
            loop.restore(state)
        else:  # every rank draws its own sampling noise but the same data order
            seed_everything(config.seed + loop.rank)
            loop.generator.manual_seed(config.seed)
        return loop

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files (rank 0, or the only process)."""
        return self.replica is None or self.replica.is_main

    @property
    def rank(self) -> int:
        return self.replica.rank if self.replica else 0

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.usable / self.config.batch_size)

    @property
    def batch_size(self) -> int:
        """Images this rank reads per step (its equal share of the global batch)."""
        return self.config.batch_size // (self.replica.world_size if self.replica else 1)

    def objectives(self, loss: ELBO | None) -> tuple[nn.Module, Auxiliary | None]:
        """The ELBO as a module (``loss``, else the model's ``default_loss``) and the auxiliary update, each inside
        DDP for a data-parallel run."""
        loss = loss if loss is not None else self.hooks.default_loss(len(self.data))
        objective = elbo_module(self.model, loss)
        auxiliary = None
        if self.auxiliary_optimizer is not None:
            groups = self.hooks.auxiliary_param_groups(self.config.lr)
            auxiliary = Auxiliary(AuxiliaryObjective(self.model, groups), self.auxiliary_optimizer)
        if self.replica is None:
            return objective, auxiliary
        # the ELBO module holds the whole model, so DDP must not wait for the auxiliary parameters' gradients
        unused = self.hooks.find_unused_parameters or auxiliary is not None
        objective = distributed.wrap(objective, self.device, find_unused_parameters=unused)
        if auxiliary is not None:
            wrapped = distributed.wrap(auxiliary.objective, self.device, self.hooks.find_unused_parameters)
            auxiliary = Auxiliary(wrapped, auxiliary.optimizer)
        return objective, auxiliary

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches ``(x, y)`` of the current epoch on the device, from batch ``self.batch`` on."""
        if self.perm is None:
            self.perm = self.data.epoch_order(self.generator)[: self.usable]
        order = distributed.shard_order(self.perm, self.unit, self.replica) if self.replica else self.perm
        size = self.batch_size
        for b in range(self.batch, self.steps_per_epoch):
            self.batch = b + 1
            yield self.data.batch(order[b * size : (b + 1) * size], self.device)

    def record(self, value: torch.Tensor, images: int) -> None:
        """Count a step whose loss per image was ``value`` (a device tensor, not read)."""
        self.result.step += 1
        self.meter.add(value, images, self.result.step)

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if a step so far had a non-finite loss (a host read; on every rank)."""
        bad = int(distributed.first_step(self.meter.first_bad) if self.replica else self.meter.first_bad)
        if bad >= 0:
            raise NonFiniteLossError(bad, self.last_checkpoint)

    def epoch_row(self) -> dict[str, float]:
        """The history row of the epoch that just ended (its loss, speed and duration)."""
        return self.meter.epoch_row(self.result.epoch + 1, self.result.step, self.replica)

    def next_epoch(self, row: dict[str, float]) -> None:
        """Put rank 0's ``row`` into the history on every rank and move to the start of the next epoch."""
        self.result.history.append(distributed.broadcast(row) if self.replica else row)
        self.result.epoch += 1
        self.perm, self.batch = None, 0

    def snapshot(self) -> TrainState | None:
        """The checkpoint of this moment on rank 0 (``None`` elsewhere); every rank must call it (it gathers every
        rank's random state)."""
        own = {"rng": _rng_state(self.generator), "partial": self.meter.partial()}
        ranks = distributed.gather(own, self.replica) if self.replica else [own]
        if not self.main:
            return None
        return TrainState(
            model_name=self.hooks.name,
            model_config=model_config_dict(self.model),
            train_config=dataclasses.asdict(self.config),
            data=_data_info(self.data),
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            ranks=ranks,
            epoch=self.result.epoch,
            batch=self.batch,
            perm=self.perm,
            step=self.result.step,
            history=self.result.history,
            auxiliary_optimizer=self.auxiliary_optimizer.state_dict() if self.auxiliary_optimizer else None,
        )

    def restore(self, state: TrainState) -> None:
        """Continue from ``state``: optimisers, this rank's random streams and running loss, and the position."""
        self.optimizer.load_state_dict(state.optimizer)
        if self.auxiliary_optimizer is not None:
            self.auxiliary_optimizer.load_state_dict(state.auxiliary_optimizer)
        own = state.ranks[self.rank]
        _set_rng_state(own["rng"], self.generator)
        self.meter.restore(own["partial"])
        self.result = FitResult(history=list(state.history), step=state.step, epoch=state.epoch)
        self.batch, self.perm = state.batch, state.perm


def _data_info(data: ImageDataset) -> dict[str, Any]:
    return {"name": data.name, "n": len(data), "image_shape": list(data.image_shape)}


def _usable(hooks: Model | ModelDefaults, config: TrainConfig, data: ImageDataset, replica: Replica | None) -> int:
    """Images of an epoch's order the run trains on: whole groups, in equal shares for every rank."""
    usable = usable_images(hooks, config.batch_size, data)
    if replica is None:
        return usable
    unit, world = int(hooks.group_size), replica.world_size
    if config.batch_size % (world * unit):
        raise TrainingError(
            f"the global batch size {config.batch_size} must split into {world} equal shares of whole groups of "
            f"{unit}; use a multiple of {world * unit}"
        )
    return usable // unit // world * world * unit


# --- the pieces of the loop ----------------------------------------------------------------------------------------


class LoopCallback:
    """A piece of the loop that :func:`fit` calls at fixed points, on every rank; each hook does nothing by default."""

    def on_step_end(self, loop: LoopState, stop: bool) -> None:
        """After each optimiser step; ``stop``: ``max_steps`` ends the run after this step."""

    def on_epoch_end(self, loop: LoopState, row: dict[str, float]) -> None:
        """After the last step of an epoch; ``row`` is its history row, to which a piece may add columns (rank 0's
        row is the one every rank keeps)."""

    def after_epoch(self, loop: LoopState) -> None:
        """Once the row is in ``loop.result.history`` and the loop stands at the start of the next epoch."""

    def on_train_end(self, loop: LoopState) -> None:
        """When ``fit`` returns or raises."""


class ProgressBar(LoopCallback):
    """A tqdm bar over all steps on rank 0, with the loss per image and images/s every ``log_every`` steps."""

    def __init__(self, loop: LoopState, show: bool):
        self.show = show and loop.main
        total = loop.steps_per_epoch * loop.config.epochs
        self.bar = tqdm(total=total, initial=loop.result.step, disable=not self.show, unit="step")

    def on_step_end(self, loop: LoopState, stop: bool) -> None:
        self.bar.update()
        if self.show and loop.result.step % loop.config.log_every == 0:
            rate = loop.meter.timed / max(time.perf_counter() - loop.meter.started, 1e-9)
            self.bar.set_postfix(loss=f"{loop.meter.mean():.2f}", img_s=f"{rate:.0f}")

    def on_train_end(self, loop: LoopState) -> None:
        self.bar.close()


class NonFiniteGuard(LoopCallback):
    """Stops the run at a non-finite loss: checked every step on a CPU, every ``log_every`` steps on a GPU (a host
    read), and at the end of every epoch before anything reads the model."""

    def __init__(self, loop: LoopState):
        self.every = 1 if loop.device.type == "cpu" else loop.config.log_every

    def on_step_end(self, loop: LoopState, stop: bool) -> None:
        if loop.result.step % self.every == 0:
            loop.check_finite()

    def on_epoch_end(self, loop: LoopState, row: dict[str, float]) -> None:
        loop.check_finite()


class EpochColumns(LoopCallback):
    """Adds ``model.epoch_summary()`` and the results of the user's callbacks ``f(model, epoch) -> dict`` (run in
    eval mode) to each epoch's history row, on rank 0."""

    def __init__(self, callbacks: Sequence[Callback]):
        self.callbacks = list(callbacks)

    def on_epoch_end(self, loop: LoopState, row: dict[str, float]) -> None:
        if not loop.main:
            return
        row.update(loop.hooks.epoch_summary())
        if self.callbacks:
            loop.model.eval()
            for callback in self.callbacks:
                row.update(callback(loop.model, row["epoch"]))


class Checkpointer(LoopCallback):
    """Writes ``checkpoint.pt`` every ``checkpoint_every`` steps, when ``max_steps`` stops the run, and after every
    epoch, never after a non-finite loss. Rank 0 writes; the others wait until the file is on disk."""

    def on_step_end(self, loop: LoopState, stop: bool) -> None:
        every = loop.config.checkpoint_every
        if (every and loop.result.step % every == 0) or stop:
            self.save(loop)

    def after_epoch(self, loop: LoopState) -> None:
        self.save(loop)

    def save(self, loop: LoopState) -> None:
        loop.check_finite()
        if loop.checkpoint is None:
            return
        state = loop.snapshot()
        if state is not None:
            state.save(loop.checkpoint)
        if loop.replica:
            distributed.barrier()  # no rank reads on before the checkpoint is on disk
        loop.last_checkpoint = loop.checkpoint


class HistoryWriter(LoopCallback):
    """Rewrites ``history.csv`` in the run folder (rank 0) after every epoch."""

    def __init__(self, out_dir: str | Path | None):
        self.path = Path(out_dir) / HISTORY if out_dir is not None else None

    def after_epoch(self, loop: LoopState) -> None:
        if self.path is not None and loop.main:
            atomic_write_csv(self.path, loop.result.history)


Callback = Callable[[nn.Module, int], dict[str, float]]


def fit(
    model: nn.Module,
    data: ImageDataset,
    config: TrainConfig | None = None,
    loss: ELBO | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    max_steps: int | None = None,
) -> FitResult:
    """Train ``model`` (a :class:`~untwine.pyro_models.base.Model`, or any ``nn.Module`` with ``model``/``guide``)
    on ``data`` by SVI: :func:`train_step` on every batch, the loop's pieces around it (see the module docstring).

    A model with auxiliary parameters gets a second Adam over them, stepped after every ELBO step on
    ``model.auxiliary_loss(x, y)``; it is checkpointed and resumed with the rest, and is data-parallel too.

    :param loss: a Pyro ELBO (default: the model's ``default_loss(len(data))``).
    :param out_dir: folder for ``checkpoint.pt`` and ``history.csv`` (``None``: keep nothing on disk).
    :param resume: continue from ``out_dir/checkpoint.pt`` (same model, config and data required).
    :param callbacks: ``f(model, epoch) -> dict`` run after each epoch in eval mode; results join the history, as
        do those of ``model.epoch_summary()`` (e.g. ISA-VAE's learned exponents).
    :param progress: show a tqdm bar with loss per datapoint and images/s.
    :param max_steps: stop (after checkpointing) once this many steps have been taken in total; used to
        interrupt a run deliberately, e.g. to test resume.
    :returns: :class:`FitResult`.
    """
    config = config if config is not None else TrainConfig()
    loop = LoopState.start(model, data, config, out_dir, resume)
    objective, auxiliary = loop.objectives(loss)
    pieces = [
        ProgressBar(loop, progress),
        NonFiniteGuard(loop),
        EpochColumns(callbacks),
        Checkpointer(),
        HistoryWriter(out_dir),
    ]
    validation = pyro.infer.util.is_validation_enabled()
    pyro.enable_validation(False)
    try:
        with warnings.catch_warnings():
            # the guard reports a non-finite loss once, with its step; Pyro's per-call warning would repeat it
            warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
            while loop.result.epoch < config.epochs:
                model.train()
                loop.meter.start_epoch()
                for x, y in loop.batches():
                    loop.record(train_step(objective, loop.optimizer, x, y, auxiliary), len(x))
                    stop = max_steps is not None and loop.result.step >= max_steps
                    for piece in pieces:
                        piece.on_step_end(loop, stop)
                    if stop:
                        return loop.result
                row = loop.epoch_row()
                for piece in pieces:
                    piece.on_epoch_end(loop, row)
                loop.next_epoch(row)
                for piece in pieces:
                    piece.after_epoch(loop)
    finally:
        for piece in pieces:
            piece.on_train_end(loop)
        pyro.enable_validation(validation)
        model.eval()
    return loop.result
