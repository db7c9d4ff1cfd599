"""Reading image files into float arrays, whatever their bit depth or mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from imgtrans.errors import ImgtransError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _to_float(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.max(initial=0) > 255):
        return np.clip(array.astype(np.float32) / 65535.0, 0.0, 1.0)
    if array.dtype.kind in "iu":
        return array.astype(np.float32) / 255.0
    if array.dtype == bool:
        return array.astype(np.float32)
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def load_image(path: Path) -> np.ndarray:
    """Float32 array in [0, 1] of shape (H, W, C) with C = 1 (gray) or 3 (colour).

    16-bit files keep their precision; alpha is dropped; palette images are
    expanded to colour.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                array = np.asarray(img)
                if img.mode == "I" and array.max(initial=0) <= 255:
                    array = array.astype(np.uint8)
                return _to_float(array)[..., None]
            if img.mode in ("1", "L"):
                return _to_float(np.asarray(img.convert("L")))[..., None]
            if img.mode == "LA":
                return _to_float(np.asarray(img.convert("L")))[..., None]
            return _to_float(np.asarray(img.convert("RGB")))
    except FileNotFoundError:
        raise ImgtransError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImgtransError(f"cannot read image {path}: {exc}; fix or remove the file") from None


def as_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """Gray ↔ colour so that the array has `channels` (1 or 3) channels."""
    have = array.shape[-1]
    if have == channels:
        return array
    if channels == 3:
        return np.repeat(array, 3, axis=-1)
    return (array @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
