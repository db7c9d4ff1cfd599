"""Learning-rate policies, stepped once per optimisation step (epochs may be fractional)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from imgtrans.config import TrainConfig


def lr_factor(cfg: TrainConfig, epoch: float) -> float:
    """Multiplier of the initial lr after `epoch` (fractional) epochs."""
    if cfg.lr_policy == "linear":
        if not cfg.n_epochs_decay:
            return 1.0
        # An explicit `epochs` stretches or shrinks the n_epochs + n_epochs_decay shape to fit, so that a longer
        # run does not spend its extra epochs at lr 0.
        epoch *= (cfg.n_epochs + cfg.n_epochs_decay) / cfg.total_epochs()
        return 1.0 - max(0.0, epoch - cfg.n_epochs) / cfg.n_epochs_decay
    if cfg.lr_policy == "step":
        return 0.1 ** math.floor(epoch / cfg.lr_decay_iters)
    if cfg.lr_policy == "cosine":
        total = cfg.total_epochs()
        return 0.5 * (1 + math.cos(math.pi * min(epoch / total, 1.0)))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: max(0.0, lr_factor(cfg, step / steps_per_epoch)))
