"""`benchmark --translate`: `imgtrans translate`'s own path over a generated archive, on 1, 2, 4 … N GPUs.

An untrained generator is exported to ONNX and a folder of random grayscale scans is translated by the local
engine (`imgtrans.infer.engines`) — reading, tiling, inference and atomic writes, as a user's run — first
with one device, then with more. Each device's session is warmed up on one scan first (CUDA's and
TensorRT's start-up are not the archive's throughput). Scaling is throughput over N × one device's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgtrans.benchmarks.inference import generator_model
from imgtrans.benchmarks.tables import markdown_table, row_metrics
from imgtrans.export.onnx import export_model
from imgtrans.files import scratch_dir
from imgtrans.infer.archive import plan_archive, run_archive
from imgtrans.infer.engines import LocalEngine, choose_devices
from imgtrans.infer.worker import TranslateSettings, Work


@dataclass
class ArchiveRow:
    generator: str
    devices: int
    on_gpu: bool
    images: int
    size: int
    seconds: float
    scaling: float  # images/s over devices × one device's images/s

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def per_device_images_per_s(self) -> float:
        return self.images_per_s / self.devices

    def key(self) -> str:
        return f"bench_translate/{self.generator}/{'gpu' if self.on_gpu else 'cpu'}{self.devices}"


def device_counts(available: int) -> list[int]:
    """1, 2, 4 … and every device."""
    counts = [1]
    while counts[-1] * 2 < available:
        counts.append(counts[-1] * 2)
    return counts + [available] if available > 1 else counts


def write_scans(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(folder / f"scan{index:04d}.png")
    return folder


def archive_rows(generator: str, tile: int, images: int, size: int, provider: str) -> list[ArchiveRow]:
    with scratch_dir("translate-benchmark") as scratch:
        model, _ = export_model(generator_model(generator, tile).eval(), scratch / generator)
        scans = write_scans(scratch / "scans", images, size)
        warm = next(write_scans(scratch / "warm", 1, size).iterdir())
        settings = TranslateSettings(str(model), provider, recipe="benchmark")
        devices = choose_devices(provider, "all")
        rows: list[ArchiveRow] = []
        for count in device_counts(len(devices)):
            engine = LocalEngine(settings, devices[:count])
            for index, translator in enumerate(engine.translators):
                translator(Work(str(warm), str(scratch / f"warm-{count}-{index}.png"), "warm.png", -1, -1))
            on_gpu = engine.on_gpu
            out = scratch / f"out-{count}"
            started = time.perf_counter()
            outcomes = run_archive(plan_archive(scans, out), out, lambda: engine, settings.recipe, progress=False)
            seconds = time.perf_counter() - started
            if any(outcome.status != "done" for outcome in outcomes):
                raise RuntimeError(f"the benchmark archive failed on {count} device(s): {outcomes}")
            one = rows[0].images_per_s if rows else images / seconds
            rows.append(ArchiveRow(generator, count, on_gpu, images, size, seconds,
                                   images / seconds / (count * one)))
        return rows


def format_archive(rows: list[ArchiveRow]) -> str:
    return markdown_table(
        ["translate", "devices", "scans", "images/s", "images/s per device", "scaling"],
        [[f"{r.generator} {r.size}×{r.size}", f"{r.devices} {'GPU' if r.on_gpu else 'CPU'}", str(r.images),
          f"{r.images_per_s:.2f}", f"{r.per_device_images_per_s:.2f}", f"{r.scaling:.0%}"] for r in rows])


def archive_metrics(rows: list[ArchiveRow]) -> dict[str, float]:
    return row_metrics(rows, ("images_per_s", "per_device_images_per_s", "scaling"))
