"""The small protocol every model implements, and the runtime plumbing they share.

A model owns its networks, optimizers and losses. The Trainer calls
`training_step(batch)` (which performs the model's own optimizer updates and
returns named losses), `translate(x)` for inference and `visuals(batch)` for
sample grids. Models never touch MLflow, argument parsing or the file system.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from imgtrans.config import TrainConfig
from imgtrans.data.codec import Codec
from imgtrans.nets.layers import pad_to_multiple


@dataclass(frozen=True)
class Runtime:
    """Where and how the model computes: device, autocast dtype, memory format, compilation."""

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    fused_optimizers: bool = True

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def resolve_device(choice: str) -> torch.device:
    """`auto` → the GPU when present; `cuda` without one is an error rather than a silent CPU run."""
    from imgtrans.errors import ImgtransError

    if choice == "cuda" and not torch.cuda.is_available():
        raise ImgtransError("device=cuda was requested but no CUDA GPU is available; use device=auto or cpu")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")


# The autocast dtype of each `precision` (fp32: none).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_runtime(cfg: TrainConfig) -> Runtime:
    device = resolve_device(cfg.device)
    use_cuda = device.type == "cuda"
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if use_cuda and torch.cuda.is_bf16_supported() else "fp32"
    return Runtime(device, AUTOCAST_DTYPES[precision], channels_last=cfg.channels_last and use_cuda, compile=cfg.compile and use_cuda)


class TranslationModel(nn.Module):
    """Base class: subclasses set `config_class`, build nets and optimizers, and define the step."""

    config_class: ClassVar[type[TrainConfig]] = TrainConfig
    # Whether the model learns from paired (input, target) data or two unpaired domains.
    unpaired: ClassVar[bool] = False
    # Whether validation also reports val/kid (needs the Inception weights; config field inception_weights).
    validation_kid: ClassVar[bool] = False

    def __init__(self, cfg: TrainConfig, codec: Codec):
        super().__init__()
        self.cfg = cfg
        self.codec = codec
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.runtime = Runtime(torch.device("cpu"))
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)

    # --- runtime -----------------------------------------------------------
    def setup(self, runtime: Runtime) -> None:
        """Move to the device and apply the fast-path switches; call before building optimizers' state."""
        self.runtime = runtime
        self.to(runtime.device, memory_format=runtime.memory_format)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.autocast_dtype == torch.float16)
        if runtime.compile:
            for net in self.children():
                net.compile()

    def autocast(self):
        return self.runtime.autocast()

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.runtime.device, non_blocking=True, memory_format=self.runtime.memory_format)

    def adam(self, *nets: nn.Module, lr: float | None = None) -> torch.optim.Adam:
        params = [p for net in nets for p in net.parameters()]
        # Fused Adam is several times faster than the per-tensor loop, on CPU too.
        return torch.optim.Adam(params, lr=lr or self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2),
                                fused=self.runtime.fused_optimizers or None)

    def update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)

    @staticmethod
    def set_requires_grad(nets: nn.Module | list[nn.Module], flag: bool) -> None:
        for net in nets if isinstance(nets, list) else [nets]:
            for p in net.parameters():
                p.requires_grad_(flag)

    # --- shared GAN pieces (for models whose config is a GANConfig) --------------
    def build_G(self, input_nc: int, output_nc: int, **overrides) -> nn.Module:
        from imgtrans.nets.generators import build_generator
        from imgtrans.nets.layers import init_weights

        cfg = self.cfg
        kwargs = dict(ngf=cfg.ngf, norm=cfg.norm, dropout=cfg.dropout, crop_size=cfg.crop_size) | overrides
        return init_weights(build_generator(kwargs.pop("netG", cfg.netG), input_nc, output_nc, **kwargs),
                            cfg.init_type, cfg.init_gain)

    def build_D(self, input_nc: int, **overrides) -> nn.Module:
        from imgtrans.nets.discriminators import build_discriminator
        from imgtrans.nets.layers import init_weights

        cfg = self.cfg
        kwargs = dict(ndf=cfg.ndf, n_layers=cfg.n_layers_D, norm=cfg.norm, num_D=cfg.num_D) | overrides
        return init_weights(build_discriminator(kwargs.pop("netD", cfg.netD), input_nc, **kwargs),
                            cfg.init_type, cfg.init_gain)

    def discriminator_loss(self, net: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                           prefix: str = "D") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(D(real) vs 1 + D(fake) vs 0) / 2, plus the WGAN-GP penalty when gan_mode=wgangp."""
        from imgtrans.losses import gradient_penalty

        fake = fake.detach()
        parts = {f"{prefix}_real": self.gan_loss(net(real), True), f"{prefix}_fake": self.gan_loss(net(fake), False)}
        total = (parts[f"{prefix}_real"] + parts[f"{prefix}_fake"]) * 0.5
        if self.cfg.gan_mode == "wgangp":
            parts[f"{prefix}_gp"] = gradient_penalty(net, real, fake, self.cfg.lambda_gp)
            total = total + parts[f"{prefix}_gp"]
        return total, parts

    def adversarial_loss(self, net: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        """The generator's term: make `net` call `fake` real."""
        return self.gan_loss(net(fake), True, for_discriminator=False)

    # --- protocol ----------------------------------------------------------
    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def generator(self) -> nn.Module:
        """The network used for inference and export."""
        raise NotImplementedError

    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> torch.Tensor:
        """Input tensor in network space (any H, W) → output in network space, same H, W."""
        net = self.generator()
        padded, (h, w) = pad_to_multiple(self.to_device(x), getattr(net, "size_multiple", 1))
        with self.autocast():
            y = net(padded)
        return y[..., :h, :w].float()

    def translate_for_validation(self, x: torch.Tensor) -> torch.Tensor:
        """`translate` as used for per-epoch validation (samplers may take fewer steps there)."""
        return self.translate(x)

    @torch.no_grad()
    def visuals(self, batch: dict) -> list[torch.Tensor]:
        """Columns of the sample grid as rgb [0, 1]: input | output | target."""
        x = batch["A"]
        y = self.translate_for_validation(x).cpu()
        return [self.codec.decode_input(x), self.codec.decode_output(x, y), self.codec.decode_output(x, batch["B"])]
