"""Batch-norm statistics that fit the final weights.

During training the running statistics trail the weights by an exponential average, so after a short run
eval mode (running statistics) differs from what the network computed while it learned (batch statistics).
Recomputing them with the final weights over training images can close that gap for inference and export —
but not always: at batch size 1 the statistics the network trained with are each image's own (batch norm of one
image is instance norm, as pix2pix notes), which no single set of running statistics reproduces; there the
average over many images can sit farther from them than the trailing average did. So the recomputed statistics
are kept only where they measurably narrow the gap on the probe images, and the old ones restored otherwise.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch import nn

Translate = Callable[[torch.Tensor], torch.Tensor]


def batch_norms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def batch_statistics(net: nn.Module, momentum: float | None):
    """Batch norm uses batch statistics (as in training) and updates its running ones with `momentum` (None: a
    cumulative average; 0: not at all); every other layer stays as it is (dropout off in eval mode)."""
    norms = batch_norms(net)
    saved = [(m.training, m.momentum) for m in norms]
    for m in norms:
        m.train()
        m.momentum = momentum
    try:
        yield
    finally:
        for m, (training, old) in zip(norms, saved):
            m.train(training)
            m.momentum = old


@torch.no_grad()
def eval_train_gap(net: nn.Module, translate: Translate, probes: list[torch.Tensor]) -> float:
    """Mean |eval-mode output − batch-statistics output| over the probe batches."""
    gaps = []
    for x in probes:
        evaluated = translate(x)
        with batch_statistics(net, momentum=0.0):
            trained = translate(x)
        gaps.append(float((evaluated - trained).abs().mean()))
    return sum(gaps) / len(gaps)


@torch.no_grad()
def recalibrate_if_closer(net: nn.Module, translate: Translate, batches: list[torch.Tensor],
                          probes: list[torch.Tensor]) -> tuple[float, float, bool]:
    """`recalibrate` over `batches`, kept when it narrows the gap on `probes`: (gap before, gap after, kept)."""
    saved = {name: buffer.clone() for name, buffer in net.named_buffers()}
    before = eval_train_gap(net, translate, probes)
    recalibrate(net, translate, batches)
    after = eval_train_gap(net, translate, probes)
    if after >= before:
        for name, buffer in net.named_buffers():
            buffer.copy_(saved[name])
    return before, after, after < before


@torch.no_grad()
def recalibrate(net: nn.Module, translate: Translate, batches: Iterable[torch.Tensor]) -> None:
    """Running statistics recomputed from scratch as the average over `batches` with the current weights."""
    for m in batch_norms(net):
        m.reset_running_stats()
    with batch_statistics(net, momentum=None):
        for x in batches:
            translate(x)
