"""Generator inference throughput per backend (eager, torch.compile, ONNX Runtime on each provider),
precision and batch size, with TFLOP/s against the device's peak."""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from imgtrans.benchmarks.tables import (
    device_peak,
    markdown_table,
    row_metrics,
    time_calls,
)
from imgtrans.compute.runtime import AUTOCAST_DTYPES
from imgtrans.data.codec import Codec
from imgtrans.export.onnx import export_model
from imgtrans.infer.session import PROVIDERS, OnnxGenerator
from imgtrans.models.options import Pix2PixConfig
from imgtrans.models.pix2pix import Pix2Pix


@dataclass
class Row:
    generator: str
    backend: str
    precision: str
    batch: int
    images_per_s: float
    p50_ms: float
    p90_ms: float
    tflops: float
    peak_fraction: float | None

    def key(self) -> str:
        return f"bench/{self.generator}/{self.backend}/{self.precision}/b{self.batch}"


def generator_model(name: str, tile: int) -> Pix2Pix:
    cfg = Pix2PixConfig(netG=name, crop_size=tile)
    return Pix2Pix(cfg, Codec(colorization=False))


def flops_per_image(net: torch.nn.Module, tile: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.randn(1, 3, tile, tile, device=next(net.parameters()).device))
    return counter.get_total_flops()


def _row(generator, backend, precision, batch, times, flops, device) -> Row:
    median = statistics.median(times)
    ips = batch / median
    peak = device_peak(device, precision)
    tflops = flops * ips / 1e12
    return Row(generator, backend, precision, batch, ips, float(np.percentile(times, 50) * 1e3),
               float(np.percentile(times, 90) * 1e3), tflops, tflops / peak if peak else None)


def bench_torch(net, generator, tile, batches, precisions, device, compiled, warmup, repeats, flops) -> list[Row]:
    rows = []
    runnable = torch.compile(net) if compiled else net
    for precision in precisions:
        dtype = AUTOCAST_DTYPES[precision]
        for batch in batches:
            x = torch.randn(batch, 3, tile, tile, device=device)
            if device.type == "cuda":
                x = x.to(memory_format=torch.channels_last)

            def call():
                with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    return runnable(x)

            times = time_calls(call, warmup=warmup, repeats=repeats, sync=device.type == "cuda")
            rows.append(_row(generator, "torch.compile" if compiled else "eager", precision, batch, times, flops,
                             device))
    return rows


def bench_onnxruntime(model, generator, tile, batches, precisions, backend, warmup, repeats, flops,
                      device) -> list[Row]:
    """`backend`: ort-cpu, ort-cuda, ort-cuda-graph (the CUDA provider replaying a captured graph: one session
    per shape) or ort-tensorrt; inputs and outputs bound in the provider's memory (no host copies timed)."""
    provider = backend.split("-")[1]
    graph = backend.endswith("-graph")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in [p for p in precisions if p in ("fp32", "fp16")]:
            path, _ = export_model(model, Path(tmp) / f"{generator}-{precision}", precision=precision)
            for batch in batches:
                session = OnnxGenerator(path, provider, cuda_graph=graph)
                if session.provider != PROVIDERS[provider]:
                    break  # the provider fell back: not the backend we meant to measure
                x = torch.randn(batch, 3, tile, tile, generator=torch.Generator().manual_seed(0)).to(session.device)
                out = torch.empty_like(x)
                times = time_calls(lambda: session.run_bound(x, out), warmup=warmup, repeats=repeats, sync=False)
                rows.append(_row(generator, backend, precision, batch, times, flops, device))
    return rows


def inference_rows(generators: list[str], tile: int, batches: list[int], precisions: list[str],
                   backends: list[str], device: torch.device, warmup: int, repeats: int) -> list[Row]:
    rows = []
    for name in generators:
        model = generator_model(name, tile).eval()
        net = model.netG.to(device)
        if device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        flops = flops_per_image(net, tile)
        for backend in backends:
            if backend in ("eager", "compile"):
                rows += bench_torch(net, name, tile, batches, precisions, device, backend == "compile", warmup,
                                    repeats, flops)
            else:
                rows += bench_onnxruntime(model.cpu(), name, tile, batches, precisions, backend, warmup, repeats,
                                          flops, device)
                net = model.netG.to(device)
    return rows


def format_inference(rows: list[Row]) -> str:
    return markdown_table(
        ["generator", "backend", "precision", "batch", "images/s", "p50 ms", "p90 ms", "TFLOP/s", "of peak"],
        [[r.generator, r.backend, r.precision, str(r.batch), f"{r.images_per_s:.1f}", f"{r.p50_ms:.1f}",
          f"{r.p90_ms:.1f}", f"{r.tflops:.3f}", f"{r.peak_fraction:.1%}" if r.peak_fraction is not None else "n/a"]
         for r in rows])


def inference_metrics(rows: list[Row]) -> dict[str, float]:
    return row_metrics(rows, ("images_per_s", "p50_ms", "p90_ms", "tflops"))
