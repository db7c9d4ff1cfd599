"""The `runs` command: runs left RUNNING by processes that died (killed with -9, a lost machine) closed."""

from __future__ import annotations

from imgtrans.tracking import store
from imgtrans.tracking.options import RunsConfig


def runs_command(cfg: RunsConfig, explicit: dict, progress: bool) -> int:
    experiment_id = store.experiment_id(cfg.experiment)
    closed = store.close_dead_runs(experiment_id, older_than_s=cfg.older_than * 3600 if cfg.older_than else None)
    for run, reason in closed:
        print(f"imgtrans: closed {run.info.run_name} ({run.info.run_id}) as KILLED: {reason}")
    print(f"imgtrans: {len(closed)} dead run(s) closed in experiment {experiment_id}")
    return 0
