"""Checkpoints: everything needed to continue training exactly, or to use the model.

A checkpoint holds the config and codec (so nothing is retyped to load it),
network weights, and — for training checkpoints — optimizer, scheduler and
AMP-scaler states, every RNG state and the position in the data order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from imgtrans import config as config_mod
from imgtrans.data.codec import Codec
from imgtrans.errors import ImgtransError
from imgtrans.files import atomic_write

FORMAT = 2
LEGACY_FORMAT = 1  # the same payload without its checksum: read, unchecked
CHECKSUM = "sha256"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checksum(payload: dict[str, Any]) -> str:
    """SHA-256 over every value of the payload: tensor bytes with their dtype and shape, everything else by repr."""
    digest = hashlib.sha256()

    def feed(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            flat = obj.detach().cpu().contiguous().reshape(-1)
            digest.update(f"tensor {flat.dtype} {tuple(obj.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy())
        elif isinstance(obj, np.ndarray):
            digest.update(f"array {obj.dtype} {obj.shape}".encode())
            digest.update(np.ascontiguousarray(obj).tobytes())
        elif isinstance(obj, dict):
            digest.update(b"{")
            for key in sorted(obj, key=repr):
                feed(key)
                feed(obj[key])
            digest.update(b"}")
        elif isinstance(obj, (list, tuple)):
            digest.update(b"[")
            for item in obj:
                feed(item)
            digest.update(b"]")
        else:
            digest.update(repr(obj).encode())

    feed({k: v for k, v in payload.items() if k != CHECKSUM})
    return digest.hexdigest()


def atomic_save(payload: dict[str, Any], path: Path) -> Path:
    """Save with the payload's checksum, so that `read` refuses a damaged file."""
    payload = {**payload, CHECKSUM: checksum(payload)}
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def model_payload(model) -> dict[str, Any]:
    """What a model needs to be used: its name, config, codec (None for DIP, which has no data codec), weights."""
    return {
        "format": FORMAT,
        "model": model.cfg.model_name,
        "config": config_mod.to_dict(model.cfg),
        "codec": dataclasses.asdict(model.codec) if model.codec is not None else None,
        "nets": model.state_dict(),
    }


def training_payload(model, schedulers: dict, position: dict[str, int],
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything to continue exactly: the model payload, `model.optimizers`, the lr schedulers, the AMP
    scaler, every RNG state, the position in the run, and a run kind's own `extra` state."""
    payload = model_payload(model)
    payload.update(
        optimizers={k: portable_optimizer_state(o) for k, o in model.optimizers.items()},
        schedulers={k: s.state_dict() for k, s in schedulers.items()},
        scaler=model.scaler.state_dict(),
        rng=rng_state(),
        position=position,
        **(extra or {}),
    )
    return payload


def portable_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state as an eager run on any device loads it: a CUDA-graph run keeps its learning rates
    as device tensors and its groups `capturable`; the file holds plain numbers (a graph run converts back)."""
    state = optimizer.state_dict()
    groups = [{**g, "lr": float(g["lr"]), "capturable": False} if torch.is_tensor(g["lr"]) else g
              for g in state["param_groups"]]
    return {**state, "param_groups": groups}


def save_training(path: Path, model, schedulers: dict, position: dict[str, int],
                  extra: dict[str, Any] | None = None) -> Path:
    return atomic_save(training_payload(model, schedulers, position, extra), path)


def to_host(obj: Any) -> Any:
    """A copy of a payload whose tensors are copies in host memory, so training can go on changing its own."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_host(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return obj.copy()
    return obj


class BackgroundSaver:
    """Saves checkpoints on a thread: the caller waits only for a host copy of the state (and for the previous
    save, if it is still being written). `on_saved(path)` runs on that thread once the file is complete."""

    def __init__(self, on_saved: Callable[[Path], object]):
        self.on_saved = on_saved
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, payload: dict[str, Any], path: Path) -> None:
        self.wait()
        snapshot = to_host(payload)
        self._thread = threading.Thread(target=self._write, args=(snapshot, path), name="imgtrans-checkpoint")
        self._thread.start()

    def _write(self, payload: dict[str, Any], path: Path) -> None:
        try:
            self.on_saved(atomic_save(payload, path))
        except BaseException as exc:  # raised in the training thread by `wait`
            self._error = exc

    def join(self) -> None:
        """Until the last save is complete (its error, if any, is kept for `wait`)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wait(self) -> None:
        """Until the last save is complete; re-raises what made it fail."""
        self.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def restore_training(model, schedulers: dict, payload: dict[str, Any]) -> dict[str, int]:
    """Load what `save_training` saved back into the model, its optimizers, schedulers, scaler and the RNGs;
    returns the position."""
    restore_nets(model, payload, model.cfg.resume)
    for name, state in payload["optimizers"].items():
        model.optimizers[name].load_state_dict(state)
    for name, state in payload["schedulers"].items():
        schedulers[name].load_state_dict(state)
    model.scaler.load_state_dict(payload["scaler"])
    set_rng_state(payload["rng"])
    return payload["position"]


def read(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ImgtransError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say which
        raise ImgtransError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") not in (LEGACY_FORMAT, FORMAT):
        raise ImgtransError(f"{path} is not an imgtrans checkpoint (format {FORMAT})")
    if payload["format"] == FORMAT and payload.get(CHECKSUM) != checksum(payload):
        raise ImgtransError(f"checkpoint {path} is damaged: its contents do not match its checksum; resume from "
                            "another checkpoint or run")
    return payload


def restore_nets(model, payload: dict[str, Any], source: str) -> None:
    try:
        model.load_state_dict(payload["nets"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ImgtransError(f"checkpoint {source} does not fit this model configuration ({first}); "
                            "resume with the architecture options it was trained with") from None


def load_model(path: Path | str, device: str | torch.device = "cpu"):
    """Rebuild a trained model for inference from a checkpoint alone (eval mode)."""
    from imgtrans.models import model_class
    from imgtrans.runtime import Runtime

    payload = read(path)
    cls = model_class(payload["model"])
    cfg = config_mod.from_dict(cls.config_class, payload["config"])
    model = cls(cfg, Codec(**payload["codec"]))
    restore_nets(model, payload, str(path))
    model.setup(Runtime(torch.device(device)))
    return model.eval()
