"""sRGB ↔ CIE Lab (D65) in torch, and the [-1, 1] scaling networks see.

Lab tensors are scaled so that L ∈ [0, 100] ↦ [-1, 1] and a, b ∈ [-110, 110]
↦ [-1, 1]; `lab_to_rgb` accepts the same scaling back.
"""

from __future__ import annotations

import torch

_RGB_TO_XYZ = torch.tensor([
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
])
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ.double()).float()
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])
_EPS = 216 / 24389
_KAPPA = 24389 / 27
AB_SCALE = 110.0
NEUTRAL_CHROMA = 5.0  # C*ab below which a colour counts as near-neutral: grays, blacks, whites


def _mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", matrix.to(x), x)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """rgb in [0, 1], (..., 3, H, W) → Lab scaled to [-1, 1]."""
    xyz = _mix(_RGB_TO_XYZ, srgb_to_linear(rgb)) / _WHITE.to(rgb).view(3, 1, 1)
    f = torch.where(xyz > _EPS, xyz.clamp(min=_EPS) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    fx, fy, fz = f.unbind(-3)
    lab = torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], -3)
    return torch.stack([lab[..., 0, :, :] / 50 - 1, lab[..., 1, :, :] / AB_SCALE,
                        lab[..., 2, :, :] / AB_SCALE], -3)


def lab_to_linear_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab scaled to [-1, 1], (..., 3, H, W) → linear rgb, unclipped: outside [0, 1] where out of gamut."""
    L = (lab[..., 0, :, :] + 1) * 50
    a = lab[..., 1, :, :] * AB_SCALE
    b = lab[..., 2, :, :] * AB_SCALE
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], -3)
    xyz = torch.where(f ** 3 > _EPS, f ** 3, (116 * f - 16) / _KAPPA) * _WHITE.to(lab).view(3, 1, 1)
    return _mix(_XYZ_TO_RGB, xyz)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab scaled to [-1, 1], (..., 3, H, W) → rgb in [0, 1] (out-of-gamut values clipped)."""
    return linear_to_srgb(lab_to_linear_rgb(lab)).clamp(0, 1)


def in_srgb_gamut(lab: torch.Tensor, tolerance: float = 1e-5) -> torch.Tensor:
    """(..., 1, H, W): whether each Lab colour (scaled to [-1, 1]) is an sRGB colour, up to `tolerance` in linear
    rgb (the rounding of valid colours; near black a larger one would admit visible colour)."""
    rgb = lab_to_linear_rgb(lab)
    return ((rgb >= -tolerance) & (rgb <= 1 + tolerance)).all(-3, keepdim=True)


def rgb_to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as PIL's convert('L'): (..., 3, H, W) → (..., 1, H, W)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype, device=rgb.device)
    return torch.einsum("c,...chw->...hw", weights, rgb).unsqueeze(-3)


def to_signed(x: torch.Tensor) -> torch.Tensor:
    return x * 2 - 1


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)


def near_neutral(ab: torch.Tensor) -> torch.Tensor:
    """a,b in CIE units, (..., 2, H, W) → (..., 1, H, W): whether each colour is near-neutral (C*ab below
    `NEUTRAL_CHROMA`) — the pixels a colorizer's cast is measured on and its neutral gate learns."""
    return ab.float().norm(dim=-3, keepdim=True) < NEUTRAL_CHROMA
