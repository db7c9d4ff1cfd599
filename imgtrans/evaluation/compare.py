"""The `compare` command: the report across evaluated runs, as the description of a compare run that links to
every run it compares, as its artifacts, and optionally as files."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from imgtrans.evaluation.options import CompareConfig
from imgtrans.evaluation.report import SHEET_FILE, markdown, write_reports
from imgtrans.evaluation.summaries import evaluated_runs
from imgtrans.files import scratch_dir
from imgtrans.tracking.tracker import SOURCE_RUNS_TAG, tracked_run


def compare_command(cfg: CompareConfig, explicit: dict, progress: bool) -> int:
    """`imgtrans compare`: the report across evaluated runs — printed, the description of a compare run (with
    the side-by-side sheet) that links to every run, its artifacts, and optionally files in `output`."""
    run_ids = [r.strip() for r in cfg.run_ids.split(",") if r.strip()]
    runs = evaluated_runs(cfg.experiment, run_ids, cfg.split)
    title = f"imgtrans comparison: {cfg.experiment or ('selected runs' if run_ids else 'current experiment')} " \
            f"({cfg.split} split, {len(runs)} runs)"
    name = "compare-" + "-vs-".join(r.name for r in runs) if len(runs) <= 3 else f"compare-{len(runs)}-runs"
    with tracked_run(cfg.report_experiment, name[:200], "compare", "compare",
                     tags={SOURCE_RUNS_TAG: ",".join(r.run_id for r in runs)}) as tracker, \
            (nullcontext(Path(cfg.output)) if cfg.output else scratch_dir("compare")) as folder:
        paths = write_reports(runs, title, folder)
        tracker.log_params({"compared_experiment": cfg.experiment, "runs": len(runs), "split": cfg.split})
        for path in paths:
            tracker.log_artifact(path, "report")
        sheet = f"get-artifact?path=report/{SHEET_FILE}&run_uuid={tracker.run_id}" if (folder / SHEET_FILE).exists() \
            else None
        tracker.describe(markdown(runs, title, sheet))
    print(markdown(runs, title))
    print(f"imgtrans: report logged to run {tracker.run_id} ({', '.join('report/' + p.name for p in paths)})"
          + (f" and written to {folder}" if cfg.output else ""))
    return 0
