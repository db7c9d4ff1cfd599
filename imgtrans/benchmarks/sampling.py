"""Conditional diffusion sampling (seconds per image) and Deep Image Prior iterations (ms each)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from imgtrans.benchmarks.tables import markdown_table, time_calls
from imgtrans.compute.runtime import AUTOCAST_DTYPES, Runtime
from imgtrans.data.codec import Codec
from imgtrans.dip.model import DeepImagePrior
from imgtrans.dip.options import DIPConfig
from imgtrans.models.diffusion import Diffusion
from imgtrans.models.options import DiffusionConfig
from imgtrans.nets.layers import count_parameters


@dataclass
class SamplingRow:
    size: int
    precision: str
    batch: int
    sampler: str
    steps: int
    params_m: float
    s_per_image: float

    def key(self) -> str:
        return f"bench_sample/{self.size}px/{self.precision}/b{self.batch}/{self.sampler}"


def sampling_rows(sizes: list[int], precisions: list[str], batch: int, samplers: dict[str, int], channels: int,
                  device: torch.device, repeats: int) -> list[SamplingRow]:
    """Conditional diffusion sampling (the model's loop with its EMA net), seconds per image, for each sampler
    at its number of steps (e.g. DDIM at 50, DPM-Solver++(2M) at 15)."""
    rows = []
    for size in sizes:
        for sampler, steps in samplers.items():
            torch.manual_seed(0)
            model = Diffusion(DiffusionConfig(crop_size=size, base_channels=channels, channel_mults="1,2,4,4",
                                              sampler=sampler), Codec(colorization=False))
            params = count_parameters(model.generator()) / 1e6
            cond = torch.rand(batch, 3, size, size) * 2 - 1
            for precision in precisions:
                dtype = AUTOCAST_DTYPES[precision]
                model.setup(Runtime(device, dtype, channels_last=device.type == "cuda"))
                model.eval()
                times = time_calls(lambda: model.sample(cond, steps), warmup=1, repeats=repeats,
                                   sync=device.type == "cuda")
                rows.append(SamplingRow(size, precision, batch, sampler, steps, params,
                                        statistics.median(times) / batch))
    return rows


@dataclass
class DIPRow:
    size: int
    precision: str
    compiled: bool
    ms_per_iteration: float

    @property
    def seconds_for_3000(self) -> float:
        return self.ms_per_iteration * 3

    def key(self) -> str:
        return f"bench_dip/{self.size}px/{self.precision}{'/compile' if self.compiled else ''}"


def dip_rows(size: int, precisions: list[str], compiled: list[bool], device: torch.device,
             iterations: int) -> list[DIPRow]:
    """DIP's optimisation step (default `skip` net, width 128) on a size×size image, ms per iteration.
    The `dip` loop adds its per-iteration PSNR bookkeeping, which stays on the device."""
    cfg = DIPConfig()
    g = torch.Generator().manual_seed(0)
    net_input = torch.rand(1, cfg.input_depth, size, size, generator=g) * 0.1
    target = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    rows = []
    for precision in precisions:
        for compile_net in compiled:
            torch.manual_seed(0)
            model = DeepImagePrior(cfg, 3)
            dtype = AUTOCAST_DTYPES[precision]
            runtime = Runtime(device, dtype, channels_last=device.type == "cuda", compile=compile_net)
            model.setup(runtime)
            x = net_input.to(device, memory_format=runtime.memory_format)
            y = target.to(device)
            times = time_calls(lambda: model.fit_step(x, y, None), warmup=3 if compile_net else 1,
                               repeats=iterations, sync=device.type == "cuda")
            rows.append(DIPRow(size, precision, compile_net, statistics.median(times) * 1e3))
    return rows


def format_dip(rows: list[DIPRow]) -> str:
    return markdown_table(
        ["DIP (skip, width 128)", "precision", "compiled", "ms/iteration", "3000 iterations (s)"],
        [[f"{r.size}×{r.size}", r.precision, "yes" if r.compiled else "no", f"{r.ms_per_iteration:.1f}",
          f"{r.seconds_for_3000:.1f}"] for r in rows])


def format_sampling(rows: list[SamplingRow]) -> str:
    return markdown_table(
        ["diffusion sampling", "precision", "batch", "sampler", "steps", "U-Net params (M)", "s/image"],
        [[f"{r.size}×{r.size}", r.precision, str(r.batch), r.sampler, str(r.steps), f"{r.params_m:.1f}",
          f"{r.s_per_image:.4f}"] for r in rows])


def sampling_metrics(rows: list[SamplingRow]) -> dict[str, float]:
    return {f"{r.key()}/s_per_image": r.s_per_image for r in rows}


def dip_metrics(rows: list[DIPRow]) -> dict[str, float]:
    return {f"{r.key()}/ms_per_iteration": r.ms_per_iteration for r in rows}
