"""Find the images of a dataset on disk, in the layouts people already have.

Layouts (per split `train`, `val`, `test`):
- aligned:      <root>/<split>/*.png, each image A|B side by side (pix2pix datasets)
- paired:       <root>/<split>/A/x.png + <root>/<split>/B/x.png, or <root>/A/<split>/…
- unpaired:     <root>/<split>A/*.png and <root>/<split>B/*.png (CycleGAN layout)
- single:       <root>/<split>/*.png, or a flat folder of images
- colorization: like single; inputs are the grayscale (or L) versions of the images
When a folder has no val or test split, every 10th training image is held out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from imgtrans.data.images import list_images, read_header
from imgtrans.data.synthetic import LAYOUT_FILE, SYNTHETIC, ensure_synthetic
from imgtrans.errors import ImgtransError

SPLITS = ("train", "val", "test")
HOLDOUT_EVERY = 10


@dataclass
class Source:
    """Image paths per split. `pairs` for paired/aligned layouts, `a`/`b` lists otherwise."""

    root: Path
    layout: str
    pairs: dict[str, list[tuple[Path, Path | None]]] = field(default_factory=dict)
    a: dict[str, list[Path]] = field(default_factory=dict)
    b: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def paired(self) -> bool:
        return self.layout in ("aligned", "paired")

    @property
    def has_targets(self) -> bool:
        """Whether every input has a ground-truth target (for PSNR/SSIM), even for unpaired models."""
        return self.paired or self.layout == "colorization"

    def size(self, split: str) -> int:
        if self.paired:
            return len(self.pairs.get(split, []))
        return len(self.a.get(split, []))


def resolve_root(dataset: str) -> Path:
    if dataset in SYNTHETIC:
        return ensure_synthetic(dataset)
    root = Path(dataset).expanduser()
    if not root.exists():
        raise ImgtransError(f"dataset folder not found: {root}; give a folder or one of {', '.join(SYNTHETIC)}")
    if not root.is_dir():
        raise ImgtransError(f"dataset must be a folder, got the file {root}")
    return root.resolve()  # what a run records as its data's source, wherever it is looked at from


def detect_layout(root: Path) -> str:
    marker = root / LAYOUT_FILE
    if marker.exists():
        try:
            return json.loads(marker.read_text(encoding="utf-8"))["layout"]
        except (ValueError, KeyError, TypeError):  # not JSON (or not UTF-8), or no layout in it
            raise ImgtransError(f"{marker} is not an imgtrans layout file (it holds {{\"layout\": \"paired\"}} or "
                                "another layout); fix or remove it, or give layout=") from None
    if (root / "trainA").is_dir() or (root / "testA").is_dir():
        return "unpaired"
    for base in (root, *(root / s for s in SPLITS)):
        if (base / "A").is_dir() and (base / "B").is_dir():
            return "paired"
    folder = next((root / s for s in SPLITS if (root / s).is_dir()), root)
    images = list_images(folder)
    if not images:
        raise ImgtransError(f"no images found in {folder}; expected train/val/test folders, A/B, trainA/trainB "
                            "or image files")
    (width, height), _ = read_header(images[0])
    return "aligned" if width == 2 * height else "single"


def _split_folders(root: Path) -> dict[str, Path]:
    found = {s: root / s for s in SPLITS if (root / s).is_dir()}
    return found or {"train": root}


def _holdout(items: list) -> dict[str, list]:
    """Deterministic train/val split for folders without one."""
    val = items[::HOLDOUT_EVERY] if len(items) >= 2 else []
    train = [x for i, x in enumerate(items) if i % HOLDOUT_EVERY] if val else items
    return {"train": train, "val": val, "test": val}


def _fill_missing(splits: dict[str, list]) -> dict[str, list]:
    if "train" not in splits or not splits["train"]:
        return splits
    if not splits.get("val") and not splits.get("test"):
        return _holdout(splits["train"])
    splits["val"] = splits.get("val") or splits["test"]  # a missing or empty one: the other serves as both
    splits["test"] = splits.get("test") or splits["val"]
    return splits


def _paired_lists(root: Path) -> dict[str, list[tuple[Path, Path]]]:
    result: dict[str, list[tuple[Path, Path]]] = {}
    for split in SPLITS:
        for a_dir, b_dir in ((root / split / "A", root / split / "B"), (root / "A" / split, root / "B" / split)):
            if a_dir.is_dir() and b_dir.is_dir():
                result[split] = _match(a_dir, b_dir)
    if not result and (root / "A").is_dir() and (root / "B").is_dir():
        result["train"] = _match(root / "A", root / "B")
    return result


def _by_name(folder: Path) -> dict[str, Path]:
    """A folder's images by name without extension, which pairs them; two files of one name are refused."""
    images: dict[str, Path] = {}
    for path in list_images(folder):
        if path.stem in images:
            raise ImgtransError(f"{images[path.stem].name} and {path.name} in {folder} have one name: pairs are "
                                "matched by name; rename or remove one")
        images[path.stem] = path
    return images


def _match(a_dir: Path, b_dir: Path) -> list[tuple[Path, Path]]:
    a, b = _by_name(a_dir), _by_name(b_dir)
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    if only_a or only_b:
        example = f"'{only_a[0]}' is in {a_dir} only" if only_a else f"'{only_b[0]}' is in {b_dir} only"
        raise ImgtransError(f"A and B folders do not match: {len(only_a)} images without a partner in B and "
                            f"{len(only_b)} without one in A ({example}); pair every file by name")
    return [(a[k], b[k]) for k in sorted(a)]


def find_source(dataset: str, layout: str = "auto", direction: str = "AtoB") -> Source:
    root = resolve_root(dataset)
    if layout == "auto":
        layout = detect_layout(root)
    src = Source(root=root, layout=layout)
    if layout == "paired":
        pairs = _fill_missing(_paired_lists(root))
        if not pairs:
            raise ImgtransError(f"no A/ and B/ folders with matching images in {root}")
        src.pairs = {s: [(b, a) for a, b in v] if direction == "BtoA" else v for s, v in pairs.items()}
    elif layout == "aligned":
        images = _fill_missing({s: list_images(f) for s, f in _split_folders(root).items()})
        src.pairs = {s: [(p, None) for p in v] for s, v in images.items()}
    elif layout == "unpaired":
        for split in SPLITS:
            for side, store in (("A", src.a), ("B", src.b)):
                folder = root / f"{split}{side}"
                if folder.is_dir():
                    store[split] = list_images(folder)
        src.a, src.b = _fill_missing(src.a), _fill_missing(src.b)
        if direction == "BtoA":
            src.a, src.b = src.b, src.a
        if not src.b.get("train"):
            raise ImgtransError(f"unpaired dataset {root} needs both trainA/ and trainB/ with images")
    elif layout in ("single", "colorization"):
        src.a = _fill_missing({s: list_images(f) for s, f in _split_folders(root).items()})
    else:
        raise ImgtransError(f"invalid layout '{layout}'; valid values: auto, aligned, paired, unpaired, single, "
                            "colorization")
    if src.size("train") == 0:
        raise ImgtransError(f"no training images found in {root} (layout {layout})")
    return src
