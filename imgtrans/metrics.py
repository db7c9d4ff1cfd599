"""Image-quality metrics on rgb tensors in [0, 1], computed per image."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB for each image of a (N, C, H, W) batch."""
    return peak_signal_noise_ratio(pred.float(), target.float(), data_range=data_range, reduction="none",
                                   dim=(1, 2, 3))


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM (Gaussian window 11, σ 1.5, as in Wang et al.) for each image."""
    return structural_similarity_index_measure(pred.float(), target.float(), data_range=data_range,
                                               reduction="none")
