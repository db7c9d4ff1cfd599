"""Skip-free networks of the baselines in the project report “A Comparison of Generative Models for Image
Translation” (NPTU, 2023): the CVAE's decoder and the plain CGAN's nets."""

from __future__ import annotations

import torch
from torch import nn

from imgtrans.nets.layers import Generator


def strided_convs(input_nc: int, widths: tuple[int, ...], kernel: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = input_nc
    for width in widths:
        layers += [nn.Conv2d(prev, width, kernel, 2, (kernel - 1) // 2), nn.LeakyReLU(0.2, True)]
        prev = width
    return nn.Sequential(*layers)


def up_convs(input_nc: int, widths: tuple[int, ...], output_nc: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = input_nc
    for width in widths:
        layers += [nn.ConvTranspose2d(prev, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        prev = width
    layers += [nn.ConvTranspose2d(prev, output_nc, 4, 2, 1), nn.Tanh()]
    return nn.Sequential(*layers)


class CodeDecoder(Generator):
    """Decodes a latent code, conditioned on the input image: z → FC → (C, s/16, s/16) map, concatenated
    with a skip-free encoding of the input, → 4 transposed convs. z=None decodes the mean (zeros)."""

    def __init__(self, input_nc: int, output_nc: int, nz: int, crop_size: int, widths: tuple[int, ...]):
        super().__init__()
        self.z_dim, self.cells = nz, crop_size // 2 ** len(widths)
        self.size_multiple = 2 ** len(widths)
        self.condition = strided_convs(input_nc, widths)
        self.fc = nn.Linear(nz, widths[-1] * self.cells * self.cells)
        self.up = up_convs(2 * widths[-1], tuple(reversed(widths[:-1])), output_nc)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        cond = self.condition(x)
        if z is None:
            z = torch.zeros(x.shape[0], self.z_dim, device=x.device, dtype=x.dtype)
        code = self.fc(z).view(x.shape[0], -1, self.cells, self.cells)
        # Inputs of another size than the training crop get the code map stretched to fit; unconditionally,
        # so that an exported graph keeps dynamic height and width (identity at the training size).
        code = nn.functional.interpolate(code, size=cond.shape[-2:], mode="nearest")
        return self.up(torch.cat([cond, code.to(cond.dtype)], 1))


class PixelwiseGenerator(Generator):
    """That report's CGAN generator: a per-pixel dense layer (1×1 conv) with batch norm, dropout and ReLU, a
    stride-2 transposed conv and a 2× upsampling to work at 4× the input size, two stride-1 transposed
    convs, and a stride-4 conv back to the input size. No code vector and no skips: each output pixel sees
    only a small window of the input, and the dropout is the only noise."""

    def __init__(self, input_nc: int, output_nc: int, widths: tuple[int, int, int, int], dropout: float = 0.45):
        super().__init__()
        w1, w2, w3, w4 = widths

        def block(conv: nn.Module, width: int) -> list[nn.Module]:
            return [conv, nn.BatchNorm2d(width), nn.ReLU(True)]

        self.model = nn.Sequential(
            nn.Conv2d(input_nc, w1, 1), nn.BatchNorm2d(w1), nn.Dropout(dropout), nn.ReLU(True),
            *block(nn.ConvTranspose2d(w1, w2, 4, 2, 1), w2),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *block(nn.ConvTranspose2d(w2, w3, 3, 1, 1), w3),
            *block(nn.ConvTranspose2d(w3, w4, 3, 1, 1), w4),
            nn.Conv2d(w4, output_nc, 4, 4), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NaiveDiscriminator(nn.Module):
    """4 strided convs with dropout and a 1-channel conv: one logit per 16×16-strided patch (the sigmoid
    lives in the BCE loss). Judging patches, not the whole image, ties its verdict to the input's layout."""

    def __init__(self, input_nc: int, ndf: int, dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        prev = input_nc
        for i in range(4):
            width = ndf * 2 ** i
            layers += [nn.Conv2d(prev, width, 4, 2, 1), nn.LeakyReLU(0.2, True), nn.Dropout(dropout)]
            prev = width
        layers.append(nn.Conv2d(prev, 1, 3, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
