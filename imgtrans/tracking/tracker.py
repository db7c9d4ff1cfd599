"""One MLflow run, written to by its id only (never MLflow's active-run stack, so which run gets what does not
depend on the order runs were opened), behind the `Tracker` protocol every run kind and command writes to.

`tracked_run` opens a run — or, started by `mlflow run`, continues the one MLflow Projects made — names it
readably and uniquely, records its owner, and ends it FINISHED, KILLED (interrupted, or stopped on purpose)
or FAILED with the one-line reason in its `error` tag.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.utils.git_utils import get_git_commit

from imgtrans import interrupts
from imgtrans.data.splits import SplitSummary
from imgtrans.errors import ImgtransError, one_line
from imgtrans.tracking import models, store
from imgtrans.tracking.datasets import ImageFolderDataset

MAX_PARAM_LENGTH = 6000
FAILED_RANK_TAG = "imgtrans.failed_rank"  # set by a torchrun process other than rank 0 that failed
SOURCE_RUNS_TAG = "imgtrans.source_runs"  # the runs an evaluation, comparison, export or DIP→diffusion used
ALIVE_EVERY_S = 60
BATCH = 1000  # MLflow's limit of metrics per request


class Tracker:
    """What a run records. This class records nothing — the processes of a torchrun job other than rank 0
    use it as it is (`QuietTracker`); `MlflowTracker` writes everything to one MLflow run."""

    run_id: str = ""
    experiment_id: str = ""

    def log_params(self, params: dict[str, Any]) -> None:
        """The effective configuration; empty values are left out."""

    def log_metrics(self, metrics: dict[str, float], step: int, model_id: str | None = None,
                    dataset: SplitSummary | None = None) -> None:
        """Metrics at a step; with `model_id` (and the `dataset` they were measured on) also the model's."""

    def log_metric_series(self, series: dict[str, list[tuple[int, float]]]) -> None:
        """Many steps of several metrics in a few requests (per-iteration curves)."""

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Short tags users filter on, and imgtrans's own."""

    def describe(self, markdown: str) -> None:
        """The run's description (Markdown), shown at the top of its page."""

    def append_description(self, markdown: str) -> None:
        """A paragraph added to the run's description (e.g. its result)."""

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """One image of a series (the run's image card and the chart view's image grid, with a step slider)."""

    def log_image_file(self, image: np.ndarray, artifact_file: str) -> None:
        """An image at a stable artifact path (e.g. samples/epoch_003.png)."""

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """A file into the run's artifacts."""

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        """A folder's files into the run's artifacts."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """A text file into the run's artifacts."""

    def delete_artifacts(self, artifact_path: str) -> None:
        """Remove a file or folder from the run's artifacts."""

    def log_table(self, columns: dict[str, list], artifact_file: str) -> None:
        """A table (column name → values) as MLflow's JSON table artifact."""

    def log_dataset(self, summary: SplitSummary, context: str) -> None:
        """A split of a dataset as an input of the run (`train`, `validation`, `test`)."""

    def log_generator(self, checkpoint: Path, config: dict[str, Any], step: int, example: np.ndarray,
                      description: str) -> str:
        """The trained generator as an MLflow model named `generator`, output of the run at `step`; its id."""
        return ""

    def log_onnx(self, path: Path, example: np.ndarray, description: str) -> str:
        """An exported ONNX generator as an MLflow model named `generator-onnx`; its id."""
        return ""

    def alive(self) -> None:
        """Tell the store this run's process still works (at most once a minute)."""

    def finish(self, status: str = "FINISHED", error: str | None = None) -> None:
        """End the run with its status and, unless FINISHED, the reason."""


class MlflowTracker(Tracker):
    def __init__(self, run_id: str, experiment_id: str):
        self.run_id, self.experiment_id = run_id, experiment_id
        self.client = store.client()
        self._alive_at = 0.0
        self._monitor: SystemMetricsMonitor | None = None

    @classmethod
    def of_run(cls, run_id: str) -> "MlflowTracker":
        """A tracker of an existing run (e.g. the training run an evaluation adds its results to)."""
        return cls(run_id, store.get_run(run_id).info.experiment_id)

    def monitor_system(self) -> None:
        """CPU, memory, disk and GPU use as `system/*` metrics while the run lasts."""
        self._monitor = SystemMetricsMonitor(self.run_id)
        self._monitor.start()

    # --- values -------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        """A key `mlflow run` already logged with another value goes in as `<key>.effective` (the same value
        spelled otherwise, `true` for True or `2e-4` for 0.0002, is the same)."""
        existing = self.client.get_run(self.run_id).data.params
        batch = {}
        for key, value in params.items():
            if value is None or value == "":
                continue
            text = str(value)[:MAX_PARAM_LENGTH]
            if key in existing and same_value(existing[key], value):
                continue
            if key in existing:
                key = f"{key}.effective"
            if existing.get(key) != text:
                batch[key] = text
        if batch:
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in batch.items()])

    def log_metrics(self, metrics: dict[str, float], step: int, model_id: str | None = None,
                    dataset: SplitSummary | None = None) -> None:
        now = int(time.time() * 1000)
        extra = {"model_id": model_id, **({"dataset_name": dataset.name, "dataset_digest": dataset.digest}
                                          if dataset is not None and model_id else {})}
        entries = [Metric(k, float(v), now, step, **extra) for k, v in metrics.items()]
        for start in range(0, len(entries), BATCH):
            self.client.log_batch(self.run_id, metrics=entries[start:start + BATCH])

    def log_metric_series(self, series: dict[str, list[tuple[int, float]]]) -> None:
        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step) for key, points in series.items() for step, value in points]
        for start in range(0, len(entries), BATCH):
            self.client.log_batch(self.run_id, metrics=entries[start:start + BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def describe(self, markdown: str) -> None:
        self.set_tags({store.DESCRIPTION_TAG: markdown})

    def append_description(self, markdown: str) -> None:
        current = self.client.get_run(self.run_id).data.tags.get(store.DESCRIPTION_TAG, "")
        self.describe(f"{current}\n\n{markdown}".strip())

    # --- files -------------------------------------------------------------
    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        # Synchronously: MLflow's asynchronous queue (one per run) holds the process for a second per run at exit.
        self.client.log_image(self.run_id, image, key=key, step=step, synchronous=True)

    def log_image_file(self, image: np.ndarray, artifact_file: str) -> None:
        with interrupts.held():
            self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        with interrupts.held():  # a half-copied checkpoint in the store would replace the last good one
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        with interrupts.held():
            self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def delete_artifacts(self, artifact_path: str) -> None:
        store.artifact_repository(self.run_id).delete_artifacts(artifact_path)

    def log_table(self, columns: dict[str, list], artifact_file: str) -> None:
        self.client.log_table(self.run_id, data=columns, artifact_file=artifact_file)

    def log_dataset(self, summary: SplitSummary, context: str) -> None:
        dataset = ImageFolderDataset(summary)
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(
            dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])])

    def log_generator(self, checkpoint: Path, config: dict[str, Any], step: int, example: np.ndarray,
                      description: str) -> str:
        return models.log_generator(self.client, self.run_id, self.experiment_id, checkpoint, config, step,
                                    example, description)

    def log_onnx(self, path: Path, example: np.ndarray, description: str) -> str:
        return models.log_onnx(self.client, self.run_id, self.experiment_id, path, example, description)

    # --- the run's life ------------------------------------------------------
    def alive(self) -> None:
        now = time.time()
        if now - self._alive_at >= ALIVE_EVERY_S:
            self._alive_at = now
            self.set_tags({store.ALIVE_TAG: f"{now:.0f}"})

    def finish(self, status: str = "FINISHED", error: str | None = None) -> None:
        with interrupts.held():  # the status is written whole, even as torchrun stops the job
            if self._monitor is not None:
                self._monitor.finish()
            if status != "FINISHED":
                tags = self.client.get_run(self.run_id).data.tags
                if FAILED_RANK_TAG in tags:  # another process of the job failed first: that is why it ended
                    status, error = "FAILED", tags.get("error", error)
            store.end_run(self.run_id, status, error)


class QuietTracker(Tracker):
    """The tracker of a torchrun job's processes other than rank 0: the job's one run is rank 0's, so nothing
    is logged here — except why this process failed, which rank 0, waiting for it, cannot know."""

    def __init__(self, run_id: str, rank: int):
        self.run_id, self.rank = run_id, rank

    @contextmanager
    def failures_recorded(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            run = store.get_run(self.run_id)
            # A run already ended was ended by rank 0 with its own reason, and this failure only followed it.
            if store.is_running(run):
                MlflowTracker(self.run_id, run.info.experiment_id).set_tags(
                    {"error": f"rank {self.rank}: {one_line(exc)}", FAILED_RANK_TAG: self.rank})
            raise


def _source_tags(command: str) -> dict[str, str]:
    tags = {"mlflow.user": getpass.getuser(), "mlflow.source.name": f"imgtrans {command}",
            store.OWNER_TAG: store.owner_tag(), store.ALIVE_TAG: f"{time.time():.0f}"}
    commit = get_git_commit(str(Path(__file__).resolve()))
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def same_value(logged: str, value: Any) -> bool:
    """Whether a param's logged text (MLflow Projects logs what the command line said) is `value`."""
    if logged == str(value)[:MAX_PARAM_LENGTH]:
        return True
    if isinstance(value, bool):
        return logged.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return float(logged) == float(value)
        except ValueError:
            return False
    return False


def open_run(experiment: str, name: str, command: str, role: str, parent_run_id: str | None = None,
             tags: dict[str, Any] | None = None, experiment_id: str | None = None) -> MlflowTracker:
    """A new run named `name` (made unique in its experiment) in `experiment` (a name; or the one of
    `experiment_id`, or the parent's), or, for a top-level run under `mlflow run`, the one MLflow Projects
    created, renamed; its source is `imgtrans <command>`, its owner this process. Runs of this experiment
    that processes on this host left RUNNING when they died are closed first."""
    c = store.client()
    tags = {**_source_tags(command), store.ROLE_TAG: role, **(tags or {})}
    project_run = os.environ.get("MLFLOW_RUN_ID") if parent_run_id is None else None
    if project_run:
        wanted = experiment or (c.get_experiment(experiment_id).name if experiment_id else None)
        experiment_id = store.get_run(project_run).info.experiment_id
        here = c.get_experiment(experiment_id).name
        if wanted is not None and wanted != here:  # MLflow Projects made the run: it cannot move
            raise ImgtransError(f"this run belongs in experiment '{wanted}', but `mlflow run` put it in '{here}'; "
                                f"run it as `mlflow run --experiment-name '{wanted}' …`")
        store.mark_model_training(experiment_id)
        _close_dead_runs(experiment_id)
        c.update_run(project_run, name=store.unique_run_name(experiment_id, name, current_run=project_run))
        tracker = MlflowTracker(project_run, experiment_id)
        tracker.set_tags(tags)
        return tracker
    if parent_run_id:
        experiment_id = store.get_run(parent_run_id).info.experiment_id
        tags["mlflow.parentRunId"] = parent_run_id
    elif experiment_id:
        store.mark_model_training(experiment_id)
    else:
        experiment_id = store.experiment_id(experiment, create=True)
    _close_dead_runs(experiment_id)
    tags.setdefault("mlflow.source.type", "LOCAL")
    run = c.create_run(experiment_id, run_name=store.unique_run_name(experiment_id, name),
                       tags={k: str(v) for k, v in tags.items()})
    return MlflowTracker(run.info.run_id, experiment_id)


def reopen_run(run_id: str) -> MlflowTracker:
    """Continue an ended run as this process's (a study's parent, which every worker adds to)."""
    run = store.get_run(run_id)
    c = store.client()
    if "error" in run.data.tags:
        c.delete_tag(run_id, "error")
    c.update_run(run_id, status="RUNNING")
    tracker = MlflowTracker(run_id, run.info.experiment_id)
    tracker.set_tags({store.OWNER_TAG: store.owner_tag(), store.ALIVE_TAG: f"{time.time():.0f}"})
    return tracker


def _close_dead_runs(experiment_id: str) -> None:
    for run, reason in store.close_dead_runs(experiment_id):
        print(f"imgtrans: closed run {run.info.run_name} ({run.info.run_id}) as KILLED: {reason}", file=sys.stderr)


@contextmanager
def tracked_run(experiment: str, name: str, command: str, role: str, parent_run_id: str | None = None,
                tags: dict[str, Any] | None = None, experiment_id: str | None = None, system_metrics: bool = False,
                stops: tuple[type[BaseException], ...] = ()) -> Iterator[MlflowTracker]:
    """A run (see `open_run`) that ends FINISHED, KILLED with the interrupt (Ctrl-C, SIGTERM) or with the
    message of one of the `stops` (exceptions that end it on purpose, such as a pruned trial), or FAILED with
    the one-line reason."""
    tracker = open_run(experiment, name, command, role, parent_run_id, tags, experiment_id)
    if system_metrics:
        tracker.monitor_system()
    try:
        yield tracker
    except KeyboardInterrupt as exc:
        tracker.finish("KILLED", error=interrupts.reason(exc))
        raise
    except stops as exc:
        tracker.finish("KILLED", error=str(exc))
        raise
    except BaseException as exc:
        tracker.finish("FAILED", error=one_line(exc))
        raise
    tracker.finish()


def end_project_run(status: str, message: str) -> None:
    """End the run `mlflow run` opened for this command, if it is still open, with this status and reason (a
    command that failed before its own run started; by rank 0 of a torchrun job only)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id or os.environ.get("RANK", "0") != "0":
        return
    try:
        run = store.client().get_run(run_id)
        if store.is_running(run):
            store.end_run(run_id, status, message)
    except MlflowException:
        pass
