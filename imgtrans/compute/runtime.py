"""Where and how a run computes — device, autocast precision, memory format, compilation — its seeding,
and the params that record it."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from imgtrans.compute import distributed
from imgtrans.config import RunConfig
from imgtrans.errors import ImgtransError


@dataclass(frozen=True)
class Runtime:
    """Where and how the model computes: device, autocast dtype, memory format, compilation."""

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    fused_optimizers: bool = True

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True, memory_format=self.memory_format)

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # Without the cast-weight cache: a captured CUDA graph must not keep casts from its capture.
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=False)


def resolve_device(choice: str) -> torch.device:
    """`auto` → the GPU when present (under torchrun, this process's: LOCAL_RANK); `cuda` without one is an
    error rather than a silent CPU run."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ImgtransError("device=cuda was requested but no CUDA GPU is available; use device=auto or cpu")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = distributed.World.from_environment().local_rank
    if local_rank >= torch.cuda.device_count():
        raise ImgtransError(f"LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                            "start at most that many processes per node (torchrun --nproc_per_node)")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


# The autocast dtype of each `precision` (fp32: none).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def tune_cuda_backends() -> None:
    """What every run on a GPU computes with: cuDNN autotuning (each new convolution shape is timed once and its
    fastest algorithm kept) and TF32 in fp32 matrix products and convolutions."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def resolve_runtime(cfg: RunConfig) -> Runtime:
    device = resolve_device(cfg.device)
    use_cuda = device.type == "cuda"
    if use_cuda:
        tune_cuda_backends()
    else:
        # Once a GAN's discriminator wins, gradients through it fall into subnormal floats, which a CPU computes
        # many times slower: a default pix2pix run's second epoch took 1.1–1.6 s a step instead of 0.5–0.8 s
        # with them flushed to zero (2 cores). Values that small change no weight.
        torch.set_flush_denormal(True)
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if use_cuda and torch.cuda.is_bf16_supported() else "fp32"
    return Runtime(device, AUTOCAST_DTYPES[precision], channels_last=cfg.channels_last and use_cuda,
                   compile=cfg.compile and use_cuda)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def runtime_params(runtime: Runtime) -> dict[str, object]:
    """Where and how a run computed, as the values that took effect (not the `auto`s that were asked for)."""
    on_gpu = runtime.device.type == "cuda"
    return {
        "device": str(runtime.device),
        **({"device_name": torch.cuda.get_device_name(runtime.device)} if on_gpu else {}),
        "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[runtime.autocast_dtype],
        "channels_last": runtime.channels_last,
        "compile": runtime.compile,
        "torch": torch.__version__,
    }
