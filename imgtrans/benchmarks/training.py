"""Training-step throughput of a model: plain (fp32 eager, per-tensor Adam, as the reference code runs)
against this suite's fast path, eager (in the model's default memory layout and in the other one, which checks
that default) and replayed as a CUDA graph, with the losses compared."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
from dataclasses import dataclass

import torch

from imgtrans.benchmarks.tables import markdown_table, time_calls
from imgtrans.compute.runtime import Runtime
from imgtrans.config import fields as config_fields
from imgtrans.data.codec import Codec
from imgtrans.models.registry import model_class
from imgtrans.training.graphed_step import training_step_for


@dataclass
class TrainRow:
    model: str
    batch: int
    plain_images_per_s: float
    layout: str  # the model's default memory layout on the device: channels_last or NCHW
    fast_images_per_s: float  # the suite's defaults on the device, eager
    other_layout_images_per_s: float  # the same in the other layout (GPU only): faster means a wrong default
    graphed_images_per_s: float  # the same replayed as a CUDA graph; nan where the step runs eagerly
    plain_ms_per_step: float
    fast_ms_per_step: float
    peak_memory_mb: float
    loss_max_rel_diff: float  # fastest path vs plain, over the steps timed
    loss_last10_rel_diff: float  # the same on the mean loss of the last 10 steps

    @property
    def best_images_per_s(self) -> float:
        return max(self.fast_images_per_s, self.graphed_images_per_s if math.isfinite(self.graphed_images_per_s)
                   else 0.0)

    @property
    def ratio(self) -> float:
        return self.best_images_per_s / self.plain_images_per_s


@contextlib.contextmanager
def pytorch_defaults():
    """The plain step's backends, as the reference code runs: no cuDNN autotuning, no TF32 matrix products
    (`tune_cuda_backends` turns both on for every run of this suite)."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        with cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=True):
            yield
    finally:
        matmul.allow_tf32 = saved


def width_options(cls, width: int) -> dict[str, int]:
    """The config's filter counts set to `width` (0: the model's defaults)."""
    names = {f.name for f in config_fields(cls.config_class)}
    return {name: width for name in ("ngf", "ndf") if width and name in names}


def train_row(model_name: str, batch: int, steps: int, crop: int, device: torch.device, width: int = 0) -> TrainRow:
    """A model's real training step, plain (fp32 eager, per-tensor Adam — how the reference code runs) vs fast
    (this suite's defaults on the device), eager and as a CUDA graph, from the same seed and data."""
    cls = model_class(model_name)
    gpu = device.type == "cuda"
    results = {}
    channels_last = cls.config_class().channels_last
    for mode in ("plain", "fast", "other_layout", "graphed"):
        if mode == "other_layout" and not gpu:  # the memory format is a GPU setting
            continue
        torch.manual_seed(0)
        cfg = cls.config_class(crop_size=crop, batch_size=batch, cuda_graphs=mode == "graphed",
                               **width_options(cls, width))
        model = cls(cfg, Codec(colorization=False))
        fast = mode != "plain" and gpu
        runtime = Runtime(device, torch.bfloat16 if fast else None,
                          channels_last=fast and channels_last != (mode == "other_layout"),
                          fused_optimizers=mode != "plain")
        model.setup(runtime)
        model.configure_optimizers()
        step_fn, status = training_step_for(model, runtime, cfg)
        if mode == "graphed" and status != "on":
            continue
        g = torch.Generator().manual_seed(1)
        batches = [{"A": torch.rand(batch, 3, crop, crop, generator=g) * 2 - 1,
                    "B": torch.rand(batch, 3, crop, crop, generator=g) * 2 - 1} for _ in range(4)]
        if gpu:  # the data cache's batches are on the device already
            batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
            torch.cuda.reset_peak_memory_stats()
        losses: list[torch.Tensor] = []

        def step(i=[0]):
            out = step_fn(batches[i[0] % len(batches)])
            model.scaler.update()
            i[0] += 1
            losses.append(sum(v.detach().float() for v in out.values()))  # read after timing: no sync per step

        with pytorch_defaults() if mode == "plain" else contextlib.nullcontext():
            times = time_calls(step, warmup=min(3, steps), repeats=steps, sync=gpu)
        memory = torch.cuda.max_memory_allocated() / 2 ** 20 if gpu else float("nan")
        results[mode] = (statistics.median(times), [float(v) for v in losses], memory)
    plain_t, plain_l, _ = results["plain"]
    fast_t, fast_l, memory = results["fast"]
    graphed_t, graphed_l, graphed_memory = results.get("graphed", (math.nan, fast_l, memory))
    other_t = results.get("other_layout", (math.nan,))[0]
    best_l = graphed_l if graphed_t < fast_t else fast_l
    rel = max(abs(a - b) / max(abs(a), 1e-8) for a, b in zip(plain_l, best_l))
    last = min(10, len(plain_l))
    window = abs(sum(plain_l[-last:]) - sum(best_l[-last:])) / max(abs(sum(plain_l[-last:])), 1e-8)
    return TrainRow(model_name, batch, batch / plain_t, "channels_last" if channels_last else "NCHW",
                    batch / fast_t, batch / other_t, batch / graphed_t,
                    plain_t * 1e3,
                    min(fast_t, graphed_t) * 1e3 if math.isfinite(graphed_t) else fast_t * 1e3,
                    max(memory, graphed_memory), rel, window)


def format_training(rows: list[TrainRow]) -> str:
    return markdown_table(
        ["model", "batch", "plain img/s", "layout", "fast img/s", "other layout img/s", "CUDA graph img/s", "ratio",
         "plain ms/step", "fast ms/step", "peak MB", "max rel. loss diff", "last-10 rel. loss diff"],
        [[r.model, str(r.batch), f"{r.plain_images_per_s:.2f}", r.layout, f"{r.fast_images_per_s:.2f}",
          f"{r.other_layout_images_per_s:.2f}" if math.isfinite(r.other_layout_images_per_s) else "n/a",
          f"{r.graphed_images_per_s:.2f}" if math.isfinite(r.graphed_images_per_s) else "n/a", f"{r.ratio:.2f}×",
          f"{r.plain_ms_per_step:.1f}", f"{r.fast_ms_per_step:.1f}", f"{r.peak_memory_mb:.0f}",
          f"{r.loss_max_rel_diff:.2e}", f"{r.loss_last10_rel_diff:.2e}"] for r in rows])


def training_metrics(rows: list[TrainRow]) -> dict[str, float]:
    metrics = {}
    for t in rows:
        for field in dataclasses.fields(t):
            value = getattr(t, field.name)
            if field.name not in ("model", "batch", "layout") and math.isfinite(value):
                metrics[f"bench_train/{t.model}/b{t.batch}/{field.name}"] = value
        metrics[f"bench_train/{t.model}/b{t.batch}/ratio"] = t.ratio
    return metrics
