"""Objectives and the training loop."""

from untwine.inference.elbo import SyncFreeTrace_ELBO, SyncFreeTraceEnum_ELBO, SyncFreeTraceMeanField_ELBO
from untwine.inference.tc_elbo import TCDecomposedELBO, aggregate_log_density, tc_terms
from untwine.inference.train import (
    FitResult,
    NonFiniteLossError,
    TrainConfig,
    TrainingError,
    fit,
    load_checkpoint,
    resolve_device,
)

__all__ = [
    "FitResult",
    "NonFiniteLossError",
    "SyncFreeTraceEnum_ELBO",
    "SyncFreeTraceMeanField_ELBO",
    "SyncFreeTrace_ELBO",
    "TCDecomposedELBO",
    "TrainConfig",
    "TrainingError",
    "aggregate_log_density",
    "fit",
    "load_checkpoint",
    "resolve_device",
    "tc_terms",
]
