"""A Lab colorizer whose network has more to say than a,b: scores over colour classes, a neutral gate, or both.

- colour classes (`ColourClasses`): the network scores quantised a,b, decoded by the annealed mean (Zhang,
  Isola and Efros, "Colorful Image Colorization") — at every pixel, or, as the paper does, at a quarter of the
  resolution (`class_stride` 4: `CLASS_FEATURES` channels averaged over 4 × 4 pixels and projected onto the
  classes, decoded there and upsampled bilinearly; the low-pass at inference lays the colour back along the
  edges of lightness); scores for 262 classes at every pixel add three quarters to a training step's cost;
- the neutral gate: one more channel, the logit that the pixel is near-neutral (gray, black, white; C* below
  5: `near_neutral`), learned by a cross-entropy against the target's own neutral pixels, weighted up because
  they are few (as in the class-balanced loss of "Holistically-Nested Edge Detection"). The output keeps
  1 − p(neutral) of its colour. A regression or classification loss on a,b alone gives a thin gray road
  between fields the fields' colour, because it is rare; the gate is asked about exactly those pixels
  (docs/MODEL_ZOO.md, "Where the cast sits"), and its product is what the expected a,b is when a pixel is gray
  with probability p. With colour classes (`anneal_gate`), gray-or-colour is decoded as the classes are, by the
  annealed mean at their temperature T: over the two outcomes that is p_T = sigmoid(logit / T). The expectation
  itself (T = 1) is the gate's own washed-out mean: a gate unsure of every pixel takes part of every colour off.
  At inference the logit can first be averaged over a small box (`neutral_blur`: by default a 5 × 5 box): decided per
  pixel, the gate calls lone pixels gray inside coloured regions, specks that SSIM counts as lost structure; in a
  box, a gray road narrower than it takes its fields' colour.
- the self-ensemble, at inference: the heads' scores averaged over the input and its mirror images (`SELF_ENSEMBLES`),
  each mirrored back, before anything is decoded — the geometric self-ensemble of "Enhanced Deep Residual Networks
  for Single Image Super-Resolution". Scores, not colours: averaged logits agree where the views agree and stay as
  saturated as any one of them, where averaged a,b would wash out wherever two views pick different hues.
- the scale, at inference (`inference_scale`): the heads computed on the input enlarged bilinearly,
  their scores brought back to the input's grids before anything is decoded: on photographs, the network paints
  more of their colour at a larger scale than at their own (docs/MODEL_ZOO.md, "Colouring at a larger scale").
"""

from __future__ import annotations

import math
import typing
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from imgtrans.config import SelfEnsemble
from imgtrans.data.color import AB_SCALE, near_neutral
from imgtrans.nets.chroma import LabOutput, box_mean
from imgtrans.nets.colour_classes import ColourClasses
from imgtrans.nets.layers import Generator

CLASS_FEATURES = 32  # channels the network gives a quarter-resolution class head
# Views per self-ensemble: the first n symmetries of the square, in `mirror`'s numbering.
SELF_ENSEMBLES = dict(zip(typing.get_args(SelfEnsemble), (1, 2, 4, 8)))


def mirror(x: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetry k of the square (0–7) applied to the last two dimensions: bit 1 mirrors left-right, bit 2 upside
    down, bit 4 then transposes; `unmirror` undoes it."""
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    return x.transpose(-1, -2) if k & 4 else x


def unmirror(x: torch.Tensor, k: int) -> torch.Tensor:
    if k & 4:
        x = x.transpose(-1, -2)
    if k & 2:
        x = x.flip(-2)
    return x.flip(-1) if k & 1 else x


def resized(x: torch.Tensor, size: tuple) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Heads(NamedTuple):
    colour: torch.Tensor  # a,b before the tanh (N, 2, H, W), or class scores (N, Q, H / stride, W / stride)
    gate: torch.Tensor | None  # the neutral logit (N, 1, H, W)


class LabColorizer(Generator):
    """`net`'s raw output (logits: no final activation) as heads: the colour — two channels through tanh, or
    class scores at 1 / `class_stride` of the resolution — then, with `gate`, the neutral logit. As a generator:
    the a,b, decoded, low-passed, gated and gamut-bounded by `lab`. `heads` and `decode` apart are for training,
    which needs the raw heads for `losses`."""

    def __init__(self, net: Generator, lab: LabOutput | None, classes: ColourClasses | None, gate: bool,
                 class_stride: int = 1, anneal_gate: bool = False, self_ensemble: str = "none",
                 neutral_odds: float = 1.0, neutral_blur: int = 0, inference_scale: float = 1.0):
        super().__init__()
        self.net, self.lab, self.classes, self.gate = net, lab, classes, gate
        self.views = SELF_ENSEMBLES[self_ensemble]
        self.anneal_gate = anneal_gate and classes is not None
        self.neutral_odds, self.neutral_blur = neutral_odds, neutral_blur
        self.scale_per_mille = round(inference_scale * 1000)
        self.class_stride = class_stride if classes is not None else 1
        self.project = nn.Conv2d(CLASS_FEATURES, classes.count, 1) if self.class_stride > 1 else None
        self.size_multiple, self.z_dim = net.size_multiple, net.z_dim

    @staticmethod
    def channels(classes: ColourClasses | None, gate: bool, class_stride: int = 1) -> int:
        """The raw channels the network must output."""
        colour = 2 if classes is None else classes.count if class_stride == 1 else CLASS_FEATURES
        return colour + int(gate)

    def heads(self, x: torch.Tensor, *code: torch.Tensor) -> Heads:
        raw = self.net(x, *code)
        colour, gate = (raw[:, :-1], raw[:, -1:]) if self.gate else (raw, None)
        if self.project is not None:
            colour = self.project(F.avg_pool2d(colour, self.class_stride))
        return Heads(colour, gate)

    def ensembled_heads(self, x: torch.Tensor, *code: torch.Tensor) -> Heads:
        """In eval mode, the heads computed on `x` enlarged by the inference scale, if one is set, and brought back
        to its grids; in training, `heads`."""
        if self.training:
            return self.heads(x, *code)
        if self.scale_per_mille == 1000:
            return self.mirrored_heads(x, *code)
        height, width = x.shape[-2:]
        heads = self.mirrored_heads(resized(x, (self.scaled(height), self.scaled(width))), *code)
        stride = self.class_stride
        return Heads(resized(heads.colour, (height // stride, width // stride)),
                     None if heads.gate is None else resized(heads.gate, (height, width)))

    def scaled(self, side):
        """`side` times the inference scale, rounded to the nearest multiple of `size_multiple` (halves up), in
        integers: the same arithmetic on a Python int and, in an exported graph, on the side traced from the input."""
        step = 1000 * self.size_multiple
        return (side * self.scale_per_mille + step // 2) // step * self.size_multiple

    def mirrored_heads(self, x: torch.Tensor, *code: torch.Tensor) -> Heads:
        """The heads averaged over the self-ensemble's views (one batch per shape: a transposed view of a
        non-square input is a batch of its own). The sides of `x` are multiples of `size_multiple`, so a mirrored
        quarter-resolution class grid lies on the original one."""
        if self.views == 1:
            return self.heads(x, *code)
        views, colour, gate = range(self.views), 0, 0
        for group in (views[:4], views[4:]):
            if not group:
                continue
            batch = torch.cat([mirror(x, k) for k in group])
            if x.is_contiguous(memory_format=torch.channels_last):  # a transposed view is not, by its strides
                batch = batch.contiguous(memory_format=torch.channels_last)
            heads = self.heads(batch, *(c.repeat(len(group), 1) for c in code))
            # (views × N, …) → (views, N, …), the batch size left symbolic for an exported graph
            per_view = [None if h is None else h.unflatten(0, (len(group), -1)) for h in heads]
            for i, k in enumerate(group):
                colour = colour + unmirror(per_view[0][i], k)
                if self.gate:
                    gate = gate + unmirror(per_view[1][i], k)
        return Heads(colour / self.views, gate / self.views if self.gate else None)

    def ungated_colour(self, heads: Heads) -> torch.Tensor:
        """The a,b (network scale, at the input's resolution) the colour head decodes, before the gate takes any
        of it off."""
        if self.classes is None:
            return torch.tanh(heads.colour)
        return self.at_full_resolution(self.classes.decode(heads.colour))

    def at_full_resolution(self, class_grid: torch.Tensor) -> torch.Tensor:
        """Values on the colour classes' grid (N, C, H / stride, W / stride), upsampled to the input's resolution."""
        if self.class_stride == 1:
            return class_grid
        return F.interpolate(class_grid, scale_factor=self.class_stride, mode="bilinear", align_corners=False)

    def decode(self, x: torch.Tensor, heads: Heads) -> torch.Tensor:
        return self.finish(x, self.ungated_colour(heads), heads.gate)

    def finish(self, x: torch.Tensor, ab: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
        """The output from the a,b decoded (network scale, at the input's resolution) and the gate's logit."""
        keep = None if gate is None else self.kept_colour(gate)
        if self.lab is not None:
            return self.lab(x, ab, keep)
        return ab if keep is None else ab * keep.to(ab.dtype)

    def kept_colour(self, gate: torch.Tensor) -> torch.Tensor:
        """How much of its colour each pixel keeps: 1 − p(neutral), annealed with the colour classes if asked; at
        inference the gate's logit first averaged over a box of radius `neutral_blur` and its odds of gray divided
        by `neutral_odds` (the logit lowered by their log)."""
        temperature = self.classes.decoding_temperature if self.anneal_gate else 1.0
        if not self.training and self.neutral_blur:
            gate = box_mean(gate, self.neutral_blur)
        if not self.training and self.neutral_odds != 1.0:
            gate = gate - math.log(self.neutral_odds)
        return 1 - torch.sigmoid(gate / temperature)

    def forward(self, x: torch.Tensor, *code: torch.Tensor) -> torch.Tensor:
        return self.decode(x, self.ensembled_heads(x, *code))

    def losses(self, heads: Heads, ab_target: torch.Tensor, gray_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """The heads' own losses against the target a,b (network scale), before their lambdas: `class` (the rebalanced
        cross-entropy over colour classes, against the target averaged to their resolution) and `neutral` (the
        gate's binary cross-entropy, a gray target pixel counting `gray_weight` times a coloured one)."""
        losses = {}
        if self.classes is not None:
            target = ab_target if self.class_stride == 1 else F.avg_pool2d(ab_target, self.class_stride)
            losses["class"] = self.classes.loss(heads.colour, target)
        if heads.gate is not None:
            neutral = near_neutral(ab_target * AB_SCALE).float()
            losses["neutral"] = F.binary_cross_entropy_with_logits(heads.gate.float(), neutral,
                                                                   weight=1 + (gray_weight - 1) * neutral)
        return losses
