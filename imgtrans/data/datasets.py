"""Torch datasets over a `Source`, and the sampler that makes data order resumable.

Items are addressed by (epoch, index) so that augmentation depends only on
the seed, the epoch and the image — not on loader workers or on where a
resumed run restarted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from imgtrans import interrupts
from imgtrans.compute.distributed import World, shard
from imgtrans.config import TrainConfig
from imgtrans.data import transforms
from imgtrans.data.codec import Codec
from imgtrans.data.images import as_channels, load_image, read_header
from imgtrans.data.sources import Source, find_source
from imgtrans.data.splits import SplitSummary, summarize
from imgtrans.errors import ImgtransError


@dataclass(frozen=True)
class Augment:
    preprocess: str
    load_size: int
    crop_size: int
    flip: bool
    seed: int
    train: bool

    def geometry(self, height: int, width: int, epoch: int, index: int) -> transforms.Geometry:
        rng = np.random.default_rng([self.seed, epoch, index]) if self.train else None
        preprocess = self.preprocess
        return transforms.plan(height, width, preprocess=preprocess, load_size=self.load_size,
                               crop_size=self.crop_size, flip=self.flip, rng=rng)

    def whole_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) an image trains at under a preprocess that keeps it whole (`transforms.UNCROPPED`:
        no random size)."""
        return transforms.planned_size(self.geometry(height, width, 0, 0), height, width)


def header_size(path: Path) -> tuple[int, int]:
    """(height, width) of the image in `path`, as loaded, from its header."""
    (width, height), _ = read_header(path)
    return height, width


def _tensor(array: np.ndarray, channels: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(as_channels(array, channels).transpose(2, 0, 1)))


def _key(item) -> tuple[int, int]:
    return item if isinstance(item, tuple) else (0, item)


class PairedDataset(Dataset):
    """(input, target) pairs from aligned, paired or colorization sources."""

    def __init__(self, items: list[tuple[Path, Path | None]], codec: Codec, augment: Augment,
                 direction: str = "AtoB"):
        self.items, self.codec, self.augment, self.direction = items, codec, augment, direction

    def __len__(self) -> int:
        return len(self.items)

    def input_path(self, index: int) -> Path:
        return self.items[index][0]

    def files(self) -> list[Path]:
        return [path for pair in self.items for path in pair if path is not None]

    def stored_sizes(self) -> Iterator[tuple[Path, tuple[int, int]]]:
        """Each example's file and the (height, width) of its images as loaded, from the headers."""
        for a_path, b_path in self.items:
            height, width = header_size(a_path)
            if b_path is None and not self.codec.colorization:  # aligned: A|B in one image
                width //= 2
            yield a_path, (height, width)

    def rgb_pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        a_path, b_path = self.items[index]
        if self.codec.colorization:
            color = _tensor(load_image(a_path), 3)
            return color, color
        if b_path is None:  # aligned: A|B in one image
            both = load_image(a_path)
            half = both.shape[1] // 2
            a, b = both[:, :half], both[:, half:2 * half]
            if self.direction == "BtoA":
                a, b = b, a
            return _tensor(a, 3), _tensor(b, 3)
        a, b = _tensor(load_image(a_path), 3), _tensor(load_image(b_path), 3)
        if a.shape != b.shape:
            raise ImgtransError(f"paired images differ in size: {a_path} is {tuple(a.shape[1:])}, "
                                f"{b_path} is {tuple(b.shape[1:])}; resize them to match")
        return a, b

    def __getitem__(self, item) -> dict:
        epoch, index = _key(item)
        a, b = self.rgb_pair(index)
        geometry = self.augment.geometry(a.shape[1], a.shape[2], epoch, index)
        a, b = transforms.apply(a, geometry), transforms.apply(b, geometry)
        return {"A": self.codec.encode_input(a), "B": self.codec.encode_target(b), "index": index}


class UnpairedDataset(Dataset):
    """A images in order, each with a B image drawn at random (reproducibly)."""

    def __init__(self, a: list[Path], b: list[Path], augment: Augment):
        self.a, self.b, self.augment = a, b, augment
        self.codec = Codec(colorization=False)

    def __len__(self) -> int:
        return len(self.a)

    def input_path(self, index: int) -> Path:
        return self.a[index]

    def files(self) -> list[Path]:
        return [*self.a, *self.b]

    def stored_sizes(self) -> Iterator[tuple[Path, tuple[int, int]]]:
        """Each image file and its (height, width) as loaded, from the headers."""
        return ((path, header_size(path)) for path in self.files())

    @staticmethod
    def rgb(path: Path) -> torch.Tensor:
        return _tensor(load_image(path), 3)

    def partner(self, epoch: int, index: int) -> int:
        """The B image drawn for A image `index` in `epoch` (at random when training, reproducibly)."""
        if self.augment.train:
            return int(np.random.default_rng([self.augment.seed, epoch, index, 1]).integers(len(self.b)))
        return index % len(self.b)

    def _load(self, path: Path, epoch: int, index: int) -> torch.Tensor:
        image = self.rgb(path)
        geometry = self.augment.geometry(image.shape[1], image.shape[2], epoch, index)
        return self.codec.encode_input(transforms.apply(image, geometry))

    def __getitem__(self, item) -> dict:
        epoch, index = _key(item)
        j = self.partner(epoch, index)
        return {"A": self._load(self.a[index], epoch, index), "B": self._load(self.b[j], epoch, j), "index": index}


class EpochSampler(Sampler):
    """A seeded permutation per epoch, yielding (epoch, index); can start mid-epoch for exact resume. Under
    torchrun each process takes its shard of every global batch (`distributed.shard`)."""

    def __init__(self, size: int, seed: int, shuffle: bool = True, batch_size: int = 1,
                 world: World = World()):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.batch_size, self.world = batch_size, world
        self.epoch, self.skip = 0, 0

    def set_position(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            order = list(range(self.size))
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        return shard(order, self.batch_size, self.world)

    def __iter__(self):
        for index in self.order(self.epoch)[self.skip:]:
            yield self.epoch, index

    def __len__(self) -> int:
        return len(self.order(self.epoch)) - self.skip


@dataclass
class Data:
    source: Source
    codec: Codec
    train: Dataset
    val: Dataset
    test: Dataset

    @property
    def has_targets(self) -> bool:
        """Whether every input has a ground truth to score against: paired data, and any colorization data
        (a folder of photographs read by a Lab colorizer included: each photo is its gray input's truth)."""
        return self.source.has_targets or self.codec.colorization


def summarize_split(data: Data, split: str, dataset: str) -> SplitSummary:
    """What `split` (train, val, test) of `data` holds, as the tracker records it."""
    examples = {"train": data.train, "val": data.val, "test": data.test}[split]
    return summarize(data.source.root, examples.files(), len(examples), split, dataset, data.source.layout,
                     data.codec.color_space)


def build_data(cfg, *, unpaired: bool = False, any_images: bool = False) -> Data:
    """Datasets for a TrainConfig; `unpaired` models get A and B drawn independently; `any_images` models
    (unconditional generators) also accept a plain folder, read like colorization data (B = the image)."""
    source = find_source(cfg.dataset, cfg.layout, cfg.direction)
    # A folder of plain images is colorization data where the model makes images from nothing (any_images) or is
    # asked to predict a,b (lab): there is nothing else it could be.
    colorization = source.layout == "colorization" or source.layout == "single" and (
        any_images or cfg.color_space == "lab")
    if cfg.color_space == "lab" and not colorization:
        raise ImgtransError(f"color_space=lab needs a colorization dataset, but {source.root} has layout "
                            f"'{source.layout}'; add layout=colorization or use color_space=rgb")
    load_size = cfg.load_size or transforms.default_load_size(cfg.crop_size)
    codec = Codec(colorization=colorization, color_space=cfg.color_space)

    def augment(train: bool) -> Augment:
        return Augment(cfg.preprocess, load_size, cfg.crop_size, cfg.flip, cfg.seed, train)

    def limit(items: list) -> list:
        return items[:cfg.max_dataset_size] if cfg.max_dataset_size else items

    datasets = {}
    for split in ("train", "val", "test"):
        if unpaired:
            a, b = _unpaired_lists(source, split)
            datasets[split] = UnpairedDataset(limit(a) if split == "train" else a, b, augment(split == "train"))
        else:
            if not source.paired and not colorization:
                raise ImgtransError(f"this model needs paired data, but {source.root} has layout '{source.layout}'; "
                                    "use an aligned, paired or colorization dataset")
            items = source.pairs.get(split) if source.paired else [(p, None) for p in source.a.get(split, [])]
            items = items or []
            datasets[split] = PairedDataset(limit(items) if split == "train" else items, codec,
                                            augment(split == "train"), cfg.direction)
    return Data(source, codec, datasets["train"], datasets["val"], datasets["test"])


def whole_images(dataset: str, direction: str = "AtoB") -> Data:
    """A dataset's images at their stored size, neither resized nor cropped (for restoring one image); a paired
    one's inputs and targets as a model trained in `direction` takes them."""
    return build_data(TrainConfig(dataset=dataset, preprocess="none", direction=direction), any_images=True)


def _unpaired_lists(source: Source, split: str) -> tuple[list[Path], list[Path]]:
    if source.layout == "unpaired":
        return source.a.get(split, []), source.b.get(split, [])
    if source.paired:
        pairs = source.pairs.get(split, [])
        if pairs and pairs[0][1] is None:
            raise ImgtransError("aligned A|B datasets cannot be used unpaired yet; split them into A/ and B/ folders")
        return [a for a, _ in pairs], [b for _, b in pairs]
    raise ImgtransError(f"this model needs two image domains, but {source.root} has layout '{source.layout}'")


ONE_SIZE_ADVICE = "use batch_size=1, or a preprocess that crops or resizes to one size (e.g. resize_and_crop)"


def collate(samples: list[dict]) -> dict:
    """The default batching, with images of different sizes (preprocess=none) as a one-line error."""
    sizes = sorted({tuple(s["A"].shape[-2:]) for s in samples} | {tuple(s["B"].shape[-2:]) for s in samples})
    if len(sizes) > 1:
        (h1, w1), (h2, w2) = sizes[:2]
        raise ImgtransError(f"images of different sizes ({w1}×{h1} and {w2}×{h2}) in one batch; {ONE_SIZE_ADVICE}")
    return default_collate(samples)


def check_whole_images(dataset: PairedDataset | UnpairedDataset, multiple: int, batch_size: int) -> None:
    """Training on whole images (`transforms.UNCROPPED`): each must suit a generator that takes sides in
    multiples of `multiple` px, and a batch of several must be of one size — checked from the files' headers
    before the first step, not when a batch reaches the image."""
    preprocess, first = dataset.augment.preprocess, None
    for path, stored in dataset.stored_sizes():
        height, width = dataset.augment.whole_size(*stored)
        if height % multiple or width % multiple:
            raise ImgtransError(f"training image {path} is {width}×{height} px (preprocess={preprocess}), which does "
                                f"not fit the generator: it takes sides in multiples of {multiple} px; use a "
                                "preprocess that crops, e.g. preprocess=resize_and_crop")
        first = first or (path, (height, width))
        if batch_size > 1 and (height, width) != first[1]:
            raise ImgtransError(f"training images of different sizes ({first[0]} {first[1][1]}×{first[1][0]}, "
                                f"{path} {width}×{height}) at batch_size={batch_size}; {ONE_SIZE_ADVICE}")


def make_loader(dataset: Dataset, *, batch_size: int, sampler: Sampler | None = None, shuffle: bool = False,
                num_workers: int = 0, pin_memory: bool = False, drop_last: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=shuffle, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=drop_last, persistent_workers=False, collate_fn=collate,
                      worker_init_fn=interrupts.ignore_in_worker if num_workers else None)
