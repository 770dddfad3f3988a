"""Objectives and the training loop."""

from untwine.inference.elbo import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO
from untwine.inference.objectives import OBJECTIVES, Objective, TCObjective
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
    "OBJECTIVES",
    "FitResult",
    "Objective",
    "TCObjective",
    "NonFiniteLossError",
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
