"""What every benchmark shares: timing calls (warm-up excluded, GPU synchronised), device peaks, and the
Markdown tables the figures are printed in."""

from __future__ import annotations

import time
from typing import Callable

import torch

# Dense peak TFLOP/s by (GPU name fragment, precision), from the vendors' data sheets.
PEAK_TFLOPS = {
    ("H100", "fp32"): 494.7, ("H100", "bf16"): 989.4, ("H100", "fp16"): 989.4,  # fp32 runs as TF32
    ("H200", "fp32"): 494.7, ("H200", "bf16"): 989.4, ("H200", "fp16"): 989.4,
    ("A100", "fp32"): 156.0, ("A100", "bf16"): 312.0, ("A100", "fp16"): 312.0,
}


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


def markdown_table(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def row_metrics(rows, names: tuple[str, ...]) -> dict[str, float]:
    """`<row key>/<name>` → value, for each row (a dataclass with `key()`) and each of its figures `names`."""
    return {f"{r.key()}/{name}": getattr(r, name) for r in rows for name in names}
