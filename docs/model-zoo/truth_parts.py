"""What a Lab colorizer would score with a part of the truth put in (docs/MODEL_ZOO.md): its output decoded again
with the neutral gate's logit replaced by the truth's near-neutral mask, or with the a,b its colour head decodes
replaced, on the coloured target pixels (C* from 5), by the truth's a,b, the truth's chroma along the head's hue,
or the truth's hue at the head's chroma — and with both the truth's gate and colour. Which part the missing colour
or the cast is owed to, and what the other part would still cost: PSNR, SSIM, the colourfulness ratio and the cast
(the truth's) of each.

    python docs/model-zoo/truth_parts.py <run id> [<dataset>] [--split test|val|train]
"""

import argparse
import copy
import dataclasses

import torch
from cast_sources import load_colorizers

from imgtrans.data.color import AB_SCALE, near_neutral
from imgtrans.data.datasets import build_data, make_loader
from imgtrans.metrics.colour import ColourSums
from imgtrans.metrics.quality import psnr_per_image, ssim_per_image
from imgtrans.nets.layers import pad_to_multiple

CERTAIN = 30.0  # a gate logit this far from 0 keeps (or takes off) all of a pixel's colour at any temperature


def along(direction: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """a,b (N, 2, H, W) of `direction`'s hue and the chroma `length` (N, 1, H, W)."""
    return direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-6) * length


PARTS = {  # (the truth's gate?, the a,b on coloured target pixels from the head's and the truth's)
    "the model": (False, lambda head, truth: head),
    "the truth's gate": (True, lambda head, truth: head),
    "the truth's a,b": (False, lambda head, truth: truth),
    "the truth's chroma": (False, lambda head, truth: along(head, truth.norm(dim=1, keepdim=True))),
    "the truth's hue": (False, lambda head, truth: along(truth, head.norm(dim=1, keepdim=True))),
    "the truth's gate and a,b": (True, lambda head, truth: truth),
}


def outputs(net, x: torch.Tensor, ab_target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each part's output a,b (network scale) for one batch."""
    padded, (h, w) = pad_to_multiple(x, net.size_multiple)
    truth = torch.zeros(x.shape[0], 2, *padded.shape[-2:])
    truth[..., :h, :w] = ab_target
    neutral = near_neutral(truth * AB_SCALE)
    exact = copy.copy(net)  # the truth's gate decides each pixel as the truth has it, not over the model's box
    exact.neutral_blur = 0
    with torch.no_grad():
        heads = net.ensembled_heads(padded)
        head = net.ungated_colour(heads)
        results = {}
        for name, (truth_gate, colour) in PARTS.items():
            ab = torch.where(neutral, head, colour(head, truth))
            gate = torch.where(neutral, CERTAIN, -CERTAIN) if truth_gate else heads.gate
            results[name] = (exact if truth_gate else net).finish(padded, ab, gate)[..., :h, :w]
    return results


def scores(run_id: str, dataset: str, split: str) -> dict[str, dict[str, float]]:
    """PSNR, SSIM, colourfulness ratio, cast and the truth's cast of each part."""
    (net,), model = load_colorizers([run_id])
    other = {"dataset": dataset, "layout": "colorization"} if dataset else {}
    data = build_data(dataclasses.replace(model.cfg, preprocess="none", **other), unpaired=False, any_images=False)
    colour = {name: ColourSums() for name in PARTS}
    psnr, ssim = ({name: [] for name in PARTS} for _ in range(2))
    for batch in make_loader(getattr(data, split), batch_size=1):
        target = data.codec.decode_output(batch["A"], batch["B"])
        for name, ab in outputs(net, batch["A"], batch["B"]).items():
            output = data.codec.decode_output(batch["A"], ab)
            colour[name].update(output, target)
            psnr[name].append(psnr_per_image(output, target))
            ssim[name].append(ssim_per_image(output, target))
    return {name: {"psnr": float(torch.cat(psnr[name]).mean()), "ssim": float(torch.cat(ssim[name]).mean()),
                   **{k: colour[name].results()[k] for k in ("colourfulness_ratio", "cast", "cast_truth")}}
            for name in PARTS}


def main(run_id: str, dataset: str, split: str) -> None:
    print(f"{split} split            | PSNR   SSIM    ratio  cast (the truth's)")
    for name, s in scores(run_id, dataset, split).items():
        print(f"{name:24} | {s['psnr']:5.2f}  {s['ssim']:.4f}  {s['colourfulness_ratio']:.3f}  "
              f"{s['cast']:.2f} ({s['cast_truth']:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("dataset", nargs="?", default="", help="another colorization dataset than the run's")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test")
    arguments = parser.parse_args()
    main(arguments.run_id, arguments.dataset, arguments.split)
