"""The pretrained weights some metrics need (the FID Inception, LPIPS's AlexNet): where they are looked for
— an explicit path, else the torch hub cache under the file names the libraries use — and what a metric
says when its file is missing: it is unavailable, and everything else carries on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"


@dataclass(frozen=True)
class Unavailable:
    metric: str
    message: str


def weights_file(filename: str, explicit: str = "") -> Path | None:
    """An explicit path if given, else the torch hub cache entry, if the file exists."""
    if explicit:
        path = Path(explicit).expanduser()
        return path if path.is_file() else None
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    return path if path.is_file() else None


def missing_message(metric: str, filename: str, url: str, explicit: str, option: str) -> str:
    where = explicit or str(Path(torch.hub.get_dir()) / "checkpoints" / filename)
    return (f"{metric} unavailable: weights file {where} not found; download {url} there on a machine with "
            f"network access, or pass {option}=<path>")
