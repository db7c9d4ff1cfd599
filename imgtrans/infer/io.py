"""Reading scans and writing results for `translate`, keeping the bit depth and the georeferencing.

Scans are read by training's reader (`imgtrans.data.images.read_pixels`):
they stay in their own type (8- or 16-bit integers, or float) until a band of
rows is needed, and TIFFs are memory-mapped when their layout allows it, so a
large scan is never held as float. Results are 8- or 16-bit RGB (JPEG always
8-bit); GeoTIFF tags (pixel scale, tie points — which also carry GCPs —,
model transformation, GeoKeys with the CRS, and the GDAL no-data / metadata
tags) are copied to the output unchanged. A result is written into a hidden
`.<name>.XXXX<suffix>.part` file beside it and renamed into place.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from imgtrans.data.images import (
    PNG_SIGNATURE,
    TIFF_SUFFIXES,
    read_pixels,
    white_level,
)
from imgtrans.files import temp_file_beside

TEMP_SUFFIX = ".part"
JPEG_SUFFIXES = {".jpg", ".jpeg"}
# ModelPixelScale, ModelTiepoint (incl. GCPs), ModelTransformation, GeoKeyDirectory,
# GeoDoubleParams, GeoAsciiParams, GDAL_METADATA, GDAL_NODATA.
GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113)


@dataclass
class Scan:
    """An input image in its own type (H, W, C) plus what is needed to write its output."""

    pixels: np.ndarray
    geo_tags: list[tuple] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def bits(self) -> int:
        """8 for 8-bit scans; 16 for 16-bit and float ones."""
        return 8 if self.pixels.dtype.itemsize == 1 else 16

    def rows(self, top: int, bottom: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Rows [top, bottom) as float32 (C, rows, W) in [0, 1] on `device`: they travel in the scan's own type (an
        8-bit scan's are a quarter of the bytes of float) and become float there, as `to_float` makes them."""
        # A copy: the scan may be a read-only memory map, and torch takes only native byte order.
        raw = np.array(self.pixels[top:bottom], dtype=self.pixels.dtype.newbyteorder("="), order="C", copy=True)
        rows = torch.from_numpy(raw).to(device).permute(2, 0, 1).float()
        if raw.dtype.kind == "f":  # a float scan's NaN (no data) is read as black
            rows = rows.nan_to_num_(nan=0.0)
        return (rows / white_level(raw.dtype)).clamp_(0.0, 1.0)


def _geo_tags(path: Path) -> list[tuple]:
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        return [(code, tags[code].dtype, tags[code].count, tags[code].value, False)
                for code in GEO_TAGS if code in tags]


def read_scan(path: Path) -> Scan:
    pixels = read_pixels(path, memmap=True)
    return Scan(pixels, _geo_tags(path) if path.suffix.lower() in TIFF_SUFFIXES else [])


def output_path_for(relative: Path, out_dir: Path) -> Path:
    """Same relative path; formats we cannot write losslessly with georeferencing become PNG."""
    suffix = relative.suffix.lower()
    if suffix in TIFF_SUFFIXES or suffix == ".png" or suffix in JPEG_SUFFIXES:
        return out_dir / relative
    return out_dir / relative.with_suffix(".png")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png16_bytes(rgb: np.ndarray) -> bytes:
    """A 16-bit colour PNG of (H, W, 3) uint16, which Pillow cannot write; rows unfiltered."""
    height, width, _ = rgb.shape
    compressor = zlib.compressobj(6)
    # Each row starts with its filter type, 0 (none); samples are big-endian.
    idat = b"".join(compressor.compress(b"\0" + row.astype(">u2").tobytes()) for row in rgb) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, colour type 2 (RGB)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


class OutputWriter:
    """Writes an (H, W, 3) 8- or 16-bit result band by band into a temporary file, then renames it.

    JPEG results are 8-bit whatever `bits` asks.
    """

    def __init__(self, path: Path, height: int, width: int, geo_tags: list[tuple], bits: int = 8):
        self.path = path
        suffix = path.suffix.lower()
        self.is_tiff, self.is_jpeg = suffix in TIFF_SUFFIXES, suffix in JPEG_SUFFIXES
        self.dtype = np.dtype(np.uint16 if bits == 16 and not self.is_jpeg else np.uint8)
        fd, tmp = temp_file_beside(path, suffix=path.suffix + TEMP_SUFFIX)
        os.close(fd)
        self.tmp = Path(tmp)
        try:
            if self.is_tiff:
                tifffile.imwrite(self.tmp, shape=(height, width, 3), dtype=self.dtype, photometric="rgb",
                                 extratags=geo_tags, bigtiff=height * width * 3 * self.dtype.itemsize > 2 ** 31)
                self.array = tifffile.memmap(self.tmp, mode="r+")
            else:
                self.array = np.zeros((height, width, 3), self.dtype)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise

    def write_rows(self, top: int, rgb: np.ndarray) -> None:
        """rgb: float (3, rows, W) in [0, 1]."""
        rows = rgb.shape[1]
        scaled = np.clip(rgb, 0, 1) * white_level(self.dtype) + 0.5
        self.array[top:top + rows] = scaled.astype(self.dtype).transpose(1, 2, 0)

    def commit(self) -> None:
        if self.is_tiff:
            self.array.flush()
            del self.array
        elif self.dtype == np.uint16:
            self.tmp.write_bytes(png16_bytes(self.array))
        else:
            Image.fromarray(self.array).save(self.tmp, format="JPEG" if self.is_jpeg else "PNG", quality=95)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.array = None
        self.tmp.unlink(missing_ok=True)
