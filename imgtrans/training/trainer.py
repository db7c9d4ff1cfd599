"""The one training loop every model runs on: data order, AMP, checkpoints, exact resume,
validation, sample grids and tracking."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from imgtrans import config as config_mod
from imgtrans import interrupts
from imgtrans.compute import distributed
from imgtrans.compute.runtime import resolve_runtime, seed_everything
from imgtrans.config import TrainConfig
from imgtrans.data import transforms
from imgtrans.data.cache import training_loader
from imgtrans.data.datasets import Data, EpochSampler, build_data, check_whole_images, summarize_split
from imgtrans.data.splits import SplitSummary
from imgtrans.errors import ImgtransError
from imgtrans.files import scratch_dir
from imgtrans.models.base import TranslationModel
from imgtrans.models.registry import model_class
from imgtrans.nets.generators import load_pretrained_encoders
from imgtrans.nets.layers import count_parameters, round_up
from imgtrans.tracking.tracker import Tracker
from imgtrans.training import best, checkpoint
from imgtrans.training.graphed_step import training_step_for
from imgtrans.training.lr_schedules import build_scheduler
from imgtrans.training.runs import Validation, log_setup
from imgtrans.training.validation import Validator

PROCESS_SEED_STRIDE = 1_000_003  # process r of a torchrun job draws its noise from seed + r × this
# val_every=0: at least this many steps between validations. With short epochs (a few hundred images at batch 16 on
# a GPU: 0.2 s each) validating at every epoch end would cost as much as the training.
AUTO_VALIDATION_STEPS = 100


@dataclass
class TrainResult:
    run_id: str
    step: int
    val_metrics: dict[str, float]
    model: TranslationModel
    val_dataset: object
    loop_seconds: float  # from the first step to the end of the last validation
    timings: dict[str, list[float]]  # data_wait_s per step window, epoch_boundary_s, checkpoint_s (loop blocked)
    checkpoint_bytes: int  # the size of the last training checkpoint
    model_id: str  # the logged generator ("" in the processes of a torchrun job other than rank 0)
    kept_step: int  # the step of the generator the run kept (see keep_best)

    def summary(self) -> str:
        steps = f"{self.step} steps" + (f", kept step {self.kept_step}" if self.kept_step != self.step else "")
        return ", ".join([steps, *(f"{k}={v:.4f}" for k, v in self.val_metrics.items())])


class Trainer:
    """The run kind of every model in `models.MODELS` (see `runs`)."""

    def __init__(self, cfg: TrainConfig, tracker: Tracker, resume_payload: dict | None = None,
                 progress: bool = True, on_validation: Validation | None = None):
        """`on_validation(epoch, metrics)` is called after each validation (an Optuna study prunes there)."""
        self.cfg = cfg
        self.on_validation = on_validation
        self.tracker = tracker
        self.resume_payload = resume_payload
        self.progress = progress
        self.workdir: Path | None = None

    # --- set-up ------------------------------------------------------------

    def _build(self) -> None:
        cfg = self.cfg
        cls = model_class(cfg.model_name)
        self.data: Data = build_data(cfg, unpaired=cls.unpaired, any_images=not cls.is_conditional(cfg))
        self.runtime = resolve_runtime(cfg)
        self.world = distributed.WORLD
        seed_everything(cfg.seed)
        self.model: TranslationModel = cls(cfg, self.data.codec)
        if cfg.preprocess in transforms.UNCROPPED:
            check_whole_images(self.data.train, self.model.size_multiple, cfg.batch_size)
        # Where weights came from: pretrained encoders (a resumed run has theirs in its checkpoint), loss networks.
        self.start_notes: list[str] = []
        if self.resume_payload is None:
            self.start_notes = load_pretrained_encoders(self.model)
            self.model.fit_to_data(self.data.train)
        self.start_notes += self.model.load_loss_networks()
        self.model.setup(self.runtime)
        if cfg.sync_bn and self.world.active:
            if self.runtime.device.type != "cuda":
                raise ImgtransError("sync_bn needs CUDA (nn.SyncBatchNorm has no CPU kernels); leave it off on a CPU")
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        distributed.broadcast_state(self.model)  # every process starts from rank 0's weights
        if self.world.active:  # and draws its own dropout masks and noise from here on
            seed_everything(cfg.seed + PROCESS_SEED_STRIDE * self.world.rank)
        self.model.configure_optimizers()
        self.training_step, self.cuda_graphs = training_step_for(self.model, self.runtime, cfg)
        self.sampler = EpochSampler(len(self.data.train), cfg.seed, batch_size=cfg.batch_size, world=self.world)
        workers = cfg.num_workers if cfg.num_workers >= 0 else (4 if self.runtime.device.type == "cuda" else 0)
        self.loader, self.data_cache = training_loader(self.data.train, choice=cfg.data_cache, sampler=self.sampler,
                                                       batch_size=cfg.batch_size, device=self.runtime.device,
                                                       workers=workers, seed=cfg.seed)
        self.steps_per_epoch = math.ceil(len(self.data.train) / (cfg.batch_size * self.world.size))
        self.val_every = cfg.val_every or math.ceil(AUTO_VALIDATION_STEPS / self.steps_per_epoch)
        self.schedulers = {k: build_scheduler(o, cfg, self.steps_per_epoch) for k, o in self.model.optimizers.items()}
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.last_checkpoint, self.checkpoint_step = time.monotonic(), -1
        self.timings: dict[str, list[float]] = defaultdict(list)
        self.figures: dict[str, float] = {}  # one-off figures of the run, logged as a table at the end
        self.best: dict | None = None  # see `best`; on the main process only
        self.splits: dict[str, SplitSummary] = {
            context: summarize_split(self.data, split, cfg.dataset)
            for context, split in (("train", "train"), ("validation", "val"))} if self.world.is_main else {}
        self.validator = Validator(cfg, self.model, self.data, self.splits.get("validation"), self.tracker)

    def _restore(self, payload: dict) -> None:
        pos = checkpoint.restore_training(self.model, self.schedulers, payload)
        by_rank = payload.get("rng_by_rank", [])
        if len(by_rank) == self.world.size:
            checkpoint.set_rng_state(by_rank[self.world.rank])
        local = payload.get("local_by_rank", [])
        if len(local) == self.world.size:  # this process's own part of the model's state (e.g. image pools)
            self.model.load_state_dict(local[self.world.rank], strict=False)
        self.step, self.epoch, self.batch_in_epoch = pos["step"], pos["epoch"], pos["batch_in_epoch"]
        self.best = best.restored(payload.get("best"), self.model, self.cfg.keep_best)
        saved_world = pos.get("world_size", 1)
        if saved_world != self.world.size:  # the same images done, in steps of this job's global batch
            self.batch_in_epoch = self.batch_in_epoch * saved_world // self.world.size
        if self.batch_in_epoch >= self.steps_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        if self.step >= self.total_steps():
            limit = f"max_steps={self.cfg.max_steps}" if self.cfg.max_steps else \
                f"{self.cfg.total_epochs()} epochs of {self.steps_per_epoch} steps"
            raise ImgtransError(f"nothing left to train: the checkpoint {self.cfg.resume} is at step {self.step} and "
                                f"this run stops at step {self.total_steps()} ({limit}); raise max_steps or epochs")

    def _log_setup(self) -> None:
        model = self.model
        nets = {f"params_{name}": count_parameters(net) for name, net in model.named_children()
                if count_parameters(net)}
        facts = {"world_size": self.world.size, "global_batch_size": self.cfg.batch_size * self.world.size,
                 "train_images": len(self.data.train), "generator_params": count_parameters(model.generator()),
                 **nets, "data_cache": self.data_cache, "cuda_graphs": self.cuda_graphs == "on",
                 "val_every": self.val_every}
        notes = [*self.start_notes, f"CUDA graphs: {self.cuda_graphs}." if self.cuda_graphs != "on" else "",
                 self.validator.kid_note]
        log_setup(self.tracker, self.cfg, self.runtime, self.step, facts, self.splits, [n for n in notes if n])

    # --- the loop ------------------------------------------------------------
    def total_steps(self) -> int:
        by_epochs = self.cfg.total_epochs() * self.steps_per_epoch
        return min(by_epochs, self.cfg.max_steps) if self.cfg.max_steps else by_epochs

    def fit(self) -> TrainResult:
        """Train to the end. An interrupt (Ctrl-C, SIGTERM) during set-up stops at once; during training it is
        taken between two steps, after a checkpoint."""
        with scratch_dir("run") as self.workdir:
            self._build()
            if self.resume_payload is not None:
                self._restore(self.resume_payload)
            self._log_setup()
            self.saver = checkpoint.BackgroundSaver(lambda path: self.tracker.log_artifact(path, checkpoint.FOLDER))
            try:
                with interrupts.deferred():
                    return self._train()
            finally:  # a checkpoint or sample sheet being written is completed, however the run ends
                self.saver.join()
                self.validator.join()

    def _train(self) -> TrainResult:
        total = self.total_steps()
        bar = tqdm(total=total, initial=min(self.step, total), disable=not self.progress, unit="step",
                   dynamic_ncols=True)
        sums: dict[str, torch.Tensor | float] = defaultdict(float)
        window_steps, window_images, window_wait = 0, 0, 0.0
        window_start = time.perf_counter()
        val_metrics: dict[str, float] = {}
        loop_start = time.perf_counter()
        while self.step < total:
            self.sampler.set_position(self.epoch, self.batch_in_epoch * self.cfg.batch_size)
            self.model.train()
            fetch_start = time.perf_counter()
            for batch in self.loader:
                window_wait += time.perf_counter() - fetch_start
                losses = self.training_step(batch)
                self.model.scaler.update()
                for scheduler in self.schedulers.values():
                    scheduler.step()
                self.step += 1
                self.batch_in_epoch += 1
                window_steps += 1
                window_images += batch["A"].shape[0] * self.world.size  # the job's images, every process's share
                # Losses stay on the device until logged: converting each step would sync the GPU.
                for name, value in losses.items():
                    sums[name] = sums[name] + value.detach().float()
                if self.step % self.cfg.log_every == 0 or self.step == total:
                    means = self._mean_losses(sums, window_steps)
                    bad = [k for k, v in means.items() if not math.isfinite(v)]
                    if bad:
                        raise ImgtransError(f"training diverged by step {self.step}: {', '.join(bad)} became "
                                            f"NaN/inf; {self.model.divergence_hint}")
                    elapsed = time.perf_counter() - window_start
                    metrics = {f"train/{k}": v for k, v in means.items()}
                    metrics.update({
                        "time/step_s": elapsed / window_steps,
                        "time/images_per_s": window_images / elapsed,
                        "time/data_wait_s": window_wait / window_steps,
                    })
                    scheduler = self.schedulers[next(iter(self.schedulers))]
                    if scheduler.get_last_lr()[0] != scheduler.base_lrs[0]:  # until then it is the lr param
                        metrics["train/lr"] = float(scheduler.get_last_lr()[0])
                    self.tracker.log_metrics(metrics, self.step)
                    self.tracker.alive()
                    self.timings["data_wait_s"].append(window_wait / window_steps)
                    bar.set_postfix({k.split("/")[1]: f"{v:.3g}" for k, v in metrics.items()
                                     if k.startswith("train/") and k != "train/lr"}, refresh=False)
                    sums.clear()
                    window_steps, window_images, window_wait = 0, 0, 0.0
                    window_start = time.perf_counter()
                bar.update(1)
                if self.step >= total or self.batch_in_epoch >= self.steps_per_epoch:
                    break  # the epoch's end validates first, then checkpoints and takes an interrupt
                # Under torchrun the processes agree on what the clock or a signal decides, at logging steps.
                if self.step % self.cfg.log_every == 0 or not self.world.active:
                    if self._count_due() or distributed.any_process(self._checkpoint_due(epoch_end=False),
                                                                    self.runtime.device):
                        self._checkpoint()
                    self._stop_if_interrupted()
                elif self._count_due():
                    self._checkpoint()
                fetch_start = time.perf_counter()
            boundary_start = time.perf_counter()
            epoch_done = self.batch_in_epoch >= self.steps_per_epoch
            finished = self.step >= total
            if finished:
                self.figures.update(self.validator.recalibrate_batch_norm())
            # Validation leaves every RNG as it found it, so the checkpoint after it continues exactly, and holds
            # the best model so far with this validation counted.
            if finished or epoch_done and (self.epoch + 1) % self.val_every == 0:
                started = time.perf_counter()
                val_metrics, per_image = self.validator.validate(self.epoch, self.step)
                self.tracker.log_metrics({"time/validation_s": time.perf_counter() - started}, self.step)
                if self.world.is_main:
                    self.best = best.updated(self.best, self.cfg.keep_best, val_metrics,
                                             per_image.get(self.cfg.keep_best), self.step, self.model,
                                             self.cfg.keep_best_within)
                if self.on_validation is not None:
                    self.on_validation(self.epoch, val_metrics)
            if finished or self._count_due() or distributed.any_process(self._checkpoint_due(epoch_end=True),
                                                                        self.runtime.device):
                self._checkpoint()
            self.timings["epoch_boundary_s"].append(time.perf_counter() - boundary_start)
            self.tracker.log_metrics({"time/epoch_boundary_s": self.timings["epoch_boundary_s"][-1]}, self.step)
            window_start += self.timings["epoch_boundary_s"][-1]  # step times leave validation and saving out
            if not finished:  # at the end the model is logged first; a pending interrupt is raised after it
                self._stop_if_interrupted()
            if epoch_done:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        bar.close()
        loop_seconds = time.perf_counter() - loop_start
        self.saver.wait()
        kept_step = self.step
        if self.best is not None:  # the best validation's generator becomes the run's model
            kept_step, val_metrics = self.best["step"], self.best["metrics"]
            self.model.load_state_dict(self.best["nets"])
            self.tracker.set_tags({"best_step": kept_step})
            if kept_step != self.step:  # with its own batch-norm statistics: the recalibration was the final one's
                self.figures = {k: v for k, v in self.figures.items() if not k.startswith("bn_")}
        model_id = self._log_model(val_metrics, kept_step) if self.world.is_main else ""
        # An interrupt since the last step is raised now, on every process of the job; the run keeps its checkpoint.
        stopping = interrupts.pending(lambda pending: distributed.any_process(pending, self.runtime.device))
        if self.world.is_main and self.cfg.keep_checkpoints == "none" and not stopping:
            self.tracker.delete_artifacts(checkpoint.FOLDER)
        last = self.workdir / checkpoint.LAST
        return TrainResult(self.tracker.run_id, self.step, val_metrics, self.model, self.data.val, loop_seconds,
                           dict(self.timings), last.stat().st_size if last.exists() else 0, model_id, kept_step)

    def _log_model(self, val_metrics: dict[str, float], step: int) -> str:
        """The kept generator (from `step`) as the run's MLflow model, its validation scores linked to it, and the
        run's one-off figures as a table."""
        final = checkpoint.atomic_save(checkpoint.model_payload(self.model), self.workdir / "generator.pt")
        side = round_up(64, self.model.size_multiple)
        example = np.random.default_rng(0).random((1, side, side, 3), dtype=np.float32)
        trained = f"{step} steps" + (f" (of {self.step}, kept by {self.cfg.keep_best})" if step != self.step else "")
        description = (f"{self.cfg.model_name} generator trained on `{self.cfg.data_label()}` for {trained}: "
                       + ", ".join(f"{k} {v:.4g}" for k, v in val_metrics.items()))
        model_id = self.tracker.log_generator(final, {"model": self.cfg.model_name, **config_mod.to_dict(self.cfg)},
                                              step, example, description)
        if val_metrics:
            self.tracker.log_metrics(val_metrics, step, model_id=model_id, dataset=self.splits.get("validation"))
        if self.figures:
            self.tracker.log_table({"figure": list(self.figures), "value": list(self.figures.values())},
                                   "figures.json")
        return model_id

    def _mean_losses(self, sums: dict[str, torch.Tensor | float], steps: int) -> dict[str, float]:
        """The window's mean of each loss, over the processes of a torchrun job too (the global batch's)."""
        names = sorted(sums)
        if not names:
            return {}
        totals = torch.stack([torch.as_tensor(sums[k], dtype=torch.float32, device=self.runtime.device)
                              for k in names])
        totals = distributed.sum_over_processes(totals) / self.world.size
        return {name: value / steps for name, value in zip(names, totals.tolist())}

    def _checkpoint(self) -> None:
        """Hand the state to the background saver; logs how long the loop was blocked, as time/checkpoint_s."""
        if self.step == self.checkpoint_step:
            return
        self.checkpoint_step = self.step
        started = time.perf_counter()
        # Each process's own RNG states and model state, for exact resume.
        rngs = distributed.gather_to_main(checkpoint.rng_state())
        local = distributed.gather_to_main(checkpoint.to_host(self.model.local_state()))
        self.last_checkpoint = time.monotonic()
        if not self.world.is_main:
            return
        position = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                    "world_size": self.world.size}
        extra = {"rng_by_rank": rngs, "local_by_rank": local} if self.world.active else {}
        if self.best is not None:  # the weights only when they are not the checkpoint's own
            extra["best"] = best.for_checkpoint(self.best, self.step)
        self.saver.save(checkpoint.training_payload(self.model, self.schedulers, position, extra),
                        self.workdir / checkpoint.LAST)
        self.timings["checkpoint_s"].append(time.perf_counter() - started)
        self.figures[f"checkpoint at step {self.step}: loop blocked (s)"] = self.timings["checkpoint_s"][-1]

    def _count_due(self) -> bool:
        return bool(self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0)

    def _checkpoint_due(self, epoch_end: bool) -> bool:
        """By the clock (`checkpoint_minutes`), or at epoch ends; and for a new run as soon as it is asked (after
        step 1; under torchrun at the first logging step), so that a run killed soon after it started can be
        resumed."""
        if self.resume_payload is None and self.checkpoint_step < 0:
            return True
        minutes = self.cfg.checkpoint_minutes
        return epoch_end if not minutes else time.monotonic() - self.last_checkpoint >= 60 * minutes

    def _stop_if_interrupted(self) -> None:
        """Between two steps the state is whole: saved there, `--resume <run id>` continues exactly. The save is
        waited for (and its failure raised), so the run never says "resume" about a checkpoint it lacks."""
        def save_now() -> None:
            with interrupts.held():
                self._checkpoint()
                self.saver.wait()

        interrupts.stop_if_pending(save_now, f"step {self.step}", self.tracker.run_id,
                                   everywhere=lambda pending: distributed.any_process(pending, self.runtime.device))
