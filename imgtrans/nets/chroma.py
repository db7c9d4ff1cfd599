"""What a Lab colorizer's a,b pass through before they leave the network: a fixed low-pass at inference, then
the gamut bound.

Colour is resolved at a coarser scale than lightness, by eye and by image codecs (4:2:0 chroma subsampling);
Zhang et al., "Colorful Image Colorization", predict a,b at a quarter of the resolution for that reason. A short
GAN run's a,b carry fine noise that the eye reads as coloured speckle and SSIM as lost structure; a Gaussian
over a,b alone (L is the input's, untouched) removes it and keeps every edge of lightness. It acts at inference
only (eval mode: validation, evaluate, export): applied during training as well, the generator learned to push
more contrast through it and gained a third as much (docs/MODEL_ZOO.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from imgtrans.nets.gamut import LabGamutBound


class ChromaLowPass(nn.Module):
    """A separable Gaussian of standard deviation `sigma` px over each channel, reflecting at the borders; in eval
    mode only (training passes the input through). Takes the lightness like the guided filter, and ignores it."""

    def __init__(self, sigma: float, channels: int = 2):
        super().__init__()
        self.radius, self.channels = max(1, math.ceil(3 * sigma)), channels
        taps = torch.arange(-self.radius, self.radius + 1, dtype=torch.float32)
        weights = torch.exp(-taps ** 2 / (2 * sigma ** 2))
        weights = (weights / weights.sum()).repeat(channels, 1)
        # Derived from the config, so not part of the weights (checkpoints stay as they were).
        self.register_buffer("rows", weights[:, None, None, :].clone(), persistent=False)
        self.register_buffer("cols", weights[:, None, :, None].clone(), persistent=False)

    def forward(self, ab: torch.Tensor, lightness: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            return ab
        r = self.radius
        ab = F.conv2d(border_padded(ab, (r, r, 0, 0)), self.rows.to(ab.dtype), groups=self.channels)
        return F.conv2d(border_padded(ab, (0, 0, r, r)), self.cols.to(ab.dtype), groups=self.channels)


def border_padded(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """`x` padded (left, right, top, bottom) by reflecting at its borders; an image no wider or taller than its
    padding on that side (reflection needs it larger), by repeating its edge."""
    height, width = x.shape[-2:]
    fits = max(pads[:2]) < width and max(pads[2:]) < height
    return F.pad(x, pads, mode="reflect" if fits else "replicate")


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The mean over each (2r+1)² window, reflecting at the borders."""
    r = radius
    return F.avg_pool2d(border_padded(x, (r, r, r, r)), 2 * r + 1, stride=1)


class ChromaGuidedFilter(nn.Module):
    """He, Sun and Tang, "Guided Image Filtering": over each (2r+1)² window a and b are fitted as a linear function
    of lightness, and the fits averaged — smooth where L is flat, changing where L changes, so colour does not
    bleed across a lightness edge as under a Gaussian (a gray road beside a green field keeps its gray). In eval
    mode only, like the Gaussian."""

    EPS = 1e-3  # regularisation, in units of the guide's [0, 1] range squared: L steps above ~0.03 are edges

    def __init__(self, radius: int):
        super().__init__()
        self.radius = radius

    def _box(self, x: torch.Tensor) -> torch.Tensor:
        return box_mean(x, self.radius)

    def forward(self, ab: torch.Tensor, lightness: torch.Tensor) -> torch.Tensor:
        if self.training:
            return ab
        guide, values = ((lightness.float() + 1) / 2).expand_as(ab), ab.float()
        mean_guide, mean_values = self._box(guide), self._box(values)
        variance = self._box(guide * guide) - mean_guide * mean_guide
        slope = (self._box(guide * values) - mean_guide * mean_values) / (variance + self.EPS)
        offset = mean_values - slope * mean_guide
        return (self._box(slope) * guide + self._box(offset)).to(ab.dtype)


class LabOutput(nn.Module):
    """A colorizer's a,b for the L in its input's first channel: low-passed at inference (chroma_blur > 0; a
    guided filter following L, or a Gaussian), weighted by how much colour each pixel keeps (a neutral gate's
    1 − p(neutral), after the low-pass so that it keeps its sharp edges), then bounded by the sRGB gamut at that
    L (gamut)."""

    def __init__(self, gamut: bool, chroma_blur: float, chroma_filter: str = "guided"):
        super().__init__()
        guided = chroma_filter == "guided"
        self.low_pass = None if chroma_blur <= 0 else \
            ChromaGuidedFilter(math.ceil(2.5 * chroma_blur)) if guided else ChromaLowPass(chroma_blur)
        self.gamut = LabGamutBound() if gamut else None

    def forward(self, x: torch.Tensor, ab: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        if self.low_pass is not None:
            ab = self.low_pass(ab, x[:, :1])
        if keep is not None:
            ab = ab * keep.to(ab.dtype)
        return ab if self.gamut is None else self.gamut(x[:, :1], ab)
