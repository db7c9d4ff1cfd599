"""Discriminators: PatchGAN (70×70 receptive field with n_layers=3) and per-pixel."""

from __future__ import annotations

from torch import nn

from imgtrans.errors import ImgtransError
from imgtrans.nets.layers import norm_layer

DISCRIMINATORS = ("basic", "n_layers", "pixel")


class PatchDiscriminator(nn.Module):
    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        make_norm, bias = norm_layer(norm)
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias), make_norm(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1×1 PatchGAN: judges each pixel's colour independently."""

    def __init__(self, input_nc: int, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        make_norm, bias = norm_layer(norm)
        self.model = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=bias), make_norm(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 1, bias=bias))

    def forward(self, x):
        return self.model(x)


def build_discriminator(name: str, input_nc: int, *, ndf: int, n_layers: int, norm: str) -> nn.Module:
    if name == "basic":
        return PatchDiscriminator(input_nc, ndf, 3, norm)
    if name == "n_layers":
        return PatchDiscriminator(input_nc, ndf, n_layers, norm)
    if name == "pixel":
        return PixelDiscriminator(input_nc, ndf, norm)
    raise ImgtransError(f"invalid netD '{name}'; valid values: {', '.join(DISCRIMINATORS)}")
