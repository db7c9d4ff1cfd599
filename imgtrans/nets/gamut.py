"""Colour a colorizer may output: each predicted a,b is scaled towards gray until (L, a, b) is an sRGB colour.

At L = 0 and L = 100 the sRGB gamut holds only gray, so black and white come out without colour by
construction; elsewhere the bound is what the display can show at that lightness and hue (a dark blue may be
saturated, a dark red less so). Nothing is learned: the network's a,b are scaled by the largest t ∈ [0, 1]
that stays in gamut, found by bisection — elementwise arithmetic that ONNX exports as it is.
"""

from __future__ import annotations

import torch
from torch import nn

from imgtrans.data.color import in_srgb_gamut


class LabGamutBound(nn.Module):
    def __init__(self, steps: int = 16):
        super().__init__()
        self.steps = steps  # the scale is found to within 2^-steps

    def forward(self, lightness: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """lightness (N, 1, H, W) and ab (N, 2, H, W) in network space → ab within the gamut."""
        with torch.no_grad():
            lightness, direction = lightness.float(), ab.float()

            def inside(t: torch.Tensor) -> torch.Tensor:
                return in_srgb_gamut(torch.cat([lightness, direction * t], 1))

            low, high = torch.zeros_like(lightness), torch.ones_like(lightness)
            for _ in range(self.steps):
                middle = (low + high) / 2
                ok = inside(middle)
                low, high = torch.where(ok, middle, low), torch.where(ok, high, middle)
            scale = torch.where(inside(high), high, low)
        return ab * scale.to(ab.dtype)
