"""A model's whole training step — forwards, backwards and optimizer updates — captured once as a CUDA graph
and replayed for every batch of the same shape (a translation model's step, or a Deep Image Prior iteration).

A pix2pix step at batch 1 issues some 430 kernels; launching them from Python takes ~13 ms on an H100 whose
GPU work takes ~3.5 ms. A replay launches them all at once. Capturing needs a step that makes no decision on
the host (no `.item()`, no Python randomness, no loss scaler), optimizers that keep their state and learning
rate on the device (`capturable`), and fixed input addresses (batches are copied into static tensors).
"""

from __future__ import annotations

from typing import Callable

import torch

from imgtrans.compute import distributed
from imgtrans.compute.graphs import capture_obstacle
from imgtrans.compute.runtime import Runtime
from imgtrans.config import RunConfig
from imgtrans.models.base import TranslationModel
from imgtrans.training import checkpoint

Step = Callable[[dict], dict[str, torch.Tensor]]

# Eager steps before the capture (cuDNN picks its algorithms, lazily created state exists); their effect on
# the weights, optimizer state and batch-norm statistics is undone.
WARMUP_STEPS = 3


def why_not_graphed(model: TranslationModel, runtime: Runtime, cfg: RunConfig) -> str | None:
    """None when the step can be captured; otherwise why it runs eagerly."""
    reason = capture_obstacle(cfg.cuda_graphs, runtime)
    if reason is not None:
        return reason
    if distributed.WORLD.active:
        return "torchrun: the gradients are averaged across processes between backward and step"
    if model.scaler.is_enabled():
        return "precision=fp16 needs the loss scaler, which decides on the host (bf16 does not)"
    return model.graph_capture_obstacle()


def training_step_for(model: TranslationModel, runtime: Runtime, cfg: RunConfig,
                      full_batch: int | None = None) -> tuple[Step, str]:
    """The function called per batch, and what to record about it (`on`, or `off: <why>`). The first batch of
    `full_batch` inputs `A` (default: `cfg.batch_size`) is the one captured."""
    reason = why_not_graphed(model, runtime, cfg)
    if reason is not None:
        return model.training_step, f"off: {reason}"
    return GraphedStep(model, full_batch or cfg.batch_size), "on"


class GraphedStep:
    """Calls like `model.training_step`. The first full-size batch is captured; later batches of its shapes
    replay the graph, others (an epoch's smaller last batch) run eagerly on the same weights and optimizers."""

    def __init__(self, model: TranslationModel, batch_size: int):
        self.model = model
        self.batch_size = batch_size
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: dict[str, torch.Tensor] = {}
        self.losses: dict[str, torch.Tensor] = {}
        self.lrs: list[tuple[dict, torch.Tensor]] = []

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        inputs = {k: v for k, v in batch.items() if torch.is_tensor(v) and v.is_floating_point()}
        if self.graph is None and inputs["A"].shape[0] == self.batch_size:
            self._capture(inputs)
        if self.graph is None or {k: v.shape for k, v in inputs.items()} != \
                {k: v.shape for k, v in self.inputs.items()}:
            return self.model.training_step(batch)
        for name, static in self.inputs.items():
            static.copy_(inputs[name], non_blocking=True)
        for group, lr in self.lrs:  # a scheduler that assigned a float instead of filling the tensor
            if group["lr"] is not lr:
                lr.fill_(float(group["lr"]))
                group["lr"] = lr
        self.graph.replay()
        return self.losses

    def _capture(self, inputs: dict[str, torch.Tensor]) -> None:
        model = self.model
        self.inputs = {k: model.to_device(v).clone() for k, v in inputs.items()}
        self.lrs = make_capturable(model.optimizers.values(), model.runtime.device)
        saved = _TrainingState(model)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                model.training_step(self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # loader threads may use CUDA
            self.losses = model.training_step(self.inputs)
        saved.restore()
        self.graph = graph


def make_capturable(optimizers, device: torch.device) -> list[tuple[dict, torch.Tensor]]:
    """Keep each param group's step count and learning rate on the device, where a replay reads them; returns
    (group, lr tensor) pairs. Schedulers fill a tensor lr in place."""
    lrs = []
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["capturable"] = True
            if not torch.is_tensor(group["lr"]) or group["lr"].device != device:
                group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
            lrs.append((group, group["lr"]))
    return lrs


class _TrainingState:
    """A copy of the weights, buffers and optimizer state, put back in place (the graph holds their addresses),
    and of every RNG's state: the warm-up's random draws (dropout, image pools) are undone too, so a run resumed
    from a checkpoint, which captures anew, draws what the uninterrupted run drew."""

    def __init__(self, model: TranslationModel):
        self.model = model
        self.rngs = checkpoint.rng_state()
        self.tensors = [t for t in model.state_dict(keep_vars=True).values() if torch.is_tensor(t)]
        self.copies = [t.detach().clone() for t in self.tensors]
        self.optimizer_state = {
            (name, id(p)): {k: v.clone() for k, v in state.items() if torch.is_tensor(v)}
            for name, optimizer in model.optimizers.items() for p, state in optimizer.state.items()}

    @torch.no_grad()
    def restore(self) -> None:
        for tensor, copy in zip(self.tensors, self.copies):
            tensor.copy_(copy)
        for name, optimizer in self.model.optimizers.items():
            for p, state in optimizer.state.items():
                before = self.optimizer_state.get((name, id(p)))
                for key, value in state.items():
                    if not torch.is_tensor(value):
                        continue
                    if before:
                        value.copy_(before[key])
                    else:  # state the warm-up created: zeros are what a first step starts from
                        value.zero_()
        checkpoint.set_rng_state(self.rngs)
