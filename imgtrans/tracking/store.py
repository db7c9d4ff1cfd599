"""The tracking store: experiments (opened in MLflow's model-training view), runs looked up by id or tag,
readable unique run names, artifacts by run, and the runs that processes which died left RUNNING.

The store is MLflow's default (SQLite `mlflow.db` in the working directory, artifacts under `mlruns/`) unless
MLFLOW_TRACKING_URI says otherwise.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import psutil
from mlflow.entities import Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.tracking.default_experiment import DEFAULT_EXPERIMENT_ID

from imgtrans.errors import ImgtransError, one_line

# MLflow's INFO lines (database set-up, system-metrics thread) drown our own output.
logging.getLogger("mlflow").setLevel(logging.WARNING)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"
OWNER_TAG = "imgtrans.owner"  # "host pid start-time" of the process that runs it
ALIVE_TAG = "imgtrans.alive_at"  # when its process last said it is alive (Unix seconds)
ROLE_TAG = "imgtrans.role"  # train, evaluate, compare, export, study, trial, benchmark, translate


def client() -> MlflowClient:
    try:
        return MlflowClient()
    except MlflowException as exc:  # a store MLflow will not open, e.g. a file store (refused since MLflow 3.7)
        raise ImgtransError(f"MLflow cannot use the tracking store {store_uri()}: {one_line(exc)}") from exc


def store_uri() -> str:
    return mlflow.get_tracking_uri()


def experiment_choice(experiment: str) -> tuple[str | None, str | None]:
    """(name, None) or (None, id): `experiment`, else the current one — MLFLOW_EXPERIMENT_NAME, then
    MLFLOW_EXPERIMENT_ID, then Default, as `mlflow run` chooses."""
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    return (name, None) if name else (None, os.environ.get("MLFLOW_EXPERIMENT_ID") or DEFAULT_EXPERIMENT_ID)


def experiment_id(experiment: str, create: bool = False) -> str:
    """The id of `experiment` (else the current one), created when missing and `create`; experiments imgtrans
    uses are marked as model-training experiments."""
    name, found_id = experiment_choice(experiment)
    if found_id is None:
        found = client().get_experiment_by_name(name)
        if found is None and not create:
            raise ImgtransError(f"no MLflow experiment named '{name}' in {store_uri()}; check the name (the MLflow UI "
                                    "lists them) or MLFLOW_TRACKING_URI")
        if found is not None and found.lifecycle_stage == "deleted":
            raise ImgtransError(f"the MLflow experiment '{name}' was deleted; restore it (`mlflow experiments restore "
                                f"--experiment-id {found.experiment_id}`) or choose another name")
        found_id = found.experiment_id if found else _create_experiment(name)
    mark_model_training(found_id)
    return found_id


def mark_model_training(experiment_id: str) -> None:
    """Tag the experiment as one of model training (MLflow's UI otherwise takes it for a GenAI one)."""
    try:
        experiment = client().get_experiment(experiment_id)
    except MlflowException:
        raise ImgtransError(f"no MLflow experiment with id '{experiment_id}' in {store_uri()}") from None
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
        client().set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)


def _create_experiment(name: str) -> str:
    try:
        return client().create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    except MlflowException:  # another process created it first
        return client().get_experiment_by_name(name).experiment_id


def ui_path(experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's address of an experiment or run, relative to the UI's root, in the model-training view."""
    run = f"/runs/{run_id}" if run_id else ""
    return f"#/experiments/{experiment_id}{run}?workflowType=machine_learning"


def get_run(run_id: str) -> Run:
    try:
        return client().get_run(run_id)
    except MlflowException:
        raise ImgtransError(f"no MLflow run with id '{run_id}' in the tracking store {store_uri()}; "
                            "pass an existing run id") from None


def search_runs(experiment_id: str, filter_string: str = "", order_by: tuple[str, ...] = ()) -> list[Run]:
    return client().search_runs([experiment_id], filter_string=filter_string, order_by=list(order_by),
                                max_results=50_000)


def unique_run_name(experiment_id: str, base: str, current_run: str | None = None) -> str:
    """`base`, or `base-2`, `base-3` … when runs of that name exist in the experiment."""
    quoted = base.replace("'", "")
    taken = {r.info.run_name for r in search_runs(experiment_id, f"attributes.run_name LIKE '{quoted}%'")
             if r.info.run_id != current_run}
    if base not in taken:
        return base
    return next(f"{base}-{n}" for n in range(2, len(taken) + 3) if f"{base}-{n}" not in taken)


def artifact_repository(run_id: str):
    """Where a run's artifacts are (a folder, the tracking server, a bucket), to change them."""
    return get_artifact_repository(get_run(run_id).info.artifact_uri)


def has_artifact(run_id: str, artifact_path: str) -> bool:
    folder = artifact_path.rpartition("/")[0] or None
    return any(a.path == artifact_path for a in client().list_artifacts(run_id, folder))


def download(run_id: str, artifact_path: str, dest: Path) -> Path | None:
    """A run's artifact (file or folder) in `dest`; None when it does not exist."""
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                        dst_path=str(dest)))
    except (MlflowException, OSError):
        return None


# --- runs left RUNNING by dead processes ----------------------------------------------------------------


def owner_tag() -> str:
    """This process as its runs record it: host, pid and start time (a reused pid is another process)."""
    return f"{socket.gethostname()} {os.getpid()} {psutil.Process().create_time():.2f}"


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: float

    @classmethod
    def parse(cls, tag: str | None) -> "Owner | None":
        try:
            host, pid, started = (tag or "").split()
            return cls(host, int(pid), float(started))
        except ValueError:
            return None

    def alive(self) -> bool:
        """Whether the process still runs (on this host only; elsewhere nobody can tell)."""
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1
        except psutil.Error:
            return False


def end_run(run_id: str, status: str, reason: str | None, tags: dict[str, str] | None = None) -> None:
    """End a run with its status and the reason (None for none); the owner and liveness tags, which only a
    RUNNING run needs (`close_dead_runs`), are removed so that its page shows what users set and filter on."""
    c = client()
    tags = {**(tags or {}), **({"error": reason} if reason else {})}
    if tags:
        c.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
    c.set_terminated(run_id, status)  # first: a run left RUNNING keeps the owner that lets it be closed
    for key in {OWNER_TAG, ALIVE_TAG} & c.get_run(run_id).data.tags.keys():
        try:
            c.delete_tag(run_id, key)
        except MlflowException:  # another process ending it (a study's last workers) removed it first
            pass


def end_run_if_running(run_id: str, status: str, reason: str, tags: dict[str, str] | None = None) -> str | None:
    """End a run another process left RUNNING; None, or why it could not be done (the store did not answer)."""
    try:
        if is_running(client().get_run(run_id)):
            end_run(run_id, status, reason, tags)
    except MlflowException as exc:
        return one_line(exc)
    return None


def dead_run_reason(run: Run, older_than_s: float | None = None) -> str | None:
    """Why a RUNNING run is dead, or None: its process on this host is gone; on another host, it has given no
    sign of life for `older_than_s` seconds (when given)."""
    owner = Owner.parse(run.data.tags.get(OWNER_TAG))
    if owner is None:
        return None
    if owner.host == socket.gethostname():
        if owner.alive():
            return None
        return f"process {owner.pid} on {owner.host} ended without closing the run"
    if older_than_s is None:
        return None
    alive_at = float(run.data.tags.get(ALIVE_TAG, run.info.start_time / 1000))
    silent = time.time() - alive_at
    if silent < older_than_s:
        return None
    return f"process {owner.pid} on {owner.host} gave no sign of life for {silent / 3600:.1f} h"


def close_dead_runs(experiment_id: str, older_than_s: float | None = None) -> list[tuple[Run, str]]:
    """Mark the RUNNING runs of an experiment whose process died KILLED, with the reason; returns them."""
    closed = []
    for run in search_runs(experiment_id, "attributes.status = 'RUNNING'"):
        reason = dead_run_reason(run, older_than_s)
        if reason is None:
            continue
        try:
            end_run(run.info.run_id, "KILLED", reason)
        except MlflowException as exc:  # e.g. deleted meanwhile: nothing left to close
            print(f"imgtrans: warning: cannot close run {run.info.run_id}: {one_line(exc)}", file=sys.stderr)
            continue
        closed.append((run, reason))
    return closed


def is_running(run: Run) -> bool:
    return run.info.status == RunStatus.to_string(RunStatus.RUNNING)
