"""Built-in procedural datasets: generated on first use, never downloaded.

Every image is a pure function of (dataset, split, index, seed), so the same
seed always gives the same pixels and the cache can be rebuilt at any time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from imgtrans.errors import ImgtransError

SIZE = 128
DATA_SEED = 2026
SPLITS = {"train": 256, "val": 40, "test": 40}
LAYOUT_FILE = "imgtrans-dataset.json"
# Bump when a generator changes so stale caches are not reused.
GENERATOR_VERSION = 2


def cache_root() -> Path:
    env = os.environ.get("IMGTRANS_DATA_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "imgtrans" / "data"


# --------------------------------------------------------------------------
# noise helpers


def value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random coarse grid upsampled bicubically."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)
    return np.clip(np.asarray(img), 0.0, 1.0)


def fractal_noise(rng: np.random.Generator, size: int, octaves=(4, 8, 16, 32)) -> np.ndarray:
    total = np.zeros((size, size), np.float32)
    weight = 1.0
    for cells in octaves:
        total += weight * (value_noise(rng, size, cells) - 0.5)
        weight *= 0.55
    return total


def _coords(size: int):
    return np.mgrid[0:size, 0:size].astype(np.float32)


# --------------------------------------------------------------------------
# synthetic-facades: CMP-like label maps and photo-like renderings

FACADE_CLASSES = [
    "background", "facade", "window", "door", "cornice", "sill",
    "balcony", "blind", "deco", "molding", "pillar", "shop",
]


def _jet(v: float) -> tuple[int, int, int]:
    r = np.clip(1.5 - abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - abs(4 * v - 1), 0, 1)
    return int(r * 255), int(g * 255), int(b * 255)


# The CMP facade labels are drawn with a jet colormap over the class index.
FACADE_PALETTE = np.array(
    [_jet(i / (len(FACADE_CLASSES) - 1)) for i in range(len(FACADE_CLASSES))], np.uint8
)
C = {name: i for i, name in enumerate(FACADE_CLASSES)}


def facade_labels(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    lab = np.full((size, size), C["facade"], np.uint8)
    roof = int(rng.integers(0, size // 7))
    lab[:roof] = C["background"]
    if rng.random() < 0.5:  # a neighbouring building or sky at one side
        side = int(rng.integers(3, size // 10))
        if rng.random() < 0.5:
            lab[:, :side] = C["background"]
        else:
            lab[:, size - side:] = C["background"]
    top = roof
    cornice = int(rng.integers(3, 7))
    lab[top:top + cornice] = C["cornice"]
    top += cornice

    has_pillars = rng.random() < 0.4
    if has_pillars:
        pw = int(rng.integers(3, 6))
        lab[top:, :pw] = C["pillar"]
        lab[top:, size - pw:] = C["pillar"]

    floors = int(rng.integers(3, 6))
    ground_h = int(rng.integers(size // 6, size // 4))
    floor_h = (size - top - ground_h) / floors
    cols = int(rng.integers(2, 6))
    margin = int(rng.integers(6, 14))
    col_w = (size - 2 * margin) / cols
    win_w = max(4, int(col_w * rng.uniform(0.4, 0.7)))
    win_h = max(6, int(floor_h * rng.uniform(0.45, 0.7)))
    blind_p = rng.uniform(0, 0.5)
    balcony_floors = {f for f in range(floors) if rng.random() < 0.3}
    deco = rng.random() < 0.5
    for f in range(floors):
        y0 = int(top + f * floor_h + (floor_h - win_h) * 0.45)
        if f > 0 and rng.random() < 0.5:
            lab[int(top + f * floor_h):int(top + f * floor_h) + 2, :] = C["molding"]
        for c in range(cols):
            cx = margin + (c + 0.5) * col_w
            x0 = int(cx - win_w / 2)
            lab[y0:y0 + win_h, x0:x0 + win_w] = C["window"]
            if rng.random() < blind_p:
                lab[y0:y0 + win_h // 3, x0:x0 + win_w] = C["blind"]
            lab[y0 + win_h:y0 + win_h + 2, x0 - 1:x0 + win_w + 1] = C["sill"]
            if deco:
                lab[max(top, y0 - 3):y0 - 1, x0:x0 + win_w] = C["deco"]
            if f in balcony_floors:
                by = y0 + win_h - win_h // 3
                lab[by:y0 + win_h + 2, x0 - 2:x0 + win_w + 2] = C["balcony"]
    gy = size - ground_h
    lab[gy:gy + 2] = C["molding"]
    door_col = int(rng.integers(0, cols))
    shop = rng.random() < 0.5
    for c in range(cols):
        cx = margin + (c + 0.5) * col_w
        if c == door_col:
            dw = max(6, int(col_w * 0.5))
            lab[gy + ground_h // 4:, int(cx - dw / 2):int(cx + dw / 2)] = C["door"]
        elif shop:
            sw = max(6, int(col_w * 0.8))
            lab[gy + 4:size - 3, int(cx - sw / 2):int(cx + sw / 2)] = C["shop"]
        else:
            lab[gy + ground_h // 3:gy + ground_h * 3 // 4,
                int(cx - win_w / 2):int(cx + win_w / 2)] = C["window"]
    return lab


def facade_photo(rng: np.random.Generator, lab: np.ndarray) -> np.ndarray:
    size = lab.shape[0]
    yy, xx = _coords(size)
    hue = rng.choice([
        (0.85, 0.78, 0.62), (0.75, 0.45, 0.35), (0.82, 0.82, 0.80),
        (0.90, 0.85, 0.72), (0.60, 0.55, 0.50), (0.88, 0.70, 0.50),
    ])
    wall = np.array(hue, np.float32) * rng.uniform(0.85, 1.05)
    stone = np.clip(wall * 1.15 + 0.08, 0, 1)
    glass = np.array([0.18, 0.22, 0.30], np.float32) * rng.uniform(0.7, 1.3)
    colors = {
        "background": np.array([0.55, 0.70, 0.90], np.float32),
        "facade": wall,
        "window": glass,
        "door": np.array([0.35, 0.22, 0.12], np.float32) * rng.uniform(0.8, 1.2),
        "cornice": stone,
        "sill": stone,
        "balcony": np.array([0.22, 0.22, 0.24], np.float32),
        "blind": np.array(rng.choice([(0.3, 0.5, 0.3), (0.6, 0.4, 0.2), (0.9, 0.9, 0.85)]), np.float32),
        "deco": np.clip(stone * 1.05, 0, 1),
        "molding": np.clip(stone * 0.95, 0, 1),
        "pillar": np.clip(wall * 0.9, 0, 1),
        "shop": np.array([0.12, 0.14, 0.18], np.float32),
    }
    img = np.zeros((size, size, 3), np.float32)
    for name, idx in C.items():
        img[lab == idx] = colors[name]

    brick = rng.random() < 0.4
    texture = fractal_noise(rng, size, (8, 16, 32, 64))
    is_wall = np.isin(lab, [C["facade"], C["pillar"]])
    wall_shade = 1 + 0.12 * texture
    if brick:
        mortar = ((yy % 3) == 0) | (((xx + 3 * ((yy // 3) % 2)) % 6) == 0)
        wall_shade = wall_shade * np.where(mortar, 0.85, 1.0)
    img[is_wall] *= wall_shade[is_wall, None]

    glassy = np.isin(lab, [C["window"], C["shop"]])
    reflection = np.clip(0.5 + 0.5 * np.sin(0.15 * xx + 0.35 * yy + rng.uniform(0, 6.3)), 0, 1)
    img[glassy] += (0.12 * reflection[glassy])[:, None]
    frame = glassy & ~np.roll(glassy, 1, 0) | glassy & ~np.roll(glassy, 1, 1)
    img[frame] = np.clip(stone * 1.1, 0, 1)
    balcony = lab == C["balcony"]
    img[balcony & ((xx % 3) == 0)] *= 1.8
    blind = lab == C["blind"]
    img[blind & ((yy % 2) == 0)] *= 0.8

    sky = lab == C["background"]
    img[sky] = img[sky] * (0.85 + 0.3 * (yy[sky, None] / size))
    # Shadows cast downwards by protruding elements.
    protruding = np.isin(lab, [C["cornice"], C["sill"], C["balcony"], C["deco"]])
    shadow = np.roll(protruding, 2, 0) & ~protruding & ~sky
    img[shadow] *= 0.7
    light = 0.9 + 0.2 * (xx / size) * rng.choice([-1, 1]) + 0.1 * fractal_noise(rng, size, (2, 4))
    img *= light[..., None]
    img += rng.normal(0, 0.015, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def make_facade(rng: np.random.Generator) -> dict[str, Image.Image]:
    lab = facade_labels(rng)
    return {
        "A": Image.fromarray(FACADE_PALETTE[lab]),
        "B": Image.fromarray(facade_photo(rng, lab)),
    }


# --------------------------------------------------------------------------
# synthetic-aerial: top-down rural / suburban scenes for colorization

CROPS = [
    (0.30, 0.50, 0.18), (0.45, 0.60, 0.22), (0.72, 0.66, 0.32), (0.80, 0.72, 0.40),
    (0.50, 0.38, 0.26), (0.38, 0.30, 0.22), (0.58, 0.62, 0.30), (0.25, 0.40, 0.20),
]
ROOFS = [(0.66, 0.30, 0.22), (0.55, 0.55, 0.57), (0.30, 0.34, 0.42), (0.78, 0.76, 0.72)]


def aerial_scene(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    yy, xx = _coords(size)
    img = np.zeros((size, size, 3), np.float32)

    # Fields: Voronoi parcels, each a crop with rows at its own angle.
    n = int(rng.integers(5, 12))
    pts = rng.random((n, 2)).astype(np.float32) * size
    dist = (yy[None] - pts[:, 0, None, None]) ** 2 + (xx[None] - pts[:, 1, None, None]) ** 2
    parcel = dist.argmin(0)
    for i in range(n):
        mask = parcel == i
        color = np.array(CROPS[rng.integers(len(CROPS))], np.float32) * rng.uniform(0.85, 1.15)
        angle = rng.uniform(0, np.pi)
        freq = rng.uniform(0.6, 1.6)
        rows = 0.5 + 0.5 * np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        depth = rng.uniform(0.0, 0.25)
        img[mask] = color * (1 - depth + depth * rows[mask, None])
    border = (parcel != np.roll(parcel, 1, 0)) | (parcel != np.roll(parcel, 1, 1))
    img[border] *= 0.75
    img *= (1 + 0.25 * fractal_noise(rng, size))[..., None]

    # Water: a smooth blob, darker in the middle.
    if rng.random() < 0.5:
        field = value_noise(rng, size, 3)
        level = rng.uniform(0.6, 0.72)
        water = field > level
        deep = np.clip((field - level) * 6, 0, 1)
        tint = np.array([0.16, 0.30, 0.36], np.float32) * rng.uniform(0.8, 1.2)
        img[water] = tint * (1 - 0.4 * deep[water, None])

    # Roads: straight strips with a lighter verge.
    roads = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, 4))):
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-0.3, 0.3) * size
        d = (xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle) - offset
        width = rng.uniform(1.5, 3.5)
        verge = np.abs(d) < width + 1
        road = np.abs(d) < width
        img[verge & ~road] = (0.62, 0.58, 0.50)
        img[road] = np.array((0.42, 0.42, 0.44), np.float32) * rng.uniform(0.9, 1.2)
        roads |= road

    sun = rng.uniform(0, 2 * np.pi)
    sdy, sdx = int(round(2 * np.sin(sun))), int(round(2 * np.cos(sun)))

    # Buildings: roofs with a ridge, casting shadows.
    for _ in range(int(rng.integers(2, 10))):
        h, w = (int(v) for v in rng.integers(5, 16, 2))
        y0, x0 = (int(v) for v in rng.integers(0, size - 16, 2))
        box = (slice(y0, y0 + h), slice(x0, x0 + w))
        shadow = (slice(y0 + sdy, y0 + h + sdy), slice(x0 + sdx, x0 + w + sdx))
        img[shadow] *= 0.55
        roof = np.array(ROOFS[rng.integers(len(ROOFS))], np.float32) * rng.uniform(0.85, 1.1)
        img[box] = roof
        if w >= h:
            img[y0:y0 + h // 2, x0:x0 + w] *= 1.15
        else:
            img[y0:y0 + h, x0:x0 + w // 2] *= 1.15

    # Tree canopies: shaded discs in clusters.
    for _ in range(int(rng.integers(0, 5))):
        cy, cx = rng.random(2) * size
        for _ in range(int(rng.integers(3, 15))):
            ty, tx = cy + rng.normal(0, 8), cx + rng.normal(0, 8)
            r = rng.uniform(2, 5)
            d2 = (yy - ty) ** 2 + (xx - tx) ** 2
            disc = d2 < r * r
            img[(((yy - ty - sdy) ** 2 + (xx - tx - sdx) ** 2) < r * r) & ~disc] *= 0.6
            lit = 1 + 0.35 * ((yy - ty) * np.sin(sun + np.pi) + (xx - tx) * np.cos(sun + np.pi)) / (r * 2)
            green = np.array((0.16, 0.32, 0.14), np.float32) * rng.uniform(0.8, 1.2)
            img[disc] = green * lit[disc, None]

    exposure = rng.uniform(0.85, 1.15)
    vignette = 1 - 0.15 * (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size * size / 2))
    img *= (exposure * vignette)[..., None]
    img += rng.normal(0, 0.012, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def make_aerial(rng: np.random.Generator) -> dict[str, Image.Image]:
    return {"": Image.fromarray(aerial_scene(rng))}


# --------------------------------------------------------------------------
# registry and cache


@dataclass(frozen=True)
class SyntheticDataset:
    name: str
    layout: str  # as understood by imgtrans.data.sources
    make: Callable[[np.random.Generator], dict[str, Image.Image]]
    description: str


SYNTHETIC = {
    d.name: d
    for d in [
        SyntheticDataset("synthetic-facades", "paired", make_facade,
                         "facade label maps (A) and photo-like renderings (B)"),
        SyntheticDataset("synthetic-aerial", "colorization", make_aerial,
                         "top-down color scenes; inputs are their grayscale versions"),
    ]
}


def image_rng(name: str, split: str, index: int, seed: int = DATA_SEED) -> np.random.Generator:
    split_id = list(SPLITS).index(split)
    name_id = sorted(SYNTHETIC).index(name)
    return np.random.default_rng([seed, name_id, split_id, index])


def generate(name: str, root: Path, seed: int = DATA_SEED, counts: dict[str, int] | None = None) -> None:
    spec = SYNTHETIC[name]
    for split, count in (counts or SPLITS).items():
        for index in range(count):
            for sub, image in spec.make(image_rng(name, split, index, seed)).items():
                folder = root / split / sub
                folder.mkdir(parents=True, exist_ok=True)
                image.save(folder / f"{index:04d}.png")
    (root / LAYOUT_FILE).write_text(json.dumps({"layout": spec.layout, "seed": seed}))


def ensure_synthetic(name: str) -> Path:
    """Return the folder of a built-in dataset, generating it once if needed."""
    if name not in SYNTHETIC:
        raise ImgtransError(f"unknown built-in dataset '{name}'; choose one of {', '.join(SYNTHETIC)}")
    root = cache_root() / f"{name}-v{GENERATOR_VERSION}-s{DATA_SEED}"
    if (root / LAYOUT_FILE).exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    # Generate next to the final place and rename, so a crash or a second
    # process never sees a half-written dataset.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root.parent))
    try:
        generate(name, tmp)
        try:
            tmp.rename(root)
        except OSError:
            if not (root / LAYOUT_FILE).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
