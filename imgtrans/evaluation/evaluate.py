"""Evaluate a trained run on its test split with every metric available, and write the results back.

Per-image PSNR / SSIM / LPIPS (mean ± std), FID / KID / IS with their sample
counts and settings, inference time per image, a per-image CSV, an image grid
and the first `grid_images` inputs/outputs/targets (used by `compare`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import Subset
from tqdm import tqdm

from imgtrans.compute.runtime import resolve_device
from imgtrans.data.datasets import build_data, make_loader, summarize_split
from imgtrans.data.images import to_uint8
from imgtrans.data.sheets import sheet_from_files
from imgtrans.data.splits import SplitSummary
from imgtrans.errors import ImgtransError
from imgtrans.evaluation.options import EvaluateConfig
from imgtrans.files import scratch_dir
from imgtrans.metrics.colour import COLOUR_SCORES, ColourSums
from imgtrans.metrics.distribution import DistributionMetrics, FidelityInception
from imgtrans.metrics.perceptual import lpips_network, lpips_per_image
from imgtrans.metrics.quality import psnr_per_image, ssim_per_image
from imgtrans.models.options import INFERENCE_OPTIONS, describe_inference, inference_options
from imgtrans.tracking import store
from imgtrans.tracking.models import generator_checkpoint, generator_of_run
from imgtrans.tracking.tracker import SOURCE_RUNS_TAG, MlflowTracker, tracked_run
from imgtrans.training.checkpoint import load_model
from imgtrans.weights import ALEXNET, INCEPTION, Unavailable, resolve_weights

SAMPLES_DIR, GRID_FILE = "samples", "grid.png"


@dataclass
class Evaluation:
    metrics: dict[str, float]  # the headline scores and their statistics (_std, n_images, baselines)
    settings: dict[str, str]  # how they were computed
    unavailable: list[Unavailable]
    artifacts: Path
    split: SplitSummary
    colorization: bool  # the colour scores are what a colorizer is ranked by; for others they stay in the summary

    def headline(self) -> dict[str, float]:
        """What goes in as metrics (and onto the model): the mean scores, not their statistics."""
        return {k: v for k, v in self.metrics.items()
                if not k.endswith("_std") and k != "n_images" and not k.startswith("baseline/")
                and (self.colorization or k not in COLOUR_SCORES)}


def pairwise_diversity(model, codec, x: torch.Tensor, lpips_net, device) -> torch.Tensor:
    """Per input: mean distance between its outputs for `n_samples` random codes (LPIPS, else L1)."""
    outs = model.samples(x, max(model.cfg.n_samples, 2), torch.Generator().manual_seed(0)).cpu()
    rgb = [codec.decode_output(x, o) for o in outs]
    pairs = [(i, j) for i in range(len(rgb)) for j in range(i + 1, len(rgb))]
    if lpips_net is not None:
        dist = [lpips_per_image(lpips_net, rgb[i].to(device), rgb[j].to(device)).cpu() for i, j in pairs]
    else:
        dist = [(rgb[i] - rgb[j]).abs().flatten(1).mean(1) for i, j in pairs]
    return torch.stack(dist).mean(0)


def thumbnail(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) → its centre square at size × size, for grids and sample pages of images of any size."""
    h, w = image.shape[-2:]
    side = min(h, w)
    square = image[:, (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    if side == size:
        return square
    return F.interpolate(square[None], size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)


def evaluate(cfg: EvaluateConfig, checkpoint: Path, device: torch.device, out: Path,
             progress: bool = False) -> Evaluation:
    model = load_model(checkpoint, device, **inference_options(cfg))
    # Another folder is read as the model needs it: a colorizer's as colour images to make gray.
    other = {"dataset": cfg.dataset, **({"layout": "colorization"} if model.codec.colorization else {})}
    train_cfg = dataclasses.replace(model.cfg, **(other if cfg.dataset else {}),
                                    **({} if cfg.crop else {"preprocess": "none"}))
    data = build_data(train_cfg, unpaired=model.unpaired, any_images=not model.is_conditional(train_cfg))
    split = cfg.split
    dataset = data.test if split == "test" else data.val
    count = min(cfg.max_images or len(dataset), len(dataset))
    if count == 0:
        raise ImgtransError(f"the {cfg.split} split of {data.source.root} has no images")
    codec = data.codec
    unavailable: list[Unavailable] = []

    lpips_file, lpips_missing = resolve_weights(ALEXNET, cfg.lpips_weights, "LPIPS", "lpips_weights")
    lpips_net = lpips_network(lpips_file).to(device) if lpips_file else None
    if lpips_net is None:
        unavailable.append(Unavailable("lpips", lpips_missing))
    inception_file, inception_missing = resolve_weights(INCEPTION, cfg.inception_weights, "FID/KID/IS",
                                                        "inception_weights")
    distribution = None
    if inception_file:
        distribution = DistributionMetrics(FidelityInception(inception_file, "2048"),
                                             FidelityInception(inception_file, "logits_unbiased"),
                                             kid_subset_size=cfg.kid_subset_size)
    else:
        unavailable += [Unavailable(name, inception_missing) for name in ("fid", "kid", "is")]

    has_targets = data.has_targets
    diversity: list[torch.Tensor] = []
    rows, columns = [], [[], [], []]
    baselines: dict[str, list[float]] = defaultdict(list)
    colour, baseline_colour = ColourSums(), defaultdict(ColourSums)
    seconds = 0.0
    # At stored sizes images may differ in size: one at a time.
    loader = make_loader(Subset(dataset, range(count)), batch_size=cfg.batch_size if cfg.crop else 1)
    display = model.cfg.crop_size
    for batch in tqdm(loader, desc=f"evaluating {split}", unit="batch", disable=not progress, dynamic_ncols=True):
        x = batch["A"]
        start = time.perf_counter()
        y = model.translate(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        pred = codec.decode_output(x, y.cpu())
        target = codec.decode_output(x, batch["B"]) if has_targets else codec.decode_input(batch["B"])
        if distribution is not None:
            distribution.update(target, pred)
        if model.multimodal:
            diversity.append(pairwise_diversity(model, codec, x, lpips_net, device))
        for index in batch["index"].tolist():
            rows.append({"file": str(dataset.input_path(index).relative_to(data.source.root)), "index": index})
        if has_targets:  # per-image scores need ground truth; unpaired data only has distributions
            baseline, trivial = codec.trivial_output(x)
            for name, score in (("psnr", psnr_per_image), ("ssim", ssim_per_image)):
                baselines[f"baseline/{baseline}/{name}"] += score(trivial, target).tolist()
            baseline_colour[baseline].update(trivial, target)
            psnr, ssim = psnr_per_image(pred, target), ssim_per_image(pred, target)
            colours = colour.update(pred, target)
            lp = lpips_per_image(lpips_net, pred.to(device), target.to(device)).cpu() if lpips_net else None
            for i, row in enumerate(rows[-len(pred):]):
                row.update(psnr=float(psnr[i]), ssim=float(ssim[i]), **{k: float(v[i]) for k, v in colours.items()})
                if lp is not None:
                    row["lpips"] = float(lp[i])
        keep = max(0, cfg.grid_images - len(columns[0]))
        for col, images in zip(columns, (codec.decode_input(x), pred, target)):
            col.extend(to_uint8(thumbnail(image, display)) for image in images[:keep])

    results: dict[str, float] = {"n_images": float(count), "ms_per_image": 1000 * seconds / count}
    scores = {name: [r[name] for r in rows if name in r] for name in ("psnr", "ssim", "lpips")} | baselines
    for name, values in scores.items():
        if values:
            results[name] = float(np.mean(values))
            results[f"{name}_std"] = float(np.std(values))
    results.update(colour.results())
    for baseline, sums in baseline_colour.items():
        results.update({f"baseline/{baseline}/{k}": v for k, v in sums.results().items()})
    if diversity:
        name = "diversity_lpips" if lpips_net is not None else "diversity_l1"
        values = torch.cat(diversity)
        results[name], results[f"{name}_std"] = float(values.mean()), float(values.std(unbiased=False))
    settings = {"data_range": "1.0 (rgb in [0, 1])", "split": cfg.split, "dataset": str(data.source.root),
            "color_space": f"{codec.color_space} (metrics computed in rgb)",
            "image_size": f"centre crops of {model.cfg.crop_size} px ({model.cfg.preprocess})" if cfg.crop else
            "stored size (padded to the size multiple for the network, scored unpadded)"}
    if distribution is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = distribution.compute()
        for w in caught:
            print(f"imgtrans: warning: {w.message}", file=sys.stderr)
        results.update(result.values)
        settings.update(result.settings)
        if result.unavailable:
            unavailable += [Unavailable(name, result.unavailable) for name in ("fid", "kid", "is")]

    with open(out / "per_image.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if columns[0]:  # grid_images=0 keeps none
        labels = ["gray input = baseline" if codec.colorization else "input", "output", "target"]
        Image.fromarray(sheet_from_files(dict(zip(labels, columns)))).save(out / GRID_FILE)
        (out / SAMPLES_DIR).mkdir()
        for i, (inp, pred, target) in enumerate(zip(*columns)):
            for kind, image in (("input", inp), ("output", pred), ("target", target)):
                Image.fromarray(image).save(out / SAMPLES_DIR / f"{kind}_{i:04d}.png")
    return Evaluation(results, settings, unavailable, out, summarize_split(data, split, train_cfg.dataset),
                      codec.colorization)


def evaluate_command(cfg: EvaluateConfig, explicit: dict, progress: bool) -> int:
    """`imgtrans evaluate`: a run's test metrics, logged to that run and onto its model; an evaluation run beside
    it links to it and summarises the result. Decoded at another `class_temperature`, the scores are not the
    model's own: they go to the evaluation run alone (likewise with another `self_ensemble` or `neutral_odds`, and
    on another `dataset` or `max_images` of the split)."""
    if not cfg.run_id:
        raise ImgtransError("run_id is required: the training run to evaluate")
    source = store.get_run(cfg.run_id)
    model_uri = generator_of_run(cfg.run_id)
    device = resolve_device(cfg.device)
    prefix = "test" if cfg.split == "test" else "eval_val"
    options = inference_options(cfg)
    at, phrase = describe_inference(options)  # `at` visible in a truncated run list
    other_data = [f"on {cfg.dataset}"] if cfg.dataset and cfg.dataset != source.data.params.get("dataset") else []
    with tracked_run("", "-".join(p for p in ("evaluate", at, source.info.run_name) if p), "evaluate", "evaluate",
                     experiment_id=source.info.experiment_id, tags={SOURCE_RUNS_TAG: cfg.run_id}) as tracker, \
            scratch_dir("evaluate") as tmp:
        (tmp / "results").mkdir()
        result = evaluate(cfg, generator_checkpoint(model_uri, tmp / "model"), device, tmp / "results", progress)
        summary = {"metrics": result.metrics, "settings": result.settings,
                   "unavailable": {m.metric: m.message for m in result.unavailable}}
        (tmp / "results" / "summary.json").write_text(json.dumps(summary, indent=2))
        scored = int(result.metrics["n_images"])
        elsewhere = other_data + ([f"on {scored} of the split's {result.split.images} images"]
                                  if scored < result.split.images else [])
        own = not options and not elsewhere
        target = MlflowTracker.of_run(cfg.run_id) if own else tracker
        target.log_artifacts(result.artifacts, f"evaluation/{cfg.split}")
        context = cfg.split if cfg.split == "test" else "validation"
        for run in (target, tracker) if own else (tracker,):  # each names the images they were scored on
            run.log_dataset(result.split, context)
        target.log_metrics({f"{prefix}/{k}": v for k, v in result.headline().items()}, step=0,
                           model_id=model_uri.split("/")[-1] if own else None, dataset=result.split)
        messages = dict.fromkeys(m.message for m in result.unavailable)
        if messages:
            target.set_tags({f"imgtrans.{prefix}.unavailable": " ".join(messages)})
        # At the evaluation run's root, where MLflow's compare page offers files two runs share.
        for name in (GRID_FILE, "per_image.csv"):
            if (result.artifacts / name).exists():
                tracker.log_artifact(result.artifacts / name)
        tracker.log_params({"split": cfg.split, "dataset": cfg.dataset, "max_images": cfg.max_images or None,
                            "crop": cfg.crop, **dict.fromkeys(INFERENCE_OPTIONS), **options})
        tracker.describe(evaluation_description(source, result, prefix, phrase))
    for message in messages:
        print(f"imgtrans: warning: {message}", file=sys.stderr)
    metrics = {f"{prefix}/{k}": v for k, v in result.metrics.items()}  # the baselines' too, to read against
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        if not key.endswith("_std"):
            std = metrics.get(f"{key}_std")
            print(f"{key:<{width}}  {value:.4f}" + (f" ± {std:.4f}" if std is not None else ""))
    if own:
        print(f"imgtrans: logged {len(result.headline())} metrics and evaluation/{cfg.split}/ to run {cfg.run_id} "
              f"and its model; evaluation run {tracker.run_id}")
    else:
        how = " ".join([f"with {phrase}"] * bool(phrase) + elsewhere)
        print(f"imgtrans: logged {len(result.headline())} metrics {how} to evaluation run {tracker.run_id}; "
              f"run {cfg.run_id} keeps its model's own scores")
    return 0


def evaluation_description(source, result: Evaluation, prefix: str, inference: str = "") -> str:
    """The evaluation run's summary: which run (decoded with which `inference` options, if not its own), on which
    images, and a table of every score."""
    link = f"[{source.info.run_name}]({store.ui_path(source.info.experiment_id, source.info.run_id)})"
    split = result.split
    decoded = f", decoded with {inference}" if inference else ""
    lines = [f"Evaluation of run {link}{decoded} on `{split.name}` ({result.metrics.get('n_images', 0):.0f} images, "
             f"{split.sizes}, digest `{split.digest}`).", "", "| metric | mean | std |", "|---|---|---|"]
    for key, value in result.metrics.items():
        if key.endswith("_std") or key == "n_images":
            continue
        std = result.metrics.get(f"{key}_std")
        lines.append(f"| {prefix}/{key} | {value:.4f} | {'' if std is None else f'{std:.4f}'} |")
    lines += ["", *[f"- {m.metric}: {m.message}" for m in {m.message: m for m in result.unavailable}.values()]]
    return "\n".join(lines).strip()
