"""Evaluated training runs as plain `report.RunSummary` records: their scores from `evaluate`'s summary, the
params that tell them apart, and their kept sample images — what `compare` reports on."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from imgtrans.errors import ImgtransError
from imgtrans.evaluation.report import RunSummary
from imgtrans.tracking import store

KINDS = ("input", "output", "target")


def evaluated_runs(experiment: str, run_ids: list[str], split: str) -> list[RunSummary]:
    """The training runs of `experiment` (or the given ones) that `evaluate` scored on `split`, oldest first."""
    if run_ids and not experiment:
        runs = [store.get_run(run_id) for run_id in run_ids]
    else:
        runs = store.search_runs(store.experiment_id(experiment), f"tags.`{store.ROLE_TAG}` = 'train'",
                                 order_by=("attributes.start_time ASC",))
        if run_ids:
            runs = [r for r in runs if r.info.run_id in run_ids]
    summaries = [summary for run in runs if (summary := _summary(run, split)) is not None]
    if not summaries:
        where = f"experiment '{experiment}'" if experiment else "the given runs" if run_ids else "the experiment"
        raise ImgtransError(f"no evaluated runs in {where}; run `mlflow run . -e evaluate -P run_id=<run id>` first")
    return summaries


def _summary(run, split: str) -> RunSummary | None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = store.download(run.info.run_id, f"evaluation/{split}", Path(tmp))
        if folder is None or not (folder / "summary.json").is_file():
            return None
        evaluation = json.loads((folder / "summary.json").read_text())
        samples = {kind: [p.read_bytes() for p in sorted((folder / "samples").glob(f"{kind}_*.png"))]
                   for kind in KINDS}
    params, end = run.data.params, run.info.end_time
    return RunSummary(
        run_id=run.info.run_id, name=run.info.run_name or run.info.run_id[:8],
        model=run.data.tags.get("model", params.get("model", "?")), params=dict(params),
        generator_params=int(params["generator_params"]) if "generator_params" in params else None,
        train_minutes=(end - run.info.start_time) / 60000 if end else None, metrics=evaluation["metrics"],
        settings=evaluation["settings"], unavailable=evaluation.get("unavailable", {}), samples=samples,
        link=store.ui_path(run.info.experiment_id, run.info.run_id))
