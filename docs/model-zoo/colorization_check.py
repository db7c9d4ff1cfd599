"""Reproduces the colorization figures of docs/MODEL_ZOO.md: a trained Lab colorizer, exported, translated
over a 1,536 px synthetic aerial mosaic (with a scan's black frame and a white label) whole and in 256 px
tiles, scored against the target and the grayscale copy (PSNR, SSIM and the colour scores of the issue's
targets: the colourfulness ratio and the cast, with the truth's), and drawn as input | output | target | baseline.

    python docs/model-zoo/colorization_check.py <run id> <work folder> <sheet.jpg>
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from photo_colour import scores
from PIL import Image

from imgtrans.data.codec import Codec
from imgtrans.data.synthetic import aerial_scene

SIZE = 1536


def mosaic() -> np.ndarray:
    rgb = aerial_scene(np.random.default_rng(2026), SIZE).copy()
    rgb[:48], rgb[:, :48] = 0, 0  # a scan's black frame
    rgb[-160:-96, -400:-96] = 255  # a white label
    return rgb


def rgb_spread(rgb: torch.Tensor) -> torch.Tensor:
    """The spread of r, g, b per pixel: 0 for gray."""
    return rgb.max(1, keepdim=True).values - rgb.min(1, keepdim=True).values


def stride_peak(rgb: torch.Tensor) -> float:
    """Luma spectral energy at the ×2 stride frequency over the mean energy: a checkerboard's signature."""
    luma = rgb[0].mean(0)
    spectrum = torch.fft.fft2(luma - luma.mean()).abs() ** 2
    half = luma.shape[-1] // 2
    return float((spectrum[half, half] + spectrum[0, half] + spectrum[half, 0]) / 3 / spectrum.mean())


def imgtrans(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "imgtrans", *args], capture_output=True, text=True, check=True)
    return done.stderr + done.stdout


def main(run_id: str, work: Path, sheet: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    rgb = mosaic()
    (work / "in").mkdir(exist_ok=True)
    Image.fromarray(rgb).save(work / "in" / "aerial-1536.png")
    model = work / "aerial-colorizer.onnx"
    print(imgtrans("export", "--run-id", run_id, "--output", str(model)).strip())
    outputs = {}
    for name, extra in (("whole", []), ("tiles256", ["--tile", "256"])):
        print(imgtrans("translate", str(work / "in"), str(work / name), "--model", str(model), "--verbose",
                       "--no-progress", *extra).strip())
        outputs[name] = np.asarray(Image.open(work / name / "aerial-1536.png").convert("RGB"))
    codec = Codec(colorization=True, color_space="lab")
    target = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    x = codec.encode_input(target)
    _, gray = codec.trivial_output(x)
    lightness = (x + 1) * 50
    report = {"grayscale": scores(gray, target), "target": {"stride_peak": stride_peak(target)}}
    for name, array in outputs.items():
        out = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255
        report[name] = {**scores(out, target), "black_colour_max": float(rgb_spread(out)[lightness < 1].max()),
                        "white_colour_max": float(rgb_spread(out)[lightness > 99].max()),
                        "stride_peak": stride_peak(out)}
    difference = np.abs(outputs["tiles256"].astype(np.float32) - outputs["whole"].astype(np.float32))
    report["tiles256_vs_whole_mean_abs"] = float(difference.mean() / 255)
    print(json.dumps(report, indent=1))
    gray_u8 = (gray[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    inputs = np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, 2)
    rows = []
    for top, left in ((0, 0), (SIZE - 448, SIZE - 640), (700, 600)):  # the frame's corner, the label, fields
        crops = [a[top:top + 384, left:left + 384] for a in (inputs, outputs["whole"], rgb, gray_u8)]
        rows.append(np.concatenate([np.pad(c, ((4, 4), (4, 4), (0, 0)), constant_values=255) for c in crops], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(sheet, quality=85)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
