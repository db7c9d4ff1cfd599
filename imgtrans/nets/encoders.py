"""Encoders from an image to a Gaussian latent (mean, log-variance): for BicycleGAN's E and the CVAE."""

from __future__ import annotations

import torch
from torch import nn

from imgtrans.errors import ImgtransError
from imgtrans.nets.layers import norm_layer

ENCODERS = ("resnet", "conv")


class ConvEncoder(nn.Module):
    """Strided convolutions (kernel 4, or `kernel`), then either global average pooling (any input size)
    or, with `flat_size`, a fully connected layer over the flattened map (fixed input size)."""

    def __init__(self, input_nc: int, nz: int, widths: tuple[int, ...] = (64, 128, 256), kernel: int = 4,
                 norm: str = "none", flat_size: int = 0, hidden: int = 0):
        super().__init__()
        make_norm, bias = norm_layer(norm)
        layers: list[nn.Module] = []
        prev = input_nc
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(prev, width, kernel, 2, (kernel - 1) // 2, bias=bias or i == 0)]
            if i:
                layers.append(make_norm(width))
            layers.append(nn.LeakyReLU(0.2, True))
            prev = width
        self.conv = nn.Sequential(*layers)
        if flat_size:
            features = prev * flat_size * flat_size
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.LeakyReLU(0.2, True)) \
                if hidden else nn.Flatten()
            features = hidden or features
        else:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            features = prev
        self.mu = nn.Linear(features, nz)
        self.logvar = nn.Linear(features, nz)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.head(self.conv(x))
        return self.mu(h), self.logvar(h)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, make_norm):
        super().__init__()
        self.main = nn.Sequential(make_norm(cin), nn.LeakyReLU(0.2, True), nn.Conv2d(cin, cin, 3, 1, 1),
                                  make_norm(cin), nn.LeakyReLU(0.2, True), nn.Conv2d(cin, cout, 3, 1, 1),
                                  nn.AvgPool2d(2))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(cin, cout, 1))

    def forward(self, x):
        return self.main(x) + self.shortcut(x)


class ResnetEncoder(nn.Module):
    """BicycleGAN's E_ResNet: residual downsampling blocks, global pooling, linear heads."""

    def __init__(self, input_nc: int, nz: int, ndf: int = 64, n_blocks: int = 4, norm: str = "instance"):
        super().__init__()
        make_norm, _ = norm_layer(norm)
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, 2, 1)]
        for n in range(1, n_blocks):
            layers.append(_BasicBlock(ndf * min(n, 4), ndf * min(n + 1, 4), make_norm))
        layers += [nn.LeakyReLU(0.2, True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.conv = nn.Sequential(*layers)
        out = ndf * min(n_blocks, 4)
        self.mu, self.logvar = nn.Linear(out, nz), nn.Linear(out, nz)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x)
        return self.mu(h), self.logvar(h)


def build_encoder(name: str, input_nc: int, nz: int, *, nef: int, norm: str) -> nn.Module:
    if name == "resnet":
        return ResnetEncoder(input_nc, nz, nef, 4, norm)
    if name == "conv":
        return ConvEncoder(input_nc, nz, (nef, nef * 2, nef * 4), norm=norm)
    raise ImgtransError(f"invalid netE '{name}'; valid values: {', '.join(ENCODERS)}")


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, σ²) ‖ N(0, 1)), summed over latent dimensions, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
