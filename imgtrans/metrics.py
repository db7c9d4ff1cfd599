"""Image-quality metrics on rgb tensors in [0, 1].

PSNR, SSIM and LPIPS are per image (report mean ± std). FID, KID and IS are
distribution metrics from torchmetrics, fed by a feature extractor module:
the standard FID Inception (torch-fidelity's port) when its weights file is
present, or any module — tests use a fixed random network to check the math.

Pretrained weights are never downloaded: they are read from the torch hub
cache ($TORCH_HOME/hub/checkpoints, under the file names the libraries use)
or from an explicit path. A missing file makes that metric unavailable, with
a message saying which file to provide, and everything else carries on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import math

import torch
from torch import nn
from torch.nn import functional as F

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
# Below this many images FID is dominated by its sample-size bias; KID is the better choice.
FID_MIN_IMAGES = 2048


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


@dataclass(frozen=True)
class Unavailable:
    metric: str
    message: str


def weights_file(filename: str, explicit: str = "") -> Path | None:
    """An explicit path if given, else the torch hub cache entry, if the file exists."""
    if explicit:
        path = Path(explicit).expanduser()
        return path if path.is_file() else None
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    return path if path.is_file() else None


def missing_message(metric: str, filename: str, url: str, explicit: str, option: str) -> str:
    where = explicit or str(Path(torch.hub.get_dir()) / "checkpoints" / filename)
    return (f"{metric} unavailable: weights file {where} not found; download {url} there on a machine with "
            f"network access, or pass {option}=<path>")


# --- LPIPS ---------------------------------------------------------------------

def lpips_network(alexnet_weights: Path | None) -> nn.Module:
    """LPIPS v0.1 with an AlexNet backbone. The linear heads ship with the lpips package; the backbone is
    loaded from `alexnet_weights` (torchvision's file), or left random when None (for tests of the math)."""
    import lpips

    net = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    if alexnet_weights is not None:
        state = torch.load(alexnet_weights, map_location="cpu", weights_only=True)
        with torch.no_grad():
            for slice_name, block in net.net.named_children():
                for name, param in block.named_parameters():
                    param.copy_(state[f"features.{name}"])
    return net.eval().requires_grad_(False)


def lpips_per_image(net: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(pred.float() * 2 - 1, target.float() * 2 - 1).flatten()


# --- Inception features ------------------------------------------------------------

class FidelityInception(nn.Module):
    """torch-fidelity's port of the TF FID Inception, taking rgb [0, 1] floats."""

    def __init__(self, weights: Path, feature: str = "2048"):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

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
