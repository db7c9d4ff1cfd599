"""Perceptual losses: distances between the activations an ImageNet classifier has for two images."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from imgtrans.nets.backbones import BACKBONES
from imgtrans.nets.imagenet import ImagenetInput


class PerceptualLoss(nn.Module):
    """Mean squared distance between VGG16 activations (relu1_2, relu2_2, relu3_3) of two images in [-1, 1].

    The backbone is torchvision's VGG16 loaded from `weights` (its state-dict file); None leaves it random,
    which keeps the math testable without the file. Gray images are repeated to three channels.
    """

    LAYERS = (3, 8, 15)

    def __init__(self, weights=None):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers  # seconds to import: only the runs that use it pay

        # Only the convolutional layers in use: building the whole VGG16 would initialise its 120 M-parameter
        # classifier for nothing.
        features = make_layers(cfgs["D"])[:max(self.LAYERS) + 1]
        if weights is not None:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            wanted = features.state_dict().keys()
            features.load_state_dict({k: state[f"features.{k}"] for k in wanted})
        self.features = features.eval().requires_grad_(False)
        self.input = ImagenetInput()

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = self.input(prediction.float()), self.input(target.float())
        loss = prediction.new_zeros((), dtype=torch.float32)
        for index, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if index in self.LAYERS:
                loss = loss + F.mse_loss(x, y)
        return loss / len(self.LAYERS)


class BackboneFeatureLoss(nn.Module):
    """Mean squared distance between the activations of a `BACKBONES` classifier (its ImageNet weights from the
    state-dict file `weights`; None leaves it random) at its first `stages` stages (1/2, 1/4 … of the size) of two
    images in [-1, 1], averaged over the stages. Fixed: it stays in eval mode and the target's side takes no
    gradient."""

    def __init__(self, backbone: str, weights=None, stages: int = 3):
        super().__init__()
        spec = BACKBONES[backbone]
        with torch.random.fork_rng(devices=[]):  # its random start, overwritten, draws none of the run's numbers
            self.net = spec.build()
        if weights is not None:
            spec.load(self.net, torch.load(weights, map_location="cpu", weights_only=True))
        self.net.eval().requires_grad_(False)
        self.stages = spec.stages(self.net)[:stages]
        self.input = ImagenetInput()

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = self.input(prediction.float()), self.input(target.float())
        loss = prediction.new_zeros((), dtype=torch.float32)
        for stage in self.stages:
            x = stage(x)
            with torch.no_grad():
                y = stage(y)
            loss = loss + F.mse_loss(x, y)
        return loss / len(self.stages)
