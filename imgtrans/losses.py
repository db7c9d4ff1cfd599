"""GAN objectives and the WGAN-GP gradient penalty.

`GANLoss(mode)(prediction, target_is_real)` gives the generator or
discriminator term; for hinge the discriminator and generator forms differ,
so callers say which one they want with `for_discriminator`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from imgtrans.errors import ImgtransError

GAN_MODES = ("vanilla", "lsgan", "wgangp", "hinge")


class GANLoss(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        if mode not in GAN_MODES:
            raise ImgtransError(f"invalid gan_mode '{mode}'; valid values: {', '.join(GAN_MODES)}")
        self.mode = mode

    def forward(self, prediction: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        prediction = prediction.float()
        if self.mode == "vanilla":
            target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
            return F.binary_cross_entropy_with_logits(prediction, target)
        if self.mode == "lsgan":
            target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
            return F.mse_loss(prediction, target)
        if self.mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        # hinge
        if not for_discriminator:
            return -prediction.mean()
        return F.relu(1 - prediction).mean() if target_is_real else F.relu(1 + prediction).mean()


def gradient_penalty(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     weight: float = 10.0, target_norm: float = 1.0) -> torch.Tensor:
    """WGAN-GP: weight · E[(‖∇D(x̂)‖₂ − 1)²] on random interpolates x̂ of real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = discriminator(mixed)
    (grad,) = torch.autograd.grad(out.float().sum(), mixed, create_graph=True)
    norms = grad.flatten(1).float().norm(2, dim=1)
    return weight * ((norms - target_norm) ** 2).mean()
