"""The Deep Image Prior loop: one image, per-iteration PSNR, snapshots, checkpoints and exact resume.

DIP optimises a network per image rather than over a dataset, so it has its
own short loop instead of the Trainer's epochs over batches; it shares the
Trainer's pieces (runtime, seeding, checkpoint and RNG helpers, resume
resolution, tracking).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from imgtrans import interrupts
from imgtrans.compute.runtime import resolve_runtime, seed_everything
from imgtrans.data.color import to_signed, to_unit
from imgtrans.data.sheets import sample_sheet
from imgtrans.data.splits import SplitSummary
from imgtrans.dip.images import Images, load_images, save_png
from imgtrans.dip.model import DeepImagePrior, DIPState, stage_plan, total_iterations
from imgtrans.dip.options import DIPConfig
from imgtrans.errors import ImgtransError
from imgtrans.files import scratch_dir
from imgtrans.metrics.quality import psnr_per_image, ssim_per_image
from imgtrans.nets.layers import count_parameters, pad_to_multiple
from imgtrans.nets.perceptual import PerceptualLoss
from imgtrans.tracking.tracker import Tracker
from imgtrans.training import checkpoint
from imgtrans.training.graphed_step import training_step_for
from imgtrans.training.runs import Validation, log_setup
from imgtrans.weights import VGG16, resolve_weights

INPUT_SCALE = 0.1  # DIP's input: uniform noise in [0, 0.1)


def initial_state(cfg: DIPConfig, images: Images, size_multiple: int) -> DIPState:
    g = torch.Generator().manual_seed(cfg.seed)
    degraded = to_signed(images.degraded)
    padded, _ = pad_to_multiple(degraded, size_multiple)
    h, w = padded.shape[-2:]
    if cfg.net == "skip" and (h // size_multiple) * (w // size_multiple) < 2:
        raise ImgtransError(f"a {degraded.shape[-1]}×{degraded.shape[-2]} image is too small for net=skip with depth "
                            f"{cfg.depth} (its deepest level would be 1×1); lower depth or use a larger image")
    net_input = torch.rand((1, cfg.input_depth, *padded.shape[-2:]), generator=g) * INPUT_SCALE
    stage_noise = ([torch.randn(degraded.shape, generator=g) for _ in stage_plan(cfg)]
                   if cfg.mode == "progressive" else [])
    clean = to_signed(images.clean) if images.clean is not None else None
    return DIPState(degraded, clean, images.mask, net_input, stage_noise)


# --- the loop ------------------------------------------------------------------------

@dataclass
class DIPResult:
    run_id: str
    step: int
    restored: torch.Tensor  # rgb/gray [0, 1], (1, C, H, W)
    val_metrics: dict[str, float]
    best_iteration: int | None
    seconds: float
    iterations_run: int  # by this process: a resumed run's first ones ran before

    def summary(self) -> str:
        parts = [f"{k}={v:.4f}" for k, v in self.val_metrics.items()]
        if self.best_iteration is not None:
            parts.append(f"best iteration {self.best_iteration}")
        return ", ".join([*parts, f"{self.iterations_run} iterations in {self.seconds:.1f} s"])


class DIPRunner:
    """The run kind of `dip` (see `runs`); its snapshots are the validations."""

    def __init__(self, cfg: DIPConfig, tracker: Tracker, resume_payload: dict | None = None, progress: bool = True,
                 on_validation: Validation | None = None, direction: str = "AtoB", refuse_finished: bool = True):
        """`direction`: which side of a paired dataset is the image (its target side; dip_diffusion: as its
        diffusion model was trained). `refuse_finished`: a resume from the last iteration is refused, there being
        nothing left to fit (dip_diffusion's sampling may still be left after it)."""
        self.cfg, self.tracker, self.resume_payload, self.direction = cfg, tracker, resume_payload, direction
        self.refuse_finished = refuse_finished
        self.progress, self.on_validation = progress, on_validation
        self.workdir: Path | None = None
        self.notes: list[str] = []
        self.figures: dict[str, float] = {}  # one-off figures, logged as a table at the end

    def _perceptual(self) -> PerceptualLoss | None:
        cfg = self.cfg
        if cfg.lambda_perceptual <= 0:
            return None
        weights, message = resolve_weights(VGG16, cfg.vgg_weights, "perceptual loss", "vgg_weights")
        if weights is None:
            print(f"imgtrans: warning: {message}; training with lambda_perceptual=0", file=sys.stderr)
            self.notes.append(f"Perceptual loss disabled: {message}.")
            self.cfg = dataclasses.replace(cfg, lambda_perceptual=0.0)
            return None
        self.notes.append(f"Perceptual loss: VGG16 from {weights}.")
        return PerceptualLoss(weights)

    def _build(self) -> None:
        cfg = self.cfg
        self.runtime = resolve_runtime(cfg)
        seed_everything(cfg.seed)
        payload = self.resume_payload
        if payload is None:
            images = load_images(cfg, self.direction)
            self.source, self.data = images.source, images.data
            channels = images.degraded.shape[1]
        else:
            self.source = payload["dip"]["source"]
            saved = payload["dip"].get("data")  # checkpoints from before the data was kept have none
            self.data = SplitSummary(**saved) if saved else None
            channels = payload["dip"]["state"]["degraded"].shape[1]
        perceptual = self._perceptual()
        self.model = DeepImagePrior(self.cfg, channels, perceptual)
        if payload is None:
            self.state = initial_state(self.cfg, images, self.model.size_multiple)
        else:
            self.state = DIPState(**payload["dip"]["state"])
            expected = len(stage_plan(self.cfg)) if self.cfg.mode == "progressive" else 0
            if len(self.state.stage_noise) != expected:
                raise ImgtransError(f"checkpoint {self.cfg.resume} was made with another mode or number of stages; "
                                    "resume with the mode and stages it was started with")
        device = self.runtime.device
        self.model.setup(self.runtime)
        # The iteration's input is the one fixed noise image, so the capture is of batch 1.
        self.training_step, self.cuda_graphs = training_step_for(self.model, self.runtime, cfg, full_batch=1)
        self.step, self.history = 0, {"dip/psnr_noisy": [], "dip/psnr_clean": [], "train/loss": []}
        self.best_psnr = torch.tensor(-float("inf"), device=device)
        self.best_iteration = torch.tensor(-1, device=device)
        self.best_image = torch.zeros_like(self.state.degraded, device=device)
        if payload is not None:
            self.step = checkpoint.restore_training(self.model, {}, payload)["step"]
            if self.refuse_finished and self.step >= total_iterations(cfg):
                raise ImgtransError(f"nothing left to fit: the checkpoint {cfg.resume} is at iteration {self.step} "
                                    f"and this run stops at iteration {total_iterations(cfg)}; raise max_steps or "
                                    "the mode's iterations")
            self.history = payload["dip"]["history"]
            best = payload["dip"]["best"]
            self.best_psnr = best["psnr"].to(device)
            self.best_iteration = best["iteration"].to(device)
            self.best_image = best["image"].to(device)

    def _targets(self) -> list[tuple[int, torch.Tensor]]:
        """(last iteration + 1, target) per stage, in network space on the device."""
        device = self.runtime.device
        y = self.state.degraded.to(device)
        if self.cfg.mode == "classic":
            return [(self.cfg.num_iter, y)]
        targets, end = [], 0
        for stage, noise in zip(stage_plan(self.cfg), self.state.stage_noise):
            end += stage.iterations
            targets.append((end, stage.alpha_bar ** 0.5 * y + stage.noise_std * noise.to(device)))
        return targets

    def _log_setup(self) -> None:
        cfg = self.cfg
        h, w = self.state.degraded.shape[-2:]
        facts = {"image": self.source, "size": f"{w}x{h}", "generator_params": count_parameters(self.model.net),
                 "cuda_graphs": self.cuda_graphs == "on"}
        if self.cuda_graphs != "on":
            self.notes.append(f"CUDA graphs: {self.cuda_graphs}.")
        if cfg.mode == "progressive":
            plan = stage_plan(cfg)
            facts["stage_iterations"] = ",".join(str(s.iterations) for s in plan)
            self.tracker.log_text("stage,beta,alpha_bar,noise_std,iterations\n" + "".join(
                f"{i},{s.beta:.6g},{s.alpha_bar:.6g},{s.noise_std:.6g},{s.iterations}\n" for i, s in enumerate(plan)),
                "dip/stages.csv")
        log_setup(self.tracker, cfg, self.runtime, self.step, facts, {"image": self.data} if self.data else {},
                  self.notes)
        if self.state.clean is not None:
            clean, degraded = to_unit(self.state.clean), to_unit(self.state.degraded)
            self.figures["input_psnr_clean"] = psnr_per_image(degraded, clean).item()

    def fit(self) -> DIPResult:
        """Fit to the end. An interrupt (Ctrl-C, SIGTERM) is taken between two iterations, after a checkpoint."""
        with scratch_dir("dip") as self.workdir, interrupts.deferred():
            return self._fit()

    def _fit(self) -> DIPResult:
        self._build()
        self._log_setup()
        cfg, device, first_step = self.cfg, self.runtime.device, self.step
        total = total_iterations(cfg)
        full = cfg.num_iter if cfg.mode == "classic" else sum(s.iterations for s in stage_plan(cfg))
        snapshots = sorted({max(1, round(full * k / cfg.epochs)) for k in range(1, cfg.epochs + 1)} | {total})
        targets = self._targets()
        net_input = self.state.net_input.to(device, memory_format=self.runtime.memory_format)
        mask = self.state.mask.to(device) if self.state.mask is not None else None
        batch = {"A": net_input} | ({"mask": mask} if mask is not None else {})
        degraded = self.state.degraded.to(device)
        clean = self.state.clean.to(device) if self.state.clean is not None else None
        window: dict[str, list[tuple[int, torch.Tensor]]] = {k: [] for k in self.history}
        bar = tqdm(total=total, initial=min(self.step, total), disable=not self.progress, unit="it",
                   dynamic_ncols=True)
        started = time.perf_counter()
        val_metrics: dict[str, float] = {}
        current = None

        def save() -> None:
            self._flush(window)
            self._checkpoint()

        self.model.train()
        while self.step < total:
            target = next(t for end, t in targets if self.step < end)
            losses = self.training_step(batch | {"B": target})
            output = losses["output"]
            self.step += 1
            with torch.no_grad():
                current = to_unit(output.detach().float().mean(0, keepdim=True).clamp(-1, 1))
                known = current * mask if mask is not None else current
                noisy_ref = to_unit(degraded) * mask if mask is not None else to_unit(degraded)
                window["dip/psnr_noisy"].append((self.step, psnr_per_image(known, noisy_ref)[0]))
                # A copy: a replayed graph writes every iteration's loss into the same tensor.
                window["train/loss"].append((self.step, losses["loss"].detach().clone()))
                if clean is not None:
                    psnr = psnr_per_image(current, to_unit(clean))[0]
                    window["dip/psnr_clean"].append((self.step, psnr))
                    better = psnr > self.best_psnr
                    self.best_psnr = torch.where(better, psnr, self.best_psnr)
                    self.best_iteration = torch.where(better, torch.tensor(self.step, device=device),
                                                      self.best_iteration)
                    self.best_image = torch.where(better, current, self.best_image)
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == total or self.step in snapshots:
                self._flush(window)
                bar.set_postfix({k.split("/")[1]: f"{v[-1][1]:.3g}" for k, v in self.history.items() if v},
                                refresh=False)
            if self.step in snapshots:
                val_metrics = self._snapshot(current, snapshots.index(self.step))
            interrupts.stop_if_pending(save, f"iteration {self.step}", self.tracker.run_id)
        bar.close()
        seconds = time.perf_counter() - started
        restored = self._finish(current.cpu() if current is not None else self._output(), seconds)
        best = int(self.best_iteration) if clean is not None and int(self.best_iteration) > 0 else None
        return DIPResult(self.tracker.run_id, self.step, restored, val_metrics, best, seconds, self.step - first_step)

    def _flush(self, window: dict[str, list[tuple[int, torch.Tensor]]]) -> None:
        series = {}
        for key, points in window.items():
            if points:
                values = torch.stack([v.float() for _, v in points]).tolist()  # one device sync per window
                series[key] = [(step, value) for (step, _), value in zip(points, values)]
                self.history[key].extend(series[key])
                points.clear()
        if not np.isfinite([v for _, v in series.get("train/loss", [])]).all():
            raise ImgtransError(f"DIP diverged by iteration {self.step}: the loss became NaN/inf; lower lr")
        self.tracker.log_metric_series(series)

    def _snapshot(self, current: torch.Tensor, index: int) -> dict[str, float]:
        state = self.state
        metrics = {}
        if state.clean is not None:
            clean = to_unit(state.clean).to(current.device)
            metrics = {"val/psnr": psnr_per_image(current, clean).item(),
                       "val/ssim": ssim_per_image(current, clean).item()}
            self.tracker.log_metrics(metrics, self.step)
        columns = {"degraded": to_unit(state.degraded), "restored": current.cpu(),
                   **({"clean": to_unit(state.clean)} if state.clean is not None else {})}
        sheet = sample_sheet({k: c.expand(-1, 3, -1, -1) if c.shape[1] == 1 else c for k, c in columns.items()})
        self.tracker.log_image(sheet, "samples", self.step)
        self.tracker.log_image_file(sheet, f"samples/snapshot_{index + 1:03d}.png")
        self._checkpoint()
        if self.on_validation is not None:
            self.on_validation(index, metrics)
        return metrics

    def _checkpoint(self) -> None:
        state = {"source": self.source, "data": self.data and dataclasses.asdict(self.data),
                 "state": dataclasses.asdict(self.state), "history": self.history,
                 "best": {"psnr": self.best_psnr.cpu(), "iteration": self.best_iteration.cpu(),
                          "image": self.best_image.cpu()}}
        path = checkpoint.save_training(self.workdir / checkpoint.LAST, self.model, {}, {"step": self.step},
                                        extra={"dip": state})
        self.tracker.log_artifact(path, checkpoint.FOLDER)

    @torch.no_grad()
    def _output(self) -> torch.Tensor:
        """The network's current image for the unperturbed input (batch-norm on its own statistics, as fitted)."""
        h, w = self.state.degraded.shape[-2:]
        with self.runtime.autocast():
            output = self.model(self.state.net_input.to(self.runtime.device, memory_format=self.runtime.memory_format),
                                h, w)
        return to_unit(output.float().clamp(-1, 1)).cpu()

    def _finish(self, restored: torch.Tensor, seconds: float) -> torch.Tensor:
        """Log the restored image (the last iteration's output), the best one and the PSNR curve."""
        cfg = self.cfg
        files = [save_png(self.workdir / "restored.png", restored),
                 save_png(self.workdir / "degraded.png", to_unit(self.state.degraded))]
        self.figures.update(seconds=seconds, iterations=float(self.step))
        if self.state.clean is not None:
            clean = to_unit(self.state.clean)
            self.figures.update(final_psnr_clean=psnr_per_image(restored, clean).item(),
                                best_psnr_clean=float(self.best_psnr), best_iteration=float(self.best_iteration))
            files += [save_png(self.workdir / "best.png", self.best_image.cpu()),
                      save_png(self.workdir / "clean.png", clean)]
        self.tracker.log_table({"figure": list(self.figures), "value": list(self.figures.values())}, "figures.json")
        for path in files:
            self.tracker.log_artifact(path, "dip")
        self.tracker.log_artifact(self._plot_curve(), "dip")
        if cfg.output:  # last: the run keeps its images whatever happens to this path
            save_png(Path(cfg.output).expanduser(), restored)
        if cfg.keep_checkpoints == "none":
            self.tracker.delete_artifacts(checkpoint.FOLDER)
        return restored

    def _plot_curve(self) -> Path:
        figure = Figure(figsize=(8, 4.5))
        ax = figure.subplots()
        for key, label in (("dip/psnr_noisy", "output vs degraded input"), ("dip/psnr_clean", "output vs clean")):
            points = self.history[key]
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], label=label, linewidth=1)
        if self.history["dip/psnr_clean"] and int(self.best_iteration) > 0:
            ax.axvline(int(self.best_iteration), color="gray", linestyle=":",
                       label=f"best: {float(self.best_psnr):.2f} dB at {int(self.best_iteration)}")
        if self.cfg.mode == "progressive":
            end = 0
            for stage in stage_plan(self.cfg)[:-1]:
                end += stage.iterations
                ax.axvline(end, color="lightgray", linewidth=0.8)
        ax.set_xlabel("iteration")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"Deep Image Prior ({self.cfg.net}, {self.cfg.mode})")
        ax.legend()
        path = self.workdir / "psnr_curve.png"
        figure.savefig(path, bbox_inches="tight", dpi=100)
        return path
