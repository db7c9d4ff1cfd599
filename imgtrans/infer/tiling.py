"""Tiled translation of images of any size: tiles with context margins, blended by a smooth window.

Each tile is a window of `tile` px fed to the network; only its core — the window less `margin` px on
each side that has a neighbour — is kept, so every kept pixel saw at least `margin` px of real context
(at the image border, the image's own edge, as in a whole-image pass). With a margin of at least the
network's receptive radius, and windows on the network's stride grid, the tiles reproduce one whole-image pass
exactly (`TileRule` chooses such margins). Neighbouring cores overlap
by `overlap` px and are cross-faded there with a raised-cosine ramp.

The image is processed in horizontal bands of tile rows, so only one band (tile height × image width) is
held as float — a 10k × 10k scan needs a few hundred MB, not gigabytes. The bands are tensors on the
network's device: on a GPU the tiles are cut, translated and blended there, and only finished rows come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

# (N, C_in, h, w) float32 → (N, C_out, h, w) float32, on the device the input is on
Translate = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Span:
    """Along one axis: the network's input window [window, window + tile) and the core [core_start,
    core_end) of the image whose output this window contributes."""

    window: int
    core_start: int
    core_end: int


def spans(length: int, tile: int, margin: int, overlap: int) -> list[Span]:
    """Windows covering [0, length) whose cores keep `margin` px of context from every neighbour's side and
    overlap their neighbours by at least `overlap` px. The first and last cores reach the image's edges."""
    if length <= tile:
        return [Span(0, 0, length)]
    if tile - 2 * margin <= overlap:
        raise ValueError(f"tile {tile} leaves no core with margin {margin} and overlap {overlap}")
    plan = [Span(0, 0, tile - margin)]
    last_start = length - (tile - margin)
    while plan[-1].core_end - overlap < last_start:
        start = plan[-1].core_end - overlap
        plan.append(Span(start - margin, start, start + tile - 2 * margin))
    # The last core is anchored to the image's end: its neighbour gives way, so the cross-fade is `overlap` long.
    plan[-1] = Span(plan[-1].window, plan[-1].core_start, min(plan[-1].core_end, last_start + overlap))
    plan.append(Span(length - tile, last_start, length))
    return plan


def ramp(n: int) -> torch.Tensor:
    """n raised-cosine weights rising in (0, 1); a ramp and its reverse sum to 1."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (0.5 - 0.5 * torch.cos(torch.pi * t)).float()


def span_weights(span: Span, length: int, tile: int, overlap: int) -> torch.Tensor:
    """Weights over the window (length min(tile, length)): 0 outside the core, ramps where a neighbour
    cross-fades, 1 elsewhere."""
    weights = torch.zeros(min(tile, length))
    start, end = span.core_start - span.window, span.core_end - span.window
    weights[start:end] = 1.0
    k = min(overlap, end - start)
    if k:
        if span.core_start > 0:
            weights[start:start + k] *= ramp(k)
        if span.core_end < length:
            weights[end - k:end] *= ramp(k).flip(0)
    return weights


def seam_positions(plan: list[Span]) -> list[int]:
    """Where neighbouring tiles meet: the middle of each cross-fade (the pixel after the seam)."""
    return [(b.core_start + a.core_end + 1) // 2 for a, b in zip(plan, plan[1:])]


def _padded_tile(band: torch.Tensor, left: int, height: int, width: int) -> torch.Tensor:
    """A (C, height, width) crop of a band from column `left`, reflect-padded (at the bottom and right) where
    the image is smaller than the tile: up to the size multiple only (see `TileRule`)."""
    crop = band[:, :height, left:left + width]
    ph, pw = height - crop.shape[1], width - crop.shape[2]
    if ph or pw:
        mode = "reflect" if ph < crop.shape[1] and pw < crop.shape[2] else "replicate"
        crop = F.pad(crop[None], (0, pw, 0, ph), mode=mode)[0]
    return crop


@dataclass(frozen=True)
class Tiling:
    """Windows of `height` × `width` px (rectangular: a strip is not padded to a square)."""

    height: int
    width: int
    margin: int
    overlap: int

    def plans(self, height: int, width: int) -> tuple[list[Span], list[Span]]:
        return (spans(height, self.height, self.margin, self.overlap),
                spans(width, self.width, self.margin, self.overlap))

    def describe(self, height: int, width: int) -> str:
        rows, cols = self.plans(height, width)
        if len(rows) == len(cols) == 1:
            return "one tile"
        return (f"{len(rows)} × {len(cols)} tiles of {self.height}×{self.width} px (margin {self.margin}, "
                f"overlap {self.overlap})")


def translate_bands(read_rows: Callable[[int, int], torch.Tensor], height: int, width: int, *,
                    translate: Translate, out_channels: int, tiling: Tiling,
                    batch_size: int = 8) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (row offset, finished output rows (C_out, rows, W)) from top to bottom, on the device the input
    rows are on.

    `read_rows(top, bottom)` returns the network-space input rows [top, bottom) as float32 (C_in, rows, W).
    Memory stays at about two tile-rows of floats.
    """
    tile_h, tile_w, overlap = tiling.height, tiling.width, tiling.overlap
    row_plan, col_plan = tiling.plans(height, width)
    acc_top = 0
    acc = weight = col_weights = None
    for i, span in enumerate(row_plan):
        top, bottom = span.window, min(span.window + tile_h, height)
        band = read_rows(top, bottom)
        if acc is None:
            device = band.device
            col_weights = [span_weights(s, width, tile_w, overlap).to(device) for s in col_plan]
            acc = torch.zeros((out_channels, 0, width), device=device)
            weight = torch.zeros((0, width), device=device)
        row_weights = span_weights(span, height, tile_h, overlap).to(band.device)
        # Rows above acc_top are finished; this window's weight there is 0 (they lie before its core).
        skip = max(acc_top - top, 0)
        grow = bottom - (acc_top + acc.shape[1])
        if grow > 0:
            acc = torch.cat([acc, acc.new_zeros((out_channels, grow, width))], 1)
            weight = torch.cat([weight, weight.new_zeros((grow, width))], 0)
        r0, rows = top + skip - acc_top, bottom - top - skip
        for k in range(0, len(col_plan), batch_size):  # one call's tiles at a time: memory stays at a batch
            batch = col_plan[k:k + batch_size]
            outputs = translate(torch.stack([_padded_tile(band, s.window, tile_h, tile_w) for s in batch]))
            for s, out, cw in zip(batch, outputs, col_weights[k:k + batch_size]):
                w = min(tile_w, width - s.window)
                win = torch.outer(row_weights[skip:skip + rows], cw[:w])
                acc[:, r0:r0 + rows, s.window:s.window + w] += out[:, skip:skip + rows, :w] * win
                weight[r0:r0 + rows, s.window:s.window + w] += win
        # Rows above the next core will receive no more tiles.
        done_until = row_plan[i + 1].core_start if i + 1 < len(row_plan) else height
        n_done = done_until - acc_top
        if n_done > 0:
            yield acc_top, acc[:, :n_done] / weight[None, :n_done]
            acc, weight = acc[:, n_done:], weight[n_done:]
            acc_top = done_until


class SeamEnergy:
    """Output gradient energy across tile seams relative to everywhere else, fed rows top to bottom.

    1.0: the tile grid is invisible in the gradients; a lattice of tiles that disagree shows as > 1.
    """

    def __init__(self, seam_rows: list[int], seam_cols: list[int]):
        self.seam_rows, self.seam_cols = set(seam_rows), np.array(seam_cols, int) - 1  # as gradient indices
        self.sums = np.zeros(2)  # at seams, elsewhere
        self.counts = np.zeros(2)
        self.last_row: np.ndarray | None = None
        self.next_row = 0

    def _add(self, squares: np.ndarray, seam: np.ndarray) -> None:
        self.sums += squares[seam].sum(), squares[~seam].sum()
        self.counts += seam.sum(), (~seam).sum()

    def update(self, rows: np.ndarray) -> None:
        """rows: (C, n, W), continuing where the last call ended."""
        horizontal = (np.diff(rows, axis=2) ** 2).mean(0)  # (n, W-1)
        seam = np.zeros(horizontal.shape, bool)
        seam[:, self.seam_cols] = True
        self._add(horizontal, seam)
        stacked = rows if self.last_row is None else np.concatenate([self.last_row, rows], 1)
        first = self.next_row if self.last_row is None else self.next_row - 1  # row above each difference
        vertical = (np.diff(stacked, axis=1) ** 2).mean(0)  # (m, W)
        below = np.arange(first + 1, first + 1 + vertical.shape[0])
        self._add(vertical, np.broadcast_to(np.isin(below, list(self.seam_rows))[:, None], vertical.shape))
        self.last_row = rows[:, -1:]
        self.next_row += rows.shape[1]

    def ratio(self) -> float | None:
        """None when there are no seams (one tile) or nothing elsewhere to compare with."""
        if not self.counts.all():
            return None
        means = self.sums / self.counts
        return float(means[0] / means[1]) if means[1] > 0 else None
