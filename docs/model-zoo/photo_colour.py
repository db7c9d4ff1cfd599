"""Reproduces the real-photograph colorization figures of docs/MODEL_ZOO.md.

    python docs/model-zoo/photo_colour.py prepare <folder>             # tiles to train on, and to test on
    imgtrans pix2pix --dataset <folder>/tiles --color-space lab [...]  # one run per variant
    imgtrans evaluate --run-id <run id>                                # test tiles
    python docs/model-zoo/photo_colour.py score <folder> <sheet.jpg> <label>=<run id> ...   # full size

Photographs the project's dependencies ship, none of them seen in training by the test: scikit-image's
astronaut, coffee, chelsea and rocket are cut into 128 px tiles at a 64 px stride to train on; scikit-learn's
china.jpg into 128 px tiles to validate on; scikit-learn's flower.jpg and matplotlib's grace_hopper.jpg into
128 px tiles to test on, and whole (full size) for `score`, which exports each run, translates the two photos
with `imgtrans translate`, and scores them against the truth beside the grayscale copy.
"""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.cbook
import numpy as np
import skimage.data
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from imgtrans.data.codec import Codec
from imgtrans.metrics.colour import ColourSums
from imgtrans.metrics.quality import psnr_per_image, ssim_per_image

TILE = 128


def photographs() -> dict[str, dict[str, np.ndarray]]:
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        grace_hopper = np.asarray(Image.open(fh).convert("RGB"))
    return {
        "train": {name: getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")},
        "val": {"china": load_sample_image("china.jpg")},
        "test": {"flower": load_sample_image("flower.jpg"), "grace_hopper": grace_hopper},
    }


def tiles(image: np.ndarray, stride: int):
    h, w = image.shape[:2]
    for top in range(0, h - TILE + 1, stride):
        for left in range(0, w - TILE + 1, stride):
            yield top, left, image[top:top + TILE, left:left + TILE]


def prepare(folder: Path) -> None:
    for split, photos in photographs().items():
        (folder / "tiles" / split).mkdir(parents=True, exist_ok=True)
        for name, image in photos.items():
            for top, left, tile in tiles(image, TILE // 2 if split == "train" else TILE):
                Image.fromarray(tile).save(folder / "tiles" / split / f"{name}-{top:03d}-{left:03d}.png")
            if split == "test":
                (folder / "full").mkdir(exist_ok=True)
                Image.fromarray(image).save(folder / "full" / f"{name}.png")
    counts = {s: len(list((folder / "tiles" / s).glob("*.png"))) for s in ("train", "val", "test")}
    print(f"{folder / 'tiles'}: {counts}")


def imgtrans(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "imgtrans", *args, "--no-progress"], check=True, stdout=subprocess.DEVNULL)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255


def scores(output: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    colour = ColourSums()
    colour.update(output, truth)
    return {"psnr": float(psnr_per_image(output, truth)), "ssim": float(ssim_per_image(output, truth)),
            **colour.results()}


def score(folder: Path, sheet: Path, runs: dict[str, str]) -> None:
    photos = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in sorted((folder / "full").glob("*.png"))}
    codec = Codec(colorization=True, color_space="lab")
    outputs = {}
    for label, run_id in runs.items():
        model = folder / "models" / f"{label}.onnx"
        imgtrans("export", "--run-id", run_id, "--output", str(model))
        imgtrans("translate", str(folder / "full"), str(folder / f"out-{label}"), "--model", str(model))
        outputs[label] = {name: np.asarray(Image.open(folder / f"out-{label}" / f"{name}.png").convert("RGB"))
                          for name in photos}
    report = {}
    for name, image in photos.items():
        truth = as_tensor(image)
        _, gray = codec.trivial_output(codec.encode_input(truth))
        report[name] = {"grayscale copy": scores(gray, truth),
                        **{label: scores(as_tensor(out[name]), truth) for label, out in outputs.items()}}
    print(json.dumps(report, indent=1))
    rows = []
    for name, image in photos.items():
        gray = np.repeat(np.asarray(Image.fromarray(image).convert("L"))[..., None], 3, 2)
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        columns = [gray, *(out[name] for out in outputs.values()), image]
        crops = [np.asarray(Image.fromarray(c[top:top + side, left:left + side]).resize((320, 320))) for c in columns]
        rows.append(np.concatenate([np.pad(c, ((4, 4), (4, 4), (0, 0)), constant_values=255) for c in crops], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(sheet, quality=88)
    print(f"{sheet}: columns gray input, {', '.join(outputs)}, truth")


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]))
    else:
        score(Path(sys.argv[2]), Path(sys.argv[3]), dict(arg.split("=", 1) for arg in sys.argv[4:]))
