"""DIP → diffusion (the course report “GAI-project 4”): start the reverse diffusion from a Deep Image Prior
estimate.

DIP restores the image for `num_iter` iterations; its output is noised to
step `t_start` and a trained diffusion model denoises it from there
(SDEdit-style), taking the same step spacing as a full run, so fewer steps.
The same model sampled from pure noise with the same sampler is the
baseline: both results, their PSNR/SSIM against the clean image and their
wall times are logged side by side.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from imgtrans.compute.runtime import resolve_device
from imgtrans.data.color import to_unit
from imgtrans.data.sheets import sample_sheet
from imgtrans.dip.images import centre_crop, dataset_image, read_tensor
from imgtrans.dip.options import DIPDiffusionConfig
from imgtrans.dip.runner import DIPRunner
from imgtrans.errors import ImgtransError
from imgtrans.files import scratch_dir
from imgtrans.metrics.quality import psnr_per_image, ssim_per_image
from imgtrans.models.diffusion import Diffusion
from imgtrans.nets.layers import pad_to_multiple
from imgtrans.tracking import store
from imgtrans.tracking.models import generator_checkpoint, generator_of_run
from imgtrans.tracking.tracker import SOURCE_RUNS_TAG, Tracker
from imgtrans.training.checkpoint import load_model
from imgtrans.training.runs import Validation


def load_diffusion(run_id: str, device: torch.device):
    with scratch_dir("diffusion-model") as tmp:
        model = load_model(generator_checkpoint(generator_of_run(run_id), tmp), device)
    if not isinstance(model, Diffusion):
        raise ImgtransError(f"run {run_id} holds a {model.cfg.model_name} model; diffusion_run needs a diffusion run")
    return model


def condition_image(cfg: DIPDiffusionConfig, model) -> torch.Tensor | None:
    """The conditioning source image (rgb [0, 1], cropped like the DIP image), or None when unconditional."""
    if not model.cfg.conditional:
        return None
    if cfg.image:
        if not cfg.condition:
            raise ImgtransError("this diffusion model is conditional: give `condition`, the source image of `image`")
        source = read_tensor(cfg.condition, "condition")
    else:
        source = dataset_image(cfg.dataset, cfg.image_index, model.cfg.direction)[0]
    source = centre_crop(source, cfg.crop_size)
    return source.expand(-1, 3, -1, -1) if source.shape[1] == 1 else source


def _timed(fn) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    if out.is_cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


@dataclass
class DIPDiffusionResult:
    run_id: str
    val_metrics: dict[str, float]  # DIP's, at its snapshots
    metrics: dict[str, float]  # the comparison: both starts' PSNR, SSIM and times

    def summary(self) -> str:
        return ", ".join(f"{k.split('/')[1]}={v:.4g}" for k, v in self.metrics.items())


class DIPDiffusionRun:
    """The run kind of `dip_diffusion` (see `runs`): DIP, then the diffusion model from its estimate and from
    pure noise."""

    def __init__(self, cfg: DIPDiffusionConfig, tracker: Tracker, resume_payload: dict | None = None,
                 progress: bool = True, on_validation: Validation | None = None):
        self.cfg, self.tracker, self.resume_payload = cfg, tracker, resume_payload
        self.progress, self.on_validation = progress, on_validation

    def fit(self) -> DIPDiffusionResult:
        cfg, tracker = self.cfg, self.tracker
        device = resolve_device(cfg.device)
        model = load_diffusion(cfg.diffusion_run, device)
        timesteps = model.schedule.timesteps
        if cfg.t_start >= timesteps:
            raise ImgtransError(f"t_start must be below the model's timesteps ({timesteps}), got {cfg.t_start}")
        if cfg.sample_steps > timesteps:
            raise ImgtransError(f"sample_steps must be at most the model's timesteps ({timesteps}), got "
                                f"{cfg.sample_steps}")
        if not cfg.image and not cfg.dataset:
            cfg = dataclasses.replace(cfg, dataset=model.cfg.dataset)
        cond_rgb = condition_image(cfg, model)
        tracker.set_tags({SOURCE_RUNS_TAG: cfg.diffusion_run})
        runner = DIPRunner(cfg, tracker, resume_payload=self.resume_payload, progress=self.progress,
                           on_validation=self.on_validation, direction=model.cfg.direction, refuse_finished=False)
        dip = runner.fit()
        state = runner.state
        restored = dip.restored.expand(-1, 3, -1, -1)
        if cond_rgb is not None and cond_rgb.shape[-2:] != restored.shape[-2:]:
            raise ImgtransError(f"the condition is {tuple(cond_rgb.shape[-2:])} but the image is "
                                f"{tuple(restored.shape[-2:])}; give files of the same size")

        codec = model.codec
        cond = codec.encode_input(cond_rgb if cond_rgb is not None else restored)
        start = codec.encode_target(restored)
        multiple = model.size_multiple
        (cond_p, (h, w)), (start_p, _) = pad_to_multiple(cond, multiple), pad_to_multiple(start, multiple)
        steps = cfg.sample_steps or model.cfg.sample_steps
        steps_from_dip = max(1, round(steps * (cfg.t_start + 1) / timesteps))

        def decode(out: torch.Tensor) -> torch.Tensor:
            return codec.decode_output(cond.to(out.device), out[..., :h, :w]).cpu()

        model.sample(cond_p, 1, cfg.seed)  # first-call costs (allocation, kernel selection) timed in neither start
        from_dip, dip_diffusion_s = _timed(lambda: model.sample(cond_p, steps_from_dip, cfg.seed, start_from=start_p,
                                                                t_start=cfg.t_start))
        from_noise, noise_s = _timed(lambda: model.sample(cond_p, steps, cfg.seed))
        results = {"dip": restored, "dip_diffusion": decode(from_dip), "noise_start": decode(from_noise)}
        metrics = {"time/dip_s": dip.seconds, "time/dip_diffusion_s": dip.seconds + dip_diffusion_s,
                   "time/diffusion_from_dip_s": dip_diffusion_s, "time/diffusion_from_noise_s": noise_s,
                   "dip_diffusion/steps_from_dip": steps_from_dip, "dip_diffusion/steps_from_noise": steps}
        columns = {"degraded": to_unit(state.degraded).expand(-1, 3, -1, -1),
                   "DIP": results["dip"], "DIP → diffusion": results["dip_diffusion"],
                   "diffusion from noise": results["noise_start"]}
        if state.clean is not None:
            clean = to_unit(state.clean).expand(-1, 3, -1, -1)
            columns["clean"] = clean
            for name, image in results.items():
                metrics[f"dip_diffusion/psnr_{name}"] = psnr_per_image(image, clean).item()
                metrics[f"dip_diffusion/ssim_{name}"] = ssim_per_image(image, clean).item()
        tracker.log_table({"figure": list(metrics), "value": list(metrics.values())}, "figures.json")
        tracker.log_image_file(sample_sheet(columns), "dip_diffusion.png")
        source = store.get_run(cfg.diffusion_run)
        tracker.append_description(f"Diffusion model: run [{source.info.run_name}]"
                                   f"({store.ui_path(source.info.experiment_id, cfg.diffusion_run)}).")
        return DIPDiffusionResult(tracker.run_id, dip.val_metrics, metrics)
