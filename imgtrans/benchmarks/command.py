"""The `benchmark` command: the tables asked for — inference, training, sampling, DIP, end to end, archives —
printed and logged to MLflow.

Methods: warm-up iterations are excluded, GPU timings are synchronised, each
figure is the median of the timed repeats; p50/p90 are per-call latencies.
Ratios are taken within one run on one machine. Absolute numbers mean
something only on a GPU; on a CPU the command says the GPU targets were not
measured.
"""

from __future__ import annotations

import platform

import torch

from imgtrans import config as config_mod
from imgtrans.benchmarks.e2e import e2e_metrics, e2e_row, format_e2e
from imgtrans.benchmarks.inference import (
    format_inference,
    inference_metrics,
    inference_rows,
)
from imgtrans.benchmarks.options import BenchmarkConfig
from imgtrans.benchmarks.sampling import (
    dip_rows,
    format_dip,
    format_sampling,
    sampling_metrics,
    sampling_rows,
)
from imgtrans.benchmarks.training import format_training, train_row, training_metrics
from imgtrans.benchmarks.translate import archive_metrics, archive_rows, format_archive
from imgtrans.compute.runtime import resolve_device
from imgtrans.errors import ImgtransError
from imgtrans.models.registry import MODELS
from imgtrans.nets.generators import GENERATORS
from imgtrans.tracking.tracker import tracked_run


def benchmark_command(cfg: BenchmarkConfig, explicit: dict, progress: bool) -> int:
    """`imgtrans benchmark`: the tables asked for, printed and logged to MLflow."""
    device = resolve_device(cfg.device)
    gpu = device.type == "cuda"

    def listed(text: str, default: str, cast=str, valid=None) -> list:
        items = [cast(x.strip()) for x in (default if text == "auto" else text).split(",") if x.strip()]
        bad = [x for x in items if valid is not None and x not in valid]
        if bad:
            raise ImgtransError(f"invalid value '{bad[0]}'; valid values: {', '.join(valid)}")
        return items

    generators = listed(cfg.generators, cfg.generators, valid=GENERATORS)
    batches = listed(cfg.batch_sizes, "1,8,16,32,64" if gpu else "1,4", int)
    backends = listed(cfg.backends, "eager,compile,ort-cuda,ort-tensorrt" if gpu else "eager,ort-cpu",
                      valid=("eager", "compile", "ort-cpu", "ort-cuda", "ort-tensorrt"))
    precisions = listed(cfg.precisions, "fp32,fp16,bf16" if gpu else "fp32", valid=("fp32", "fp16", "bf16"))
    repeats = cfg.repeats or (20 if gpu else 5)
    name = torch.cuda.get_device_name(0) if gpu else (platform.processor() or "cpu")
    with tracked_run(cfg.experiment, f"benchmark-{device.type}", "benchmark", "benchmark") as tracker:
        tracker.log_params({**config_mod.to_dict(cfg), "device_name": name, "torch": torch.__version__})
        inference = inference_rows(generators, cfg.tile, batches, precisions, backends, device,
                                   warmup=3 if gpu else 1, repeats=repeats)
        steps = cfg.train_steps or (30 if gpu else 3)
        trained = [(m, b) for m in listed(cfg.train_models, cfg.train_models, valid=tuple(MODELS))
                   for b in listed(cfg.train_batch_sizes, cfg.train_batch_sizes, int)]
        training = [train_row(m, b, steps, cfg.tile, device) for m, b in trained] if cfg.train else []
        sampling = []
        if cfg.sampling:
            sampling = sampling_rows(
                listed(cfg.sampling_sizes, cfg.sampling_sizes, int), precisions,
                cfg.sampling_batch or (16 if gpu else 1), cfg.sampling_steps, cfg.sampling_channels, device,
                repeats=3 if gpu else 1)
        dip = []
        if cfg.dip:
            dip = dip_rows(cfg.dip_size, precisions, [False, True] if gpu else [False], device,
                           cfg.dip_iterations or (50 if gpu else 3))
        e2e = [e2e_row(m, b, cfg.e2e_tile or (cfg.tile if gpu else 64), cfg.e2e_epochs or (3 if gpu else 2),
                       cfg.e2e_images or (0 if gpu else 8), device, tracker.run_id, steps)
               for m, b in trained] if cfg.e2e else []
        archive = archive_rows(generators[0], cfg.tile, cfg.translate_images or (64 if gpu else 4),
                               cfg.translate_size or (2048 if gpu else 256), "auto" if gpu else "cpu") \
            if cfg.translate else []
        report = f"# imgtrans benchmark on {name} (torch {torch.__version__})\n"
        for rows, table in ((inference, format_inference), (training, format_training), (sampling, format_sampling),
                            (dip, format_dip), (e2e, format_e2e), (archive, format_archive)):
            if rows:
                report += "\n" + table(rows) + "\n"
        if not gpu:
            report += "\nNo GPU here: the GPU targets were not measured; CPU figures are for ratios only.\n"
        tracker.log_metrics(inference_metrics(inference) | training_metrics(training) |
                            sampling_metrics(sampling, dip) | e2e_metrics(e2e) | archive_metrics(archive), step=0)
        tracker.log_text(report, "benchmark.md")
    print(report)
    return 0
