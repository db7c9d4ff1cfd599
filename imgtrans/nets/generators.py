"""Image-to-image generators: the pix2pix U-Net and the Johnson-style ResNet."""

from __future__ import annotations

import math

import torch
from torch import nn

from imgtrans.errors import ImgtransError
from imgtrans.nets.chroma import LabOutput
from imgtrans.nets.colour_classes import TRAINING_TEMPERATURE, ColourClasses
from imgtrans.nets.lab_colorizer import LabColorizer
from imgtrans.nets.layers import Generator, norm_layer

GENERATORS = ("unet", "unet_256", "unet_128", "resnet_9blocks", "resnet_6blocks")
UPSAMPLING = ("transpose", "resize_conv")


def upsampling(kind: str, in_ch: int, out_ch: int, bias: bool = True) -> nn.Module:
    """×2 upsampling: a stride-2 transposed convolution (the papers'), or bilinear resizing and a 3×3
    convolution, which cannot leave the checkerboard of uneven kernel overlap (Odena et al. 2016,
    "Deconvolution and Checkerboard Artifacts"); bilinear rather than nearest: smoother colour, measured."""
    if kind == "transpose":
        return nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=bias)
    if kind == "resize_conv":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                             nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=bias))
    raise ImgtransError(f"invalid upsample '{kind}'; valid values: {', '.join(UPSAMPLING)}")


def final_activation(logits: bool) -> nn.Module:
    """tanh for outputs in [-1, 1]; none for class scores (logits)."""
    return nn.Identity() if logits else nn.Tanh()


def lab_output(lab: LabOutput | None, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The network's last activations y as they leave it: through the Lab colorizer's output stage, if it has one."""
    return y if lab is None else lab(x, y)


class UnetGenerator(Generator):
    """U-Net with `depth` stride-2 levels; the bottleneck is 1×1 for inputs of 2**depth pixels.

    Levels 4 … depth-2 (the ngf*8 blocks between the innermost and the outer
    three) use dropout in their decoder, as in the pix2pix paper.
    """

    def __init__(self, input_nc: int, output_nc: int, depth: int = 8, ngf: int = 64,
                 norm: str = "batch", dropout: bool = True, nz: int = 0, upsample: str = "transpose",
                 lab: LabOutput | None = None, logits: bool = False):
        super().__init__()
        self.lab = lab
        # nz > 0: a latent code z (N, nz) is broadcast and concatenated to the input of every encoder level
        # (BicycleGAN's where_add=all).
        self.z_dim = nz
        if depth < 5:
            raise ImgtransError(f"U-Net depth must be at least 5, got {depth}")
        make_norm, bias = norm_layer(norm)
        ch = [ngf * min(2 ** i, 8) for i in range(depth)]
        self.size_multiple = 2 ** depth
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in range(depth):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2, True)]
            layers.append(nn.Conv2d((input_nc if i == 0 else ch[i - 1]) + nz, ch[i], 4, 2, 1, bias=bias))
            if 0 < i < depth - 1:
                layers.append(make_norm(ch[i]))
            self.down.append(nn.Sequential(*layers))
        for i in range(depth):
            in_ch = ch[i] if i == depth - 1 else 2 * ch[i]
            if i == 0:
                layers = [nn.ReLU(True), upsampling(upsample, in_ch, output_nc), final_activation(logits)]
            else:
                layers = [nn.ReLU(True), upsampling(upsample, in_ch, ch[i - 1], bias), make_norm(ch[i - 1])]
                if dropout and 4 <= i <= depth - 2:
                    layers.append(nn.Dropout(0.5))
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        skips = []
        h = x
        for down in self.down:
            h = down(with_code(h, z) if self.z_dim else h)
            skips.append(h)
        y = self.up[-1](skips[-1])
        for i in range(len(self.up) - 2, -1, -1):
            y = self.up[i](torch.cat([skips[i], y], 1))
        return lab_output(self.lab, x, y)

    def features(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """Encoder activations after the given levels (for PatchNCE); layer 0 is the input itself."""
        return ([x] if 0 in layers else []) + activations(self.down, x, layers, first_index=1)

    default_nce_layers = "0,1,2,3,4"


def activations(modules, x: torch.Tensor, layers: list[int], first_index: int) -> list[torch.Tensor]:
    """Run `modules` in sequence, keeping the outputs of those numbered in `layers`; stop after the last."""
    out = []
    for i, module in enumerate(modules, start=first_index):
        if i > max(layers):
            break
        x = module(x)
        if i in layers:
            out.append(x)
    return out


def with_code(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Concatenate a latent code (N, nz), broadcast over H×W, to the channels of x."""
    return torch.cat([x, z[:, :, None, None].to(x.dtype).expand(-1, -1, *x.shape[-2:])], 1)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, make_norm, bias: bool, dropout: bool):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make_norm(dim),
                                   nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make_norm(dim)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(Generator):
    """c7s1-ngf, two stride-2 downsamplings, n_blocks residual blocks, two upsamplings, c7s1-out."""

    def __init__(self, input_nc: int, output_nc: int, n_blocks: int = 9, ngf: int = 64,
                 norm: str = "batch", dropout: bool = False, upsample: str = "transpose", lab: LabOutput | None = None,
                 logits: bool = False):
        super().__init__()
        self.lab = lab
        make_norm, bias = norm_layer(norm)
        self.size_multiple = 4
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=bias),
                                   make_norm(ngf), nn.ReLU(True)]
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, 2, 1, bias=bias), make_norm(ngf * mult * 2),
                       nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, make_norm, bias, dropout) for _ in range(n_blocks)]
        for mult in (4, 2):
            up = nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, 2, 1, output_padding=1, bias=bias) \
                if upsample == "transpose" else upsampling(upsample, ngf * mult, ngf * mult // 2, bias)
            layers += [up, make_norm(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), final_activation(logits)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lab_output(self.lab, x, self.model(x))

    def features(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """Activations after the given layers of the sequential model (layer 0: the padded input)."""
        return activations(self.model, x, layers, first_index=0)

    # The reference CUT choice: input, two downsamplings, and the first two residual blocks.
    default_nce_layers = "0,4,8,12,16"


def unet_depth(name: str, crop_size: int) -> int:
    if name == "unet_256":
        return 8
    if name == "unet_128":
        return 7
    depth = int(round(math.log2(crop_size)))
    if 2 ** depth != crop_size:
        raise ImgtransError(f"netG=unet needs a power-of-two crop_size, got {crop_size}; "
                            "use unet_128/unet_256 or a resnet generator")
    return depth


def build_generator(name: str, input_nc: int, output_nc: int, *, ngf: int, norm: str, dropout: bool,
                    crop_size: int, nz: int = 0, upsample: str = "transpose", gamut: bool = False,
                    chroma_blur: float = 0.0, chroma_filter: str = "guided",
                    colour_classes: bool = False, class_stride: int = 1,
                    class_temperature: float = TRAINING_TEMPERATURE, neutral_gate: bool = False,
                    neutral_annealing: bool = False) -> nn.Module:
    """`unet` is as deep as the crop allows (1×1 bottleneck); unet_256/unet_128 fix the depth. `gamut`,
    `chroma_blur`, `chroma_filter`: the output is a,b for the L of the input's first channel, low-passed and kept
    inside the sRGB gamut (`LabOutput`). `colour_classes`: the network scores colour classes (at 1 / `class_stride`
    of the resolution) and decodes them into that a,b (at `class_temperature` in eval mode); `neutral_gate`: it
    also says where a pixel is gray (`LabColorizer`), a decision annealed as the classes are with
    `neutral_annealing`."""
    lab = LabOutput(gamut, chroma_blur, chroma_filter) if gamut or chroma_blur > 0 else None
    if name not in GENERATORS:
        raise ImgtransError(f"invalid netG '{name}'; valid values: {', '.join(GENERATORS)}")
    if not (colour_classes or neutral_gate):
        return _network(name, input_nc, output_nc, ngf, norm, dropout, crop_size, nz, upsample, lab, logits=False)
    classes = ColourClasses(class_temperature) if colour_classes else None
    net = _network(name, input_nc, LabColorizer.channels(classes, neutral_gate, class_stride), ngf, norm, dropout,
                   crop_size, nz, upsample, None, logits=True)
    return LabColorizer(net, lab, classes, neutral_gate, class_stride, neutral_annealing)


def _network(name: str, input_nc: int, output_nc: int, ngf: int, norm: str, dropout: bool, crop_size: int, nz: int,
             upsample: str, lab: LabOutput | None, logits: bool) -> Generator:
    if name.startswith("unet"):
        depth = unet_depth(name, crop_size)
        if crop_size % 2 ** depth:
            raise ImgtransError(f"netG={name} needs crop_size to be a multiple of {2 ** depth}, got {crop_size}")
        return UnetGenerator(input_nc, output_nc, depth, ngf, norm, dropout, nz, upsample, lab, logits)
    if nz:
        raise ImgtransError(f"netG={name} cannot take a latent code at every layer; use a unet or where_add=input")
    return ResnetGenerator(input_nc, output_nc, 9 if name == "resnet_9blocks" else 6, ngf, norm, dropout, upsample,
                           lab, logits)
