"""Noise schedules: model-free, like diffusers' schedulers.

A schedule is the sequence ᾱ_t (signal fraction kept after t noising steps),
t = 0 … T-1, with β_t = 1 − ᾱ_t / ᾱ_{t−1}. Forward noising is
x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε, and a network may predict ε or
v = √ᾱ_t · ε − √(1 − ᾱ_t) · x_0 (Salimans & Ho 2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from imgtrans.errors import ImgtransError

SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid", "signal_cosine")
PREDICTIONS = ("eps", "v")


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "linear"
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # signal_cosine: √ᾱ at the noisiest and at the cleanest step, as in the project report “A Comparison of
    # Generative Models for Image Translation”
    min_signal_rate: float = 0.02
    max_signal_rate: float = 0.95
    cosine_offset: float = 0.008  # cosine: Nichol & Dhariwal's s


def _betas(cfg: ScheduleConfig) -> torch.Tensor:
    T = cfg.timesteps
    if cfg.kind == "linear":
        return torch.linspace(cfg.beta_start, cfg.beta_end, T, dtype=torch.float64)
    if cfg.kind == "scaled_linear":
        return torch.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, T, dtype=torch.float64) ** 2
    if cfg.kind == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (cfg.beta_end - cfg.beta_start) \
            + cfg.beta_start
    if cfg.kind == "cosine":
        s = cfg.cosine_offset
        f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
        alphas_cumprod = f / f[0]
        return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=0.999)
    if cfg.kind == "signal_cosine":
        lo, hi = math.acos(cfg.max_signal_rate), math.acos(cfg.min_signal_rate)
        angles = lo + torch.arange(1, T + 1, dtype=torch.float64) / T * (hi - lo)
        alphas_cumprod = torch.cos(angles) ** 2
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        return 1 - alphas_cumprod / previous
    raise ImgtransError(f"invalid schedule '{cfg.kind}'; valid values: {', '.join(SCHEDULES)}")


def validate(cfg: ScheduleConfig) -> None:
    if cfg.timesteps < 2:
        raise ImgtransError(f"timesteps must be at least 2, got {cfg.timesteps}")
    if cfg.kind in ("linear", "scaled_linear", "sigmoid"):
        for name in ("beta_start", "beta_end"):
            value = getattr(cfg, name)
            if not 0 < value < 1:
                raise ImgtransError(f"{name} must be inside (0, 1), got {value}")
        if cfg.beta_start >= cfg.beta_end:
            raise ImgtransError(f"beta_start ({cfg.beta_start}) must be below beta_end ({cfg.beta_end}) so the "
                                "noise grows monotonically")
    if cfg.kind == "signal_cosine" and not 0 < cfg.min_signal_rate < cfg.max_signal_rate < 1:
        raise ImgtransError("signal_cosine needs 0 < min_signal_rate < max_signal_rate < 1, got "
                            f"{cfg.min_signal_rate} and {cfg.max_signal_rate}")


class NoiseSchedule:
    """ᾱ_t for t = 0 … T-1 and the conversions between x_0, ε, v and x_t."""

    def __init__(self, cfg: ScheduleConfig = ScheduleConfig(), prediction: str = "eps"):
        validate(cfg)
        if prediction not in PREDICTIONS:
            raise ImgtransError(f"invalid prediction '{prediction}'; valid values: {', '.join(PREDICTIONS)}")
        self.cfg, self.prediction = cfg, prediction
        betas = _betas(cfg)
        if not ((betas > 0) & (betas < 1)).all():
            raise ImgtransError(f"schedule {cfg.kind} gives β outside (0, 1); check its parameters")
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)
        if not (self.alphas_cumprod[1:] < self.alphas_cumprod[:-1]).all():
            raise ImgtransError(f"schedule {cfg.kind} is not monotone: ᾱ must fall at every step")

    @property
    def timesteps(self) -> int:
        return self.cfg.timesteps

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """ᾱ_t broadcast to `like`'s shape; t < 0 means the clean image (ᾱ = 1)."""
        t = torch.as_tensor(t, device=self.alphas_cumprod.device).long().reshape(-1)
        values = torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], torch.ones((), dtype=torch.float64))
        return values.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output at step t."""
        if self.prediction == "eps":
            return noise
        ab = self.alpha_bar(t, x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def split(self, x_t: torch.Tensor, output: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) from the network output, whichever it predicts."""
        ab = self.alpha_bar(t, x_t)
        if self.prediction == "eps":
            eps = output
            x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        else:
            x0 = ab.sqrt() * x_t - (1 - ab).sqrt() * output
            eps = ab.sqrt() * output + (1 - ab).sqrt() * x_t
        return x0, eps
