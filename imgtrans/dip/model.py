"""Deep Image Prior: restore one image by fitting a randomly initialised network to it.

`classic` fits the degraded image directly (Ulyanov et al. 2018) and relies on
stopping early. `progressive` (the report “HW4: Generative Models for Visual
Signals”) fits a sequence of targets — forward diffusion noisings
x_i = √ᾱ_i·y + √(1 − ᾱ_i)·ε of the degraded image y — from the strongest noise
to the weakest, stage i lasting E(i) = E_max·(1 − α·exp(−k·β_i)) iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from imgtrans.compute.runtime import Runtime
from imgtrans.diffusion.noise_schedules import NoiseSchedule, ScheduleConfig
from imgtrans.dip.nets import build_dip_net
from imgtrans.dip.options import DIPConfig
from imgtrans.errors import ImgtransError


@dataclass(frozen=True)
class Stage:
    beta: float
    alpha_bar: float
    iterations: int

    @property
    def noise_std(self) -> float:
        return math.sqrt(1 - self.alpha_bar)


def stage_plan(cfg: DIPConfig) -> list[Stage]:
    """The progressive stages in the order they are fitted: strongest noise (largest ᾱ deficit) first."""
    schedule = NoiseSchedule(ScheduleConfig(cfg.schedule, cfg.stages, cfg.beta_min, cfg.beta_max))
    stages = []
    for i in range(cfg.stages - 1, -1, -1):
        beta = float(schedule.betas[i])
        iterations = round(cfg.e_max * (1 - cfg.e_alpha * math.exp(-cfg.e_k * beta)))
        if iterations < 1:
            raise ImgtransError(f"progressive stage with β={beta:.4g} gets E={iterations} iterations; choose e_max, "
                                "e_alpha and e_k so that e_alpha·exp(−e_k·β) < 1 for every β")
        stages.append(Stage(beta, float(schedule.alphas_cumprod[i]), iterations))
    return stages


def total_iterations(cfg: DIPConfig) -> int:
    """Iterations the run fits: the mode's full schedule, capped by `max_steps`."""
    full = cfg.num_iter if cfg.mode == "classic" else sum(s.iterations for s in stage_plan(cfg))
    return min(full, cfg.max_steps) if cfg.max_steps else full


@dataclass
class DIPState:
    """What a run fits, fixed at the start and saved with every checkpoint (tensors in network space)."""

    degraded: torch.Tensor  # (1, C, H, W) in [-1, 1]
    clean: torch.Tensor | None
    mask: torch.Tensor | None  # (1, 1, H, W), 1 where pixels are known
    net_input: torch.Tensor  # (1, input_depth, H', W'), H', W' padded to the net's multiple
    stage_noise: list[torch.Tensor] = field(default_factory=list)  # one ε per progressive stage


class DeepImagePrior(nn.Module):
    """The fitted network, its loss and its optimisation step (`setup` first, then `training_step`)."""

    codec = None  # it fits one image in network space, with no dataset codec

    def __init__(self, cfg: DIPConfig, channels: int, perceptual: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.net = build_dip_net(cfg.net, cfg.input_depth, channels, width=cfg.width, depth=cfg.depth)
        # Kept out of the state dict: the fixed VGG backbone is not part of what is fitted.
        self._perceptual = [perceptual] if perceptual is not None and cfg.lambda_perceptual > 0 else []
        self.runtime = Runtime(torch.device("cpu"))

    def setup(self, runtime: Runtime) -> None:
        """Move to the device, apply the fast-path switches, create the optimizer and AMP scaler."""
        self.runtime = runtime
        self.to(runtime.device, memory_format=runtime.memory_format)
        for module in self._perceptual:
            module.to(runtime.device)
        if runtime.compile:
            self.net.compile()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr,
                                          fused=runtime.fused_optimizers or None)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.autocast_dtype == torch.float16)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One iteration on `batch_size` jittered copies of the input `A` towards target `B` (where `mask` is 1);
        returns the losses and the `output`. No decision is made on the host, so a CUDA graph can replay it."""
        cfg = self.cfg
        target, mask = batch["B"], batch.get("mask")
        inputs = batch["A"].expand(cfg.batch_size, -1, -1, -1)
        if cfg.reg_noise_std > 0:
            inputs = inputs + cfg.reg_noise_std * torch.randn_like(inputs)
        with self.runtime.autocast():
            output = self(inputs, *target.shape[-2:])
        losses = self.loss(output, target.expand(cfg.batch_size, -1, -1, -1), mask)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {**losses, "output": output}

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return self.runtime.to_device(x)

    def graph_capture_obstacle(self) -> str | None:
        return None

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"net": self.optimizer}

    @property
    def size_multiple(self) -> int:
        return self.net.size_multiple

    def loss(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if mask is not None:
            output, target = output * mask, target * mask
        parts = {"mse": F.mse_loss(output.float(), target.float())}
        if self._perceptual:
            parts["perceptual"] = self._perceptual[0](output, target)
            parts["loss"] = parts["mse"] + self.cfg.lambda_perceptual * parts["perceptual"]
        else:
            parts["loss"] = parts["mse"]
        return parts

    def forward(self, net_input: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.net(net_input)[..., :height, :width]
