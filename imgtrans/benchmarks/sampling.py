"""Conditional diffusion sampling (seconds per image) and Deep Image Prior iterations (ms each)."""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass

import torch

from imgtrans.benchmarks.tables import markdown_table, time_calls
from imgtrans.compute.runtime import AUTOCAST_DTYPES, Runtime
from imgtrans.data.codec import Codec
from imgtrans.dip.model import DeepImagePrior
from imgtrans.dip.options import DIPConfig
from imgtrans.errors import ImgtransError
from imgtrans.models.diffusion import Diffusion
from imgtrans.models.options import DiffusionConfig
from imgtrans.nets.layers import count_parameters
from imgtrans.training.graphed_step import training_step_for


@dataclass
class SamplingRow:
    size: int
    precision: str
    batch: int
    sampler: str
    steps: int
    graphed: bool  # the denoiser replayed from a captured CUDA graph
    params_m: float
    s_per_image: float
    max_diff: float | None  # graphed: the largest difference from the eager loop's images (same seed)

    def key(self) -> str:
        return f"bench_sample/{self.size}px/{self.precision}/b{self.batch}/{self.sampler}" + \
            ("/graphed" if self.graphed else "")


def sampling_rows(sizes: list[int], precisions: list[str], batch: int, samplers: dict[str, int], channels: int,
                  device: torch.device, repeats: int) -> list[SamplingRow]:
    """Conditional diffusion sampling (the model's loop with its EMA net), seconds per image, for each sampler
    at its number of steps (e.g. DDIM at 50, DPM-Solver++(2M) at 15); on a GPU eagerly and with the denoiser
    replayed from a CUDA graph, whose images must match the eager ones."""
    rows = []
    for size in sizes:
        for sampler, steps in samplers.items():
            for precision in precisions:
                eager_images = None
                for graphed in (False, True) if device.type == "cuda" else (False,):
                    torch.manual_seed(0)
                    model = Diffusion(DiffusionConfig(crop_size=size, base_channels=channels, channel_mults="1,2,4,4",
                                                      sampler=sampler, cuda_graphs=graphed), Codec(colorization=False))
                    cond = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
                    model.setup(Runtime(device, AUTOCAST_DTYPES[precision], channels_last=device.type == "cuda"))
                    model.eval()
                    images = model.sample(cond, steps)  # the warm-up (and capture)
                    times = time_calls(lambda: model.sample(cond, steps), warmup=0, repeats=repeats,
                                       sync=device.type == "cuda")
                    max_diff = float((images - eager_images).abs().max()) if graphed else None
                    eager_images = images
                    rows.append(SamplingRow(size, precision, batch, sampler, steps, graphed,
                                            count_parameters(model.generator()) / 1e6,
                                            statistics.median(times) / batch, max_diff))
    return rows


@dataclass
class DIPRow:
    size: int
    precision: str
    mode: str  # eager, compile or graphed (the iteration replayed as one captured CUDA graph)
    ms_per_iteration: float

    @property
    def seconds_for_3000(self) -> float:
        return self.ms_per_iteration * 3

    def key(self) -> str:
        return f"bench_dip/{self.size}px/{self.precision}{'' if self.mode == 'eager' else '/' + self.mode}"


DIP_MODES = ("eager", "compile", "graphed")
DIP_MULTIPLE = 2 ** DIPConfig().depth  # the default net's: the image sizes it takes unpadded


def dip_rows(size: int, precisions: list[str], modes: list[str], device: torch.device,
             iterations: int) -> list[DIPRow]:
    """DIP's iteration (default `skip` net, width 128) on a size×size image, ms per iteration, as `dip` runs it
    (`graphed`: through the captured step). The loop adds its per-iteration PSNR bookkeeping, which stays on the
    device."""
    cfg = DIPConfig()
    g = torch.Generator().manual_seed(0)
    net_input = torch.rand(1, cfg.input_depth, size, size, generator=g) * 0.1
    target = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    rows = []
    for precision in precisions:
        for mode in modes:
            torch.manual_seed(0)
            model = DeepImagePrior(dataclasses.replace(cfg, cuda_graphs=mode == "graphed"), 3)
            runtime = Runtime(device, AUTOCAST_DTYPES[precision], channels_last=device.type == "cuda",
                              compile=mode == "compile")
            model.setup(runtime)
            step, status = training_step_for(model, runtime, model.cfg, full_batch=1)
            if mode == "graphed" and status != "on":
                raise ImgtransError(f"the DIP iteration cannot be captured here ({status}); leave out mode graphed")
            batch = {"A": net_input.to(device, memory_format=runtime.memory_format), "B": target.to(device)}
            times = time_calls(lambda: step(batch), warmup=3 if mode == "compile" else 1, repeats=iterations,
                               sync=device.type == "cuda")
            rows.append(DIPRow(size, precision, mode, statistics.median(times) * 1e3))
    return rows


def format_dip(rows: list[DIPRow]) -> str:
    return markdown_table(
        ["DIP (skip, width 128)", "precision", "mode", "ms/iteration", "3000 iterations (s)"],
        [[f"{r.size}×{r.size}", r.precision, r.mode, f"{r.ms_per_iteration:.1f}", f"{r.seconds_for_3000:.1f}"]
         for r in rows])


def format_sampling(rows: list[SamplingRow]) -> str:
    return markdown_table(
        ["diffusion sampling", "precision", "batch", "sampler", "steps", "denoiser", "U-Net params (M)", "s/image",
         "max |graphed − eager|"],
        [[f"{r.size}×{r.size}", r.precision, str(r.batch), r.sampler, str(r.steps),
          "CUDA graph" if r.graphed else "eager", f"{r.params_m:.1f}", f"{r.s_per_image:.4f}",
          "" if r.max_diff is None else f"{r.max_diff:.2g}"] for r in rows])


def sampling_metrics(rows: list[SamplingRow]) -> dict[str, float]:
    return {f"{r.key()}/s_per_image": r.s_per_image for r in rows} | \
        {f"{r.key()}/max_diff": r.max_diff for r in rows if r.max_diff is not None}


def dip_metrics(rows: list[DIPRow]) -> dict[str, float]:
    return {f"{r.key()}/ms_per_iteration": r.ms_per_iteration for r in rows}
