"""Objectives and the training loop."""

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
    "TrainConfig",
    "TrainingError",
    "fit",
    "load_checkpoint",
    "resolve_device",
]
