"""A function of tensors — a network's forward pass — replayed from a captured CUDA graph.

Sampling a diffusion model calls the same denoiser on same-shaped inputs at every step; from Python each call
launches a few hundred kernels, which costs more than the GPU work at small sizes. Capturing the call once per
input shape and replaying it launches them together. (Training steps, which also update weights and optimizer
state, are captured by `imgtrans.training.graphed_step`.)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch

from imgtrans.compute.runtime import Runtime

# Graphs kept at once (each holds its own memory pool): a sampling pass uses one shape, validation a second
# for its last, smaller batch.
MAX_GRAPHS = 4
WARMUP_CALLS = 2  # eager calls on a side stream before capturing, so that cuDNN has chosen its algorithms


def capture_obstacle(cuda_graphs: bool, runtime: Runtime) -> str | None:
    """Why nothing is captured in this run (the option, the device, compilation), or None."""
    if not cuda_graphs:
        return "cuda_graphs=false"
    if runtime.device.type != "cuda":
        return "not on a CUDA device"
    return "compile=true" if runtime.compile else None


class CapturedCall:
    """Calls `fn(*tensors) -> tensor` — capturing it on first use of each set of input shapes (and `key()`, e.g.
    the module's train/eval mode) and replaying that graph later. `fn` must make no decision on the host and
    read its weights in place (a weight update or `load_state_dict` copies into the same tensors, so a replay
    sees it). Eager where `enabled` is false."""

    def __init__(self, fn: Callable[..., torch.Tensor], enabled: bool, key: Callable[[], object] = lambda: None):
        self.fn = fn
        self.enabled = enabled
        self.key = key
        self.graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = \
            OrderedDict()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.fn(*inputs)
        signature = (self.key(), *((x.shape, x.dtype, x.device) for x in inputs))
        if signature not in self.graphs:
            self.graphs[signature] = self._capture(inputs)
            while len(self.graphs) > MAX_GRAPHS:
                self.graphs.popitem(last=False)
        graph, static_inputs, static_output = self.graphs[signature]
        for static, x in zip(static_inputs, inputs):
            static.copy_(x, non_blocking=True)
        graph.replay()
        return static_output.clone()  # the next replay overwrites the static output

    def _capture(self, inputs: tuple[torch.Tensor, ...]):
        static_inputs = [x.clone() for x in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self.fn(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # loader threads may use CUDA meanwhile
            static_output = self.fn(*static_inputs)
        return graph, static_inputs, static_output
