"""A paired or unpaired dataset decoded once into uint8 tensors — in host memory or on the GPU — and augmented
a batch at a time on the training device, instead of decoding and resizing every image in loader workers each
epoch.

The batches are the per-image path's (`PairedDataset` or `UnpairedDataset` through a DataLoader): the same
images in the same order (and, unpaired, the same B drawn for each A), the same resize, crop and flip per
(seed, epoch, index), the same codec. On the CPU they are equal bit for bit; on a GPU the resize and the Lab
conversion run there, equal up to float rounding. Only 8-bit images of one size (per side) qualify (the uint8
copy is then exact); otherwise `data_cache=auto` keeps the per-image loader and says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import psutil
import torch
from torch.nn import functional as F

from imgtrans.data import transforms
from imgtrans.data.datasets import PairedDataset, UnpairedDataset, make_loader
from imgtrans.errors import ImgtransError

# auto caches when the decoded set takes at most this share of the free memory (the GPU's, else the host's).
MEMORY_SHARE = 0.25


class NotCacheable(ImgtransError):
    """Why a dataset cannot be cached exactly (an image that cannot be read is another error: bad input)."""


def _as_uint8(image: torch.Tensor) -> torch.Tensor | None:
    """The exact uint8 copy of an image read as k/255 floats, or None (16-bit or float sources)."""
    exact = (image * 255).round()
    return exact.to(torch.uint8) if torch.equal(exact / 255, image) else None


def _decoded(items: Iterable[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Per side, uint8 (N, 3, H, W) of items of float rgb images (one per side: an (input, target) pair, or one
    image); raises NotCacheable (the reason) where that is not exact."""
    sides: list[list[torch.Tensor]] = []
    for item in items:  # one item at a time, each image read once: only the uint8 copies are kept
        exact = [_as_uint8(image) for image in item]
        if any(x is None for x in exact):
            raise NotCacheable("the training images are not 8-bit; the data cache keeps 8-bit images only")
        sides = sides or [[] for _ in exact]
        if sides[0] and any(x.shape != side[0].shape for x, side in zip(exact, sides)):
            raise NotCacheable("the training images differ in size; the data cache needs one size")
        for x, side in zip(exact, sides):
            side.append(x)
    return tuple(torch.stack(side) for side in sides)


def _augmented(images: torch.Tensor, rows: list[int], plans: list[transforms.Geometry],
               device: torch.device) -> torch.Tensor:
    """`images[rows]` made on `device` as the per-image path makes them: floats in [0, 1], resized as the plans
    say (one size in: one resize for all where they all say one size, as a fixed load size does; a random scale
    resizes image by image), then cropped and flipped each by its plan."""
    # Pinned, so that sending the indices to a GPU cache does not wait for the training step in flight.
    indices = torch.tensor(rows, pin_memory=images.is_cuda)
    x = images[indices.to(images.device, non_blocking=True)].to(device, non_blocking=True).float() / 255
    sizes = {plan.resize for plan in plans}
    if len(sizes) == 1 and (size := sizes.pop()) is not None and size != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    return torch.stack([transforms.apply(image, plan) for image, plan in zip(x, plans)])  # resized: apply skips it


@dataclass
class DecodedPairs:
    """Every (input, target) rgb pair of a `PairedDataset` as uint8 (N, 3, H, W) tensors on one device."""

    dataset: PairedDataset
    a: torch.Tensor
    b: torch.Tensor

    @classmethod
    def decode(cls, dataset: PairedDataset) -> DecodedPairs:
        """Raises NotCacheable (the reason) for data that cannot be cached exactly."""
        pairs = (dataset.rgb_pair(i) for i in range(len(dataset)))
        if dataset.codec.colorization:  # one image (its gray version is made by the codec): kept once
            (a,) = _decoded(pair[:1] for pair in pairs)
            return cls(dataset, a, a)
        return cls(dataset, *_decoded(pairs))

    @staticmethod
    def estimate(dataset: PairedDataset) -> int:
        return len(dataset) * (1 if dataset.codec.colorization else 2) * dataset.rgb_pair(0)[0].numel()

    @property
    def nbytes(self) -> int:
        return self.a.nbytes + (0 if self.b is self.a else self.b.nbytes)

    def describe(self) -> str:
        return f"{len(self.a)} pairs"

    def to(self, device: torch.device) -> DecodedPairs:
        a = self.a.to(device)
        return DecodedPairs(self.dataset, a, a if self.b is self.a else self.b.to(device))

    def batch(self, items: list[tuple[int, int]], device: torch.device) -> dict[str, torch.Tensor]:
        """The DataLoader's batch of `items` ((epoch, index) pairs), made on `device`."""
        rows = [index for _, index in items]
        h, w = self.a.shape[-2:]
        plans = [self.dataset.augment.geometry(h, w, epoch, index) for epoch, index in items]
        codec = self.dataset.codec
        return {"A": codec.encode_input(_augmented(self.a, rows, plans, device)),
                "B": codec.encode_target(_augmented(self.b, rows, plans, device)), "index": torch.tensor(rows)}


@dataclass
class DecodedUnpaired:
    """Every A and every B image of an `UnpairedDataset` as uint8 (N, 3, H, W) tensors on one device (each side
    of one size), each A drawn with the B image the per-image path draws for it."""

    dataset: UnpairedDataset
    a: torch.Tensor
    b: torch.Tensor

    @classmethod
    def decode(cls, dataset: UnpairedDataset) -> DecodedUnpaired:
        (a,), (b,) = (_decoded((dataset.rgb(path),) for path in paths) for paths in (dataset.a, dataset.b))
        return cls(dataset, a, b)

    @staticmethod
    def estimate(dataset: UnpairedDataset) -> int:
        return (len(dataset.a) + len(dataset.b)) * dataset.rgb(dataset.a[0]).numel()

    @property
    def nbytes(self) -> int:
        return self.a.nbytes + self.b.nbytes

    def describe(self) -> str:
        return f"{len(self.a)} + {len(self.b)} unpaired images"

    def to(self, device: torch.device) -> DecodedUnpaired:
        return DecodedUnpaired(self.dataset, self.a.to(device), self.b.to(device))

    def batch(self, items: list[tuple[int, int]], device: torch.device) -> dict[str, torch.Tensor]:
        augment, codec = self.dataset.augment, self.dataset.codec
        sides = []
        for images, keys in ((self.a, items), (self.b, [(e, self.dataset.partner(e, i)) for e, i in items])):
            h, w = images.shape[-2:]
            plans = [augment.geometry(h, w, epoch, index) for epoch, index in keys]
            sides.append(codec.encode_input(_augmented(images, [index for _, index in keys], plans, device)))
        return {"A": sides[0], "B": sides[1], "index": torch.tensor([index for _, index in items])}


class CachedLoader:
    """Iterates like the DataLoader of the per-image path: `batch_size` items of the sampler at a time."""

    def __init__(self, images: DecodedPairs | DecodedUnpaired, sampler, batch_size: int, device: torch.device):
        self.images, self.sampler, self.batch_size, self.device = images, sampler, batch_size, device

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        items: list[tuple[int, int]] = []
        for item in self.sampler:
            items.append(item)
            if len(items) == self.batch_size:
                yield self.images.batch(items, self.device)
                items = []
        if items:
            yield self.images.batch(items, self.device)


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
    decoded = DecodedUnpaired if isinstance(dataset, UnpairedDataset) else DecodedPairs
    if choice == "device" and device.type != "cuda":
        raise ImgtransError("data_cache=device needs a CUDA device; use data_cache=host, auto or off")
    estimate = decoded.estimate(dataset)
    if choice == "auto" and estimate > MEMORY_SHARE * psutil.virtual_memory().available:
        return per_image, f"off: {estimate / 2 ** 30:.1f} GiB decoded would not fit in memory"
    try:
        images = decoded.decode(dataset)
    except NotCacheable as exc:
        if choice == "auto":
            return per_image, f"off: {exc}"
        raise ImgtransError(f"data_cache={choice}: {exc}; use data_cache=auto or off") from None
    on_device = choice == "device" or (choice == "auto" and device.type == "cuda" and
                                       images.nbytes <= MEMORY_SHARE * torch.cuda.mem_get_info(device)[0])
    if on_device:
        images = images.to(device)
    where = "device" if on_device else "host"
    return CachedLoader(images, sampler, batch_size, device), f"{where}: {images.describe()}, " \
                                                              f"{images.nbytes / 2 ** 20:.0f} MiB"
