r"""Data-parallel training across processes with PyTorch's own engine (``torch.distributed`` and DDP).

A run launched by ``torchrun --nproc_per_node W`` (one process per GPU, or several CPU processes with the gloo
backend) trains one model: every rank holds a replica, reads its own shard of each global batch and
:class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients across ranks during ``backward``.

**What DDP wraps.** The ELBO of a step is Pyro's own ``ELBOModule`` (``loss(model.model, model.guide)``, an
``nn.Module`` whose forward is ``loss.differentiable_loss(model.model, model.guide, x, y)``), with the pair's networks
registered on it so that its parameters are the model's; :func:`wrap` puts it inside DDP, and
:func:`~untwine.inference.train.train_step` calls it, divides by the shard size and calls ``backward``. A model with
auxiliary parameters (``Model.auxiliary_param_groups``, e.g. an adversary) has a second module whose forward is
``model.auxiliary_loss(x, y)`` and which holds only those parameters, in a DDP of its own, so their gradients are
averaged in the auxiliary step. The ELBO's DDP then runs with ``find_unused_parameters``, because the auxiliary
parameters it holds get no gradient from the ELBO (or one that no optimiser of the ELBO reads).

**Objective scaling.** :func:`~untwine.inference.train.fit` minimises the ELBO per datapoint of a global batch
:math:`\mathcal{B} = \bigcup_r \mathcal{B}_r` of size :math:`B`. Each rank evaluates its Pyro ELBO on its shard of
:math:`B / W` images and divides by the shard size; DDP's average over the :math:`W` ranks then gives

.. math::

    \frac{1}{W} \sum_{r=1}^{W} \nabla \frac{1}{B/W} \Big( -\mathrm{ELBO}(\mathcal{B}_r) \Big)
    = \nabla \frac{1}{B} \sum_{r=1}^{W} -\mathrm{ELBO}(\mathcal{B}_r),

the gradient a single process takes on the whole batch whenever the ELBO is a sum over images (or over groups of
images, for models with a global latent per group), because every rank's shard of a step holds the same number of
images. Estimators that couple the images of a minibatch (β-TCVAE's minibatch-weighted sampling of
:math:`\log q(z)`) use each rank's shard as their minibatch: their dataset-size weights stay correct, but their
samples of the aggregate posterior come from :math:`B / W` images instead of :math:`B`. The auxiliary loss is a loss
per image too, so its averaged gradient is likewise the one of the whole batch.

**Sharding.** The epoch order (:meth:`~untwine.data.base.ImageDataset.epoch_order`, seeded identically on every
rank) is cut into units of one image, or one group for grouped models, and a
:class:`~torch.utils.data.distributed.DistributedSampler` (no shuffle of its own, ``drop_last``) deals the units to
the ranks in turn, so that step :math:`b` of every rank together reads exactly the units of the single-process
batch :math:`b`. To give every rank equal shares an epoch leaves out at most :math:`W - 1` units of its order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler

#: environment variables torchrun sets for every process
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A distributed run cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class Replica:
    """Where this process stands in a data-parallel run."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, histories and run folders."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the environment of ``torchrun`` (``WORLD_SIZE`` greater than 1) is present."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process(requested: bool) -> bool:
    """Whether this process is rank 0 (or the only process), read from torchrun's ``RANK`` before the process group
    exists: what may touch a run folder before training starts.

    :param requested: data-parallel training was asked for (``--distributed``); under torchrun with more than one
        process it is on regardless.
    """
    return not (requested or launched_by_torchrun()) or int(os.environ.get("RANK", "0")) == 0


def setup(device: torch.device) -> tuple[Replica, torch.device]:
    """Join the process group of this ``torchrun`` launch (or use the one already initialised).

    The backend is NCCL for CUDA devices and gloo on CPUs. On CUDA each process takes the GPU ``LOCAL_RANK``.

    :param device: the device the run was asked for (``cuda`` or ``cpu``).
    :returns: this process's :class:`Replica` and the device it trains on.
    :raises DistributedError: when the process was not started by ``torchrun`` and no group is initialised.
    """
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed; drop --distributed")
    if not dist.is_initialized():
        missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
        if missing:
            raise DistributedError(
                f"--distributed needs the environment torchrun sets ({', '.join(missing)} missing); launch with "
                "`torchrun --nproc_per_node N -m untwine train ... --distributed`"
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); start at most one "
                "process per GPU"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return Replica(dist.get_rank(), dist.get_world_size(), local_rank), device


def shard_order(order: torch.Tensor, unit: int, replica: Replica) -> torch.Tensor:
    """This rank's images of an epoch order, dealt out in units of ``unit`` images by a ``DistributedSampler``.

    :param order: the epoch's image indices, a multiple of ``unit`` long (consecutive images of a unit stay together).
    :param unit: images that must stay on one rank (1, or the group size of a grouped model).
    :returns: the indices this rank reads, in the order it reads them: unit ``r``, ``r + W``, ``r + 2W``, ...
    """
    units = order.reshape(-1, unit)
    if len(units) < replica.world_size:
        raise DistributedError(
            f"an epoch has {len(units)} units of {unit} images, fewer than the {replica.world_size} ranks"
        )
    sampler = DistributedSampler(
        units, num_replicas=replica.world_size, rank=replica.rank, shuffle=False, drop_last=True
    )
    return units[torch.as_tensor(list(sampler), dtype=torch.long)].reshape(-1)


def wrap(objective: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``objective`` inside ``DistributedDataParallel`` (its parameters broadcast from rank 0 on construction).

    :param objective: a module whose ``forward`` is the loss of a step, so that the parameters are used inside DDP's
        forward: Pyro's ``ELBOModule`` holding the pair's networks, or the auxiliary objective holding the auxiliary
        parameters (see :func:`~untwine.inference.train.fit`).
    :param find_unused_parameters: let a step leave some of ``objective``'s parameters without a gradient, at the
        cost of a graph traversal per step. Every registered model gives every parameter of its ELBO a gradient in
        every step; a new model/guide pair that does not sets ``find_unused_parameters = True`` as a class attribute.
    """
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        objective, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` over ranks (a new tensor; the input is left alone)."""
    total = values.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def first_step(value: torch.Tensor) -> torch.Tensor:
    """The smallest non-negative ``value`` over ranks (``-1`` where every rank holds ``-1``)."""
    big = torch.iinfo(value.dtype).max
    encoded = torch.where(value < 0, torch.full_like(value, big), value)
    dist.all_reduce(encoded, op=dist.ReduceOp.MIN)
    return torch.where(encoded == big, torch.full_like(value, -1), encoded)


def gather(obj: Any, replica: Replica) -> list[Any]:
    """Every rank's ``obj`` in rank order (pickled; for checkpoints, not for the training step)."""
    out: list[Any] = [None] * replica.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every rank gets here."""
    dist.barrier()
