"""Denoising diffusion (DDPM training; DDIM, DDPM or DPM-Solver++ sampling), conditional or unconditional.

Conditional (Palette / SR3 style): the source image is concatenated to the
noisy target at every step. Unconditional: the target alone (any folder of
images). Sampling uses the EMA weights.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel

from imgtrans.compute.graphs import CapturedCall, capture_obstacle
from imgtrans.compute.runtime import Runtime
from imgtrans.data.codec import Codec
from imgtrans.diffusion.noise_schedules import NoiseSchedule, ScheduleConfig
from imgtrans.diffusion.samplers import build_sampler
from imgtrans.errors import ImgtransError
from imgtrans.models.base import TranslationModel
from imgtrans.models.options import DiffusionConfig
from imgtrans.nets.diffusion_unet import DiffusionUNet
from imgtrans.nets.layers import pad_to_multiple


def _ints(name: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ImgtransError(f"invalid {name} '{text}'; expected comma-separated integers") from None


class Diffusion(TranslationModel):
    config_class = DiffusionConfig
    validation_kid = True

    def __init__(self, cfg: DiffusionConfig, codec: Codec):
        super().__init__(cfg, codec)
        self.schedule = NoiseSchedule(
            ScheduleConfig(cfg.schedule, cfg.timesteps, cfg.beta_start, cfg.beta_end, cfg.min_signal_rate,
                           cfg.max_signal_rate), cfg.prediction)
        mults = _ints("channel_mults", cfg.channel_mults)
        in_channels = codec.output_nc + (codec.input_nc if cfg.conditional else 0)
        self.net = DiffusionUNet(in_channels, codec.output_nc, cfg.base_channels, mults, cfg.num_res_blocks,
                                 _ints("attention_levels", cfg.attention_levels), cfg.dropout_rate)
        if cfg.crop_size % self.net.size_multiple:
            raise ImgtransError(f"crop_size must be a multiple of {self.net.size_multiple}, got {cfg.crop_size}")
        # The sampling weights: an exponential moving average of parameters and buffers alike.
        self.ema = AveragedModel(self.net, multi_avg_fn=self._ema_step, use_buffers=True).requires_grad_(False)
        self._register_load_state_dict_pre_hook(_ema_keys_of_format_2)
        self.denoiser = CapturedCall(self._denoise, enabled=False)

    def setup(self, runtime: Runtime) -> None:
        super().setup(runtime)
        # Sampling calls the denoiser with the same shapes at every step: on a GPU it is replayed from a graph.
        self.denoiser = CapturedCall(self._denoise, enabled=self.sampling_capture_obstacle() is None,
                                     key=lambda: self.generator().training)

    def sampling_capture_obstacle(self) -> str | None:
        """None when sampling replays the denoiser from a captured CUDA graph; otherwise why it runs eagerly."""
        return capture_obstacle(self.cfg.cuda_graphs, self.runtime)

    def _denoise(self, inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.generator()(inputs, t).float()

    @classmethod
    def is_conditional(cls, cfg: DiffusionConfig) -> bool:
        return cfg.conditional

    @property
    def inception_weights(self) -> str:
        return self.cfg.inception_weights

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"net": torch.optim.AdamW(
            self.net.parameters(), lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2),
            weight_decay=self.cfg.weight_decay, fused=self.runtime.fused_optimizers or None)}

    def generator(self):
        return self.ema.module

    def export_obstacle(self) -> str | None:
        return ("a diffusion model translates by running its denoiser (which also takes the step t) over "
                f"{self.cfg.sample_steps} sampling steps, not in one pass")

    def _input(self, x_t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return torch.cat([x_t, cond.to(x_t.dtype)], 1) if self.cfg.conditional else x_t

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        x0 = self.to_device(batch["B"])
        cond = self.to_device(batch["A"]) if self.cfg.conditional else None
        t = torch.randint(0, self.schedule.timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.schedule.add_noise(x0, noise, t)
        with self.autocast():
            out = self.net(self._input(x_t, cond), t)
        loss = F.mse_loss(out.float(), self.schedule.target(x0, noise, t).float())
        self.update(self.optimizers["net"], loss)
        self.ema.update_parameters(self.net)
        return {"mse": loss}

    def _ema_step(self, averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        """The decay warms up as min(ema_decay, (1 + n)/(10 + n)) after n updates (as diffusers' EMAModel does):
        with a fixed 0.999 a short run would sample from weights still mostly at their random initialisation."""
        n = updates.float() + 1
        weight = 1 - torch.clamp((1 + n) / (10 + n), max=self.cfg.ema_decay)
        for ema, live in zip(averaged, current):
            if ema.is_floating_point():
                ema.lerp_(live, weight.to(ema.dtype))
            else:  # counters such as batch norm's step count follow the live network
                ema.copy_(live)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int, seed: int = 0, start_from: torch.Tensor | None = None,
               t_start: int | None = None) -> torch.Tensor:
        """Images (network space) for each conditioning image (its content is ignored if unconditional).

        With `start_from` (an estimate of the result, network space), sampling starts from that estimate
        noised to step `t_start` instead of from pure noise (SDEdit), taking `steps` steps from there.
        """
        cfg = self.cfg
        cond = self.to_device(cond)
        sampler = build_sampler(cfg.sampler, self.schedule, cfg.eta, cfg.clip_sample)
        sampler.set_timesteps(steps, start=t_start)
        g = torch.Generator().manual_seed(seed)
        shape = (cond.shape[0], self.codec.output_nc, *cond.shape[-2:])
        x = torch.randn(shape, generator=g).to(cond.device)
        if start_from is not None:
            t = torch.full((shape[0],), int(sampler.timesteps[0]))
            x = self.schedule.add_noise(self.to_device(start_from).float(), x, t)
        for t in sampler.timesteps.tolist():
            out = self.denoiser(self._input(x, cond), torch.full((x.shape[0],), t, device=x.device))
            x = sampler.step(out, t, x, generator=g)
        return x.clamp(-1, 1)

    @torch.no_grad()
    def translate(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        padded, (h, w) = pad_to_multiple(x, self.size_multiple)
        return self.sample(padded, steps or self.cfg.sample_steps)[..., :h, :w].float()

    def translate_for_validation(self, x: torch.Tensor) -> torch.Tensor:
        return self.translate(x, self.cfg.val_sample_steps)


def _ema_keys_of_format_2(state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints from before the EMA was an `AveragedModel`: `ema.<name>` and `ema_updates` renamed."""
    for key in [k for k in state_dict if k.startswith(f"{prefix}ema.") and not k.startswith(f"{prefix}ema.module.")
                and k != f"{prefix}ema.n_averaged"]:
        state_dict[f"{prefix}ema.module.{key[len(prefix) + 4:]}"] = state_dict.pop(key)
    if f"{prefix}ema_updates" in state_dict:
        state_dict[f"{prefix}ema.n_averaged"] = state_dict.pop(f"{prefix}ema_updates")
