"""The image DIP restores: from a file or a dataset's test split, centre-cropped, degraded with seeded noise,
with its clean reference and inpainting mask; and the PNGs it writes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imgtrans.data.datasets import summarize_split, whole_images
from imgtrans.data.images import load_image, to_uint8
from imgtrans.data.splits import SplitSummary, summarize
from imgtrans.dip.options import DIPConfig
from imgtrans.errors import ImgtransError
from imgtrans.files import atomic_write


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def read_tensor(path: str, what: str) -> torch.Tensor:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ImgtransError(f"{what} file not found: {file}")
    return _tensor(load_image(file))


def dataset_image(dataset: str, index: int, direction: str = "AtoB") -> tuple[torch.Tensor, torch.Tensor,
                                                                               SplitSummary]:
    """(input, target) of test image `index` of a paired (in `direction`), colorization or plain image dataset,
    rgb [0, 1], (1, 3, H, W) — for a plain folder the input is the gray version — and the split it is from."""
    data = whole_images(dataset, direction)
    name = "test" if len(data.test) else "val"
    split = getattr(data, name)
    if index >= len(split):
        raise ImgtransError(f"image_index {index} is out of range: {dataset} has {len(split)} test images")
    item = split[index]
    return (data.codec.decode_input(item["A"])[None], data.codec.decode_output(item["A"], item["B"])[None],
            summarize_split(data, name, dataset))


def files_summary(paths: list[str]) -> SplitSummary:
    """The image files given (the image, its clean reference, its mask) as the data of a run."""
    files = [Path(p).expanduser().resolve() for p in paths]
    root = Path(os.path.commonpath([f.parent for f in files]))
    return summarize(root, files, 1, "image", str(files[0]), "single image", "rgb")


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if not size or (h <= size and w <= size):
        return x
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top:top + ch, left:left + cw]


@dataclass
class Images:
    """rgb or gray [0, 1] tensors (1, C, H, W) of the same size; mask is (1, 1, H, W) with 1 = known."""

    degraded: torch.Tensor
    clean: torch.Tensor | None
    mask: torch.Tensor | None
    source: str
    data: SplitSummary  # the files read, as the run records its data


def load_images(cfg: DIPConfig, direction: str = "AtoB") -> Images:
    """The image to restore (a dataset's: its target side in `direction`), degraded as asked, with its clean
    reference and mask."""
    if cfg.image:
        image, source = read_tensor(cfg.image, "image"), cfg.image
    else:
        _, image, data = dataset_image(cfg.dataset, cfg.image_index, direction)
        source = f"{cfg.dataset} test image {cfg.image_index}"
    image = centre_crop(image, cfg.crop_size)
    clean = None
    if cfg.noise_std > 0:
        g = torch.Generator().manual_seed(cfg.seed)
        clean, image = image, (image + cfg.noise_std * torch.randn(image.shape, generator=g)).clamp(0, 1)
    elif cfg.clean:
        clean = centre_crop(read_tensor(cfg.clean, "clean reference"), cfg.crop_size)
    mask = None
    if cfg.mask:
        mask = (centre_crop(read_tensor(cfg.mask, "mask"), cfg.crop_size).mean(1, keepdim=True) > 0.5).float()
    if cfg.image:  # after reading them: a missing file has been named
        data = files_summary([p for p in (cfg.image, cfg.clean, cfg.mask) if p])
    for name, other in (("clean reference", clean), ("mask", mask)):
        if other is not None and other.shape[-2:] != image.shape[-2:]:
            raise ImgtransError(f"the {name} is {tuple(other.shape[-2:])} but the image is "
                                f"{tuple(image.shape[-2:])}; give files of the same size")
    if clean is not None and clean.shape[1] != image.shape[1]:
        clean = clean.mean(1, keepdim=True) if image.shape[1] == 1 else clean.expand(-1, 3, -1, -1)
    return Images(image, clean, mask, source, data)


def save_png(path: Path, image: torch.Tensor) -> Path:
    """(1, C, H, W) in [0, 1] → 8-bit PNG, written atomically."""
    array = to_uint8(image[0])
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return atomic_write(path, lambda fh: picture.save(fh, format="PNG"))
