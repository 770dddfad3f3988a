"""The one training loop of untwine: stochastic variational inference for any model/guide pair.

Each step evaluates a Pyro ELBO's ``differentiable_loss(model, guide, x, y)`` on a minibatch, divides it by
the batch size (loss per datapoint) and takes one step of a single ``torch.optim.Adam`` over all parameters.
This is the same update as ``pyro.infer.SVI.step`` (Pyro documents ``differentiable_loss`` for exactly this
use), but with one fused optimiser instead of one per tensor and with ``state_dict`` checkpoints that
resume exactly.

What :func:`fit` guarantees:

* the ELBO is minimised with validation off (it is restored afterwards);
* no host-device synchronisation inside a step on CUDA: the loss sum and the first non-finite step are
  tracked on the device and read every ``log_every`` steps and at checkpoints;
* checkpoints are written atomically (temporary file, then ``os.replace``) and hold the model and
  optimiser state, both configs, every RNG state and the position in the epoch, so ``resume=True``
  continues bit-for-bit where an uninterrupted run would be;
* a non-finite loss stops the run with :class:`NonFiniteLossError` naming the step; no checkpoint is
  written after it, so the last good one stays on disk;
* under ``torchrun`` (or with ``TrainConfig.distributed``) the same loop runs data-parallel: each rank reads its
  shard of every global batch and DDP averages the gradients (see :mod:`untwine.inference.distributed`); rank 0
  writes the checkpoints and the history, and a resumed run restores every rank's random state.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import ELBO
from torch import nn
from tqdm.auto import tqdm

from untwine.data.base import ImageDataset
from untwine.inference import distributed
from untwine.inference.distributed import DistributedError, Replica
from untwine.inference.elbo import SyncFreeTrace_ELBO
from untwine.io import atomic_write, atomic_write_text

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


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    """The model's config dataclass as a JSON-friendly dict (empty when the model has none)."""
    cfg = getattr(model, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {}


def _json_equal(a: Any, b: Any) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """One Adam over every parameter; a model may define ``param_groups(lr)`` for per-group rates.

    The update is fused into a few kernels (``fused=True``) on CPU and CUDA: torch's default per-tensor loop costs
    several times more per step (about 4x on Chen et al.'s MLP on a CPU, 20x on UG-VAE's small networks), which is
    most of a small-batch step. Elsewhere torch picks its default implementation.
    """
    groups = model.param_groups(lr) if hasattr(model, "param_groups") else [{"params": list(model.parameters())}]
    params = [p for g in groups for p in g["params"]]
    fusable = all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_ADAM_DTYPES for p in params)
    return torch.optim.Adam(groups, lr=lr, **({"fused": True} if fusable else {}))


_FUSED_ADAM_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def write_history(path: Path, rows: Sequence[dict[str, float]]) -> None:
    """History rows as CSV (columns: union of keys in first-seen order), written atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


Callback = Callable[[nn.Module, int], dict[str, float]]


def usable_images(model: nn.Module, batch_size: int, data: ImageDataset) -> int:
    """How many images of ``data`` one epoch uses: all of them, or whole groups for a model with ``group_size``.

    Models with a global latent per group (UG-VAE) read a batch as consecutive groups of ``group_size``, so batches
    hold whole groups, and the images after the last whole group of an epoch's order wait for the next epoch.

    :raises TrainingError: when ``batch_size`` is not a multiple of the group size, or ``data`` is smaller than a group.
    """
    group = int(getattr(model, "group_size", 1))
    if batch_size % group:
        raise TrainingError(
            f"batch size {batch_size} is not a multiple of the model's group size {group}; "
            f"use --batch-size {group} (one group per step) or a multiple of it"
        )
    n = len(data)
    if n < group:
        raise TrainingError(f"{data.name} has {n} images, fewer than one group of {group}; lower the group size")
    return n - n % group


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
    """Train ``model`` (an ``nn.Module`` with ``model``/``guide``) on ``data`` by SVI.

    :param loss: a Pyro ELBO (default: ``model.default_loss(len(data))`` if defined, else
        :class:`~untwine.inference.elbo.SyncFreeTrace_ELBO`).
    :param out_dir: folder for ``checkpoint.pt`` and ``history.csv`` (``None``: keep nothing on disk).
    :param resume: continue from ``out_dir/checkpoint.pt`` (same model, config and data required).
    :param callbacks: ``f(model, epoch) -> dict`` run after each epoch in eval mode; results join the history, as
        do those of ``model.epoch_summary()`` when the model defines it (e.g. ISA-VAE's learned exponents).
    :param progress: show a tqdm bar with loss per datapoint and images/s.
    :param max_steps: stop (after checkpointing) once this many steps have been taken in total; used to
        interrupt a run deliberately, e.g. to test resume.
    :returns: :class:`FitResult`.
    """
    config = config if config is not None else TrainConfig()
    device = resolve_device(config.device)
    replica: Replica | None = None
    if config.distributed or distributed.launched_by_torchrun():
        try:
            replica, device = distributed.setup(device)
        except DistributedError as err:
            raise TrainingError(str(err)) from err
    main = replica is None or replica.is_main
    n = len(data)
    if loss is None:
        loss = model.default_loss(n) if hasattr(model, "default_loss") else SyncFreeTrace_ELBO()
    expected = getattr(getattr(model, "config", None), "image_shape", None)
    if expected is not None and tuple(expected) != tuple(data.image_shape):
        raise TrainingError(
            f"the model expects images of shape {tuple(expected)} but {data.name} has {tuple(data.image_shape)}"
        )
    check_labels = getattr(model, "check_labels", None)
    if check_labels is not None:
        try:
            check_labels(data.targets)
        except ValueError as err:
            raise TrainingError(f"{data.name}: {err}") from err
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT if out is not None else None
    data_info = {"name": data.name, "n": n, "image_shape": list(data.image_shape)}

    pyro.clear_param_store()
    model.to(device)
    generator = torch.Generator()
    result = FitResult()
    batch_in_epoch, perm = 0, None
    if resume:
        if ckpt_path is None:
            raise TrainingError("resume needs out_dir, the run folder holding checkpoint.pt")
        state = load_checkpoint(ckpt_path)
        if state["model_name"] != getattr(model, "name", type(model).__name__):
            raise TrainingError(
                f"checkpoint {ckpt_path} is for model {state['model_name']!r}, not {model.name!r}; {_START_OVER}"
            )
        if not _json_equal(state["model_config"], model_config_dict(model)):
            raise TrainingError(f"checkpoint {ckpt_path} was written with a different model config; {_START_OVER}")
        if not _json_equal(state["data"], data_info):
            raise TrainingError(
                f"checkpoint {ckpt_path} was trained on other data ({state['data']}), not {data_info}; {_START_OVER}"
            )
        if state["train_config"]["batch_size"] != config.batch_size:
            raise TrainingError("resume with the batch size the run started with")
        ranks = state.get("world_size", 1)
        if ranks != (replica.world_size if replica else 1):
            raise TrainingError(
                f"checkpoint {ckpt_path} was written by a run of {ranks} process(es); resume it with as many "
                "(torchrun --nproc_per_node for more than one)"
            )
        model.load_state_dict(state["model"])
    optimizer = make_optimizer(model, config.lr)
    rank = replica.rank if replica else 0
    if resume:
        optimizer.load_state_dict(state["optimizer"])
        own = state["ranks"][rank] if replica else state
        _set_rng_state(own["rng"], generator)
        result = FitResult(history=list(state["history"]), step=state["step"], epoch=state["epoch"])
        batch_in_epoch, perm = state["batch"], state["perm"]
    else:
        # every rank draws its own sampling noise but the same data order
        seed_everything(config.seed + rank)
        generator.manual_seed(config.seed)

    usable = usable_images(model, config.batch_size, data)
    unit = int(getattr(model, "group_size", 1))
    batch_size = config.batch_size
    step_loss = None
    if replica is not None:
        if config.batch_size % (replica.world_size * unit):
            raise TrainingError(
                f"the global batch size {config.batch_size} must split into {replica.world_size} equal shares of "
                f"whole groups of {unit}; use a multiple of {replica.world_size * unit}"
            )
        batch_size = config.batch_size // replica.world_size
        step_loss = distributed.wrap(model, loss, device)
        usable = usable // unit // replica.world_size * replica.world_size * unit
    steps_per_epoch = math.ceil(usable / config.batch_size)
    loss_sum = torch.zeros((), device=device)
    seen = 0
    if resume:
        loss_sum.fill_(own["partial"][0])
        seen = own["partial"][1]
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    last_good_ckpt = ckpt_path if ckpt_path is not None and ckpt_path.exists() else None
    check_every = 1 if device.type == "cpu" else config.log_every

    def checkpoint(epoch: int, batch: int, perm_now: torch.Tensor | None) -> None:
        nonlocal last_good_ckpt
        if ckpt_path is None:
            return
        # the running epoch loss, so a resumed epoch reports the same number as an uninterrupted one
        own_state = {"rng": _rng_state(generator), "partial": [float(loss_sum), seen]}
        ranks = distributed.gather(own_state, replica) if replica else [own_state]
        if main:
            save_checkpoint(
                ckpt_path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "model_name": getattr(model, "name", type(model).__name__),
                    "model_config": model_config_dict(model),
                    "train_config": dataclasses.asdict(config),
                    "data": data_info,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    **own_state,
                    "world_size": len(ranks),
                    "ranks": ranks,
                    "epoch": epoch,
                    "batch": batch,
                    "perm": perm_now,
                    "step": result.step,
                    "history": result.history,
                },
            )
        if replica:
            distributed.barrier()  # no rank reads on before the checkpoint is on disk
        last_good_ckpt = ckpt_path

    def check_finite() -> None:
        bad = int(distributed.first_step(first_bad) if replica else first_bad)
        if bad >= 0:
            raise NonFiniteLossError(bad, last_good_ckpt)

    validation = pyro.infer.util.is_validation_enabled()
    pyro.enable_validation(False)
    bar = tqdm(total=steps_per_epoch * config.epochs, initial=result.step, disable=not (progress and main), unit="step")
    try:
        with warnings.catch_warnings():
            # the guard below reports a non-finite loss once, with its step; Pyro's per-call warning would repeat it
            warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
            for epoch in range(result.epoch, config.epochs):
                model.train()
                if perm is None:
                    perm = data.epoch_order(generator)[:usable]
                order = distributed.shard_order(perm, unit, replica) if replica else perm
                t0, timed = time.perf_counter(), 0
                for b in range(batch_in_epoch, steps_per_epoch):
                    idx = order[b * batch_size : (b + 1) * batch_size]
                    x, y = data.batch(idx, device)
                    optimizer.zero_grad(set_to_none=True)
                    if step_loss is None:
                        value = loss.differentiable_loss(model.model, model.guide, x, y) / len(idx)
                    else:
                        value = step_loss(x, y)
                    value.backward()
                    optimizer.step()
                    value = value.detach()
                    loss_sum += value * len(idx)
                    seen += len(idx)
                    timed += len(idx)
                    first_bad = torch.where((first_bad < 0) & ~torch.isfinite(value), result.step + 1, first_bad)
                    result.step += 1
                    bar.update()
                    if result.step % check_every == 0:
                        check_finite()
                    if progress and result.step % config.log_every == 0:
                        rate = timed / max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix(loss=f"{float(loss_sum) / seen:.2f}", img_s=f"{rate:.0f}")
                    stop = max_steps is not None and result.step >= max_steps
                    if (config.checkpoint_every and result.step % config.checkpoint_every == 0) or stop:
                        check_finite()
                        checkpoint(epoch, b + 1, perm)
                    if stop:
                        return result
                check_finite()
                elapsed = time.perf_counter() - t0
                counts = torch.tensor([seen, timed], dtype=torch.float64, device=device)
                totals = torch.cat([loss_sum.double().reshape(1), counts])
                if replica:
                    totals = distributed.all_sum(totals)
                loss_total, seen_total, timed_total = totals.tolist()
                row = {
                    "epoch": epoch + 1,
                    "step": result.step,
                    "loss": loss_total / max(seen_total, 1),
                    "images_per_s": timed_total / max(elapsed, 1e-9),
                    "seconds": elapsed,
                }
                loss_sum.zero_()
                seen = 0
                if main:
                    if hasattr(model, "epoch_summary"):
                        row.update(model.epoch_summary())
                    if callbacks:
                        model.eval()
                        for callback in callbacks:
                            row.update(callback(model, epoch + 1))
                if replica:
                    row = distributed.broadcast(row)  # one history on every rank
                result.history.append(row)
                result.epoch = epoch + 1
                perm, batch_in_epoch = None, 0
                checkpoint(epoch + 1, 0, None)
                if out is not None and main:
                    write_history(out / HISTORY, result.history)
    finally:
        bar.close()
        pyro.enable_validation(validation)
        model.eval()
    return result
