"""Where a Lab colorizer's cast comes from (docs/MODEL_ZOO.md): its test split's pixels binned by how much
colour the neutral gate keeps (1 − p(neutral)); per bin, the share of the near-neutral target pixels that fall
in it, the chroma C* the output puts on them and what they add to the cast, and the share of the coloured target
pixels that fall in it with their output chroma.

    python docs/model-zoo/cast_sources.py <run id> [<dataset>]
"""

import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

from imgtrans.data.color import AB_SCALE, near_neutral, rgb_to_lab
from imgtrans.data.datasets import build_data, make_loader
from imgtrans.nets.lab_colorizer import LabColorizer
from imgtrans.nets.layers import pad_to_multiple
from imgtrans.tracking.models import generator_checkpoint, generator_of_run
from imgtrans.training.checkpoint import load_model

EDGES = torch.tensor([0, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 1.0])


def kept_colour(net: LabColorizer, x: torch.Tensor) -> torch.Tensor:
    padded, (h, w) = pad_to_multiple(x, net.size_multiple)
    with torch.no_grad():
        return net.kept_colour(net.heads(padded).gate)[..., :h, :w]


def main(run_id: str, dataset: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(generator_checkpoint(generator_of_run(run_id), Path(tmp) / "model"))
    net = model.generator()
    if not (isinstance(net, LabColorizer) and net.gate):
        sys.exit(f"run {run_id} has no neutral gate: its cast has no gate to come from")
    other = {"dataset": dataset, "layout": "colorization"} if dataset else {}
    data = build_data(dataclasses.replace(model.cfg, preprocess="none", **other), unpaired=False, any_images=False)
    bins = len(EDGES) - 1
    neutral_pixels, neutral_chroma, coloured_pixels = torch.zeros(bins), torch.zeros(bins), torch.zeros(bins)
    coloured_chroma, truth = torch.zeros(bins), 0.0
    for batch in make_loader(data.test, batch_size=1):
        x = batch["A"]
        output = data.codec.decode_output(x, model.translate(x))
        target = data.codec.decode_output(x, batch["B"])
        ab_output, ab_target = (rgb_to_lab(rgb)[:, 1:] * AB_SCALE for rgb in (output, target))
        neutral, chroma = near_neutral(ab_target)[:, 0], ab_output.norm(dim=1)
        which = (torch.bucketize(kept_colour(net, x)[:, 0], EDGES, right=True) - 1).clamp(max=bins - 1)
        for b in range(bins):
            here = which == b
            neutral_pixels[b] += (here & neutral).sum()
            neutral_chroma[b] += chroma[here & neutral].sum()
            coloured_pixels[b] += (here & ~neutral).sum()
            coloured_chroma[b] += chroma[here & ~neutral].sum()
        truth += float(ab_target.norm(dim=1)[neutral].sum())
    total = neutral_pixels.sum()
    print(f"{int(total)} near-neutral target pixels: cast {float(neutral_chroma.sum() / total):.2f}, "
          f"the truth's {truth / float(total):.2f}")
    print("colour kept   | near-neutral: share  output C*  adds to cast | coloured: share  output C*")
    for b in range(bins):
        print(f"{EDGES[b]:.2f}–{EDGES[b + 1]:.2f}   |  {neutral_pixels[b] / total:17.3f}  "
              f"{neutral_chroma[b] / neutral_pixels[b].clamp(min=1):9.1f}  {neutral_chroma[b] / total:12.2f} | "
              f"{coloured_pixels[b] / coloured_pixels.sum():15.3f}  "
              f"{coloured_chroma[b] / coloured_pixels[b].clamp(min=1):9.1f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
