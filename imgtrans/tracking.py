"""The only module that talks to MLflow.

The tracking store is MLflow's default (SQLite `mlflow.db` in the working
directory, artifacts under `mlruns/`) unless MLFLOW_TRACKING_URI says
otherwise. Under `mlflow run` the run already exists (MLFLOW_RUN_ID) and is
continued; from the plain CLI a new run is started.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.default_experiment import DEFAULT_EXPERIMENT_ID

from imgtrans import interrupts
from imgtrans.errors import ImgtransError, one_line

MAX_PARAM_LENGTH = 6000
FAILED_RANK_TAG = "imgtrans.failed_rank"  # set by a torchrun process other than rank 0 that failed
# MLflow's INFO lines (database set-up, system-metrics thread) drown our own output.
logging.getLogger("mlflow").setLevel(logging.WARNING)
# Logging our own GeneratorModel class always triggers MLflow's generic CloudPickle caution.
logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class Tracker:
    """One MLflow run: in `experiment`, or when that is empty in the current experiment, the one `mlflow run`
    also uses (MLFLOW_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_ID, else Default)."""

    def __init__(self, experiment: str, run_name: str | None = None, nested: bool = False):
        if "MLFLOW_RUN_ID" not in os.environ and not nested:
            name, experiment_id = experiment_choice(experiment)
            mlflow.set_experiment(name, experiment_id=experiment_id)  # creates a named one that is missing
        self.run = mlflow.start_run(run_name=run_name, nested=nested,
                                    log_system_metrics=importlib.util.find_spec("psutil") is not None)
        self.run_id = self.run.info.run_id
        self.client = MlflowClient()

    # --- params, metrics, tags --------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        """Log params; a key `mlflow run` already logged with another value goes in as `<key>.effective`."""
        existing = self.client.get_run(self.run_id).data.params
        batch = {}
        for key, value in params.items():
            text = str(value)[:MAX_PARAM_LENGTH]
            if key in existing and existing[key] != text:
                key = f"{key}.effective"
            batch[key] = text
        mlflow.log_params(batch)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_metric_series(self, series: dict[str, list[tuple[int, float]]]) -> None:
        """Many steps of several metrics in a few requests (per-iteration curves)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, points in series.items() for step, value in points]
        for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    # --- files -------------------------------------------------------------
    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        # Synchronously: MLflow's asynchronous queue (one per run) holds the process for a second per run at exit
        # — a study of 20 trials ended 20 s after its last one. One grid per epoch is quick to write.
        mlflow.log_image(image, key=key, step=step, synchronous=True)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        with interrupts.held():  # a half-copied checkpoint in the store would replace the last good one
            self.client.log_artifact(self.run_id, str(path), artifact_path)  # by id: also from a saver thread

    def log_text(self, text: str, artifact_file: str) -> None:
        mlflow.log_text(text, artifact_file)

    def log_generator(self, checkpoint: Path, config_json: str) -> None:
        """The trained generator as an MLflow pyfunc model that carries its own config."""
        with tempfile.TemporaryDirectory() as tmp:
            config_path = Path(tmp) / "config.json"
            config_path.write_text(config_json)
            mlflow.pyfunc.log_model(
                name="model",
                python_model=GeneratorModel(),
                artifacts={"checkpoint": str(checkpoint), "config": str(config_path)},
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "pillow", "imgtrans"],
            )

    def log_onnx(self, path: Path) -> None:
        import mlflow.onnx
        import onnx

        mlflow.onnx.log_model(onnx.load(str(path)), name="onnx_model", pip_requirements=["onnxruntime"])
        self.log_artifact(path, "export")
        sidecar = path.with_suffix(".json")
        if sidecar.exists():
            self.log_artifact(sidecar, "export")

    def finish(self, status: str = "FINISHED", error: str | None = None) -> None:
        with interrupts.held():  # the status is written whole, even as torchrun stops the job
            if status != "FINISHED":
                tags = self.client.get_run(self.run_id).data.tags
                if FAILED_RANK_TAG in tags:  # another process of the job failed first: that is why it ended
                    status, error = "FAILED", tags.get("error", error)
            if error:
                mlflow.set_tag("error", error[:5000])
            mlflow.end_run(status)


class QuietTracker:
    """The tracker of a torchrun job's processes other than rank 0: the job's one run is rank 0's, so nothing
    is logged here — except why this process failed, which rank 0, waiting for it, cannot know."""

    def __init__(self, run_id: str, rank: int):
        self.run_id, self.rank = run_id, rank

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_metric_series(self, series: dict[str, list[tuple[int, float]]]) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_generator(self, checkpoint: Path, config_json: str) -> None:
        pass

    @contextmanager
    def failures_recorded(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            client = MlflowClient()
            # A run already ended was ended by rank 0 with its own reason, and this failure only followed it.
            if client.get_run(self.run_id).info.status == "RUNNING":
                client.set_tag(self.run_id, "error", f"rank {self.rank}: {one_line(exc)}"[:5000])
                client.set_tag(self.run_id, FAILED_RANK_TAG, str(self.rank))
            raise


@contextmanager
def tracked_run(experiment: str, run_name: str | None = None, nested: bool = False,
                stops: tuple[type[BaseException], ...] = ()) -> Iterator[Tracker]:
    """A run that ends FINISHED, KILLED with the interrupt (Ctrl-C, SIGTERM) or with the message of one of the
    `stops` (exceptions that end it on purpose, such as a pruned trial), or FAILED with the one-line reason."""
    tracker = Tracker(experiment, run_name=run_name, nested=nested)
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


class RunWriter:
    """Adds results to an existing run, e.g. evaluation metrics to the training run they describe."""

    def __init__(self, run_id: str):
        self.client = MlflowClient()
        try:
            self.run = self.client.get_run(run_id)
        except MlflowException:
            raise ImgtransError(f"no MLflow run with id '{run_id}' in the tracking store "
                                f"{mlflow.get_tracking_uri()}; pass an existing run id") from None
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value)[:5000])

    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)


def run_summaries(experiment: str, run_ids: list[str], split: str):
    """Evaluated training runs as plain `compare.RunSummary` records (with their sample images)."""
    from imgtrans.evaluation.compare import RunSummary

    client = MlflowClient()
    prefix = "test/" if split == "test" else "eval_val/"
    if run_ids and not experiment:
        runs = [RunWriter(run_id).run for run_id in run_ids]
    else:
        experiment_id = experiment_id_of(experiment)
        runs = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"])
        experiment = experiment or client.get_experiment(experiment_id).name
        if run_ids:
            runs = [r for r in runs if r.info.run_id in run_ids]
    summaries = []
    for run in runs:
        metrics = {k[len(prefix):]: v for k, v in run.data.metrics.items() if k.startswith(prefix)}
        if "imgtrans.model" not in run.data.tags or not metrics:
            continue
        tags = run.data.tags
        settings_prefix = f"imgtrans.{prefix[:-1]}."
        samples: dict[str, list[bytes]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = Path(mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path=f"evaluation/{split}/samples", dst_path=tmp))
                for kind in ("input", "output", "target"):
                    samples[kind] = [p.read_bytes() for p in sorted(local.glob(f"{kind}_*.png"))]
            except (MlflowException, OSError):
                pass
        end = run.info.end_time
        summaries.append(RunSummary(
            run_id=run.info.run_id, name=run.info.run_name or run.info.run_id[:8], model=tags["imgtrans.model"],
            params=dict(run.data.params),
            generator_params=int(tags["imgtrans.generator_params"]) if "imgtrans.generator_params" in tags else None,
            train_minutes=(end - run.info.start_time) / 60000 if end else None, metrics=metrics,
            settings={k[len(settings_prefix):]: v for k, v in tags.items() if k.startswith(settings_prefix)},
            samples=samples))
    if not summaries:
        where = f"experiment '{experiment}'" if experiment else "the given runs"
        raise ImgtransError(f"no evaluated runs in {where}; run `mlflow run . -e evaluate -P run_id=<run id>` first")
    return summaries


def experiment_choice(experiment: str) -> tuple[str | None, str | None]:
    """(name, None) or (None, id): `experiment`, else the current one — MLFLOW_EXPERIMENT_NAME, then
    MLFLOW_EXPERIMENT_ID, then Default, as `mlflow run` chooses."""
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    return (name, None) if name else (None, os.environ.get("MLFLOW_EXPERIMENT_ID") or DEFAULT_EXPERIMENT_ID)


def experiment_id_of(experiment: str) -> str:
    """The id of an existing experiment: `experiment`, or the current one when it is empty."""
    name, experiment_id = experiment_choice(experiment)
    if experiment_id:
        return experiment_id
    found = MlflowClient().get_experiment_by_name(name)
    if found is None:
        raise ImgtransError(f"no MLflow experiment named '{name}' in {mlflow.get_tracking_uri()}")
    return found.experiment_id


def store_uri() -> str:
    return mlflow.get_tracking_uri()


def fail_runs_of_dead_trial(study_name: str, number: int, reason: str) -> None:
    """Mark the MLflow runs that a dead study worker left RUNNING — the trial's and its parent — FAILED."""
    client = MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`optuna.trial` = '{number}' and attributes.status = 'RUNNING'")
    for run in runs:
        if run.data.tags.get("optuna.study") != study_name:
            continue
        client.set_tag(run.info.run_id, "optuna.state", "FAIL")
        for run_id in filter(None, (run.info.run_id, run.data.tags.get("mlflow.parentRunId"))):
            client.set_tag(run_id, "error", reason)
            client.set_terminated(run_id, "FAILED")


def register_champion(run_id: str, name: str) -> str:
    """Register a run's generator in the model registry and point the alias @champion at it."""
    version = mlflow.register_model(f"runs:/{run_id}/model", name)
    MlflowClient().set_registered_model_alias(name, "champion", version.version)
    return version.version


def download_checkpoint(run_id: str, dest: Path) -> Path:
    """The last training checkpoint of an MLflow run."""
    try:
        MlflowClient().get_run(run_id)
    except MlflowException:
        raise ImgtransError(f"no MLflow run with id '{run_id}' in the tracking store {mlflow.get_tracking_uri()}; "
                            "pass an existing run id or a checkpoint path") from None
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/last.pt",
                                                    dst_path=str(dest))
    except (MlflowException, OSError):
        raise ImgtransError(f"run '{run_id}' has no checkpoints/last.pt artifact to resume from") from None
    return Path(local)


def generator_checkpoint(model_uri: str, dest: Path) -> Path:
    """The generator checkpoint inside a logged imgtrans model (runs:/<id>/model or models:/<name>@<alias>)."""
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dest)))
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImgtransError(f"cannot load the model {model_uri} from {mlflow.get_tracking_uri()}: {first}") from None
    found = sorted(local.rglob("generator.pt"))
    if not found:
        raise ImgtransError(f"{model_uri} is not an imgtrans generator model (no generator.pt inside)")
    return found[0]


def end_stale_run(run_id: str) -> bool:
    """Mark a RUNNING run KILLED when the process that ran it (on this host) is gone, e.g. killed with -9."""
    run = MlflowClient().get_run(run_id)
    tags = run.data.tags
    if run.info.status != "RUNNING" or tags.get("imgtrans.host") != socket.gethostname():
        return False
    if not process_gone(tags.get("imgtrans.pid", "")):
        return False
    client = MlflowClient()
    client.set_tag(run_id, "error", f"stale: process {tags['imgtrans.pid']} on {tags['imgtrans.host']} ended "
                                    "without finishing the run (killed); resumed from its last checkpoint")
    client.set_terminated(run_id, "KILLED")
    return True


def process_gone(pid: str) -> bool:
    """Whether no process `pid` runs on this host (a reused pid counts as alive: the run then stays RUNNING)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):  # no pid recorded, or alive under another user
        return False
    return False


def end_active_run(status: str, message: str) -> None:
    """End the active (or `mlflow run`-created) run, if one is still open, with this status and reason (by
    rank 0 of a torchrun job: the others record a failure with `QuietTracker`)."""
    from imgtrans.compute.distributed import World

    run_id = mlflow.active_run().info.run_id if mlflow.active_run() else os.environ.get("MLFLOW_RUN_ID")
    if not run_id or not World.from_environment().is_main:
        return
    try:
        client = MlflowClient()
        if client.get_run(run_id).info.status != "RUNNING":
            return
        client.set_tag(run_id, "error", message[:5000])
        if mlflow.active_run():
            mlflow.end_run(status)
        else:
            client.set_terminated(run_id, status)
    except MlflowException:
        pass


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: rgb images (N, H, W, 3) or gray (N, H, W) in [0, 1] → translated rgb (N, H, W, 3)."""

    # Inputs are arrays of any image size, which MLflow's type-hint schemas cannot express.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from imgtrans.training.checkpoint import load_model

        self.model = load_model(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        images = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        if images.ndim == 3:
            images = images[..., None].expand(*images.shape, 3)
        rgb = images.permute(0, 3, 1, 2)
        codec = self.model.codec
        x = codec.encode_input(rgb)
        return codec.decode_output(x, self.model.translate(x).cpu()).permute(0, 2, 3, 1).numpy()
