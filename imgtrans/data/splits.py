"""What a split of a dataset is, as plain values a tracker can record: its files (relative path and size,
whose digest changes when any file does), how many images, their sizes, channels and colour space."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from imgtrans.data.images import read_header


@dataclass(frozen=True)
class SplitSummary:
    name: str  # e.g. "synthetic-facades/train"
    root: str
    split: str
    digest: str  # SHA-256 (first 16 hex digits) of the files' relative paths and sizes
    images: int  # inputs, i.e. examples (a pair counts once)
    files: int
    sizes: str  # "256×256", or "from 96×80 to 512×512"
    channels: str  # "gray", "rgb", "rgba", … of the stored files
    layout: str
    color_space: str

    def profile(self) -> dict[str, object]:
        return {"images": self.images, "files": self.files, "size": self.sizes, "channels": self.channels,
                "layout": self.layout, "color_space": self.color_space, "split": self.split}


def dataset_label(dataset: str) -> str:
    """A short name for runs and tags: the built-in name, else the folder's name."""
    return Path(dataset).expanduser().name or dataset


def summarize(root: Path, files: list[Path], images: int, split: str, dataset: str, layout: str,
              color_space: str) -> SplitSummary:
    """A split whose examples (`images` of them) are read from `files` under `root`."""
    files = sorted(set(files))
    digest = hashlib.sha256()
    sizes, kinds = set(), set()
    for path in files:
        digest.update(f"{path.relative_to(root)}\t{path.stat().st_size}\n".encode())
        size, channels = read_header(path)
        sizes.add(size)
        kinds.add(channels)
    areas = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    shown = "none" if not areas else (f"{areas[0][0]}×{areas[0][1]}" if len(areas) == 1 else
                                      f"from {areas[0][0]}×{areas[0][1]} to {areas[-1][0]}×{areas[-1][1]}")
    return SplitSummary(
        name=f"{dataset_label(dataset)}/{split}", root=str(root), split=split, digest=digest.hexdigest()[:16],
        images=images, files=len(files), sizes=shown,
        channels=", ".join(sorted(kinds)) or "none",
        layout=layout, color_space=color_space)
