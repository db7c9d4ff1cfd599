"""Image-to-image generators: the pix2pix U-Net, the Johnson-style ResNet, and a U-Net on a pretrainable ImageNet
encoder."""

from __future__ import annotations

import math
import typing

import torch
from torch import nn

from imgtrans.config import NetG
from imgtrans.errors import ImgtransError
from imgtrans.nets.backbones import BACKBONES
from imgtrans.nets.chroma import LabOutput
from imgtrans.nets.colour_classes import TRAINING_TEMPERATURE, ColourClasses
from imgtrans.nets.imagenet import ImagenetInput
from imgtrans.nets.lab_colorizer import LabColorizer
from imgtrans.nets.layers import Generator, freeze_batch_norm_statistics, norm_layer

GENERATORS = typing.get_args(NetG)
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

    size_multiple = 4  # two stride-2 downsamplings

    def __init__(self, input_nc: int, output_nc: int, n_blocks: int = 9, ngf: int = 64,
                 norm: str = "batch", dropout: bool = False, upsample: str = "transpose", lab: LabOutput | None = None,
                 logits: bool = False):
        super().__init__()
        self.lab = lab
        make_norm, bias = norm_layer(norm)
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


class EncoderUnetGenerator(Generator):
    """A U-Net whose encoder is an ImageNet classifier (`nets.backbones`: ResNet-18, ResNet-34,
    EfficientNet-Lite0), which can start from its ImageNet weights (`encoder_weights`, loaded by
    `load_pretrained_encoders`): a colorizer then knows the shapes of a million photographs before its first
    training tile, where the pix2pix U-Net learns every hue from the tiles alone. The input (1 or 3 channels in
    [-1, 1]) is given to the encoder as ImageNet's images were; the decoder upsamples from 1/32 of the size, joined
    at each scale by the encoder's activations and at the last by the input itself. Its widths are fixed, so `ngf`
    does not apply. With `full_size_block` the input joins a convolution and ReLU at full size before the output's
    convolution; without it the output is one convolution of the input and the upsampled half-size features,
    linear in the input at full size."""

    size_multiple = 32
    default_nce_layers = "0,1,2,3,4"  # the input, and the encoder at 1/2 … 1/16 of the size
    DECODER_WIDTHS = (32, 64, 64, 128, 256)  # the decoder at full size, 1/2 … 1/16

    def __init__(self, backbone: str, input_nc: int, output_nc: int, norm: str = "batch", dropout: bool = False,
                 upsample: str = "resize_conv", lab: LabOutput | None = None, logits: bool = False,
                 encoder_weights: str = "imagenet", encoder_norm: str = "frozen", full_size_block: bool = False):
        super().__init__()
        self.name = f"{backbone}_unet"
        if input_nc not in (1, 3):
            raise ImgtransError(f"netG={self.name} takes 1- or 3-channel inputs (its encoder's are ImageNet "
                                f"photographs), got {input_nc}; use a unet or resnet generator")
        self.lab, self.encoder_weights, self.backbone = lab, encoder_weights, BACKBONES[backbone]
        self.pretrained = encoder_weights != "none"
        self.input = ImagenetInput()
        self.encoder = self.backbone.build()
        if encoder_norm == "frozen" and self.pretrained:
            freeze_batch_norm_statistics(self.encoder)
        make_norm, bias = norm_layer(norm)
        skips, widths = (input_nc, *self.backbone.widths[:-1]), self.DECODER_WIDTHS
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()

        def conv_block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, 1, 1, bias=bias), make_norm(cout), nn.ReLU(True)]

        for level in range(len(widths) - 1, -1, -1):  # from 1/16 of the size up to full size
            deeper = self.backbone.widths[-1] if level == len(widths) - 1 else widths[level + 1]
            self.up.append(nn.Sequential(upsampling(upsample, deeper, widths[level], bias), make_norm(widths[level]),
                                         nn.ReLU(True)))
            joined = widths[level] + skips[level]
            if level == 0:
                block = conv_block(joined, widths[0]) if full_size_block else []
                self.merge.append(nn.Sequential(*block, nn.Conv2d(widths[0] if block else joined, output_nc, 3, 1, 1),
                                                final_activation(logits)))
            else:
                self.merge.append(nn.Sequential(*conv_block(joined, widths[level]),
                                                *([nn.Dropout(0.5)] if dropout and level >= 3 else [])))

    def encoded(self, x: torch.Tensor, levels: int = 6) -> list[torch.Tensor]:
        """The input, then the encoder's activations at 1/2, 1/4 … 1/32 of its size: the first `levels`."""
        out, h = [x], self.input(x)
        for stage in self.backbone.stages(self.encoder)[:levels - 1]:
            h = stage(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, y = self.encoded(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            y = merge(torch.cat([up(y), skip], 1))
        return lab_output(self.lab, x, y)

    def features(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """The input (layer 0) and the encoder's activations (layer k at 1/2**k of the size), for PatchNCE."""
        encoded = self.encoded(x, max(layers) + 1)
        return [encoded[i] for i in layers]

    def load_encoder(self) -> str:
        """Load the encoder's `encoder_weights` (imagenet: the backbone's own file, or a path); returns where they
        came from."""
        explicit = "" if self.encoder_weights == "imagenet" else self.encoder_weights
        path, reason = self.backbone.weights.resolve(explicit, f"netG={self.name}'s encoder weights",
                                                     "encoder_weights")
        if path is None:
            raise ImgtransError(f"{reason} (or none, to start the encoder from random weights)")
        try:
            self.backbone.load(self.encoder, torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, AttributeError, KeyError, ValueError, OSError) as exc:
            raise ImgtransError(f"{path} is not a state dict of {self.backbone.state_dict_kind} "
                                f"({str(exc).splitlines()[0]}); pass encoder_weights=imagenet, none or the path "
                                f"of {self.backbone.weights.filename}") from None
        return str(path)


def load_pretrained_encoders(model: nn.Module) -> list[str]:
    """Start every encoder U-Net's encoder in `model` from its `encoder_weights` unless they are none (at a fresh
    start only: a resumed run has its weights from its checkpoint); one note per encoder loaded."""
    return [f"Encoder of netG={net.name} started from {net.load_encoder()}." for net in pretrained_encoders(model)]


def pretrained_encoders(model: nn.Module) -> list[EncoderUnetGenerator]:
    """Every encoder U-Net in `model` whose encoder starts from pretrained weights."""
    return [net for net in model.modules() if isinstance(net, EncoderUnetGenerator) and net.pretrained]


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
                    neutral_annealing: bool = False, neutral_odds: float = 1.0, neutral_blur: int = 0,
                    self_ensemble: str = "none", inference_scale: float = 1.0,
                    encoder_weights: str = "imagenet", encoder_norm: str = "frozen",
                    full_size_block: bool = False) -> nn.Module:
    """`unet` is as deep as the crop allows (1×1 bottleneck); unet_256/unet_128 fix the depth. `gamut`,
    `chroma_blur`, `chroma_filter`: the output is a,b for the L of the input's first channel, low-passed and kept
    inside the sRGB gamut (`LabOutput`). `colour_classes`: the network scores colour classes (at 1 / `class_stride`
    of the resolution) and decodes them into that a,b (at `class_temperature` in eval mode); `neutral_gate`: it
    also says where a pixel is gray (`LabColorizer`), a decision annealed as the classes are with
    `neutral_annealing`; at inference, both computed on the input enlarged by `inference_scale` and averaged over
    its mirror images by `self_ensemble`, the gate's logit over a box of radius `neutral_blur`, and taken at its
    odds of gray divided by `neutral_odds`.
    `encoder_weights`, `encoder_norm`, `full_size_block`: what an encoder U-Net's encoder starts from, whether
    its batch norms keep their statistics, and whether its decoder ends in a block at full size
    (`EncoderUnetGenerator`)."""
    lab = LabOutput(gamut, chroma_blur, chroma_filter) if gamut or chroma_blur > 0 else None
    if name not in GENERATORS:
        raise ImgtransError(f"invalid netG '{name}'; valid values: {', '.join(GENERATORS)}")
    if not (colour_classes or neutral_gate):
        return _network(name, input_nc, output_nc, ngf, norm, dropout, crop_size, nz, upsample, lab, False,
                        encoder_weights, encoder_norm, full_size_block)
    classes = ColourClasses(class_temperature) if colour_classes else None
    net = _network(name, input_nc, LabColorizer.channels(classes, neutral_gate, class_stride), ngf, norm, dropout,
                   crop_size, nz, upsample, None, True, encoder_weights, encoder_norm, full_size_block)
    return LabColorizer(net, lab, classes, neutral_gate, class_stride, neutral_annealing, self_ensemble, neutral_odds,
                        neutral_blur, inference_scale)


def _network(name: str, input_nc: int, output_nc: int, ngf: int, norm: str, dropout: bool, crop_size: int, nz: int,
             upsample: str, lab: LabOutput | None, logits: bool, encoder_weights: str,
             encoder_norm: str, full_size_block: bool) -> Generator:
    depth = unet_depth(name, crop_size) if name.startswith("unet") else 0
    if nz and not depth:
        raise ImgtransError(f"netG={name} cannot take a latent code at every layer; use a unet or where_add=input")
    encoder_unet = name.endswith("_unet")
    multiple = 2 ** depth if depth else (EncoderUnetGenerator if encoder_unet else ResnetGenerator).size_multiple
    if crop_size % multiple:  # training compares the output with a target of the crop's size
        raise ImgtransError(f"netG={name} needs crop_size to be a multiple of {multiple}, got {crop_size}")
    if depth:
        return UnetGenerator(input_nc, output_nc, depth, ngf, norm, dropout, nz, upsample, lab, logits)
    if encoder_unet:
        return EncoderUnetGenerator(name.removesuffix("_unet"), input_nc, output_nc, norm, dropout, upsample, lab,
                                    logits, encoder_weights, encoder_norm, full_size_block)
    return ResnetGenerator(input_nc, output_nc, 9 if name == "resnet_9blocks" else 6, ngf, norm, dropout, upsample,
                           lab, logits)
