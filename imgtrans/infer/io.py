"""Reading scans and writing results for `translate`, keeping integer data and georeferencing.

Inputs stay in their integer type (8- or 16-bit) until a band of rows is
needed, and TIFFs are memory-mapped when their layout allows it, so a large
scan is never held as float. GeoTIFF tags (pixel scale, tie points — which
also carry GCPs —, model transformation, GeoKeys with the CRS, and the
GDAL no-data / metadata tags) are copied to the output unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from imgtrans.errors import ImgtransError
from imgtrans.files import temp_file_beside

TIFF_SUFFIXES = {".tif", ".tiff"}
# ModelPixelScale, ModelTiepoint (incl. GCPs), ModelTransformation, GeoKeyDirectory,
# GeoDoubleParams, GeoAsciiParams, GDAL_METADATA, GDAL_NODATA.
GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113)
Image.MAX_IMAGE_PIXELS = None  # archive scans are legitimately huge


@dataclass
class Scan:
    """An input image as integers (H, W, C) plus what is needed to write its output."""

    pixels: np.ndarray
    max_value: float
    geo_tags: list[tuple] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    def rows(self, top: int, bottom: int) -> np.ndarray:
        """Rows [top, bottom) as float32 (C, rows, W) in [0, 1]."""
        band = np.asarray(self.pixels[top:bottom], dtype=np.float32) / self.max_value
        return band.transpose(2, 0, 1)


def _geo_tags(page: tifffile.TiffPage) -> list[tuple]:
    tags = []
    for code in GEO_TAGS:
        tag = page.tags.get(code)
        if tag is not None:
            tags.append((code, tag.dtype, tag.count, tag.value, False))
    return tags


def _max_value(array: np.ndarray) -> float:
    if array.dtype == np.uint8:
        return 255.0
    if array.dtype == np.uint16:
        return 65535.0
    if array.dtype.kind == "f":
        return 1.0
    raise ImgtransError(f"unsupported pixel type {array.dtype}")


def _as_hwc(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 2:
        return array[..., None]
    if array.ndim == 3 and array.shape[-1] in (1, 2, 3, 4):
        return array[..., :3] if array.shape[-1] >= 3 else array[..., :1]
    raise ImgtransError(f"{path}: expected a 2-D gray or colour image, got shape {array.shape}")


def read_scan(path: Path) -> Scan:
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                tags = _geo_tags(page)
                try:
                    pixels = tifffile.memmap(path, mode="r")
                except ValueError:  # compressed or tiled: decode, but keep the integer type
                    pixels = page.asarray()
            pixels = _as_hwc(pixels, path)
            return Scan(pixels, _max_value(pixels), tags)
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                pixels = np.asarray(img).astype(np.uint16)[..., None]
            elif img.mode in ("L", "1", "LA"):
                pixels = np.asarray(img.convert("L"))[..., None]
            else:
                pixels = np.asarray(img.convert("RGB"))
        return Scan(pixels, _max_value(pixels))
    except ImgtransError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, tifffile.TiffFileError, IndexError) as exc:
        raise ImgtransError(f"cannot read image {path}: {exc}") from None


def output_path_for(relative: Path, out_dir: Path) -> Path:
    """Same relative path; formats we cannot write losslessly with georeferencing become PNG."""
    suffix = relative.suffix.lower()
    if suffix in TIFF_SUFFIXES or suffix in (".png", ".jpg", ".jpeg"):
        return out_dir / relative
    return out_dir / relative.with_suffix(".png")


class OutputWriter:
    """Writes an (H, W, 3) uint8 result band by band into a temporary file, then renames it."""

    def __init__(self, path: Path, height: int, width: int, geo_tags: list[tuple]):
        self.path = path
        fd, tmp = temp_file_beside(path, suffix=path.suffix + ".part")
        os.close(fd)
        self.tmp = Path(tmp)
        self.is_tiff = path.suffix.lower() in TIFF_SUFFIXES
        if self.is_tiff:
            tifffile.imwrite(self.tmp, shape=(height, width, 3), dtype=np.uint8, photometric="rgb",
                             extratags=geo_tags, bigtiff=height * width * 3 > 2 ** 31)
            self.array = tifffile.memmap(self.tmp, mode="r+")
        else:
            self.array = np.zeros((height, width, 3), np.uint8)

    def write_rows(self, top: int, rgb: np.ndarray) -> None:
        """rgb: float (3, rows, W) in [0, 1]."""
        rows = rgb.shape[1]
        self.array[top:top + rows] = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)

    def commit(self) -> None:
        if self.is_tiff:
            self.array.flush()
            del self.array
        else:
            Image.fromarray(self.array).save(self.tmp, format="JPEG" if self.path.suffix.lower() in
                                             (".jpg", ".jpeg") else "PNG", quality=95)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.array = None
        self.tmp.unlink(missing_ok=True)
