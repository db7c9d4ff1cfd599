"""Resize / crop / flip as in the pix2pix reference, applied identically to both sides of a pair.

Random choices come from a generator the caller seeds per (seed, epoch,
index), so augmentation is reproducible and independent of loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from imgtrans.errors import ImgtransError


@dataclass(frozen=True)
class Geometry:
    """What to do to one image: resize to (h, w), crop a box, maybe flip."""

    resize: tuple[int, int] | None
    crop: tuple[int, int, int, int] | None  # top, left, height, width
    flip: bool


UNCROPPED = ("none", "scale_width")  # preprocesses that train on whole images, trimmed to multiples of 4


def plan(height: int, width: int, *, preprocess: str, load_size: int, crop_size: int, flip: bool,
         rng: np.random.Generator | None) -> Geometry:
    """rng=None means evaluation: centre crop, no flip."""
    resize = None
    h, w = height, width
    if preprocess == "resize_and_crop":
        resize = h, w = load_size, load_size
    elif preprocess == "random_scale_and_crop" and rng is not None:
        factor = rng.uniform(1.0, max(1.0, load_size / crop_size))
        resize = h, w = round(height * factor), round(width * factor)
    elif preprocess in ("scale_width", "scale_width_and_crop"):
        target_w = load_size if preprocess == "scale_width_and_crop" else crop_size
        new_h = max(crop_size if preprocess == "scale_width_and_crop" else 1, round(height * target_w / width))
        resize = h, w = new_h, target_w
    crop = None
    if preprocess in ("resize_and_crop", "random_scale_and_crop", "crop", "scale_width_and_crop"):
        if h < crop_size or w < crop_size:
            raise ImgtransError(f"crop_size {crop_size} is larger than a {width}×{height} image"
                                f"{f' resized to {w}×{h}' if resize else ''}; lower crop_size, "
                                f"{'' if preprocess == 'crop' else 'raise load_size '}or use "
                                "preprocess=resize_and_crop")
        if rng is None:
            top, left = (h - crop_size) // 2, (w - crop_size) // 2
        else:
            top, left = int(rng.integers(0, h - crop_size + 1)), int(rng.integers(0, w - crop_size + 1))
        crop = (top, left, crop_size, crop_size)
    elif rng is not None and preprocess in UNCROPPED:
        # Training batches go to the networks unpadded: trim to sizes divisible by 4, like the reference.
        # (Evaluation keeps every pixel; `translate` pads to the network's size multiple.)
        th, tw = h - h % 4, w - w % 4
        if (th, tw) != (h, w):
            crop = (0, 0, th, tw)
    do_flip = bool(flip and rng is not None and rng.random() < 0.5)
    return Geometry(resize, crop, do_flip)


def planned_size(geometry: Geometry, height: int, width: int) -> tuple[int, int]:
    """(height, width) of an image of `height` × `width` after `geometry`."""
    if geometry.crop is not None:
        return geometry.crop[2], geometry.crop[3]
    return geometry.resize or (height, width)


def apply(image: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """image: (C, H, W) float tensor."""
    if geometry.resize is not None and tuple(image.shape[-2:]) != geometry.resize:
        image = F.interpolate(image[None], size=geometry.resize, mode="bicubic", align_corners=False,
                              antialias=True)[0].clamp(0, 1)
    if geometry.crop is not None:
        top, left, h, w = geometry.crop
        image = image[:, top:top + h, left:left + w]
    if geometry.flip:
        image = image.flip(-1)
    return image.contiguous()


def default_load_size(crop_size: int) -> int:
    """The reference's 286-for-256 jitter margin, scaled to the crop."""
    return round(crop_size * 286 / 256)
