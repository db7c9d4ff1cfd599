"""Sample sheets: images in labelled columns, one input per row — training's per-epoch grid, `evaluate`'s
grid and `compare`'s side-by-side page. Small crops are enlarged (nearest neighbour, whole multiples) so a
tile is at least `MIN_TILE` px wide: what a grid shows must be readable in MLflow's image card."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from imgtrans.data.images import to_uint8

MIN_TILE = 256
HEADER = 28  # px of the label row
PADDING = 2


def sample_grid(columns: list[torch.Tensor], padding: int = PADDING, pad_value: float = 1.0) -> torch.Tensor:
    """Columns of (N, C, H, W) images side by side, one input per row, each image framed by `padding` px of
    `pad_value` (the layout of torchvision's make_grid): (C, N·(H+p)+p, columns·(W+p)+p)."""
    images = torch.stack(columns, 1)
    rows, count, channels, height, width = images.shape
    framed = torch.nn.functional.pad(images, (padding, 0, padding, 0), value=pad_value)
    grid = framed.permute(2, 0, 3, 1, 4).reshape(channels, rows * (height + padding), count * (width + padding))
    return torch.nn.functional.pad(grid, (0, padding, 0, padding), value=pad_value)


def with_header(grid: np.ndarray, labels: list[str], tile_width: int, padding: int = PADDING) -> np.ndarray:
    """A white row above `grid` (H, W, 3 uint8) with each column's label centred over it."""
    font = ImageFont.load_default(size=max(12, min(20, tile_width // 10)))
    header = Image.new("RGB", (grid.shape[1], HEADER), "white")
    draw = ImageDraw.Draw(header)
    for index, label in enumerate(labels):
        left = padding + index * (tile_width + padding)
        text = label
        while len(text) > 1 and draw.textlength(text, font=font) > tile_width - 4:
            text = text[:-2] + "…"
        x = left + (tile_width - draw.textlength(text, font=font)) / 2
        draw.text((x, HEADER // 2), text, fill="black", font=font, anchor="lm")
    return np.concatenate([np.asarray(header), grid], 0)


def sample_sheet(columns: dict[str, torch.Tensor]) -> np.ndarray:
    """Labelled columns of rgb [0, 1] images (N, 3, H, W) → one uint8 image (H', W', 3) with a header row."""
    images = list(columns.values())
    scale = max(1, math.ceil(MIN_TILE / images[0].shape[-1]))
    if scale > 1:
        images = [torch.nn.functional.interpolate(c.float(), scale_factor=scale, mode="nearest") for c in images]
    grid = to_uint8(sample_grid(images))
    return with_header(grid, list(columns), images[0].shape[-1])


def sheet_from_files(columns: dict[str, list[bytes | np.ndarray]]) -> np.ndarray:
    """The same from images of possibly different sizes (e.g. PNG bytes of kept samples): each is fitted into
    the largest one's tile."""
    tiles = {label: [np.array(Image.open(io.BytesIO(t)).convert("RGB")) if isinstance(t, bytes) else t
                     for t in items] for label, items in columns.items()}
    height = max(t.shape[0] for items in tiles.values() for t in items)
    width = max(t.shape[1] for items in tiles.values() for t in items)
    tensors = {label: torch.stack([torch.nn.functional.pad(torch.from_numpy(t).permute(2, 0, 1).float() / 255,
                                                           (0, width - t.shape[1], 0, height - t.shape[0]), value=1.0)
                                   for t in items]) for label, items in tiles.items()}
    return sample_sheet(tensors)
