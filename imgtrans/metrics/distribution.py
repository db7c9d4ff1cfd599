"""Distribution metrics over real and generated image sets: FID, KID (mean ± std over subsets) and IS, from
torchmetrics fed by a feature extractor — the standard FID Inception (torch-fidelity's port) when its
weights file is present, or any module (tests check the math with a fixed random network)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from imgtrans.weights import INCEPTION

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
        with INCEPTION.loading(weights):
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", [feature],
                                                   feature_extractor_weights_path=str(weights)).eval()
        self.num_features = 2048 if feature == "2048" else 1008

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        images = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.net(images)[0].reshape(images.shape[0], -1)


@contextmanager
def _features_kept() -> Iterator[None]:
    """Quiet torchmetrics' warning that KID and IS keep every image's features: 2,048 (or 1,008) numbers an image."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer")
        yield


def kernel_inception_distance(features: nn.Module, real: torch.Tensor, fake: torch.Tensor, subset_size: int = 50,
                              subsets: int = 100) -> tuple[float, float, int]:
    """KID (unbiased MMD² with a cubic kernel) as mean, std over random subsets, and the subset size used
    (capped at the number of images)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    subset = min(subset_size, len(real), len(fake))
    with _features_kept():
        kid = KernelInceptionDistance(feature=features, subsets=subsets, subset_size=subset)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    mean, std = kid.compute()
    return float(mean), float(std), subset


class _Taken(nn.Module):
    """torchmetrics' `feature` for features already taken: it hands them on."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@dataclass
class DistributionResult:
    values: dict[str, float]
    settings: dict[str, str]
    unavailable: str = ""  # why there are no values (too few images)


class DistributionMetrics:
    """FID, KID (mean ± std over subsets) and IS over real and generated image sets, fed batch by batch: each
    batch's features are taken as it comes, so the images may differ in size and are not all held."""

    def __init__(self, features: nn.Module, logits: nn.Module | None = None, *, kid_subset_size: int = 50,
                 kid_subsets: int = 100, resize: str = "bilinear to 299×299 inside the Inception port"):
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.inception import InceptionScore
        from torchmetrics.image.kid import KernelInceptionDistance

        self.features = features
        self.kid_subset_size, self.kid_subsets, self.resize = kid_subset_size, kid_subsets, resize
        taken = _Taken(features.num_features)  # FID and KID share the features, taken once
        self.fid = FrechetInceptionDistance(feature=taken, reset_real_features=True)
        # The subset size and the IS splits are bounded by the number of images, known at `compute`.
        with _features_kept():
            self.kid = KernelInceptionDistance(feature=taken, subsets=kid_subsets, subset_size=kid_subset_size)
            self.inception_score = InceptionScore(feature=logits) if logits is not None else None
        self.n_real = self.n_fake = 0

    @torch.no_grad()
    def update(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        real, fake = real.float().cpu(), fake.float().cpu()
        for images, is_real in ((real, True), (fake, False)):
            features = self.features(images)
            self.fid.update(features, real=is_real)
            self.kid.update(features, real=is_real)
        if self.inception_score is not None:
            self.inception_score.update(fake)
        self.n_real, self.n_fake = self.n_real + len(real), self.n_fake + len(fake)

    def compute(self) -> DistributionResult:
        n = min(self.n_real, self.n_fake)
        if n < 2:
            return DistributionResult({}, {}, f"FID, KID and IS need at least 2 images; {n} scored")
        values = {"fid": float(self.fid.compute())}
        subset = min(self.kid_subset_size, n)
        self.kid.subset_size = subset
        kid_mean, kid_std = self.kid.compute()
        values.update(kid=float(kid_mean), kid_std=float(kid_std))
        if self.inception_score is not None:
            self.inception_score.splits = min(10, self.n_fake)
            is_mean, is_std = self.inception_score.compute()
            values.update({"is": float(is_mean), "is_std": float(is_std)})
        settings = {"fid_n_real": str(self.n_real), "fid_n_generated": str(self.n_fake), "fid_resize": self.resize,
                    "kid_subset_size": str(subset), "kid_subsets": str(self.kid_subsets)}
        if n < FID_MIN_IMAGES:
            warnings.warn(f"FID on {n} images is dominated by sample-size bias (prefer KID below "
                          f"{FID_MIN_IMAGES} images); it is reported with N for comparison only", stacklevel=2)
            settings["fid_warning"] = f"N={n} < {FID_MIN_IMAGES}: biased, compare only at equal N"
        return DistributionResult(values, settings)
