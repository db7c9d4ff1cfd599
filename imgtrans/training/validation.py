"""Validation during training: `val/psnr`, `val/ssim` (a colorizer's colour scores, `val/kid` for models that
ask for it, the model's own `val/*` scores) on the validation split, summed over a torchrun job's processes, and
the labelled sample sheet; the generator's batch-norm statistics recomputed with its final weights."""

from __future__ import annotations

import contextlib
import sys
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import Subset

from imgtrans.compute import distributed
from imgtrans.config import VALIDATION_COLOUR, TrainConfig
from imgtrans.data.datasets import Data, make_loader
from imgtrans.data.sheets import sample_sheet
from imgtrans.data.splits import SplitSummary
from imgtrans.errors import one_line
from imgtrans.metrics.colour import ColourSums
from imgtrans.metrics.distribution import FidelityInception, kernel_inception_distance
from imgtrans.metrics.quality import psnr_per_image, ssim_per_image
from imgtrans.models.base import TranslationModel
from imgtrans.nets.layers import Generator
from imgtrans.tracking.tracker import Tracker
from imgtrans.training import bn_recalibration
from imgtrans.weights import INCEPTION, resolve_weights

# Validation images the batch-norm recalibration is judged on.
PROBE_IMAGES = 16


class Validator:
    def __init__(self, cfg: TrainConfig, model: TranslationModel, data: Data, val_summary: SplitSummary,
                 tracker: Tracker):
        self.cfg, self.model, self.data, self.val_summary, self.tracker = cfg, model, data, val_summary, tracker
        self.world = distributed.WORLD
        self.kid_features, self.kid_note = self._kid_features()
        # Sample sheets are drawn, encoded and logged on a thread: on a GPU that is most of a validation's time
        # (0.1-0.3 s of PNG encoding and artifact writes against a few ms of scoring).
        self._sheets = ThreadPoolExecutor(1, thread_name_prefix="imgtrans-sheets")

    def _kid_features(self):
        """Inception features for `val/kid`, for models that ask for it (diffusion, as the “Comparison of
        Generative Models” report does), when the weights file is there; otherwise None and the message saying
        which file would enable it."""
        if not self.model.validation_kid or not self.cfg.val_images:
            return None, ""
        weights, message = resolve_weights(INCEPTION, self.model.inception_weights, "val/kid", "inception_weights")
        if weights is None:
            print(f"imgtrans: warning: {message}", file=sys.stderr)
            return None, message
        return FidelityInception(weights).to(self.model.runtime.device).eval(), f"val/kid: Inception from {weights}"

    @torch.no_grad()
    def validate(self, epoch: int, step: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Score the validation images (each process its share), log the metrics and the epoch's sample sheet;
        the metrics, and on the main process `val/psnr` and `val/ssim` per image (every process's, in rank order)."""
        cfg, model, world = self.cfg, self.model, self.world
        count = min(cfg.val_images, len(self.data.val))
        device = model.runtime.device
        metrics: dict[str, float] = {}
        per_image: dict[str, torch.Tensor] = {}
        # Without cuDNN autotuning: it would spend seconds on each of validation's batch shapes.
        cudnn = torch.backends.cudnn
        # Batch-norm statistics as rank 0 has them (what its checkpoint holds); each process scores its share.
        distributed.broadcast_state(model, buffers_only=True, keep=model.local_state().values())
        # Every RNG as it was afterwards (the device's too: samplers draw there): training continues exactly.
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), cudnn.flags(enabled=cudnn.enabled, benchmark=False,
                                                                deterministic=cudnn.deterministic,
                                                                allow_tf32=cudnn.allow_tf32):
            model.eval()
            if count and self.data.has_targets:
                metrics, per_image = self._scores(count, device)
            if count and world.is_main:
                batch = next(iter(make_loader(Subset(self.data.val, range(min(count, 8))), batch_size=8)))
                metrics.update(model.validation_metrics(batch))
            if metrics:
                self.tracker.log_metrics(metrics, step)
            rows = min(cfg.sample_images, len(self.data.val)) if world.is_main else 0
            if rows:
                batch = next(iter(make_loader(Subset(self.data.val, range(rows)), batch_size=rows)))
                self._sheets.submit(self._log_sheet, model.visuals(batch), epoch, step)
            model.train()
        return metrics, per_image

    def _log_sheet(self, visuals: dict[str, torch.Tensor], epoch: int, step: int) -> None:
        """Draws and logs a sample sheet; one that cannot be logged is reported, and training goes on without it
        (it must not cost the run its model)."""
        try:
            sheet = sample_sheet(visuals)
            self.tracker.log_image(sheet, "samples", step)
            self.tracker.log_image_file(sheet, f"samples/epoch_{epoch + 1:03d}.png")
            # The latest sheet again at the root: MLflow's compare page offers only root files both runs have.
            self.tracker.log_image_file(sheet, "samples.png")
        except Exception as exc:
            print(f"imgtrans: warning: the sample sheet of step {step} could not be logged ({one_line(exc)}); "
                  "training goes on", file=sys.stderr)

    def join(self) -> None:
        """Until every sample sheet is logged; validation is over then."""
        self._sheets.shutdown(wait=True)

    def _scores(self, count: int, device: torch.device) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        model, codec, world = self.model, self.data.codec, self.world
        psnrs, ssims, preds, targets = [], [], [], []
        colour = ColourSums() if codec.colorization else None
        loader = make_loader(Subset(self.data.val, range(world.rank, count, world.size)), batch_size=8)
        for batch in loader:
            x = batch["A"].to(device)
            pred = codec.decode_output(x, model.translate_for_validation(x))
            target = codec.decode_output(x, batch["B"].to(device))
            psnrs.append(psnr_per_image(pred, target))
            ssims.append(ssim_per_image(pred, target))
            if colour is not None:
                colour.update(pred, target)
            preds.append(pred)
            targets.append(target)
        own = {name: torch.cat(parts) if parts else torch.zeros(0) for name, parts in
               (("val/psnr", psnrs), ("val/ssim", ssims))}
        per_image = {name: distributed.gather_tensors(scores) for name, scores in own.items()}
        sums = torch.stack([scores.sum() for scores in own.values()]).to(device)
        psnr_sum, ssim_sum = distributed.sum_over_processes(sums).tolist()
        metrics = {"val/psnr": psnr_sum / count, "val/ssim": ssim_sum / count}
        if colour is not None:
            colour = ColourSums.from_tensor(distributed.sum_over_processes(colour.as_tensor().to(device)).cpu())
            metrics.update({f"val/{k}": v for k, v in colour.results().items() if k in VALIDATION_COLOUR})
        if self.kid_features is not None:  # KID from every process's images
            real, fake = (distributed.gather_tensors(torch.cat(images) if images else torch.empty(0))
                          for images in (targets, preds))
            if world.is_main:
                kid, kid_std, _ = kernel_inception_distance(self.kid_features, real, fake)
                metrics.update({"val/kid": kid, "val/kid_std": kid_std})
        return metrics, per_image

    def recalibrate_batch_norm(self) -> dict[str, float]:
        """The generator's batch-norm statistics recomputed with its final weights over training images, kept
        where that narrows the eval-vs-batch-statistics gap on validation images (see `bn_recalibration`); the
        gap before and after and whether they were kept, or nothing when there is no batch norm."""
        model, cfg = self.model, self.cfg
        generator, count = model.generator(), min(cfg.recalibrate_bn, len(self.data.train))
        if not count or not bn_recalibration.batch_norms(generator):
            return {}
        probe_split = self.data.val if len(self.data.val) else self.data.train
        probe_loader = make_loader(Subset(probe_split, range(min(PROBE_IMAGES, len(probe_split)))),
                                   batch_size=cfg.batch_size)
        loader = make_loader(Subset(self.data.train, range(count)), batch_size=cfg.batch_size)
        # The outermost generator inside any wrapper (DDP, compile); a self-ensemble's mirrored views in one batch
        # would give batch norm statistics the network never trained with.
        own = next((m for m in generator.modules() if isinstance(m, Generator)), None)
        with torch.random.fork_rng(devices=[]), own.single_view() if own else contextlib.nullcontext():
            model.eval()
            before, after, kept = bn_recalibration.recalibrate_if_closer(
                generator, model.translate, [batch["A"] for batch in loader], [batch["A"] for batch in probe_loader])
            model.train()
        return {"bn_eval_train_gap_before": before, "bn_eval_train_gap_after": after, "bn_recalibrated": float(kept)}
