"""A Lab colorizer whose network has more to say than a,b: scores over colour classes, a neutral gate, or both.

- colour classes (`ColourClasses`): the network scores quantised a,b at each pixel, decoded by the annealed
  mean (Zhang, Isola and Efros, "Colorful Image Colorization");
- the neutral gate: one more channel, the logit that the pixel is near-neutral (gray, black, white; C* below
  5: `near_neutral`), learned by a cross-entropy against the target's own neutral pixels. The output keeps
  1 − p(neutral) of its colour. A regression or classification loss on a,b alone gives a thin gray road
  between fields the fields' colour, because it is rare; the gate is asked about exactly those pixels
  (docs/MODEL_ZOO.md, "Where the cast sits"), and its product is what the expected a,b is when a pixel is gray
  with probability p.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from imgtrans.data.color import AB_SCALE, near_neutral
from imgtrans.nets.chroma import LabOutput
from imgtrans.nets.colour_classes import ColourClasses
from imgtrans.nets.layers import Generator


class LabColorizer(Generator):
    """`net`'s raw output (logits: no final activation) as heads: the colour — two channels through tanh, or
    `classes.count` class scores — then, with `gate`, the neutral logit. As a generator: the a,b, decoded,
    low-passed, gated and gamut-bounded by `lab`. `heads` and `decode` apart are for training, which needs the
    raw heads for `losses`."""

    def __init__(self, net: Generator, lab: LabOutput | None, classes: ColourClasses | None, gate: bool):
        super().__init__()
        self.net, self.lab, self.classes, self.gate = net, lab, classes, gate
        self.size_multiple, self.z_dim = net.size_multiple, net.z_dim

    @staticmethod
    def channels(classes: ColourClasses | None, gate: bool) -> int:
        """The raw channels the network must output."""
        return (classes.count if classes is not None else 2) + int(gate)

    def heads(self, x: torch.Tensor, *code: torch.Tensor) -> torch.Tensor:
        return self.net(x, *code)

    def decode(self, x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        colour, gate = (heads[:, :-1], heads[:, -1:]) if self.gate else (heads, None)
        ab = self.classes.decode(colour) if self.classes is not None else torch.tanh(colour)
        keep = None if gate is None else 1 - torch.sigmoid(gate)
        if self.lab is not None:
            return self.lab(x, ab, keep)
        return ab if keep is None else ab * keep.to(ab.dtype)

    def forward(self, x: torch.Tensor, *code: torch.Tensor) -> torch.Tensor:
        return self.decode(x, self.heads(x, *code))

    def losses(self, heads: torch.Tensor, ab_target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The heads' own losses against the target a,b (network scale), unweighted: `class` (the rebalanced
        cross-entropy over colour classes) and `neutral` (the gate's binary cross-entropy)."""
        losses = {}
        if self.classes is not None:
            losses["class"] = self.classes.loss(heads[:, :self.classes.count], ab_target)
        if self.gate:
            neutral = near_neutral(ab_target * AB_SCALE).float()
            losses["neutral"] = F.binary_cross_entropy_with_logits(heads[:, -1:].float(), neutral)
        return losses
