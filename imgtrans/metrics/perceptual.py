"""LPIPS (v0.1, AlexNet backbone), per image."""

from __future__ import annotations

import warnings
from pathlib import Path

import lpips
import torch
from torch import nn

from imgtrans.weights import ALEXNET


def lpips_network(alexnet_weights: Path | None) -> nn.Module:
    """LPIPS v0.1 with an AlexNet backbone. The linear heads ship with the lpips package; the backbone is
    loaded from `alexnet_weights` (torchvision's file), or left random when None (for tests of the math)."""
    with warnings.catch_warnings():  # lpips builds the backbone with torchvision's deprecated `pretrained`
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        net = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    if alexnet_weights is not None:
        with ALEXNET.loading(alexnet_weights), torch.no_grad():
            state = torch.load(alexnet_weights, map_location="cpu", weights_only=True)
            for slice_name, block in net.net.named_children():
                for name, param in block.named_parameters():
                    param.copy_(state[f"features.{name}"])
    return net.eval().requires_grad_(False)


def lpips_per_image(net: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(pred.float() * 2 - 1, target.float() * 2 - 1).flatten()
