"""Evaluate a trained run on its test split with every metric available, and write the results back.

Per-image PSNR / SSIM / LPIPS (mean ± std), FID / KID / IS with their sample
counts and settings, inference time per image, a per-image CSV, an image grid
and the first `grid_images` inputs/outputs/targets (used by `compare`).
"""

from __future__ import annotations

import csv
import dataclasses
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

from imgtrans.data.datasets import build_data, make_loader
from imgtrans.data.images import to_uint8
from imgtrans.errors import ImgtransError
from imgtrans.evaluation.options import EvaluateConfig
from imgtrans.metrics.distribution import DistributionMetrics, FidelityInception
from imgtrans.metrics.perceptual import lpips_network, lpips_per_image
from imgtrans.metrics.quality import psnr_per_image, ssim_per_image
from imgtrans.metrics.weights import (
    ALEXNET_FILE,
    ALEXNET_URL,
    INCEPTION_FILE,
    INCEPTION_URL,
    Unavailable,
    missing_message,
    weights_file,
)
from imgtrans.training.checkpoint import load_model

SAMPLES_DIR = "samples"


@dataclass
class Evaluation:
    metrics: dict[str, float]
    tags: dict[str, str]
    unavailable: list[Unavailable]
    artifacts: Path


def grid_image(columns: list[list[torch.Tensor]]) -> np.ndarray:
    rows = [np.concatenate([to_uint8(img) for img in row], 1) for row in zip(*columns)]
    return np.concatenate(rows, 0)


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


def evaluate(cfg: EvaluateConfig, checkpoint: Path, device: torch.device, out: Path) -> Evaluation:
    model = load_model(checkpoint, device)
    # Another folder is read as the model needs it: a colorizer's as colour images to make gray.
    other = {"dataset": cfg.dataset, **({"layout": "colorization"} if model.codec.colorization else {})}
    train_cfg = dataclasses.replace(model.cfg, **(other if cfg.dataset else {}),
                                    **({} if cfg.crop else {"preprocess": "none"}))
    data = build_data(train_cfg, unpaired=model.unpaired, any_images=not model.is_conditional(train_cfg))
    dataset = data.test if cfg.split == "test" else data.val
    count = min(cfg.max_images or len(dataset), len(dataset))
    if count == 0:
        raise ImgtransError(f"the {cfg.split} split of {data.source.root} has no images")
    codec = data.codec
    unavailable: list[Unavailable] = []

    lpips_file = weights_file(ALEXNET_FILE, cfg.lpips_weights)
    lpips_net = lpips_network(lpips_file).to(device) if lpips_file else None
    if lpips_net is None:
        unavailable.append(Unavailable("lpips", missing_message(
            "LPIPS", ALEXNET_FILE, ALEXNET_URL, cfg.lpips_weights, "lpips_weights")))
    inception_file = weights_file(INCEPTION_FILE, cfg.inception_weights)
    distribution = None
    if inception_file:
        distribution = DistributionMetrics(FidelityInception(inception_file, "2048"),
                                             FidelityInception(inception_file, "logits_unbiased"),
                                             kid_subset_size=cfg.kid_subset_size)
    else:
        message = missing_message("FID/KID/IS", INCEPTION_FILE, INCEPTION_URL, cfg.inception_weights,
                                    "inception_weights")
        unavailable += [Unavailable(name, message) for name in ("fid", "kid", "is")]

    has_targets = data.source.has_targets
    diversity: list[torch.Tensor] = []
    rows, columns = [], [[], [], []]
    baselines: dict[str, list[float]] = defaultdict(list)
    seconds = 0.0
    # At stored sizes images may differ in size: one at a time.
    loader = make_loader(Subset(dataset, range(count)), batch_size=cfg.batch_size if cfg.crop else 1)
    display = model.cfg.crop_size
    for batch in loader:
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
        for i, index in enumerate(batch["index"].tolist()):
            rows.append({"index": index})
        if has_targets:  # per-image scores need ground truth; unpaired data only has distributions
            baseline, trivial = codec.trivial_output(x)
            for name, score in (("psnr", psnr_per_image), ("ssim", ssim_per_image)):
                baselines[f"baseline/{baseline}/{name}"] += score(trivial, target).tolist()
            psnr, ssim = psnr_per_image(pred, target), ssim_per_image(pred, target)
            lp = lpips_per_image(lpips_net, pred.to(device), target.to(device)).cpu() if lpips_net else None
            for i, row in enumerate(rows[-len(pred):]):
                row.update(psnr=float(psnr[i]), ssim=float(ssim[i]))
                if lp is not None:
                    row["lpips"] = float(lp[i])
        keep = max(0, cfg.grid_images - len(columns[0]))
        for col, images in zip(columns, (codec.decode_input(x), pred, target)):
            col.extend(thumbnail(image, display) for image in images[:keep])

    results: dict[str, float] = {"n_images": float(count), "ms_per_image": 1000 * seconds / count}
    scores = {name: [r[name] for r in rows if name in r] for name in ("psnr", "ssim", "lpips")} | baselines
    for name, values in scores.items():
        if values:
            results[name] = float(np.mean(values))
            results[f"{name}_std"] = float(np.std(values))
    if diversity:
        name = "diversity_lpips" if lpips_net is not None else "diversity_l1"
        values = torch.cat(diversity)
        results[name], results[f"{name}_std"] = float(values.mean()), float(values.std(unbiased=False))
    tags = {"data_range": "1.0 (rgb in [0, 1])", "split": cfg.split, "dataset": str(data.source.root),
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
        tags.update(result.settings)

    with open(out / "per_image.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    Image.fromarray(grid_image(columns)).save(out / "grid.png")
    (out / SAMPLES_DIR).mkdir()
    for i, (inp, pred, target) in enumerate(zip(*columns)):
        for kind, image in (("input", inp), ("output", pred), ("target", target)):
            Image.fromarray(to_uint8(image)).save(out / SAMPLES_DIR / f"{kind}_{i:04d}.png")
    return Evaluation(results, tags, unavailable, out)


def evaluate_command(cfg: EvaluateConfig, explicit: dict, progress: bool) -> int:
    """`imgtrans evaluate`: test metrics of a run, logged to that run."""
    import os

    from imgtrans.compute.runtime import resolve_device
    from imgtrans.files import scratch_dir
    from imgtrans.tracking import RunWriter, generator_checkpoint, tracked_run

    if not cfg.run_id:
        raise ImgtransError("run_id is required: the training run to evaluate")
    target = RunWriter(cfg.run_id)
    device = resolve_device(cfg.device)
    with scratch_dir("evaluate") as tmp:
        ckpt = generator_checkpoint(f"runs:/{cfg.run_id}/model", tmp / "model")
        (tmp / "results").mkdir()
        result = evaluate(cfg, ckpt, device, tmp / "results")
        target.log_artifacts(result.artifacts, f"evaluation/{cfg.split}")
    prefix = "test" if cfg.split == "test" else "eval_val"
    metrics = {f"{prefix}/{k}": v for k, v in result.metrics.items()}
    tags = {f"imgtrans.{prefix}.{k}": v for k, v in result.tags.items()}
    for message in dict.fromkeys(m.message for m in result.unavailable):
        print(f"imgtrans: warning: {message}", file=sys.stderr)
    for missing in result.unavailable:
        tags[f"imgtrans.{prefix}.unavailable.{missing.metric}"] = missing.message
    target.log_metrics(metrics)
    target.set_tags(tags)
    if "MLFLOW_RUN_ID" in os.environ and os.environ["MLFLOW_RUN_ID"] != cfg.run_id:
        with tracked_run("") as tracker:
            tracker.set_tags({"imgtrans.evaluated_run": cfg.run_id})
            tracker.log_metrics(metrics, step=0)
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        if not key.endswith("_std"):
            std = metrics.get(f"{key}_std")
            print(f"{key:<{width}}  {value:.4f}" + (f" ± {std:.4f}" if std is not None else ""))
    print(f"imgtrans: logged {len(metrics)} metrics and evaluation/{cfg.split}/ to run {cfg.run_id}")
    return 0
