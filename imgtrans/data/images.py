"""Reading image files, whatever their bit depth or mode: the one reader of training and `translate`;
and `to_uint8`, the way back from a result tensor to 8-bit pixels.

`read_pixels` keeps the file's own type — uint8, uint16 or float — so 16-bit
images keep their precision (gray and colour, PNG and TIFF) and float TIFFs
are read as values in [0, 1]; uncompressed TIFFs can be memory-mapped.
`load_image` is its float view, used in training. A JPEG's or WebP's EXIF
orientation (what cameras write) is applied, so that pairs line up as a viewer
shows them; other formats' orientation tags are not. `read_header` is the cheap
look at a file that dataset summaries and layout detection take.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from imgtrans.errors import ImgtransError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
TIFF_SUFFIXES = {".tif", ".tiff"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The value of white per pixel type (numpy kind and bytes); floats are taken as [0, 1].
WHITE_LEVELS = {"u1": 255.0, "u2": 65535.0, "f2": 1.0, "f4": 1.0, "f8": 1.0}
Image.MAX_IMAGE_PIXELS = None  # archive scans are legitimately huge
# What the stored pixels are, by Pillow's mode (others by the mode's own name).
CHANNELS = {"L": "gray", "I;16": "gray 16-bit", "I": "gray 32-bit", "F": "gray float", "RGB": "rgb", "RGBA": "rgba",
            "P": "palette", "LA": "gray+alpha"}
TURNED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that turn the image by 90°: width and height swap
ORIENTED_FORMATS = {"JPEG", "MPO", "WEBP"}  # whose EXIF orientation is applied (see the module's docstring)


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _type_key(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    return f"{dtype.kind}{dtype.itemsize}"


def white_level(dtype: np.dtype) -> float:
    """255 for 8-bit, 65535 for 16-bit and 1.0 for float pixels."""
    try:
        return WHITE_LEVELS[_type_key(dtype)]
    except KeyError:
        raise ImgtransError(f"unsupported pixel type {np.dtype(dtype)}") from None


def to_float(pixels: np.ndarray) -> np.ndarray:
    """Float32 in [0, 1]; float pixels outside it are clipped."""
    return np.clip(np.asarray(pixels, dtype=np.float32) / white_level(pixels.dtype), 0.0, 1.0)


def read_pixels(path: Path, memmap: bool = False) -> np.ndarray:
    """(H, W, C) in the file's own type, C = 1 (gray) or 3 (colour; alpha dropped, palettes expanded).

    With `memmap`, uncompressed TIFFs are memory-mapped instead of read.
    """
    try:
        if _is_tiff(path):
            pixels = _read_tiff(path, memmap)
        elif _png_bit_depth(path) == 16:
            pixels = _read_png16(path)
        else:
            pixels = _read_with_pil(path)
    except FileNotFoundError:
        raise ImgtransError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, IndexError, RuntimeError,
            tifffile.TiffFileError) as exc:
        raise ImgtransError(f"cannot read image {path}: {exc}; fix or remove the file") from None
    return _gray_or_rgb(pixels, path)


def read_header(path: Path) -> tuple[tuple[int, int], str]:
    """((width, height) as `read_pixels` returns the image, what its stored pixels are: "gray", "rgb", "gray
    16-bit", …) from the file's header."""
    try:
        try:
            with Image.open(path) as image:
                width, height = image.size
                if _turned(image):
                    width, height = height, width
                return (width, height), CHANNELS.get(image.mode, image.mode.lower())
        except UnidentifiedImageError:
            if not _is_tiff(path):
                raise
            with tifffile.TiffFile(path) as tif:  # float colour and float16 TIFFs, which Pillow cannot open
                page = tif.pages[0]
                kind = {"u1": "", "u2": " 16-bit"}.get(_type_key(page.dtype), " float")
                return (page.imagewidth, page.imagelength), f"{'rgb' if page.samplesperpixel >= 3 else 'gray'}{kind}"
    except FileNotFoundError:
        raise ImgtransError(f"image file not found: {path}") from None
    except (OSError, ValueError, tifffile.TiffFileError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise ImgtransError(f"cannot read image {path}: {exc}; fix or remove the file") from None


def load_image(path: Path) -> np.ndarray:
    """Float32 array in [0, 1] of shape (H, W, C) with C = 1 (gray) or 3 (colour)."""
    return to_float(read_pixels(path))


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """(C, H, W) values in [0, 1] → (H, W, C) 8-bit pixels, rounded."""
    return (rgb.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES


def _oriented(image: Image.Image) -> bool:
    """Whether an opened file's EXIF orientation is applied: a JPEG's or WebP's, in their headers (Pillow looks
    for a PNG's by decoding the pixels, which a header look must not do; 16-bit PNGs are read without Pillow)."""
    return image.format in ORIENTED_FORMATS


def _turned(image: Image.Image) -> bool:
    """Whether the orientation applied turns the image by 90° (width and height swap)."""
    return _oriented(image) and image.getexif().get(ExifTags.Base.Orientation) in TURNED_ORIENTATIONS


def _read_tiff(path: Path, memmap: bool) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        if (page.photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)
                or _type_key(page.dtype) not in WHITE_LEVELS):
            return _read_with_pil(path)  # palette, inverted gray, CMYK, bilevel, signed: Pillow converts them
        try:
            pixels = tifffile.memmap(path, page=0, mode="r") if memmap and page.is_memmappable else page.asarray()
        except ValueError:  # a compression that tifffile decodes only with imagecodecs
            if page.bitspersample > 8 and page.samplesperpixel > 1:
                raise  # Pillow would read it as 8-bit; the error says what to install
            return _read_with_pil(path)
        if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and page.samplesperpixel > 1:
            pixels = np.moveaxis(pixels, 0, -1)
        return pixels


def _png_bit_depth(path: Path) -> int:
    """Bits per sample of a PNG file, 0 for other files."""
    with open(path, "rb") as fh:
        header = fh.read(26)  # signature, IHDR length and type, width, height, bit depth
    return header[24] if len(header) == 26 and header.startswith(PNG_SIGNATURE) else 0


def _read_png16(path: Path) -> np.ndarray:
    """libpng through torchvision: Pillow reads 16-bit colour PNGs as 8-bit."""
    from torchvision.io import ImageReadMode, decode_png, read_file

    return decode_png(read_file(str(path)), ImageReadMode.UNCHANGED).permute(1, 2, 0).numpy()


def _read_with_pil(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        if _oriented(img):
            ImageOps.exif_transpose(img, in_place=True)
        if img.mode.startswith("I"):  # 16-bit gray (I;16…) or 32-bit integers
            return np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
        if img.mode == "F":
            return np.asarray(img, np.float32)
        return np.asarray(img.convert("L" if img.mode in ("1", "L", "LA") else "RGB"))


def _gray_or_rgb(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels[..., None]
    if pixels.ndim == 3 and pixels.shape[-1] in (1, 2, 3, 4):
        return pixels[..., :3] if pixels.shape[-1] >= 3 else pixels[..., :1]
    raise ImgtransError(f"{path}: expected a 2-D gray or colour image, got shape {pixels.shape}")


def as_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """Gray ↔ colour so that the array has `channels` (1 or 3) channels."""
    have = array.shape[-1]
    if have == channels:
        return array
    if channels == 3:
        return np.repeat(array, 3, axis=-1)
    return (array @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
