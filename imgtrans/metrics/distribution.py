"""Distribution metrics over real and generated image sets: FID, KID (mean ± std over subsets) and IS, from
torchmetrics fed by a feature extractor — the standard FID Inception (torch-fidelity's port) when its
weights file is present, or any module (tests check the math with a fixed random network)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# Below this many images FID is dominated by its sample-size bias; KID is the better choice.
FID_MIN_IMAGES = 2048


class FidelityInception(nn.Module):
    """torch-fidelity's port of the TF FID Inception, taking rgb [0, 1] floats."""

    def __init__(self, weights: Path, feature: str = "2048"):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import (
            FeatureExtractorInceptionV3,
        )

        self.feature = feature
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", [feature],
                                               feature_extractor_weights_path=str(weights)).eval()
        self.num_features = 2048 if feature == "2048" else 1008

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        images = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.net(images)[0].reshape(images.shape[0], -1)


def kernel_inception_distance(features: nn.Module, real: torch.Tensor, fake: torch.Tensor, subset_size: int = 50,
                              subsets: int = 100) -> tuple[float, float, int]:
    """KID (unbiased MMD² with a cubic kernel) as mean, std over random subsets, and the subset size used
    (capped at the number of images)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    subset = min(subset_size, len(real), len(fake))
    kid = KernelInceptionDistance(feature=features, subsets=subsets, subset_size=subset)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    mean, std = kid.compute()
    return float(mean), float(std), subset


@dataclass
class DistributionResult:
    values: dict[str, float]
    settings: dict[str, str]


class DistributionMetrics:
    """FID, KID (mean ± std over subsets) and IS over real and generated image sets."""

    def __init__(self, features: nn.Module, logits: nn.Module | None = None, *, kid_subset_size: int = 50,
                 kid_subsets: int = 100, resize: str = "bilinear to 299×299 inside the Inception port"):
        self.features, self.logits = features, logits
        self.kid_subset_size, self.kid_subsets, self.resize = kid_subset_size, kid_subsets, resize
        self.real: list[torch.Tensor] = []
        self.fake: list[torch.Tensor] = []

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        self.real.append(real.float().cpu())
        self.fake.append(fake.float().cpu())

    def compute(self) -> DistributionResult:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.inception import InceptionScore

        real, fake = torch.cat(self.real), torch.cat(self.fake)
        n = min(len(real), len(fake))
        fid = FrechetInceptionDistance(feature=self.features, reset_real_features=True)
        fid.update(real, real=True)
        fid.update(fake, real=False)
        values = {"fid": float(fid.compute())}
        kid_mean, kid_std, subset = kernel_inception_distance(self.features, real, fake, self.kid_subset_size,
                                                              self.kid_subsets)
        values.update(kid=kid_mean, kid_std=kid_std)
        if self.logits is not None:
            inception_score = InceptionScore(feature=self.logits, splits=min(10, len(fake)))
            inception_score.update(fake)
            is_mean, is_std = inception_score.compute()
            values.update({"is": float(is_mean), "is_std": float(is_std)})
        settings = {"fid_n_real": str(len(real)), "fid_n_generated": str(len(fake)), "fid_resize": self.resize,
                    "kid_subset_size": str(subset), "kid_subsets": str(self.kid_subsets)}
        if n < FID_MIN_IMAGES:
            warnings.warn(f"FID on {n} images is dominated by sample-size bias (prefer KID below "
                          f"{FID_MIN_IMAGES} images); it is reported with N for comparison only", stacklevel=2)
            settings["fid_warning"] = f"N={n} < {FID_MIN_IMAGES}: biased, compare only at equal N"
        return DistributionResult(values, settings)
