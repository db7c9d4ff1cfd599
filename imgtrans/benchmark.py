"""Throughput benchmarks: generator inference per backend/precision/batch, and training steps
in the plain (reference-like) and fast paths.

Methods: warm-up iterations are excluded, GPU timings are synchronised, each
figure is the median of the timed repeats; p50/p90 are per-call latencies.
Ratios are taken within one run on one machine. Absolute numbers mean
something only on a GPU; on a CPU the command says the GPU targets were not
measured.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from imgtrans import config as config_mod
from imgtrans.config import BenchmarkConfig
from imgtrans.data.codec import Codec
from imgtrans.errors import ImgtransError
from imgtrans.models import MODELS
from imgtrans.models.pix2pix import Pix2Pix, Pix2PixConfig
from imgtrans.nets.layers import count_parameters
from imgtrans.runtime import AUTOCAST_DTYPES, Runtime, resolve_device

# Dense peak TFLOP/s by (GPU name fragment, precision), from the vendors' data sheets.
PEAK_TFLOPS = {
    ("H100", "fp32"): 494.7, ("H100", "bf16"): 989.4, ("H100", "fp16"): 989.4,  # fp32 runs as TF32
    ("H200", "fp32"): 494.7, ("H200", "bf16"): 989.4, ("H200", "fp16"): 989.4,
    ("A100", "fp32"): 156.0, ("A100", "bf16"): 312.0, ("A100", "fp16"): 312.0,
}


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


@dataclass
class TrainRow:
    model: str
    batch: int
    plain_images_per_s: float
    fast_images_per_s: float  # the suite's defaults on the device, eager
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


def device_peak(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for (frag, p), v in PEAK_TFLOPS.items() if frag in name and p == precision), None)


def time_calls(fn: Callable[[], object], *, warmup: int, repeats: int, sync: bool) -> list[float]:
    for _ in range(warmup):
        fn()
    if sync:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


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


def bench_onnxruntime(model, generator, tile, batches, precisions, provider, warmup, repeats, flops,
                      device) -> list[Row]:
    from imgtrans.infer.session import OnnxGenerator
    from imgtrans.onnx_export import export_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in [p for p in precisions if p in ("fp32", "fp16")]:
            path, _ = export_model(model, Path(tmp) / f"{generator}-{precision}", precision=precision)
            session = OnnxGenerator(path, provider)
            if session.provider != {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                                    "tensorrt": "TensorrtExecutionProvider"}[provider]:
                continue  # the provider fell back: not the backend we meant to measure
            for batch in batches:
                x = np.random.default_rng(0).standard_normal((batch, 3, tile, tile), dtype=np.float32)
                times = time_calls(lambda: session(x), warmup=warmup, repeats=repeats, sync=False)
                rows.append(_row(generator, f"ort-{provider}", precision, batch, times, flops, device))
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
                rows += bench_onnxruntime(model.cpu(), name, tile, batches, precisions, backend.split("-")[1],
                                          warmup, repeats, flops, device)
                net = model.netG.to(device)
    return rows


def train_row(model_name: str, batch: int, steps: int, crop: int, device: torch.device) -> TrainRow:
    """A model's real training step, plain (fp32 eager, per-tensor Adam — how the reference code runs) vs fast
    (this suite's defaults on the device), eager and as a CUDA graph, from the same seed and data."""
    from imgtrans.graphed_step import training_step_for
    from imgtrans.models import model_class

    cls = model_class(model_name)
    gpu = device.type == "cuda"
    results = {}
    for mode in ("plain", "fast", "graphed"):
        torch.manual_seed(0)
        cfg = cls.config_class(crop_size=crop, batch_size=batch, cuda_graphs=mode == "graphed")
        model = cls(cfg, Codec(colorization=False))
        fast = mode != "plain" and gpu
        runtime = Runtime(device, torch.bfloat16 if fast else None, channels_last=fast,
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

        times = time_calls(step, warmup=min(3, steps), repeats=steps, sync=gpu)
        memory = torch.cuda.max_memory_allocated() / 2 ** 20 if gpu else float("nan")
        results[mode] = (statistics.median(times), [float(v) for v in losses], memory)
    plain_t, plain_l, _ = results["plain"]
    fast_t, fast_l, memory = results["fast"]
    graphed_t, graphed_l, graphed_memory = results.get("graphed", (math.nan, fast_l, memory))
    best_l = graphed_l if graphed_t < fast_t else fast_l
    rel = max(abs(a - b) / max(abs(a), 1e-8) for a, b in zip(plain_l, best_l))
    last = min(10, len(plain_l))
    window = abs(sum(plain_l[-last:]) - sum(best_l[-last:])) / max(abs(sum(plain_l[-last:])), 1e-8)
    return TrainRow(model_name, batch, batch / plain_t, batch / fast_t, batch / graphed_t, plain_t * 1e3,
                    min(fast_t, graphed_t) * 1e3 if math.isfinite(graphed_t) else fast_t * 1e3,
                    max(memory, graphed_memory), rel, window)


@dataclass
class SamplingRow:
    size: int
    precision: str
    batch: int
    steps: int
    params_m: float
    s_per_image: float

    def key(self) -> str:
        return f"bench_sample/{self.size}px/{self.precision}/b{self.batch}"


def sampling_rows(sizes: list[int], precisions: list[str], batch: int, steps: int, channels: int,
                  device: torch.device, repeats: int) -> list[SamplingRow]:
    """Conditional diffusion sampling (the model's DDIM loop with its EMA net), seconds per image."""
    from imgtrans.models.diffusion import Diffusion, DiffusionConfig

    rows = []
    for size in sizes:
        torch.manual_seed(0)
        model = Diffusion(DiffusionConfig(crop_size=size, base_channels=channels, channel_mults="1,2,4,4"),
                          Codec(colorization=False))
        params = count_parameters(model.ema) / 1e6
        cond = torch.rand(batch, 3, size, size) * 2 - 1
        for precision in precisions:
            dtype = AUTOCAST_DTYPES[precision]
            model.setup(Runtime(device, dtype, channels_last=device.type == "cuda"))
            model.eval()
            times = time_calls(lambda: model.sample(cond, steps), warmup=1, repeats=repeats,
                               sync=device.type == "cuda")
            rows.append(SamplingRow(size, precision, batch, steps, params, statistics.median(times) / batch))
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
    from imgtrans.dip.model import DeepImagePrior, DIPConfig

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


def markdown_table(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def format_dip(rows: list[DIPRow]) -> str:
    return markdown_table(
        ["DIP (skip, width 128)", "precision", "compiled", "ms/iteration", "3000 iterations (s)"],
        [[f"{r.size}×{r.size}", r.precision, "yes" if r.compiled else "no", f"{r.ms_per_iteration:.1f}",
          f"{r.seconds_for_3000:.1f}"] for r in rows])


def format_sampling(rows: list[SamplingRow]) -> str:
    return markdown_table(
        ["diffusion sampling", "precision", "batch", "DDIM steps", "U-Net params (M)", "s/image"],
        [[f"{r.size}×{r.size}", r.precision, str(r.batch), str(r.steps), f"{r.params_m:.1f}",
          f"{r.s_per_image:.4f}"] for r in rows])


def format_inference(rows: list[Row]) -> str:
    return markdown_table(
        ["generator", "backend", "precision", "batch", "images/s", "p50 ms", "p90 ms", "TFLOP/s", "of peak"],
        [[r.generator, r.backend, r.precision, str(r.batch), f"{r.images_per_s:.1f}", f"{r.p50_ms:.1f}",
          f"{r.p90_ms:.1f}", f"{r.tflops:.3f}", f"{r.peak_fraction:.1%}" if r.peak_fraction is not None else "n/a"]
         for r in rows])


def format_training(rows: list[TrainRow]) -> str:
    return markdown_table(
        ["model", "batch", "plain img/s", "fast img/s", "CUDA graph img/s", "ratio", "plain ms/step",
         "fast ms/step", "peak MB", "max rel. loss diff", "last-10 rel. loss diff"],
        [[r.model, str(r.batch), f"{r.plain_images_per_s:.2f}", f"{r.fast_images_per_s:.2f}",
          f"{r.graphed_images_per_s:.2f}" if math.isfinite(r.graphed_images_per_s) else "n/a", f"{r.ratio:.2f}×",
          f"{r.plain_ms_per_step:.1f}", f"{r.fast_ms_per_step:.1f}", f"{r.peak_memory_mb:.0f}",
          f"{r.loss_max_rel_diff:.2e}", f"{r.loss_last10_rel_diff:.2e}"] for r in rows])


def as_metrics(rows: list[Row], train_rows: list[TrainRow], sampling: list[SamplingRow] = (),
               dip: list[DIPRow] = ()) -> dict[str, float]:
    metrics = {f"{r.key()}/s_per_image": r.s_per_image for r in sampling}
    metrics.update({f"{r.key()}/ms_per_iteration": r.ms_per_iteration for r in dip})
    for r in rows:
        metrics[f"{r.key()}/images_per_s"] = r.images_per_s
        metrics[f"{r.key()}/p50_ms"] = r.p50_ms
        metrics[f"{r.key()}/p90_ms"] = r.p90_ms
        metrics[f"{r.key()}/tflops"] = r.tflops
    for t in train_rows:
        for field in dataclasses.fields(t):
            value = getattr(t, field.name)
            if field.name not in ("model", "batch") and math.isfinite(value):
                metrics[f"bench_train/{t.model}/b{t.batch}/{field.name}"] = value
        metrics[f"bench_train/{t.model}/b{t.batch}/ratio"] = t.ratio
    return metrics


def benchmark_command(cfg: BenchmarkConfig, explicit: dict, progress: bool) -> int:
    """`imgtrans benchmark`: the tables asked for, printed and logged to MLflow."""
    import platform

    from imgtrans.e2e_benchmark import e2e_metrics, e2e_row, format_e2e
    from imgtrans.nets.generators import GENERATORS
    from imgtrans.tracking import tracked_run
    from imgtrans.translate_benchmark import archive_metrics, archive_rows, format_archive

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
    with tracked_run(cfg.experiment, run_name="benchmark") as tracker:
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
                       cfg.e2e_images or (0 if gpu else 8), device, cfg.experiment, steps)
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
        tracker.log_metrics(as_metrics(inference, training, sampling, dip) | e2e_metrics(e2e) |
                            archive_metrics(archive), step=0)
        tracker.log_text(report, "benchmark.md")
    print(report)
    return 0
