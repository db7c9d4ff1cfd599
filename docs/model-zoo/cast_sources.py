"""Where a Lab colorizer's cast and its missing colour come from (docs/MODEL_ZOO.md), over one split's pixels:

- by how much colour the neutral gate keeps (1 − p(neutral), as the output applies it): per bin, the share of the
  near-neutral target pixels that fall in it, the chroma C* the output puts on them and what they add to the cast,
  and the share of the coloured target pixels that fall in it with their output chroma; and how well the gate
  tells the two apart whatever its odds: the ROC AUC of the colour it keeps, coloured against near-neutral pixels
  (0.5 is a coin, 1 never wrong);
- by how much colour the target has (the coloured pixels, C* from 5 up): per band, its share, the truth's C*, the
  C* the colour head decodes before the gate, the colour the gate keeps and the output's C*: what the gate takes
  off, against what the colour head never gave. With colour classes also the C* their annealed distribution
  expects (the mean of its classes' C*, at the decoding temperature): the decoded C*, the length of the mean a,b,
  falls short of it by as much as the distribution spreads over hues;
- by how far a near-neutral target pixel lies from a strongly coloured one (C* from 15, in the same tile; the
  distance in the max norm): its share, the truth's C* there and the output's, and what it adds to the cast.
  Within 2 px it is mostly an edge where two colours mix to gray (blue sky against orange struts), which no
  colorizer paints gray without painting both colours exactly; farther, colour bled over from a coloured
  neighbour or painted on a gray thing outright;
- by photograph (tiles named <photograph>-<top>-<left>, as photo_colour.py cuts them): the truth's mean a, b and
  C*, the output's, and the chroma error |Δa| + |Δb|: a photograph painted with another's colours; its share of the
  near-neutral target pixels, its own cast (and the truth's) and what it adds to the split's cast; and its tiles'
  colourfulness summed, the truth's and the output's (the colourfulness ratio is the one sum over the other, over
  all photographs), with the truth's C* on its coloured pixels, the C* the colour head decodes there and the
  colour the gate keeps: which photographs lack the colour, and whether the gate or the colour head left it out.

Given several runs (ids joined by commas, trained alike), it asks the same of their ensemble: the heads of every
run averaged (colour scores and gate logits, as the self-ensemble averages views) and decoded by the first run's
decoder. Where seeds err on different pixels, the average ranks gray against colour better than any one of them;
where it ranks no better, their mistakes are shared.

    python docs/model-zoo/cast_sources.py <run id>[,<run id>...] [<dataset>] [--split test|val|train]
"""

import argparse
import dataclasses
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc

from imgtrans.data.color import AB_SCALE, NEUTRAL_CHROMA, near_neutral, rgb_to_lab
from imgtrans.data.datasets import build_data, make_loader
from imgtrans.errors import ImgtransError
from imgtrans.metrics.colour import ColourSums, colourfulness
from imgtrans.metrics.quality import psnr_per_image, ssim_per_image
from imgtrans.models.base import TranslationModel
from imgtrans.nets.lab_colorizer import Heads, LabColorizer
from imgtrans.nets.layers import pad_to_multiple
from imgtrans.tracking.models import generator_checkpoint, generator_of_run
from imgtrans.training.checkpoint import load_model

EDGES = torch.tensor([0, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 1.0])
CHROMA_BANDS = torch.tensor([NEUTRAL_CHROMA, 10, 20, 40, float("inf")])
STRONG_CHROMA = 15  # a target pixel this colourful is coloured beyond doubt
REACH = (2, 8, 16)  # px: the bands of distance from such a pixel


def distance_band(strong: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool → (N, H, W) long: 0 within REACH[0] px (max norm) of a True pixel, 1 within REACH[1], …,
    len(REACH) farther or where there is none."""
    reached = sum(F.max_pool2d(strong[:, None].float(), 2 * r + 1, 1, r)[:, 0] > 0 for r in REACH)
    return len(REACH) - reached


def averaged_heads(nets: list[LabColorizer], x: torch.Tensor) -> Heads:
    """The heads each net decodes from (its self-ensemble's, in eval mode), averaged over the nets."""
    heads = [net.ensembled_heads(x) for net in nets]
    return Heads(*(sum(parts) / len(heads) for parts in zip(*heads)))


def gate_and_colour(net: LabColorizer, heads: Heads, h: int, w: int) -> tuple[torch.Tensor, ...]:
    """(N, h, w) each, from the heads the output is decoded from: the colour the gate keeps, the C* the colour
    head decodes before it and the C* its classes' annealed distribution expects (NaN without classes)."""
    with torch.no_grad():
        kept = net.kept_colour(heads.gate)[:, 0, :h, :w]
        decoded = (net.ungated_colour(heads) * AB_SCALE).norm(dim=1)[:, :h, :w]
        if net.classes is None:
            return kept, decoded, torch.full_like(decoded, float("nan"))
        chroma = net.classes.centres.norm(dim=1)
        expected = torch.einsum("nqhw,q->nhw", net.classes.annealed(heads.colour), chroma)
        return kept, decoded, net.at_full_resolution(expected[:, None])[:, 0, :h, :w]


def head_layout(net: LabColorizer) -> tuple[int, int]:
    """What a colour head's scores are: their stride, and how many channels (2 for a,b, else the classes')."""
    return net.class_stride, net.classes.count if net.classes is not None else 2


def load_colorizers(run_ids: list[str]) -> tuple[list[LabColorizer], TranslationModel]:
    """The runs' gated Lab colorizers, and the first run's model (its config and codec)."""
    nets, first = [], None
    for run_id in run_ids:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                model = load_model(generator_checkpoint(generator_of_run(run_id), Path(tmp) / "model"))
        except ImgtransError as exc:
            sys.exit(f"cast_sources.py: {exc}")
        net, first = model.generator(), first or model
        if not (isinstance(net, LabColorizer) and net.gate):
            sys.exit(f"run {run_id} has no neutral gate: its cast has no gate to come from")
        if nets and head_layout(net) != head_layout(nets[0]):
            sys.exit(f"run {run_id} has other colour heads than run {run_ids[0]}: their scores cannot be averaged")
        nets.append(net)
    return nets, first


def main(run_ids: list[str], dataset: str, split: str) -> None:
    nets, model = load_colorizers(run_ids)
    net = nets[0]
    other = {"dataset": dataset, "layout": "colorization"} if dataset else {}
    data = build_data(dataclasses.replace(model.cfg, preprocess="none", **other), unpaired=False, any_images=False)
    bins, bands = len(EDGES) - 1, len(CHROMA_BANDS) - 1
    neutral_pixels, neutral_chroma, coloured_pixels = torch.zeros(bins), torch.zeros(bins), torch.zeros(bins)
    coloured_chroma, truth = torch.zeros(bins), 0.0
    kept_all, coloured_all = [], []
    band_sums = {name: torch.zeros(bands) for name in ("pixels", "truth", "expected", "ungated", "kept", "output")}
    photographs = defaultdict(lambda: torch.zeros(9))  # tiles, pixels, truth a, b, C*, output a, b, C*, Δab
    casts = defaultdict(lambda: torch.zeros(3))  # near-neutral pixels, the output's C* on them, the truth's
    # colourfulness: the truth's, the output's; coloured pixels, and their truth C*, decoded C* and colour kept
    lacking = defaultdict(lambda: torch.zeros(6))
    colour_sums, psnr, ssim = ColourSums(), [], []
    distance_sums = torch.zeros(len(REACH) + 1, 3)  # near-neutral pixels, the truth's C*, the output's, by band
    for batch in make_loader(getattr(data, split), batch_size=1):
        x = batch["A"]
        padded, (h, w) = pad_to_multiple(x, net.size_multiple)
        with torch.no_grad():
            heads = averaged_heads(nets, padded)
            output = data.codec.decode_output(x, net.decode(padded, heads)[..., :h, :w])
        target = data.codec.decode_output(x, batch["B"])
        colour_sums.update(output, target)
        psnr.append(psnr_per_image(output, target))
        ssim.append(ssim_per_image(output, target))
        ab_output, ab_target = (rgb_to_lab(rgb)[:, 1:] * AB_SCALE for rgb in (output, target))
        neutral, chroma, chroma_target = near_neutral(ab_target)[:, 0], ab_output.norm(dim=1), ab_target.norm(dim=1)
        kept, ungated, expected = gate_and_colour(net, heads, h, w)
        kept_all.append(kept.flatten())
        coloured_all.append(~neutral.flatten())
        which = (torch.bucketize(kept, EDGES, right=True) - 1).clamp(max=bins - 1)
        for b in range(bins):
            here = which == b
            neutral_pixels[b] += (here & neutral).sum()
            neutral_chroma[b] += chroma[here & neutral].sum()
            coloured_pixels[b] += (here & ~neutral).sum()
            coloured_chroma[b] += chroma[here & ~neutral].sum()
        truth += float(chroma_target[neutral].sum())
        distance = distance_band(chroma_target >= STRONG_CHROMA)
        for b in range(len(REACH) + 1):
            here = neutral & (distance == b)
            distance_sums[b] += torch.stack([here.sum(), chroma_target[here].sum(), chroma[here].sum()])
        photograph = getattr(data, split).input_path(int(batch["index"])).stem.rsplit("-", 2)[0]
        photographs[photograph] += torch.stack([
            torch.tensor(1.0), torch.tensor(float(chroma.numel())), *ab_target.sum((0, 2, 3)), chroma_target.sum(),
            *ab_output.sum((0, 2, 3)), chroma.sum(), (ab_output - ab_target).abs().sum()])
        casts[photograph] += torch.stack([neutral.sum(), chroma[neutral].sum(), chroma_target[neutral].sum()])
        coloured = ~neutral
        lacking[photograph] += torch.stack([colourfulness(target).sum(), colourfulness(output).sum(), coloured.sum(),
                                            chroma_target[coloured].sum(), ungated[coloured].sum(),
                                            kept[coloured].sum()])
        band = torch.bucketize(chroma_target, CHROMA_BANDS, right=True) - 1
        for b in range(bands):
            here = band == b
            for name, values in (("pixels", here.float()), ("truth", chroma_target), ("expected", expected),
                                 ("ungated", ungated), ("kept", kept), ("output", chroma)):
                band_sums[name][b] += values[here].sum()
    total = neutral_pixels.sum()
    runs = f"{len(nets)} runs' averaged heads" if len(nets) > 1 else "the run"
    print(f"{split} split, {runs}: PSNR {float(torch.cat(psnr).mean()):.2f}, SSIM {float(torch.cat(ssim).mean()):.4f}, "
          f"colourfulness ratio {colour_sums.results()['colourfulness_ratio']:.2f}")
    print(f"{split} split, {int(total)} near-neutral target pixels: cast {float(neutral_chroma.sum() / total):.2f}, "
          f"the truth's {truth / float(total):.2f}; the gate's ROC AUC "
          f"{float(binary_auroc(torch.cat(kept_all), torch.cat(coloured_all).long())):.4f}")
    print("colour kept   | near-neutral: share  output C*  adds to cast | coloured: share  output C*")
    for b in range(bins):
        print(f"{EDGES[b]:.2f}–{EDGES[b + 1]:.2f}   |  {neutral_pixels[b] / total:17.3f}  "
              f"{neutral_chroma[b] / neutral_pixels[b].clamp(min=1):9.1f}  {neutral_chroma[b] / total:12.2f} | "
              f"{coloured_pixels[b] / coloured_pixels.sum():15.3f}  "
              f"{coloured_chroma[b] / coloured_pixels[b].clamp(min=1):9.1f}")
    print("target C*   | share of coloured  truth C*  expected C* (classes)  decoded C* (before the gate)  "
          "colour kept  output C*")
    pixels = band_sums["pixels"]
    for b in range(bands):
        mean = {name: float(values[b] / pixels[b].clamp(min=1)) for name, values in band_sums.items()}
        print(f"{CHROMA_BANDS[b]:3.0f}–{CHROMA_BANDS[b + 1]:<4.0f}   |  {pixels[b] / pixels.sum():16.3f}  "
              f"{mean['truth']:8.1f}  {mean['expected']:21.1f}  {mean['ungated']:30.1f}  {mean['kept']:11.2f}  "
              f"{mean['output']:9.1f}")
    print(f"near-neutral, from C* ≥ {STRONG_CHROMA} | share  truth C*  output C*  adds to cast")
    reaches = [f"within {REACH[0]} px", *(f"{near + 1}–{far} px" for near, far in zip(REACH, REACH[1:])),
               f"farther than {REACH[-1]} px"]
    for reach, (count, own, painted) in zip(reaches, distance_sums):
        per_pixel = count.clamp(min=1)
        print(f"{reach:23} | {count / total:5.3f}  {own / per_pixel:8.1f}  {painted / per_pixel:9.1f}  "
              f"{painted / total:12.2f}")
    print("photograph        | tiles  truth a, b (C*)       output a, b (C*)      |Δa|+|Δb| | near-neutral  "
          "cast (truth)  adds to cast")
    for photograph, (tiles, pixels, *sums) in sorted(photographs.items()):
        a, b, c, out_a, out_b, out_c, error = (float(v) / float(pixels) for v in sums)
        count, painted, own = (float(v) for v in casts[photograph])
        print(f"{photograph:17} | {int(tiles):5}  {a:6.1f} {b:6.1f} ({c:4.1f})   {out_a:6.1f} {out_b:6.1f} "
              f"({out_c:4.1f})   {error:9.1f} | {count / float(total):12.3f}  {painted / max(count, 1):4.2f} "
              f"({own / max(count, 1):4.2f})  {painted / float(total):12.2f}")
    print("photograph        | colourfulness: truth  output  lacking | coloured: truth C*  decoded C*  colour kept")
    for photograph, (truth_sum, output_sum, coloured, *sums) in sorted(lacking.items()):
        own, decoded, kept = (float(v / coloured.clamp(min=1)) for v in sums)
        print(f"{photograph:17} | {truth_sum:19.1f}  {output_sum:6.1f}  {truth_sum - output_sum:7.1f} | "
              f"{own:18.1f}  {decoded:10.1f}  {kept:11.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_ids", metavar="run_id[,run_id...]", type=lambda ids: ids.split(","))
    parser.add_argument("dataset", nargs="?", default="", help="another colorization dataset than the run's")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test")
    arguments = parser.parse_args()
    main(arguments.run_ids, arguments.dataset, arguments.split)
