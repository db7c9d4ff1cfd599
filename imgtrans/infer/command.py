"""`imgtrans translate`: an exported model over an archive, a summary, and MLflow records under `mlflow run`."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

from imgtrans.config import TranslateConfig
from imgtrans.errors import ImgtransError
from imgtrans.infer.archive import MANIFEST, plan_archive, run_archive
from imgtrans.infer.session import OnnxGenerator
from imgtrans.infer.tile_rule import TileRule

STATUSES = ("done", "skipped", "failed")


def file_digest(path: Path) -> str:
    """The first 16 hex digits of a file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def log_to_mlflow_run(cfg: TranslateConfig, provider: str, tiles: TileRule, counts: dict[str, int],
                      elapsed: float) -> None:
    from imgtrans.tracking import Tracker

    tracker = Tracker("")
    tracker.log_params({"provider": provider, "tile": cfg.tile, "max_tile": tiles.max_tile, "margin": cfg.margin,
                        "overlap": cfg.overlap, "output_bits": cfg.output_bits})
    tracker.log_metrics({f"translate/{k}": v for k, v in counts.items()} |
                        {"translate/images_per_s": counts["done"] / max(elapsed, 1e-9)}, step=0)
    tracker.log_artifact(Path(cfg.output) / MANIFEST)
    tracker.finish("FAILED" if counts["failed"] else "FINISHED")


def translate_command(cfg: TranslateConfig, explicit: dict, progress: bool) -> int:
    """Exit status: 0, or 1 when some file could not be translated."""
    for name in ("input", "output", "model"):
        if not getattr(cfg, name):
            raise ImgtransError(f"{name} is required (see `imgtrans translate --help`)")
    out_dir = Path(cfg.output)
    jobs = plan_archive(Path(cfg.input), out_dir)
    generator = OnnxGenerator(Path(cfg.model), cfg.provider)
    side = generator.sidecar
    tiles = TileRule.create(side, generator.provider, cfg.tile, cfg.margin, cfg.overlap)
    print(f"imgtrans: translating with {generator.provider}, {tiles.describe()}", file=sys.stderr)
    started = time.perf_counter()
    outcomes = run_archive(jobs, out_dir, translate=generator, codec=side.codec_obj, tiles=tiles,
                           batch_size=cfg.batch_size, output_bits=cfg.output_bits,
                           model_digest=file_digest(Path(cfg.model)), progress=progress, verbose=cfg.verbose)
    counts = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
    elapsed = time.perf_counter() - started
    if "MLFLOW_RUN_ID" in os.environ:
        log_to_mlflow_run(cfg, generator.provider, tiles, counts, elapsed)
    print(f"imgtrans: {counts['done']} translated, {counts['skipped']} already done, {counts['failed']} failed "
          f"in {elapsed:.1f}s; manifest: {out_dir / MANIFEST}")
    if counts["failed"]:
        print(f"imgtrans: error: {counts['failed']} file(s) could not be translated; see the manifest",
              file=sys.stderr)
        return 1
    return 0
