"""Colour, not only pixels, on rgb tensors in [0, 1]: what PSNR and SSIM — mostly lightness and structure —
do not see when a colorizer washes its colours out or casts one tint over everything.

- colourfulness: Hasler & Süsstrunk, "Measuring colourfulness in natural images": σ_rgyb + 0.3·μ_rgyb
  of the opponent channels rg = R − G and yb = (R + G)/2 − B, on the 0…255 scale (0 for a gray image);
  over a set, the ratio of the outputs' mean to the targets' says how much colour survives.
- chroma error: the mean |Δa| + |Δb| in CIE Lab.
- cast: the mean chroma C* = √(a² + b²) an output puts on the pixels whose target is near-neutral (target
  C* below 5, `near_neutral`: grays, blacks, whites), against the targets' own there ("the truth's cast").
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from imgtrans.data.color import AB_SCALE, near_neutral, rgb_to_lab

COLOUR_SCORES = ("colourfulness", "chroma_error", "colourfulness_ratio", "cast", "cast_truth")  # `results()`


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) → (N,)."""
    r, g, b = (rgb.float() * 255).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    spread = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
    mean = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return spread + 0.3 * mean


def _ab(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W): a, b in CIE units."""
    return rgb_to_lab(rgb.float())[:, 1:] * AB_SCALE


@dataclass
class ColourSums:
    """Sums over the images of a set, added batch by batch (images of any size) and over processes."""

    images: float = 0.0
    output_colourfulness: float = 0.0
    target_colourfulness: float = 0.0
    chroma_error: float = 0.0
    cast: float = 0.0  # output chroma summed over near-neutral target pixels
    cast_truth: float = 0.0  # target chroma summed over the same pixels
    neutral_pixels: float = 0.0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Adds a batch; returns its per-image colourfulness and chroma error."""
        ab_pred, ab_target = _ab(pred), _ab(target)
        per_image = {"colourfulness": colourfulness(pred),
                     "chroma_error": (ab_pred - ab_target).abs().sum(1).flatten(1).mean(1)}
        chroma_target = ab_target.norm(dim=1)
        neutral = near_neutral(ab_target)[:, 0]
        self.images += len(pred)
        self.output_colourfulness += float(per_image["colourfulness"].sum())
        self.target_colourfulness += float(colourfulness(target).sum())
        self.chroma_error += float(per_image["chroma_error"].sum())
        self.cast += float(ab_pred.norm(dim=1)[neutral].sum())
        self.cast_truth += float(chroma_target[neutral].sum())
        self.neutral_pixels += float(neutral.sum())
        return per_image

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, sums: torch.Tensor) -> ColourSums:
        return cls(*sums.tolist())

    def results(self) -> dict[str, float]:
        """colourfulness, chroma_error, colourfulness_ratio (the outputs' mean over the targets') and — where
        targets have near-neutral pixels — cast and cast_truth."""
        if not self.images:
            return {}
        out, target = self.output_colourfulness / self.images, self.target_colourfulness / self.images
        values = {"colourfulness": out, "chroma_error": self.chroma_error / self.images}
        if target > 0:  # targets without any colour have no ratio
            values["colourfulness_ratio"] = out / target
        if self.neutral_pixels:
            values.update(cast=self.cast / self.neutral_pixels, cast_truth=self.cast_truth / self.neutral_pixels)
        return values
