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
from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from imgtrans.config import RunConfig, opt
from imgtrans.diffusion.noise_schedules import NoiseSchedule, ScheduleConfig
from imgtrans.dip.nets import build_dip_net
from imgtrans.errors import ImgtransError
from imgtrans.runtime import Runtime


@dataclass
class DIPConfig(RunConfig):
    """Options of the `dip` entry point (the common ones keep their shared names)."""

    model_name: ClassVar[str] = "dip"

    # the image
    image: str = opt("", "the image to restore; empty = test image `image_index` of `dataset`")
    dataset: str = opt("synthetic-aerial", "where the image comes from when `image` is empty (its target side)")
    image_index: int = opt(0, "which test image of `dataset` to restore", ge=0)
    noise_std: float = opt(0.1, "std of the Gaussian noise added to the image (0–1 scale); 0 = the image is "
                                "already degraded", ge=0)
    clean: str = opt("", "a clean reference for an already-degraded image (for dip/psnr_clean)")
    mask: str = opt("", "inpainting mask: an image, white where pixels are known; the loss ignores the rest")
    crop_size: int = opt(0, "centre-crop the image to this size; 0 = the whole image", ge=0)
    output: str = opt("", "also write the restored image to this PNG file (the run keeps it as dip/restored.png)")
    # the network and its input
    net: Literal["skip", "unet", "resnet", "dncnn"] = opt("skip", "the network fitted to the image")
    width: int = opt(128, "channels per layer", ge=1)
    depth: int = opt(5, "levels (skip ≥ 1, unet ≥ 5), residual blocks (resnet) or layers (dncnn)", ge=1)
    input_depth: int = opt(32, "channels of the fixed noise input", ge=1)
    reg_noise_std: float = opt(1 / 30, "std of the noise added to the input at every iteration", ge=0)
    # the optimisation
    mode: Literal["classic", "progressive"] = opt("classic", "classic: fit the degraded image; progressive: "
                                                            "fit its forward-diffusion noisings, strong to weak")
    num_iter: int = opt(3000, "iterations in classic mode", ge=1)
    lr: float = opt(0.01, "Adam learning rate", gt=0)
    lambda_perceptual: float = opt(0.0, "weight of the VGG16 perceptual loss added to the MSE", ge=0)
    vgg_weights: str = opt("", "path of vgg16-397923af.pth; default: the torch hub cache")
    schedule: Literal["linear", "scaled_linear", "sigmoid"] = opt("linear", "progressive: β schedule of the stages")
    beta_min: float = opt(0.001, "progressive: β of the weakest-noise stage", gt=0, lt=1)
    beta_max: float = opt(0.01, "progressive: β of the strongest-noise stage", gt=0, lt=1)
    stages: int = opt(10, "progressive: number of targets, from strong to weak noise", ge=2)
    e_max: int = opt(600, "progressive: E_max in E(i) = E_max·(1 − α·exp(−k·β_i))", ge=1)
    e_alpha: float = opt(0.3, "progressive: α in E(i)")
    e_k: float = opt(-100.0, "progressive: k in E(i); negative gives fewer iterations to noisier stages")
    # the common options (seed, device, resume, precision, … come from RunConfig)
    epochs: int = opt(10, "snapshots over the run: sample grid, val/psnr, val/ssim and a checkpoint at each", ge=1)
    max_steps: int = opt(0, "stop after this many iterations; 0 = the mode's full schedule", ge=0)
    batch_size: int = opt(1, "noise-perturbed copies of the input per iteration (their losses are averaged)", ge=1)
    log_every: int = opt(50, "flush the per-iteration metrics to MLflow every this many iterations", ge=1)

    # Without `image` or `dataset` there is nothing to restore (dip_diffusion has its diffusion run's dataset).
    needs_image_source: ClassVar[bool] = True

    def validate(self) -> None:
        super().validate()
        if self.needs_image_source and not self.image and not self.dataset:
            raise ImgtransError("nothing to restore: give image=<file> or dataset=<folder or built-in name>")
        if self.net == "unet" and self.depth < 5:
            raise ImgtransError(f"net=unet needs depth of at least 5, got {self.depth}")
        if self.mode == "progressive":
            stage_plan(self)
        if self.output:
            out = Path(self.output).expanduser().resolve()
            if out.suffix.lower() != ".png":
                raise ImgtransError(f"output must be a .png file, got {self.output}")
            if any(p and Path(p).expanduser().resolve() == out for p in (self.image, self.clean, self.mask)):
                raise ImgtransError(f"output {self.output} would overwrite an input file; choose another path")

    def total_iterations(self) -> int:
        full = self.num_iter if self.mode == "classic" else sum(s.iterations for s in stage_plan(self))
        return min(full, self.max_steps) if self.max_steps else full


@dataclass
class DIPDiffusionConfig(DIPConfig):
    model_name: ClassVar[str] = "dip_diffusion"

    diffusion_run: str = opt("", "MLflow run id of a trained `diffusion` model")
    dataset: str = opt("", "where the image (and its condition) come from; empty = the diffusion run's dataset")
    condition: str = opt("", "with `image` and a conditional model: the source image it is conditioned on")
    num_iter: int = opt(500, "DIP iterations before handing over to the diffusion model")
    t_start: int = opt(250, "diffusion step the DIP output is noised to (0 … timesteps − 1)", ge=0)
    sample_steps: int = opt(0, "denoising steps from pure noise; 0 = the diffusion model's own; the DIP start "
                               "takes the same spacing over its shorter range", ge=0)

    needs_image_source: ClassVar[bool] = False

    def validate(self) -> None:
        super().validate()
        if not self.diffusion_run:
            raise ImgtransError("diffusion_run is required: the run id of a model trained with "
                                "`mlflow run . -e diffusion`")


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


@dataclass
class DIPState:
    """What a run fits, fixed at the start and saved with every checkpoint (tensors in network space)."""

    degraded: torch.Tensor  # (1, C, H, W) in [-1, 1]
    clean: torch.Tensor | None
    mask: torch.Tensor | None  # (1, 1, H, W), 1 where pixels are known
    net_input: torch.Tensor  # (1, input_depth, H', W'), H', W' padded to the net's multiple
    stage_noise: list[torch.Tensor] = field(default_factory=list)  # one ε per progressive stage


class DeepImagePrior(nn.Module):
    """The fitted network, its loss and its optimisation step (`setup` first, then `fit_step`)."""

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

    def fit_step(self, net_input: torch.Tensor, target: torch.Tensor,
                 mask: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One iteration on `batch_size` jittered copies of the input; returns the outputs and losses."""
        cfg = self.cfg
        inputs = net_input.expand(cfg.batch_size, -1, -1, -1)
        if cfg.reg_noise_std > 0:
            inputs = inputs + cfg.reg_noise_std * torch.randn_like(inputs)
        with self.runtime.autocast():
            output = self(inputs, *target.shape[-2:])
        losses = self.loss(output, target.expand(cfg.batch_size, -1, -1, -1), mask)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return output, losses

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
