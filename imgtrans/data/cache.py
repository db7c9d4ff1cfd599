"""A paired dataset decoded once into uint8 tensors — in host memory or on the GPU — and augmented a batch at
a time on the training device, instead of decoding and resizing every image in loader workers each epoch.

The batches are the per-image path's (`PairedDataset` through a DataLoader): the same images in the same
order, the same resize, crop and flip per (seed, epoch, index), the same codec. On the CPU they are equal
bit for bit; on a GPU the resize and the Lab conversion run there, equal up to float rounding. Only 8-bit
images of one size qualify (the uint8 copy is then exact); otherwise `data_cache=auto` keeps the per-image
loader and says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import torch
from torch.nn import functional as F

from imgtrans.data import transforms
from imgtrans.data.datasets import PairedDataset, make_loader
from imgtrans.errors import ImgtransError

# auto caches when the decoded set takes at most this share of the free memory (the GPU's, else the host's).
MEMORY_SHARE = 0.25


def _as_uint8(image: torch.Tensor) -> torch.Tensor | None:
    """The exact uint8 copy of an image read as k/255 floats, or None (16-bit or float sources)."""
    exact = (image * 255).round()
    return exact.to(torch.uint8) if torch.equal(exact / 255, image) else None


@dataclass
class DecodedPairs:
    """Every (input, target) rgb pair of a `PairedDataset` as uint8 (N, 3, H, W) tensors on one device."""

    dataset: PairedDataset
    a: torch.Tensor
    b: torch.Tensor

    @classmethod
    def decode(cls, dataset: PairedDataset) -> DecodedPairs:
        """Raises ImgtransError (the reason) for data that cannot be cached exactly."""
        a, b = [], []
        for index in range(len(dataset)):  # one float pair at a time: only the uint8 copies are kept
            exact = [_as_uint8(x) for x in dataset.rgb_pair(index)]
            if any(x is None for x in exact):
                raise ImgtransError("the training images are not 8-bit; the data cache keeps 8-bit images only")
            if a and exact[0].shape != a[0].shape:
                raise ImgtransError("the training images differ in size; the data cache needs one size")
            a.append(exact[0])
            b.append(exact[1])
        images = torch.stack(a)
        # Colorization pairs are one image (its gray version is made by the codec): kept once.
        return cls(dataset, images, images if dataset.codec.colorization else torch.stack(b))

    @property
    def nbytes(self) -> int:
        return self.a.nbytes + (0 if self.b is self.a else self.b.nbytes)

    def to(self, device: torch.device) -> DecodedPairs:
        a = self.a.to(device)
        return DecodedPairs(self.dataset, a, a if self.b is self.a else self.b.to(device))

    def batch(self, items: list[tuple[int, int]], device: torch.device) -> dict[str, torch.Tensor]:
        """The DataLoader's batch of `items` ((epoch, index) pairs), made on `device`."""
        # Pinned, so that sending the indices to a GPU cache does not wait for the training step in flight.
        indices = torch.tensor([index for _, index in items], pin_memory=self.a.is_cuda)
        a = self.a[indices.to(self.a.device, non_blocking=True)].to(device, non_blocking=True).float() / 255
        b = self.b[indices.to(self.b.device, non_blocking=True)].to(device, non_blocking=True).float() / 255
        augment, codec = self.dataset.augment, self.dataset.codec
        h, w = a.shape[-2:]
        plans = [augment.geometry(h, w, epoch, index) for epoch, index in items]
        both = torch.cat([a, b])
        resize = plans[0].resize  # one size in, one plan of resizing out: it is the same for every image
        if resize is not None and resize != (h, w):
            both = F.interpolate(both, size=resize, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        no_resize = [transforms.Geometry(None, p.crop, p.flip) for p in plans]
        a = torch.stack([transforms.apply(x, g) for x, g in zip(both[:len(items)], no_resize)])
        b = torch.stack([transforms.apply(x, g) for x, g in zip(both[len(items):], no_resize)])
        return {"A": codec.encode_input(a), "B": codec.encode_target(b), "index": indices}


class CachedLoader:
    """Iterates like the DataLoader of the per-image path: `batch_size` items of the sampler at a time."""

    def __init__(self, pairs: DecodedPairs, sampler, batch_size: int, device: torch.device):
        self.pairs, self.sampler, self.batch_size, self.device = pairs, sampler, batch_size, device

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        items: list[tuple[int, int]] = []
        for item in self.sampler:
            items.append(item)
            if len(items) == self.batch_size:
                yield self.pairs.batch(items, self.device)
                items = []
        if items:
            yield self.pairs.batch(items, self.device)


def training_loader(dataset, *, choice: str, sampler, batch_size: int, device: torch.device, workers: int,
                    seed: int):
    """(loader, where the data lives) for `data_cache` = auto | off | host | device."""
    per_image = make_loader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                            pin_memory=device.type == "cuda")
    # The loader draws its base seed from this generator, not from the global RNG, so creating an iterator
    # does not disturb the RNG stream a resumed run must reproduce.
    per_image.generator = torch.Generator().manual_seed(seed)
    if choice == "off":
        return per_image, "off: per-image loader"
    if not isinstance(dataset, PairedDataset):
        if choice == "auto":
            return per_image, "off: the cache holds paired data only"
        raise ImgtransError(f"data_cache={choice} holds paired data only; use data_cache=auto or off for unpaired "
                            "models")
    if choice == "device" and device.type != "cuda":
        raise ImgtransError("data_cache=device needs a CUDA device; use data_cache=host, auto or off")
    first, _ = dataset.rgb_pair(0)
    estimate = len(dataset) * (1 if dataset.codec.colorization else 2) * first.numel()
    if choice == "auto" and estimate > MEMORY_SHARE * psutil.virtual_memory().available:
        return per_image, f"off: {estimate / 2 ** 30:.1f} GiB decoded would not fit in memory"
    try:
        pairs = DecodedPairs.decode(dataset)
    except ImgtransError as exc:
        if choice == "auto":
            return per_image, f"off: {exc}"
        raise ImgtransError(f"data_cache={choice}: {exc}; use data_cache=auto or off") from None
    on_device = choice == "device" or (choice == "auto" and device.type == "cuda" and
                                       pairs.nbytes <= MEMORY_SHARE * torch.cuda.mem_get_info(device)[0])
    if on_device:
        pairs = pairs.to(device)
    where = "device" if on_device else "host"
    return CachedLoader(pairs, sampler, batch_size, device), f"{where}: {len(dataset)} pairs, " \
                                                             f"{pairs.nbytes / 2 ** 20:.0f} MiB"
