"""The `benchmark` command: the tables asked for — inference, training, sampling, DIP, end to end, archives —
printed and logged to MLflow.

Methods: warm-up iterations are excluded, GPU timings are synchronised, each
figure is the median of the timed repeats; p50/p90 are per-call latencies.
Ratios are taken within one run on one machine. Absolute numbers mean
something only on a GPU; on a CPU the command says the GPU targets were not
measured.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnxruntime
import torch

from imgtrans import config as config_mod
from imgtrans.benchmarks.e2e import e2e_metrics, e2e_row, format_e2e
from imgtrans.benchmarks.inference import (
    format_inference,
    inference_metrics,
    inference_rows,
)
from imgtrans.benchmarks.options import BACKENDS, BenchmarkConfig
from imgtrans.benchmarks.sampling import (
    DIP_MODES,
    DIP_MULTIPLE,
    dip_metrics,
    dip_rows,
    format_dip,
    format_sampling,
    sampling_metrics,
    sampling_rows,
)
from imgtrans.benchmarks.training import format_training, train_row, training_metrics
from imgtrans.benchmarks.translate import archive_metrics, archive_rows, format_archive
from imgtrans.compute.runtime import resolve_device, tune_cuda_backends
from imgtrans.errors import ImgtransError
from imgtrans.files import atomic_write_bytes
from imgtrans.models.registry import MODELS
from imgtrans.nets.generators import GENERATORS
from imgtrans.tracking.tracker import tracked_run

# What `quick` sets where the user gave nothing: every table at its smallest, the same code path.
QUICK = {"generators": "unet", "tile": 64, "batch_sizes": "1", "precisions": "fp32", "repeats": 1, "train_steps": 2,
         "train_batch_sizes": "1", "train_width": 8, "sampling_sizes": "32", "sampling_steps": 2,
         "fast_sampling_steps": 2, "sampling_channels": 8, "sampling_batch": 1, "dip_size": 64, "dip_iterations": 2,
         "e2e_epochs": 1, "e2e_images": 4, "e2e_tile": 64, "translate_images": 2, "translate_size": 128}


@dataclass
class Section:
    name: str
    wanted: bool
    rows: Callable[[], list]
    table: Callable[[list], str]
    metrics: Callable[[list], dict[str, float]]


def benchmark_command(cfg: BenchmarkConfig, explicit: dict, progress: bool) -> int:
    """`imgtrans benchmark`: the tables asked for, printed, logged to MLflow and, with `output`, written there."""
    started = time.monotonic()
    if cfg.quick:
        cfg = dataclasses.replace(cfg, **{k: v for k, v in QUICK.items() if k not in explicit})
    device = resolve_device(cfg.device)
    gpu = device.type == "cuda"
    if gpu:  # as every run computes; the training table's plain step goes back to PyTorch's defaults
        tune_cuda_backends()

    def listed(option: str, default: str = "", cast=str, valid=None) -> list:
        """The comma-separated values of `option` (`default` for auto); every bad one fails here, before any
        table is measured."""
        text = getattr(cfg, option)
        try:
            items = [cast(x.strip()) for x in (default if text == "auto" else text).split(",") if x.strip()]
        except ValueError:
            raise ImgtransError(f"{option}: invalid list '{text}'; expected whole numbers separated by commas") \
                from None
        bad = [x for x in items if valid is not None and x not in valid]
        if bad:
            raise ImgtransError(f"{option}: invalid value '{bad[0]}'; valid values: {', '.join(valid)}")
        return items

    generators = listed("generators", valid=GENERATORS)
    batches = listed("batch_sizes", "1,8,16,32,64" if gpu else "1,4", int)
    backends = listed("backends", "eager,compile,ort-cuda,ort-cuda-graph,ort-tensorrt" if gpu else "eager,ort-cpu",
                      valid=BACKENDS)
    precisions = listed("precisions", "fp32,fp16,bf16" if gpu else "fp32", valid=("fp32", "fp16", "bf16"))
    sampling_sizes = listed("sampling_sizes", cast=int)
    if (cfg.dip or cfg.all) and cfg.dip_size % DIP_MULTIPLE:
        raise ImgtransError(f"dip_size must be a multiple of {DIP_MULTIPLE} (the DIP net halves the image "
                            f"{DIP_MULTIPLE.bit_length() - 1} times), got {cfg.dip_size}")
    repeats = cfg.repeats or (20 if gpu else 5)
    steps = cfg.train_steps or (30 if gpu else 3)
    trained = [(m, b) for m in listed("train_models", valid=tuple(MODELS)) for b in listed("train_batch_sizes",
                                                                                           cast=int)]
    name = torch.cuda.get_device_name(0) if gpu else (platform.processor() or "cpu")
    with tracked_run(cfg.experiment, f"benchmark-{device.type}", "benchmark", "benchmark") as tracker:
        tracker.log_params({**config_mod.to_dict(cfg), "device_name": name, "torch": torch.__version__})
        sections = [
            Section("inference", True, lambda: inference_rows(
                generators, cfg.tile, batches, precisions, backends, device, warmup=3 if gpu else 1,
                repeats=repeats), format_inference, inference_metrics),
            Section("training", cfg.train or cfg.all, lambda: [train_row(m, b, steps, cfg.tile, device, cfg.train_width)
                                                               for m, b in trained],
                    format_training, training_metrics),
            Section("sampling", cfg.sampling or cfg.all, lambda: sampling_rows(
                sampling_sizes, precisions,
                cfg.sampling_batch or (16 if gpu else 1),
                {"ddim": cfg.sampling_steps, "dpmpp_2m": cfg.fast_sampling_steps}, cfg.sampling_channels, device,
                repeats=3 if gpu else 1), format_sampling, sampling_metrics),
            Section("dip", cfg.dip or cfg.all, lambda: dip_rows(
                cfg.dip_size, precisions, list(DIP_MODES) if gpu else ["eager"], device,
                cfg.dip_iterations or (50 if gpu else 3)), format_dip, dip_metrics),
            Section("e2e", cfg.e2e or cfg.all, lambda: [
                e2e_row(m, b, cfg.e2e_tile or (cfg.tile if gpu else 64), cfg.e2e_epochs or (3 if gpu else 2),
                        cfg.e2e_images or (0 if gpu else 8), device, tracker.run_id, steps, cfg.train_width)
                for m, b in trained],
                    format_e2e, e2e_metrics),
            Section("translate", cfg.translate or cfg.all, lambda: archive_rows(
                generators[0], cfg.tile, cfg.translate_images or (64 if gpu else 4),
                cfg.translate_size or (2048 if gpu else 256), "auto" if gpu else "cpu"),
                    format_archive, archive_metrics),
        ]
        report = f"# imgtrans benchmark on {name} (torch {torch.__version__}, onnxruntime {onnxruntime.__version__})\n"
        results, seconds, skipped = {}, {}, []
        for section in (s for s in sections if s.wanted):
            if cfg.budget_s and results and time.monotonic() - started > cfg.budget_s:  # the first always runs
                skipped.append(section.name)
                continue
            section_start = time.monotonic()
            rows = section.rows()
            results[section.name] = [dataclasses.asdict(row) for row in rows]
            seconds[section.name] = time.monotonic() - section_start
            if rows:
                report += "\n" + section.table(rows) + "\n"
                tracker.log_metrics(section.metrics(rows), step=0)
        if skipped:
            report += f"\nNot run within the budget of {cfg.budget_s:g} s: {', '.join(skipped)}.\n"
        if not gpu:
            report += "\nNo GPU here: the GPU targets were not measured; CPU figures are for ratios only.\n"
        tracker.log_text(report, "benchmark.md")
        if cfg.output:
            folder = Path(cfg.output)
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(folder / "benchmark.md", report.encode())
            summary = {"device": name, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                       "seconds": time.monotonic() - started, "table_seconds": seconds, "skipped": skipped,
                       "tables": results}
            atomic_write_bytes(folder / "benchmark.json", json.dumps(summary, indent=1).encode())
    print(report)
    return 0
