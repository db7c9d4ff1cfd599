"""GAN objectives, the WGAN-GP gradient penalty, PatchNCE and the chroma-distribution distance.

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

    def forward(self, prediction, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        """`prediction` is a patch map, or a list of them from a multi-scale discriminator (averaged)."""
        if isinstance(prediction, (list, tuple)):
            return sum(self(p, target_is_real, for_discriminator) for p in prediction) / len(prediction)
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
    total = sum(o.float().sum() for o in out) if isinstance(out, (list, tuple)) else out.float().sum()
    (grad,) = torch.autograd.grad(total, mixed, create_graph=True)
    norms = grad.flatten(1).float().norm(2, dim=1)
    return weight * ((norms - target_norm) ** 2).mean()


def patch_nce_loss(query: torch.Tensor, key: torch.Tensor, batch_size: int, temperature: float = 0.07) -> torch.Tensor:
    """PatchNCE (Park et al. 2020): each query patch must pick its own key patch among the other patches of
    the same image. query, key: (N·P, C) normalised embeddings of the same P locations per image."""
    key = key.detach()
    positives = (query * key).sum(1, keepdim=True)  # (N·P, 1)
    q = query.view(batch_size, -1, query.shape[1])
    k = key.view(batch_size, -1, key.shape[1])
    negatives = torch.bmm(q, k.transpose(1, 2))  # (N, P, P)
    patches = negatives.shape[1]
    eye = torch.eye(patches, device=query.device, dtype=torch.bool)[None]
    negatives = negatives.masked_fill(eye, -10.0).flatten(0, 1)  # a patch is not its own negative
    logits = torch.cat([positives, negatives], 1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target)


def chroma_distribution_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The 1-D Wasserstein-1 distance between the distributions of chroma (the length of a,b) over each image's
    pixels, averaged over the batch; prediction and target are a,b of shape (N, 2, H, W).

    Blind to hue and to place: it counts how much colour an image has, not where or which, so it penalises a
    washed-out output (a regression colorizer's average of the colours a pixel might have) without asking for any
    particular colour where the pixel losses are unsure. Sorting both sides solves the 1-D transport exactly."""
    def sorted_chroma(ab: torch.Tensor) -> torch.Tensor:
        # The small constant keeps the square root's gradient finite at gray pixels.
        return (ab.float().flatten(2).square().sum(1) + 1e-8).sqrt().sort(-1).values

    return (sorted_chroma(prediction) - sorted_chroma(target)).abs().mean()
