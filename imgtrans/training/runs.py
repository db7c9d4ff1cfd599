"""The run protocol and the command that starts any run kind (the registry is `imgtrans.commands.RUNS`).

`start` validates the options, resolves `resume`, runs the kind inside a tracked MLflow run (under torchrun:
rank 0 tracks, the others keep quiet) and prints its summary; `log_setup` is what every kind records first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

from imgtrans import config as config_mod
from imgtrans.commands import run_kind
from imgtrans.compute import distributed
from imgtrans.compute.runtime import resolve_device, runtime_tags
from imgtrans.config import RunConfig
from imgtrans.errors import ImgtransError
from imgtrans.files import scratch_dir
from imgtrans.tracking import (
    QuietTracker,
    download_checkpoint,
    end_stale_run,
    tracked_run,
)
from imgtrans.training import checkpoint

Validation = Callable[[int, dict[str, float]], None]


class RunResult(Protocol):
    run_id: str
    val_metrics: dict[str, float]

    def summary(self) -> str: ...


def start(cfg: RunConfig, explicit: dict[str, Any], progress: bool = True) -> int:
    """The command of every run kind: validate, resolve `resume`, run it tracked, print its summary. With
    nproc > 1 it starts itself under torchrun; under torchrun rank 0 tracks the one run of the job."""

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

    tracker.log_params({"model": cfg.model_name, **config_mod.to_dict(cfg)})
    tracker.log_text(config_mod.to_json(cfg), "config.json")
    tracker.set_tags({"imgtrans.model": cfg.model_name, **runtime_tags(runtime), **tags})
    if cfg.resume:
        tracker.set_tags({"imgtrans.resumed_from": cfg.resume, "imgtrans.resumed_at_step": step})
