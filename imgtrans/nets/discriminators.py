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


class MultiscaleDiscriminator(nn.Module):
    """`num_D` discriminators on the image downsampled ×1, ×2, …; returns a list of patch maps."""

    def __init__(self, make, num_D: int):
        super().__init__()
        self.nets = nn.ModuleList(make() for _ in range(num_D))
        self.down = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x):
        outputs = []
        for i, net in enumerate(self.nets):
            if i:
                x = self.down(x)
            outputs.append(net(x))
        return outputs


def check_patch_size(size: int, name: str, n_layers: int, num_D: int) -> None:
    """A PatchGAN halves its input once per layer (rounding down), then two 4 × 4 convolutions need 3 × 3 of it; a
    multi-scale discriminator's coarser scales see the input halved (rounding up) first."""
    if name == "pixel":
        return
    layers, side = (3 if name == "basic" else n_layers), size
    for _ in range(num_D - 1):
        side = -(-side // 2)
    if side // 2 ** layers < 3:
        raise ImgtransError(f"crop_size {size} is too small for the discriminator ({layers} layers, num_D {num_D}): "
                            f"give crop_size of at least {3 * 2 ** (layers + num_D - 1)}, or fewer num_D or "
                            "n_layers_D")


def build_discriminator(name: str, input_nc: int, *, ndf: int, n_layers: int, norm: str, num_D: int = 1) -> nn.Module:
    if num_D > 1:
        return MultiscaleDiscriminator(
            lambda: build_discriminator(name, input_nc, ndf=ndf, n_layers=n_layers, norm=norm), num_D)
    if name == "basic":
        return PatchDiscriminator(input_nc, ndf, 3, norm)
    if name == "n_layers":
        return PatchDiscriminator(input_nc, ndf, n_layers, norm)
    if name == "pixel":
        return PixelDiscriminator(input_nc, ndf, norm)
    raise ImgtransError(f"invalid netD '{name}'; valid values: {', '.join(DISCRIMINATORS)}")
