"""Colour as classes, after Zhang, Isola and Efros, "Colorful Image Colorization".

A regression loss (L1, L2) on a,b is minimised by the mean — or the median — of the plausible colours, and for
an object that may be red or blue that is a grayish brown: the washed-out, sepia cast of a regression colorizer.
Treating colour as a distribution over quantised a,b and decoding it by its *annealed mean* keeps the colours
that are there without averaging them away:

- the a,b plane in cells of `GRID` units, the classes being the cells some sRGB colour falls in (262 by this
  rule; the paper's quantisation has 313);
- a target pixel soft-encoded on its `NEIGHBOURS` nearest class centres, Gaussian-weighted (`SIGMA`);
- each pixel's loss weighted by the inverse of a smoothed prior of its class mixed with the uniform
  (`REBALANCE`), the prior fitted from the training targets, so rare saturated colours are not drowned by
  the gray-brown majority;
- decoding: the mean of the distribution sharpened by a temperature — between the mean (desaturated) and
  the mode (patchy) — inside the network, so that an exported ONNX graph holds it. Training decodes at the
  paper's `TRAINING_TEMPERATURE` (what the L1 and GAN terms of `colorization_loss=both` see); inference at
  the model's own `temperature`, by default the same; nearer the mode, the colours are more saturated, and
  the low-pass that follows at inference smooths the mode's patches along the edges of lightness.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from imgtrans.data.color import AB_SCALE, rgb_to_lab

GRID = 10.0
NEIGHBOURS, SIGMA = 5, 5.0
REBALANCE = 0.5
TRAINING_TEMPERATURE = 0.38


@functools.cache
def class_centres(grid: float = GRID) -> torch.Tensor:
    """(Q, 2): the a,b centres (CIE units) of the grid cells that hold an sRGB colour."""
    steps = torch.linspace(0, 1, 64)
    cube = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij")).reshape(3, 1, -1)
    ab = rgb_to_lab(cube.double()).reshape(3, -1)[1:].T * AB_SCALE
    cells = torch.unique(torch.round(ab / grid), dim=0)
    return (cells * grid).float()


def soft_encode(ab: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """a,b (N, 2, H, W) in CIE units → (N, Q, H, W) weights on the `NEIGHBOURS` nearest centres, summing to 1."""
    n, _, h, w = ab.shape
    pixels = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    distance, nearest = torch.cdist(pixels, centres).topk(NEIGHBOURS, dim=1, largest=False)
    weights = torch.softmax(-distance ** 2 / (2 * SIGMA ** 2), dim=1)
    encoded = torch.zeros(len(pixels), len(centres), device=ab.device).scatter_(1, nearest, weights)
    return encoded.reshape(n, h, w, -1).permute(0, 3, 1, 2)


class ColourClasses(nn.Module):
    """The classes, their rebalancing weights (from a prior fitted to training targets), the loss and the
    decoding. The prior is state (saved with the model); the centres follow from the grid."""

    def __init__(self, temperature: float = TRAINING_TEMPERATURE) -> None:
        super().__init__()
        self.temperature = temperature
        centres = class_centres().clone()
        self.register_buffer("centres", centres, persistent=False)
        self.register_buffer("prior", torch.full((len(centres),), 1 / len(centres)))

    @property
    def count(self) -> int:
        return len(self.centres)

    @torch.no_grad()
    def fit_prior(self, ab_targets: Iterable[torch.Tensor]) -> None:
        """The empirical class distribution of the targets' pixels (a,b in network scale, (N, 2, H, W)),
        smoothed by a Gaussian of `SIGMA` over the a,b plane."""
        counts = torch.zeros(self.count, dtype=torch.float64)
        for ab in ab_targets:
            pixels = ab.float().permute(0, 2, 3, 1).reshape(-1, 2) * AB_SCALE
            nearest = torch.cdist(pixels, self.centres.cpu()).argmin(1)
            counts += torch.bincount(nearest, minlength=self.count)
        if counts.sum() == 0:
            return
        kernel = torch.exp(-torch.cdist(self.centres, self.centres).double().cpu() ** 2 / (2 * SIGMA ** 2))
        smoothed = kernel @ (counts / counts.sum())
        self.prior.copy_((smoothed / smoothed.sum()).to(self.prior))

    def class_weights(self) -> torch.Tensor:
        """(Q,): inverse of the prior mixed with the uniform, scaled so the expected weight under the prior is 1."""
        weights = 1 / ((1 - REBALANCE) * self.prior + REBALANCE / self.count)
        return weights / (self.prior * weights).sum()

    def loss(self, logits: torch.Tensor, ab_target: torch.Tensor) -> torch.Tensor:
        """The rebalanced cross-entropy between logits (N, Q, H, W) and the soft-encoded target a,b (network
        scale), averaged over pixels."""
        target = soft_encode(ab_target.float() * AB_SCALE, self.centres)
        per_pixel = -(target * F.log_softmax(logits.float(), dim=1)).sum(1)
        weights = self.class_weights()[target.argmax(1)]
        return (weights * per_pixel).mean()

    @property
    def decoding_temperature(self) -> float:
        """The annealed mean's temperature now: the training one, or the inference one, by the module's mode."""
        return TRAINING_TEMPERATURE if self.training else self.temperature

    def annealed(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (N, Q, H, W) → the class distribution sharpened at `decoding_temperature` (float32)."""
        return torch.softmax(logits.float() / self.decoding_temperature, dim=1)

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (N, Q, H, W) → a,b (N, 2, H, W) in network scale: the annealed mean at `decoding_temperature`."""
        ab = torch.einsum("nqhw,qc->nchw", self.annealed(logits), self.centres)
        return (ab / AB_SCALE).to(logits.dtype)
