"""Reverse-diffusion samplers over a `NoiseSchedule`, with diffusers' shape: `set_timesteps(n)` picks the
steps, `step(output, t, x_t)` goes one step back. They hold no model, so they swap freely."""

from __future__ import annotations

import torch

from imgtrans.diffusion.noise_schedules import NoiseSchedule
from imgtrans.errors import ImgtransError


class Sampler:
    """`clip_sample` clips each step's x̂_0 to the data range [-1, 1] and re-derives ε̂ from it (as diffusers
    does): at the noisiest steps x̂_0 = (x_t − √(1 − ᾱ)·ε̂)/√ᾱ amplifies any error in ε̂ by 1/√ᾱ."""

    def __init__(self, schedule: NoiseSchedule, clip_sample: bool = True):
        self.schedule = schedule
        self.clip_sample = clip_sample
        self.timesteps = torch.arange(schedule.timesteps - 1, -1, -1)

    def predict(self, output: torch.Tensor, t: int, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) from the network output at step t, clipped if asked."""
        x0, eps = self.schedule.split(x_t, output, torch.tensor([t]))
        if self.clip_sample:
            x0 = x0.clamp(-1, 1)
            ab = self.schedule.alpha_bar(t, x_t)
            eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return x0, eps

    def set_timesteps(self, steps: int, start: int | None = None) -> torch.Tensor:
        """`steps` evenly spaced timesteps from `start` (default: the noisiest, T − 1) to t = 0, descending.
        A later start denoises a partly noised image (SDEdit) instead of pure noise."""
        T = self.schedule.timesteps
        start = T - 1 if start is None else start
        if not 0 <= start < T:
            raise ImgtransError(f"the start timestep must be between 0 and {T - 1}, got {start}")
        if not 1 <= steps <= start + 1:
            raise ImgtransError(f"sample_steps must be between 1 and {start + 1} (timesteps from {start} down), "
                                f"got {steps}")
        self.timesteps = torch.linspace(start, 0, steps).round().long().unique_consecutive()
        return self.timesteps

    def previous(self, t: int) -> int:
        later = self.timesteps[self.timesteps < t]
        return int(later[0]) if len(later) else -1

    def step(self, output: torch.Tensor, t: int, x_t: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def _noise(self, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)


class DDIMSampler(Sampler):
    """Song et al. 2021; eta = 0 is deterministic, eta = 1 matches DDPM's variance."""

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0, clip_sample: bool = True):
        super().__init__(schedule, clip_sample)
        if eta < 0:
            raise ImgtransError(f"eta must be zero or positive, got {eta}")
        self.eta = eta

    def step(self, output, t, x_t, generator=None):
        s = self.schedule
        t_prev = self.previous(t)
        ab, ab_prev = s.alpha_bar(t, x_t), s.alpha_bar(t_prev, x_t)
        x0, eps = self.predict(output, t, x_t)
        sigma = self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
        x_prev = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if self.eta > 0 and t_prev >= 0:
            x_prev = x_prev + sigma * self._noise(x_t, generator)
        return x_prev


class DDPMSampler(Sampler):
    """Ho et al. 2020 ancestral sampling (posterior mean plus its variance), on any subset of timesteps."""

    def step(self, output, t, x_t, generator=None):
        s = self.schedule
        t_prev = self.previous(t)
        ab, ab_prev = s.alpha_bar(t, x_t), s.alpha_bar(t_prev, x_t)
        beta = 1 - ab / ab_prev  # the effective β between the two chosen timesteps
        x0, _ = self.predict(output, t, x_t)
        mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + ((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)) * x_t
        if t_prev < 0:
            return mean
        variance = beta * (1 - ab_prev) / (1 - ab)
        return mean + variance.sqrt() * self._noise(x_t, generator)
