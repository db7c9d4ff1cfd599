"""How `translate` tiles each image — decided by the model and the image alone, so that an output is the same
bytes whichever device computed it.

The rule (`tile=0`): one tile per image whenever the image, rounded up to the model's size multiple, is at
most `max_tile` on each side — the largest tile whose activations (at the model's bytes per pixel measured
at export) take `ACTIVATION_BUDGET`; larger images are tiled with tiles of `max_tile`. Tiles are rectangles,
and an image smaller than its tile is padded (reflected) only up to the size multiple, so the padding never
depends on a tile setting. Margins: the model's receptive radius where it is finite and at most a quarter of
the tile (then tiles equal one whole-image pass, exactly where the image's sides are multiples of the size
multiple), else an eighth of the tile; neighbouring tiles cross-fade over an eighth of the tile (in whole size
multiples where the margin covers the radius). The device's free memory decides only how many tiles go into one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import psutil
import torch

from imgtrans.errors import ImgtransError
from imgtrans.export.sidecar import Sidecar
from imgtrans.infer.tiling import Tiling
from imgtrans.nets.layers import round_up

MEMORY_SHARE = 0.25  # of the device's free memory, for one inference call's tiles
ACTIVATION_BUDGET = 2 * 2 ** 30  # bytes of activations one tile may take: the automatic tile's size


def free_memory(provider: str, device_id: int = 0) -> int:
    """Bytes the provider can use: free memory of GPU `device_id` for the CUDA/TensorRT providers, available RAM
    otherwise."""
    if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        if torch.cuda.is_available():
            return torch.cuda.mem_get_info(device_id)[0]
    return psutil.virtual_memory().available


def tiling_recipe(tile: int, margin: int, overlap: int) -> str:
    """The settings that decide the output, for the manifest (not the machine's memory)."""
    return (f"tile {tile or 'auto'}, margin {margin if margin >= 0 else 'auto'}, "
            f"overlap {overlap if overlap >= 0 else 'auto'}")


@dataclass(frozen=True)
class TileRule:
    multiple: int
    max_tile: int  # the largest tile whose activations take ACTIVATION_BUDGET
    tile: int = 0  # fixed size; 0 = per image, up to max_tile
    margin: int = -1  # -1 = from the receptive radius
    overlap: int = -1  # -1 = an eighth of the tile
    receptive_radius: int = 0  # 0 = unbounded or unknown
    budget: float = 0.0  # bytes for one inference call; 0 = unknown
    bytes_per_pixel: float = 0.0

    @classmethod
    def create(cls, sidecar: Sidecar, provider: str, tile: int = 0, margin: int = -1, overlap: int = -1,
               device_id: int = 0) -> TileRule:
        multiple = sidecar.size_multiple
        if tile % multiple:
            raise ImgtransError(f"tile must be a multiple of {multiple} for this model, got {tile}")
        budget, max_tile = 0.0, sidecar.tile_size  # a sidecar from before the footprint was measured
        if sidecar.bytes_per_pixel > 0:
            budget = MEMORY_SHARE * free_memory(provider, device_id)
            side = int(math.sqrt(ACTIVATION_BUDGET / sidecar.bytes_per_pixel))
            max_tile = max(multiple, side // multiple * multiple)
        rule = cls(multiple, max_tile, tile, margin, overlap, sidecar.receptive_radius, budget,
                   sidecar.bytes_per_pixel)
        side = (tile or max_tile) + 1
        rule.for_image(side, side)  # settings that leave no core fail here, not mid-archive
        return rule

    def for_image(self, height: int, width: int) -> Tiling:
        tile = self.tile or self.max_tile
        # Tiles whose margin covers the receptive radius equal a whole-image pass where every window starts on
        # the network's sampling grid: windows move by the tile less two margins and the overlap, so the margin
        # is taken in steps of half the size multiple and the overlap in whole ones.
        half = max(1, self.multiple // 2)
        radius = round_up(self.receptive_radius, half)
        margin = self.margin if self.margin >= 0 else radius if 0 < radius <= tile // 4 else tile // 8
        exact = 0 < radius <= margin and margin % half == 0
        overlap = self.overlap if self.overlap >= 0 else tile // 8 // self.multiple * self.multiple if exact \
            else tile // 8
        if tile - 2 * margin <= overlap and max(height, width) > tile:
            which = f"tile {tile}" if self.tile else f"the largest tile for this model ({tile} px, tile=0)"
            raise ImgtransError(f"{which} leaves nothing between margins of {margin} px and an overlap of "
                                f"{overlap} px; use a larger tile or a smaller margin or overlap")
        return Tiling(min(tile, round_up(height, self.multiple)), min(tile, round_up(width, self.multiple)), margin,
                      overlap)

    def batch_size(self, tiling: Tiling, requested: int) -> int:
        """Tiles per inference call: as requested, fewer when that many would not fit the device's memory."""
        if not self.budget:
            return requested
        return max(1, min(requested, int(self.budget // (self.bytes_per_pixel * tiling.height * tiling.width))))

    def describe(self) -> str:
        if self.tile:
            return f"tiles of {self.tile} px"
        return f"one tile per image up to {self.max_tile} px, larger images tiled"
