"""Pixel metrics on rgb tensors in [0, 1], per image: PSNR and SSIM (computed in float64)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

# SSIM's window and constants, as in "Image Quality Assessment: From Error Visibility to Structural Similarity".
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB for each image of a (N, C, H, W) batch (computed in float64)."""
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    return ((2 * math.log(data_range) - torch.log(mse)) * (10 / math.log(10))).float()


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM (Gaussian window 11, σ 1.5) for each image, in float64 — in float32 the variance terms lose ~1e-4
    of the score —, averaged over every pixel with the borders reflected: torchmetrics' definition (the
    tests hold the two equal), without importing torchmetrics (and torchvision) into every training process."""
    x, y = pred.double(), target.double()
    channels, half = x.shape[1], SSIM_WINDOW // 2
    offsets = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    gauss = torch.exp(-(offsets / SSIM_SIGMA).pow(2) / 2)
    gauss = gauss / gauss.sum()
    window = (gauss[:, None] * gauss[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)
    x, y = (F.pad(t, (half,) * 4, mode="reflect") for t in (x, y))
    means = F.conv2d(torch.cat((x, y, x * x, y * y, x * y)), window, groups=channels).split(len(pred))
    mu_x, mu_y = means[0], means[1]
    var_x = (means[2] - mu_x.pow(2)).clamp(min=0)
    var_y = (means[3] - mu_y.pow(2)).clamp(min=0)
    cov = means[4] - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2))
    return ssim.flatten(1).mean(1).float()
