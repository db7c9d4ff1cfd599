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
from imgtrans.compute.runtime import Runtime, resolve_device, runtime_params
from imgtrans.config import RunConfig
from imgtrans.data.splits import SplitSummary
from imgtrans.errors import ImgtransError
from imgtrans.files import scratch_dir
from imgtrans.tracking import store
from imgtrans.tracking.tracker import QuietTracker, tracked_run
from imgtrans.training import checkpoint
from imgtrans.training.launch import launch

Validation = Callable[[int, dict[str, float]], None]


class RunResult(Protocol):
    run_id: str
    val_metrics: dict[str, float]

    def summary(self) -> str: ...


def run_name(cfg: RunConfig) -> str:
    """What tells this run apart at a glance: its model, distinguishing options, data and seed when not the
    default, e.g. `pix2pix-unet-lsgan-synthetic-facades`, `…-facades-seed1` (the tracker makes it unique within the
    experiment)."""
    seed = [f"seed{cfg.seed}"] if cfg.seed != RunConfig.seed else []
    return "-".join([cfg.model_name, *(str(getattr(cfg, name)) for name in cfg.distinguishing), cfg.data_label(),
                     *seed])


def filter_tags(cfg: RunConfig) -> dict[str, str]:
    """The few short tags users filter runs on: model, dataset and the distinguishing options."""
    return {"model": cfg.model_name, "dataset": cfg.data_label(),
            **{name: str(getattr(cfg, name)) for name in cfg.distinguishing}}


def start(cfg: RunConfig, explicit: dict[str, Any], progress: bool = True) -> int:
    """The command of every run kind: validate, resolve `resume`, run it tracked, print its summary. With
    nproc > 1 it starts itself under torchrun; under torchrun rank 0 tracks the one run of the job."""
    if not cfg.resume:  # a resumed run's options are the checkpoint's and the given ones: validated once merged
        cfg.validate()
    kind = run_kind(cfg.model_name)
    world = distributed.World.from_environment()
    if (cfg.nproc > 1 or world.active) and not kind.distributed:
        raise ImgtransError(f"{cfg.model_name} runs in one process; leave nproc at 1 and start it without torchrun")
    if cfg.nproc > 1 and not world.active:
        options = [arg for name, value in explicit.items()
                   for arg in (f"--{name.replace('_', '-')}",
                               str(value).lower() if isinstance(value, bool) else str(value))]
        return launch(cfg.nproc, [cfg.model_name, *options, *([] if progress else ["--no-progress"])],
                      run_name(cfg), cfg.model_name, cfg.experiment, filter_tags(cfg))
    world = distributed.start(resolve_device(cfg.device).type)
    try:
        cfg, payload = resolve_resume(cfg, explicit, end_dead=world.is_main)
        cfg.validate()
        if world.is_main:
            with tracked_run(cfg.experiment, run_name(cfg), cfg.model_name, "train", tags=filter_tags(cfg),
                             system_metrics=True) as tracker:
                distributed.from_main(tracker.run_id)
                result = kind.create(cfg, tracker, resume_payload=payload, progress=progress).fit()
                summary = result.summary()
                tracker.append_description(f"**Result**: {summary}")
        else:
            tracker = QuietTracker(distributed.from_main(None), world.rank)
            with tracker.failures_recorded():
                kind.create(cfg, tracker, resume_payload=payload, progress=False).fit()
            return 0
    finally:
        distributed.stop()
    print(f"imgtrans: {cfg.model_name} finished: run {result.run_id}" + (f", {summary}" if summary else ""))
    return 0


def resolve_resume(cfg: RunConfig, explicit: dict[str, Any], end_dead: bool = True) -> tuple[RunConfig, dict | None]:
    """With `resume`, the checkpoint's config is used, updated by the options the user set explicitly; the run
    resumed from is marked KILLED if its process died leaving it RUNNING (`end_dead`: by one process of a
    job only)."""
    ref = cfg.resume
    if not ref:
        return cfg, None
    path = Path(ref).expanduser()
    if path.exists():
        payload = checkpoint.read(path)
    elif "/" in ref or ref.endswith(".pt"):
        raise ImgtransError(f"checkpoint not found: {path}")
    else:
        run = store.get_run(ref)
        reason = store.dead_run_reason(run) if store.is_running(run) else None
        if reason and end_dead:
            store.end_run(ref, "KILLED", reason)
        with scratch_dir("resume") as tmp:
            local = store.download(ref, checkpoint.LAST_ARTIFACT, tmp)
            if local is None:
                died = f" ({reason}, before its first checkpoint; it is now marked KILLED)" if reason else ""
                raise ImgtransError(f"run '{ref}' has no {checkpoint.LAST_ARTIFACT} to resume from{died}; start a "
                                    "new run")
            payload = checkpoint.read(local)
    if payload["model"] != cfg.model_name:
        raise ImgtransError(f"cannot resume {cfg.model_name} from a {payload['model']} checkpoint ({ref})")
    saved = config_mod.from_saved(type(cfg), payload["config"])
    for name, why in cfg.fixed_on_resume.items():
        if name in explicit and explicit[name] != getattr(saved, name, explicit[name]):
            raise ImgtransError(f"{name} cannot change on resume: {why} ({name}={getattr(saved, name)!r}); resume "
                                "without it, or start a new run")
    merged = {**payload["config"], **explicit, "resume": ref}
    return config_mod.from_saved(type(cfg), merged), payload


def log_setup(tracker, cfg: RunConfig, runtime: Runtime, step: int, facts: dict[str, Any],
              datasets: dict[str, SplitSummary], notes: list[str] = ()) -> None:
    """What every run records first: its effective configuration as params (options that apply, with the values
    that took effect, plus `facts` such as parameter counts), the requested one as config.json, its data as
    dataset inputs, and a description of the run."""
    effective = runtime_params(runtime)
    tracker.log_params({"model": cfg.model_name, **config_mod.defining(cfg), **effective, **facts})
    tracker.log_text(config_mod.to_json(cfg), "config.json")
    for context, summary in datasets.items():
        tracker.log_dataset(summary, context)
    if cfg.resume:
        tracker.set_tags({"imgtrans.resumed_from": cfg.resume})
        notes = [f"Resumed from `{cfg.resume}` at step {step}.", *notes]
    tracker.describe(describe(cfg, effective, datasets, notes))


def describe(cfg: RunConfig, effective: dict[str, Any], datasets: dict[str, SplitSummary],
             notes: list[str] = ()) -> str:
    """The run's Markdown description: what ran on what data, what was changed from the defaults and where it
    computed (`start` adds the result when it finishes)."""
    changed = [f"{name}={value}" for name, value in config_mod.changed(cfg).items()
               if name not in ("experiment", "resume")]
    data = ", ".join(f"{s.split} {s.images} ({s.sizes}, {s.channels})" for s in datasets.values())
    lines = [f"**{cfg.model_name}** on `{cfg.data_label()}`" + (f" — {data}" if data else ""), "",
             "Options changed from the defaults: " + (", ".join(f"`{c}`" for c in changed) if changed else "none"),
             "", "Computed on " + ", ".join(f"{k} `{v}`" for k, v in effective.items()) + ".",
             *[f"\n{note}" for note in notes]]
    return "\n".join(lines)


