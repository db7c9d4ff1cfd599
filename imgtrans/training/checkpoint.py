"""Checkpoints: everything needed to continue training exactly, or to use the model.

A checkpoint holds the config and codec (so nothing is retyped to load it),
network weights, and — for training checkpoints — optimizer, scheduler and
AMP-scaler states, every RNG state and the position in the data order.

Checkpoints travel through shared tracking servers, so reading one never runs code: the file is a header
line with the SHA-256 of the bytes after it (checked before anything is unpickled), then `torch.save`'s
archive of tensors and plain values only, read with `weights_only=True`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import torch

from imgtrans import config as config_mod
from imgtrans.compute.runtime import Runtime
from imgtrans.data.codec import Codec
from imgtrans.errors import ImgtransError
from imgtrans.files import atomic_write
from imgtrans.models.options import INFERENCE_NEEDS, INFERENCE_OPTIONS
from imgtrans.models.registry import model_class

FORMAT = 3
LEGACY_FORMATS = (1, 2)  # a bare torch.save payload, without (1) or with (2) a checksum of its values: still read
MAGIC = b"IMGTRANS-CHECKPOINT"
HEADER_LENGTH = len(MAGIC) + len(f" {FORMAT} sha256:") + 64 + 1
CHUNK = 1 << 20
# Where a run keeps its training checkpoint: the artifact folder, the file, and the path a run is resumed from.
FOLDER, LAST = "checkpoints", "last.pt"
LAST_ARTIFACT = f"{FOLDER}/{LAST}"


def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain values (numpy's key array as a tensor), so it loads weights-only."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"bit_generator": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["bit_generator"], numpy_state["keys"].numpy().astype(np.uint32),
                       numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def legacy_checksum(payload: dict[str, Any]) -> str:
    """Format 2's SHA-256 over every value of the payload: tensor bytes with dtype and shape, the rest by repr."""
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

    feed({k: v for k, v in payload.items() if k != "sha256"})
    return digest.hexdigest()


class _HashingWriter:
    """A write-only file that also feeds what passes through it to a SHA-256."""

    def __init__(self, fh: IO[bytes]):
        self.fh, self.digest = fh, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def _header(digest: str) -> bytes:
    return MAGIC + f" {FORMAT} sha256:{digest}\n".encode()


def atomic_save(payload: dict[str, Any], path: Path) -> Path:
    """Save with the SHA-256 of the saved bytes in the header, so that `read` refuses a damaged file."""
    def write(fh: IO[bytes]) -> None:
        fh.write(_header("0" * 64))
        body = _HashingWriter(fh)
        torch.save({**payload, "format": FORMAT}, body)
        fh.seek(0)
        fh.write(_header(body.digest.hexdigest()))

    return atomic_write(path, write)


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
    """The payload of a checkpoint file, checked against its checksum and loaded as data only."""
    path = Path(path)
    if not path.is_file():
        raise ImgtransError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as fh:
            header = fh.read(HEADER_LENGTH)
            if header.startswith(MAGIC):
                _check_digest(path, header, fh)
                fh.seek(HEADER_LENGTH)
            else:
                fh.seek(0)
            payload = _load_data(path, fh, legacy=not header.startswith(MAGIC))
    except OSError as exc:
        raise ImgtransError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if not isinstance(payload, dict) or payload.get("format") not in (*LEGACY_FORMATS, FORMAT):
        raise ImgtransError(f"{path} is not an imgtrans checkpoint (format {FORMAT})")
    if payload["format"] == 2 and payload.get("sha256") != legacy_checksum(payload):
        raise _damaged(path)
    return payload


def _damaged(path: Path) -> ImgtransError:
    return ImgtransError(f"checkpoint {path} is damaged: its contents do not match its checksum; resume from "
                         "another checkpoint or run")


def _check_digest(path: Path, header: bytes, fh: IO[bytes]) -> None:
    match = re.fullmatch(rb" (\d+) sha256:([0-9a-f]{64})\n", header[len(MAGIC):])
    if match is None or int(match[1]) != FORMAT:
        raise ImgtransError(f"{path} is not an imgtrans checkpoint of format {FORMAT} (header {header[:60]!r}); "
                            "it was written by another version of imgtrans")
    digest = hashlib.sha256()
    while chunk := fh.read(CHUNK):
        digest.update(chunk)
    if digest.hexdigest() != match[2].decode():
        raise _damaged(path)


def _legacy_globals():
    """What format 1 and 2 files hold besides tensors: numpy's RNG state (an array of uint32 keys)."""
    return torch.serialization.safe_globals([np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                                             np.dtypes.UInt32DType])


def _load_data(path: Path, fh: IO[bytes], legacy: bool) -> Any:
    try:
        with _legacy_globals() if legacy else nullcontext():
            return torch.load(fh, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        # torch words it "Unsupported global: GLOBAL json.dumps", or "unsupported GLOBAL posix.system whose module
        # posix is blocked".
        unsafe = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", text, re.IGNORECASE)
        if unsafe:
            raise ImgtransError(f"checkpoint {path} holds code ({unsafe[1]}), not only tensors and plain values: "
                                "refused without running it; use a checkpoint written by imgtrans") from None
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
        raise ImgtransError(f"cannot read checkpoint {path}: {first}") from None


def restore_nets(model, payload: dict[str, Any], source: str) -> None:
    try:
        model.load_state_dict(payload["nets"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ImgtransError(f"checkpoint {source} does not fit this model configuration ({first}); "
                            "resume with the architecture options it was trained with") from None


def load_model(path: Path | str, device: str | torch.device = "cpu", **inference: Any):
    """Rebuild a trained model for inference from a checkpoint alone (eval mode); `inference` options
    (`INFERENCE_OPTIONS`) decode it otherwise than its own config says (`at_inference`)."""
    payload = read(path)
    cls = model_class(payload["model"])
    cfg = at_inference(config_mod.from_saved(cls.config_class, payload["config"]), **inference)
    model = cls(cfg, Codec(**payload["codec"]))
    restore_nets(model, payload, str(path))
    model.setup(Runtime(torch.device(device)))
    return model.eval()


def at_inference(cfg: config_mod.TrainConfig, **options: Any) -> config_mod.TrainConfig:
    """`cfg` with inference options (`INFERENCE_OPTIONS`) in place of its own: how a Lab colorizer's colour classes
    and its gate decided. They change no weight — training decodes at the paper's temperature, from one view at the
    input's own scale, at the gate's own odds, whatever they are — so a trained model can be scored and exported with
    others."""
    for name, value in options.items():
        own = INFERENCE_OPTIONS[name]
        if value == own:
            continue
        if not hasattr(cfg, name) or not config_mod.applies(cfg, name):
            shown = f"{own:g}" if isinstance(own, float) else own
            raise ImgtransError(f"{name} applies to a Lab colorizer with {INFERENCE_NEEDS[name]}; this "
                                f"{cfg.model_name} model has none: leave it at {shown}")
        cfg = dataclasses.replace(cfg, **{name: config_mod.parse_option(type(cfg), name, value)})
    return cfg
