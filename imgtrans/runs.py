"""The kinds of run an entry point starts, behind one protocol, and what every kind shares.

A run kind is a class built as `Kind(cfg, tracker, resume_payload=None, progress=True, on_validation=None)`
whose `fit()` returns a result with `run_id`, `val_metrics` (what a study optimises) and `summary()` (the
line printed at the end). `on_validation(index, metrics)` is called at each validation, where an Optuna
study reports and prunes. The Trainer (every model of `models.MODELS`), DIP and DIP→diffusion are the
kinds; `RUNS` maps each entry-point name to its kind, so the CLI and studies never branch on a name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from imgtrans import config as config_mod
from imgtrans.config import RunConfig
from imgtrans.dip.model import DIPConfig, DIPDiffusionConfig
from imgtrans.errors import ImgtransError
from imgtrans.models import MODELS

Validation = Callable[[int, dict[str, float]], None]


class RunResult(Protocol):
    run_id: str
    val_metrics: dict[str, float]

    def summary(self) -> str: ...


@dataclass(frozen=True)
class RunKind:
    config_class: type[RunConfig]
    # "module:Class", imported when a run starts, so that `imgtrans --help` stays quick.
    runner: str
    help: str
    # What a run that trains no generator (for `export`, a study's `retrain`, infer/ms_per_image) does instead.
    instead_of_a_generator: str = ""
    # Whether it trains data-parallel over the processes torchrun starts (nproc > 1).
    distributed: bool = False

    @property
    def trains_generator(self) -> bool:
        return not self.instead_of_a_generator

    def create(self, cfg: RunConfig, tracker, resume_payload: dict | None = None, progress: bool = True,
               on_validation: Validation | None = None):
        module, name = self.runner.split(":")
        runner = getattr(importlib.import_module(module), name)
        return runner(cfg, tracker, resume_payload=resume_payload, progress=progress, on_validation=on_validation)


def _first_line(cls: type) -> str:
    import sys

    return (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]


RUNS: dict[str, RunKind] = {
    **{name: RunKind(cls.config_class, "imgtrans.train:Trainer", f"train {name}: {_first_line(cls)}",
                     distributed=True)
       for name, cls in MODELS.items()},
    "dip": RunKind(DIPConfig, "imgtrans.dip.runner:DIPRunner",
                   "restore one image with Deep Image Prior (classic or progressive)", "restores one image"),
    "dip_diffusion": RunKind(DIPDiffusionConfig, "imgtrans.dip.diffusion:DIPDiffusionRun",
                             "DIP output as the start of a trained diffusion model's reverse process (SDEdit)",
                             "restores one image with a trained diffusion model"),
}


def run_kind(name: str) -> RunKind:
    try:
        return RUNS[name]
    except KeyError:
        raise ImgtransError(f"unknown model '{name}'; valid values: {', '.join(RUNS)}") from None


def start(cfg: RunConfig, explicit: dict[str, Any], progress: bool = True) -> int:
    """The command of every run kind: validate, resolve `resume`, run it tracked, print its summary. With
    nproc > 1 it starts itself under torchrun; under torchrun rank 0 tracks the one run of the job."""
    from imgtrans import distributed
    from imgtrans.runtime import resolve_device
    from imgtrans.tracking import QuietTracker, tracked_run

    cfg.validate()
    kind = run_kind(cfg.model_name)
    world = distributed.World.from_environment()
    if (cfg.nproc > 1 or world.active) and not kind.distributed:
        raise ImgtransError(f"{cfg.model_name} runs in one process; leave nproc at 1 and start it without torchrun")
    if cfg.nproc > 1 and not world.active:
        options = [arg for name, value in explicit.items()
                   for arg in (f"--{name.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else str(value))]
        return distributed.launch(cfg.nproc, [cfg.model_name, *options, *([] if progress else ["--no-progress"])])
    world = distributed.start(resolve_device(cfg.device).type)
    try:
        cfg, payload = resolve_resume(cfg, explicit, end_stale=world.is_main)
        cfg.validate()
        if world.is_main:
            with tracked_run(cfg.experiment, run_name=cfg.model_name) as tracker:
                distributed.from_main(tracker.run_id)
                result = kind.create(cfg, tracker, resume_payload=payload, progress=progress).fit()
        else:
            tracker = QuietTracker(distributed.from_main(None), world.rank)
            with tracker.failures_recorded():
                kind.create(cfg, tracker, resume_payload=payload, progress=False).fit()
            return 0
    finally:
        distributed.stop()
    summary = result.summary()
    print(f"imgtrans: {cfg.model_name} finished: run {result.run_id}" + (f", {summary}" if summary else ""))
    return 0


def resolve_resume(cfg: RunConfig, explicit: dict[str, Any], end_stale: bool = True) -> tuple[RunConfig, dict | None]:
    """With `resume`, the checkpoint's config is used, updated by the options the user set explicitly; the run
    resumed from is marked KILLED if it died RUNNING (`end_stale`: by one process of a job only)."""
    from imgtrans import checkpoint
    from imgtrans.files import scratch_dir
    from imgtrans.tracking import download_checkpoint, end_stale_run

    ref = cfg.resume
    if not ref:
        return cfg, None
    path = Path(ref).expanduser()
    if path.exists():
        payload = checkpoint.read(path)
    elif "/" in ref or ref.endswith(".pt"):
        raise ImgtransError(f"checkpoint not found: {path}")
    else:
        with scratch_dir("resume") as tmp:
            payload = checkpoint.read(download_checkpoint(ref, tmp))
        if end_stale:
            end_stale_run(ref)
    if payload["model"] != cfg.model_name:
        raise ImgtransError(f"cannot resume {cfg.model_name} from a {payload['model']} checkpoint ({ref})")
    merged = {**payload["config"], **explicit, "resume": ref}
    return config_mod.from_dict(type(cfg), merged), payload


def log_setup(tracker, cfg: RunConfig, runtime, step: int, tags: dict[str, object]) -> None:
    """What every run records first: the config as params and config.json, where it runs, and its own tags."""
    from imgtrans.runtime import runtime_tags

    tracker.log_params({"model": cfg.model_name, **config_mod.to_dict(cfg)})
    tracker.log_text(config_mod.to_json(cfg), "config.json")
    tracker.set_tags({"imgtrans.model": cfg.model_name, **runtime_tags(runtime), **tags})
    if cfg.resume:
        tracker.set_tags({"imgtrans.resumed_from": cfg.resume, "imgtrans.resumed_at_step": step})
