"""`imgtrans translate`: an exported model over an archive, a summary, and MLflow records under `mlflow run`."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from imgtrans.errors import ImgtransError
from imgtrans.files import file_digest
from imgtrans.infer.archive import Engine, plan_archive, run_archive
from imgtrans.infer.engines import LocalEngine, choose_devices
from imgtrans.infer.manifest import MANIFEST
from imgtrans.infer.options import TranslateConfig
from imgtrans.infer.ray_engine import RayEngine, check_reachable, import_ray
from imgtrans.infer.tile_rule import tiling_recipe
from imgtrans.infer.worker import TranslateSettings
from imgtrans.tracking.tracker import open_run

STATUSES = ("done", "skipped", "failed")


def log_to_mlflow_run(cfg: TranslateConfig, engine_params: dict, counts: dict[str, int], elapsed: float) -> None:
    """Under `mlflow run`: the archive's figures in the run MLflow Projects opened."""
    tracker = open_run("", f"translate-{Path(cfg.input).name}", "translate", "translate")
    tracker.describe(f"Translated `{cfg.input}` into `{cfg.output}` with `{cfg.model}`: {counts['done']} done, "
                     f"{counts['skipped']} already done, {counts['failed']} failed in {elapsed:.1f} s.")
    tracker.log_params(engine_params | {"tile": cfg.tile, "margin": cfg.margin, "overlap": cfg.overlap,
                                        "output_bits": cfg.output_bits})
    tracker.log_metrics({f"translate/{k}": v for k, v in counts.items()} |
                        {"translate/images_per_s": counts["done"] / max(elapsed, 1e-9)}, step=0)
    tracker.log_artifact(Path(cfg.output) / MANIFEST)
    tracker.finish("FAILED" if counts["failed"] else "FINISHED")


def settings_for(cfg: TranslateConfig) -> TranslateSettings:
    model = Path(cfg.model).absolute()  # workers may run in other folders
    settings = TranslateSettings(str(model), cfg.provider, cfg.tile, cfg.margin, cfg.overlap, cfg.batch_size,
                                 cfg.output_bits)
    settings.check()
    recipe = f"model {file_digest(model)}, {tiling_recipe(cfg.tile, cfg.margin, cfg.overlap)}, bits {cfg.output_bits}"
    return dataclasses.replace(settings, recipe=recipe)


def check_engine(cfg: TranslateConfig) -> None:
    """What can be said of the engine's settings before anything is planned or written (the engine itself
    starts only when there is something to translate)."""
    if cfg.engine == "local":
        choose_devices(cfg.provider, cfg.devices)
        return
    if cfg.devices != "all":
        raise ImgtransError("--devices is for the local engine; on Ray every actor gets a GPU of its own")
    import_ray()
    check_reachable(cfg.ray_address or os.environ.get("RAY_ADDRESS", ""))


def start_engine(cfg: TranslateConfig, settings: TranslateSettings) -> Engine:
    if cfg.engine == "ray":
        return RayEngine(settings, cfg.ray_address, cfg.cpus_per_worker)
    return LocalEngine(settings, choose_devices(cfg.provider, cfg.devices))


def translate_command(cfg: TranslateConfig, explicit: dict, progress: bool) -> int:
    """Exit status: 0, or 2 (bad input, as any other) when some file could not be translated."""
    for name in ("input", "output", "model"):
        if not getattr(cfg, name):
            raise ImgtransError(f"{name} is required (see `imgtrans translate --help`)")
    out_dir = Path(cfg.output)
    check_engine(cfg)
    jobs = plan_archive(Path(cfg.input), out_dir)
    settings = settings_for(cfg)
    params = {"engine": "none: nothing left to translate"}

    def start() -> Engine:
        nonlocal params
        engine = start_engine(cfg, settings)
        print(f"imgtrans: translating with {engine.describe()}", file=sys.stderr)
        params = engine.params()
        return engine

    started = time.perf_counter()
    outcomes = run_archive(jobs, out_dir, start, settings.recipe, progress=progress, verbose=cfg.verbose)
    elapsed = time.perf_counter() - started
    counts = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
    if "MLFLOW_RUN_ID" in os.environ:
        log_to_mlflow_run(cfg, params, counts, elapsed)
    print(f"imgtrans: {counts['done']} translated, {counts['skipped']} already done, {counts['failed']} failed "
          f"in {elapsed:.1f}s; manifest: {out_dir / MANIFEST}")
    if counts["failed"]:
        print(f"imgtrans: error: {counts['failed']} file(s) could not be translated; see the manifest",
              file=sys.stderr)
        return 2
    return 0
