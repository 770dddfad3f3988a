"""What the benchmark scripts share: threads, the device and Pyro's validation as in training, and the shared data."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

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


#: torchvision's folder name of each dataset inside the shared data folder
RAW_FOLDERS = {"mnist": ("mnist", "MNIST"), "fashion-mnist": ("fashion-mnist", "FashionMNIST")}


def shared_data() -> Path:
    """The folder of real datasets: ``$UNTWINE_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("UNTWINE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_root(data: str, scratch: Path) -> Path:
    """Writable copy of the shared raw files of ``data`` in ``scratch``, laid out as torchvision expects."""
    folder, raw = RAW_FOLDERS[data]
    source = shared_data() / folder / raw
    if not source.is_dir():
        sys.exit(f"no --data-root given and {source} does not exist; pass the folder that holds {raw}/raw")
    shutil.copytree(source, scratch / raw)
    for path in (scratch / raw).rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return scratch
