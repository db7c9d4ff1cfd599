"""Tiled translation of images of any size with overlapping tiles blended by a smooth window.

The image is processed in horizontal bands of tile rows, so only one band
(tile height × image width) is ever held as float — a 10k × 10k scan needs a
few hundred MB, not gigabytes. Tiles overlap by `overlap` pixels and are
weighted by a Hann-shaped window that never reaches zero, so seams vanish
and image borders (covered by one tile only) keep full weight.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

Translate = Callable[[np.ndarray], np.ndarray]  # (N, C_in, h, w) float32 → (N, C_out, h, w) float32


def blend_window(size_h: int, size_w: int, overlap: int) -> np.ndarray:
    """Weights (h, w): 1 in the middle, a raised-cosine ramp over `overlap` px at each edge."""

    def ramp(n: int) -> np.ndarray:
        w = np.ones(n, np.float32)
        if overlap > 0:
            k = min(overlap, n // 2)
            t = (np.arange(k, dtype=np.float32) + 0.5) / k
            edge = 0.5 - 0.5 * np.cos(np.pi * t)  # (0, 1), never exactly zero
            w[:k] = edge
            w[n - k:] = edge[::-1]
        return w

    return np.outer(ramp(size_h), ramp(size_w))


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` px overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _padded_tile(image: np.ndarray, top: int, left: int, tile: int) -> np.ndarray:
    """A (C, tile, tile) crop; reflect-padded where the image is smaller than a tile."""
    crop = image[:, top:top + tile, left:left + tile]
    ph, pw = tile - crop.shape[1], tile - crop.shape[2]
    if ph or pw:
        mode = "reflect" if ph < crop.shape[1] and pw < crop.shape[2] else "edge"
        crop = np.pad(crop, ((0, 0), (0, ph), (0, pw)), mode=mode)
    return crop


def translate_bands(read_rows: Callable[[int, int], np.ndarray], height: int, width: int, *,
                    translate: Translate, out_channels: int, tile: int, overlap: int,
                    batch_size: int = 8) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (row offset, finished output rows (C_out, rows, W)) from top to bottom.

    `read_rows(top, bottom)` returns the network-space input rows [top, bottom)
    as float32 (C_in, rows, W). Memory stays at about two tile-rows of floats.
    """
    overlap = min(overlap, tile // 2)
    row_starts = tile_starts(height, tile, overlap)
    col_starts = tile_starts(width, tile, overlap)
    window = blend_window(tile, tile, overlap)
    acc_top = 0
    acc = np.zeros((out_channels, 0, width), np.float32)
    weight = np.zeros((0, width), np.float32)
    for i, top in enumerate(row_starts):
        bottom = min(top + tile, height)
        band = read_rows(top, bottom)
        tiles = [_padded_tile(band, 0, left, tile) for left in col_starts]
        outputs = [translate(np.stack(tiles[k:k + batch_size])) for k in range(0, len(tiles), batch_size)]
        outputs = np.concatenate(outputs)
        # Grow the accumulator down to this band's bottom.
        grow = bottom - (acc_top + acc.shape[1])
        if grow > 0:
            acc = np.concatenate([acc, np.zeros((out_channels, grow, width), np.float32)], 1)
            weight = np.concatenate([weight, np.zeros((grow, width), np.float32)], 0)
        r0 = top - acc_top
        h = bottom - top
        for left, out in zip(col_starts, outputs):
            w = min(tile, width - left)
            win = window[:h, :w]
            acc[:, r0:r0 + h, left:left + w] += out[:, :h, :w] * win
            weight[r0:r0 + h, left:left + w] += win
        # Rows above the next band's top will receive no more tiles.
        done_until = row_starts[i + 1] if i + 1 < len(row_starts) else height
        n_done = done_until - acc_top
        if n_done > 0:
            yield acc_top, acc[:, :n_done] / weight[None, :n_done]
            acc, weight = acc[:, n_done:], weight[n_done:]
            acc_top = done_until
