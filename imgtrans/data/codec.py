"""How images become network tensors and back: value range, channels, colour space.

One `Codec` describes a trained model's input and output; it is stored with
the config so inference and export know the pre/post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imgtrans.data.color import lab_to_rgb, rgb_to_gray, rgb_to_lab, to_signed, to_unit


@dataclass(frozen=True)
class Codec:
    colorization: bool
    color_space: str = "rgb"

    @property
    def input_nc(self) -> int:
        return 1 if self.colorization else 3

    @property
    def output_nc(self) -> int:
        return 2 if self.colorization and self.color_space == "lab" else 3

    def encode_input(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [0, 1] (…, 3, H, W) → the network input in [-1, 1]."""
        if not self.colorization:
            return to_signed(rgb)
        if self.color_space == "lab":
            return rgb_to_lab(rgb)[..., :1, :, :]
        return to_signed(rgb_to_gray(rgb))

    def encode_target(self, rgb: torch.Tensor) -> torch.Tensor:
        if self.colorization and self.color_space == "lab":
            return rgb_to_lab(rgb)[..., 1:, :, :]
        return to_signed(rgb)

    def decode_output(self, net_input: torch.Tensor, net_output: torch.Tensor) -> torch.Tensor:
        """Network output (with its input, needed for L in Lab mode) → rgb [0, 1]."""
        net_output = net_output.float()
        if self.colorization and self.color_space == "lab":
            return lab_to_rgb(torch.cat([net_input.float(), net_output], -3))
        return to_unit(net_output)

    def trivial_output(self, net_input: torch.Tensor) -> tuple[str, torch.Tensor]:
        """(name, rgb [0, 1]) of what a model that learned nothing could output — the baseline a trained one
        must beat: the grayscale copy of the input for colorization (a, b = 0 in Lab), the input otherwise."""
        if not self.colorization:
            return "input", self.decode_input(net_input)
        if self.color_space == "lab":
            neutral = torch.zeros(*net_input.shape[:-3], self.output_nc, *net_input.shape[-2:])
            return "grayscale", self.decode_output(net_input, neutral)
        return "grayscale", self.decode_input(net_input)

    def decode_input(self, net_input: torch.Tensor) -> torch.Tensor:
        """Network input → rgb [0, 1] for display."""
        net_input = net_input.float()
        if self.colorization and self.color_space == "lab":
            gray = (net_input + 1) / 2
        else:
            gray = to_unit(net_input)
        return gray.expand(*gray.shape[:-3], 3, *gray.shape[-2:]) if gray.shape[-3] == 1 else gray
