"""What every benchmark script sets up the same way: threads, the device, and Pyro's validation as in training."""

from __future__ import annotations

import argparse

import pyro
import torch

from untwine.inference.train import TrainingError, resolve_device


def setup_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and ``--device`` (``auto``, ``cpu``, ``cuda``; a parser error when CUDA is asked for but
    missing), switch Pyro's validation off as :func:`~untwine.inference.train.fit` does, and print a header line
    naming the device (GPU name, or CPU and its thread count) and the library versions."""
    if getattr(args, "threads", None) is not None:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except TrainingError as err:
        parser.error(str(err))
    pyro.enable_validation(False)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}, pyro {pyro.__version__}")
    return device
