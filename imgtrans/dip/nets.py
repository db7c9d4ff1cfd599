"""Networks for Deep Image Prior: a fixed noise tensor in, an image in [-1, 1] out.

`skip` is DIP's encoder–decoder (Ulyanov et al. 2018): stride-2 encoder
levels, bilinear upsampling, and thin 1×1 skip branches. `unet` and `resnet`
reuse the translation generators; `dncnn` is the DnCNN body (Zhang et al.
2017) ending in tanh — it maps noise to the image, so DnCNN's residual
(predict the noise of an input image) does not apply.
"""

from __future__ import annotations

import torch
from torch import nn

from imgtrans.errors import ImgtransError
from imgtrans.nets.generators import ResnetGenerator, UnetGenerator
from imgtrans.nets.layers import Generator

DIP_NETS = ("skip", "unet", "resnet", "dncnn")


def _conv_block(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(in_ch, out_ch, kernel, stride), nn.BatchNorm2d(out_ch),
            nn.LeakyReLU(0.2, True)]


class SkipNet(Generator):
    """`depth` levels of width `width`, each with a `skip`-channel 1×1 branch around the deeper levels."""

    def __init__(self, input_nc: int, output_nc: int, width: int = 128, depth: int = 5, skip: int = 4):
        super().__init__()
        self.size_multiple = 2 ** depth
        self.down = nn.ModuleList()
        self.skips = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in range(depth):
            in_ch = input_nc if level == 0 else width
            self.skips.append(nn.Sequential(*_conv_block(in_ch, skip, 1)) if skip else nn.Identity())
            self.down.append(nn.Sequential(*_conv_block(in_ch, width, 3, stride=2), *_conv_block(width, width, 3)))
            self.up.append(nn.Sequential(nn.BatchNorm2d(width + skip), *_conv_block(width + skip, width, 3),
                                         *_conv_block(width, width, 1)))
        self.skip_channels = skip
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.head = nn.Sequential(nn.Conv2d(width, output_nc, 1), nn.Tanh())

    def forward(self, x):
        branches = []
        for down, skip in zip(self.down, self.skips):
            branches.append(skip(x) if self.skip_channels else None)
            x = down(x)
        for level in range(len(self.down) - 1, -1, -1):
            x = self.upsample(x)
            if self.skip_channels:
                x = torch.cat([branches[level], x], 1)
            x = self.up[level](x)
        return self.head(x)


class DnCNN(Generator):
    """conv+ReLU, (conv+BN+ReLU) × (depth − 2), conv, tanh; full resolution throughout."""

    def __init__(self, input_nc: int, output_nc: int, width: int = 64, depth: int = 17):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(input_nc, width, 3, padding=1), nn.ReLU(True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        layers += [nn.Conv2d(width, output_nc, 3, padding=1), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def build_dip_net(name: str, input_nc: int, output_nc: int, *, width: int, depth: int) -> nn.Module:
    """`depth` is the number of levels (skip, unet), residual blocks (resnet) or layers (dncnn)."""
    if name == "skip":
        return SkipNet(input_nc, output_nc, width, depth)
    if name == "unet":
        return UnetGenerator(input_nc, output_nc, depth=depth, ngf=width, norm="batch", dropout=False)
    if name == "resnet":
        return ResnetGenerator(input_nc, output_nc, n_blocks=depth, ngf=width, norm="batch")
    if name == "dncnn":
        if depth < 3:
            raise ImgtransError(f"dncnn needs depth of at least 3 layers, got {depth}")
        return DnCNN(input_nc, output_nc, width, depth)
    raise ImgtransError(f"invalid net '{name}'; valid values: {', '.join(DIP_NETS)}")
