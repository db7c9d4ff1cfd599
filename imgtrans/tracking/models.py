"""Logged and registered models: the trained generator (a pyfunc model from code, with its checkpoint and
config) and its ONNX export, each with a signature and an input example, output of the run that made it;
the registry's versions with a description and tags; and where a model URI's generator checkpoint is."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from imgtrans.errors import ImgtransError
from imgtrans.tracking import store

GENERATOR, ONNX_GENERATOR = "generator", "generator-onnx"
CODE = Path(__file__).with_name("generator_model.py")
# rgb images, N × H × W × 3, in [0, 1] (unnamed: predict takes the array itself, not a dict of inputs)
RGB_BATCH = TensorSpec(np.dtype(np.float32), (-1, -1, -1, 3))


def _requirements() -> list[str]:
    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy", "pillow",
            "imgtrans"]


def _create(c: MlflowClient, run_id: str, experiment_id: str, name: str, model_type: str,
            params: dict[str, Any], description: str):
    model = c.create_logged_model(experiment_id, name=name, source_run_id=run_id, model_type=model_type,
                                  params={k: str(v) for k, v in params.items()},
                                  tags={store.DESCRIPTION_TAG: description})
    return model, Model(artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id,
                        model_id=model.model_id)


def _finish(c: MlflowClient, run_id: str, model_id: str, folder: Path, step: int) -> str:
    c.log_model_artifacts(model_id, str(folder))
    c.log_outputs(run_id, [LoggedModelOutput(model_id, step)])
    c.finalize_logged_model(model_id, LoggedModelStatus.READY)
    return model_id


def log_generator(c: MlflowClient, run_id: str, experiment_id: str, checkpoint: Path, config: dict[str, Any],
                  step: int, example: np.ndarray, description: str) -> str:
    model, meta = _create(c, run_id, experiment_id, GENERATOR, config["model"], config, description)
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
        folder = Path(tmp) / GENERATOR
        mlflow.pyfunc.save_model(str(folder), python_model=str(CODE), mlflow_model=meta,
                                 artifacts={"checkpoint": str(checkpoint), "config": str(config_file)},
                                 signature=ModelSignature(inputs=Schema([RGB_BATCH]), outputs=Schema([RGB_BATCH])),
                                 input_example=example, pip_requirements=_requirements())
        return _finish(c, run_id, model.model_id, folder, step)


def log_onnx(c: MlflowClient, run_id: str, experiment_id: str, path: Path, example: np.ndarray,
             description: str) -> str:
    """The ONNX generator, in network space: (N, C, H, W) float32 in [-1, 1] (see its sidecar)."""
    import onnx  # here, not above: it adds over a second to the start of every training process

    graph = onnx.load(str(path))
    inputs = [TensorSpec(np.dtype(np.float32), (-1, example.shape[1], -1, -1), "input")]
    outputs = [TensorSpec(np.dtype(np.float32), (-1, -1, -1, -1), "output")]
    model, meta = _create(c, run_id, experiment_id, ONNX_GENERATOR, "onnx", {"file": path.name}, description)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / ONNX_GENERATOR
        mlflow.onnx.save_model(graph, str(folder), mlflow_model=meta,
                               signature=ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs)),
                               input_example={"input": example}, pip_requirements=["onnxruntime", "numpy"],
                               onnx_execution_providers=["CPUExecutionProvider"])
        return _finish(c, run_id, model.model_id, folder, 0)


@dataclass(frozen=True)
class Origin:
    """Where a model URI's model comes from: a label for file and run names, its run and the run's name (if
    known), and a Markdown link to it."""

    label: str
    run_id: str
    run_name: str
    markdown: str


def origin(model_uri: str) -> Origin:
    """models:/<model id>, models:/<name>@<alias> or models:/<name>/<version> → its run and a short label
    (the registered name and version, or the model id)."""
    c = store.client()
    ref = model_uri.removeprefix("models:/")
    try:
        if "@" in ref or "/" in ref:
            name, _, rest = ref.replace("@", "/", 1).partition("/")
            version = c.get_model_version_by_alias(name, rest) if "@" in ref else c.get_model_version(name, rest)
            label, run_id = f"{name}-v{version.version}", version.run_id or ""
        else:
            label, run_id = ref, c.get_logged_model(ref).source_run_id or ""
    except MlflowException:
        raise ImgtransError(f"no model {model_uri} in {store.store_uri()}; give a registered model "
                            "(models:/<name>@<alias>) or a run id") from None
    if not run_id:
        return Origin(label, "", "", f"`{model_uri}`")
    run = store.get_run(run_id)
    return Origin(label, run_id, run.info.run_name,
                  f"`{model_uri}` (run [{run.info.run_name}]({store.ui_path(run.info.experiment_id, run_id)}))")


def generator_of_run(run_id: str) -> str:
    """The URI of the generator a run logged (the model named `generator`, or `model` in older runs)."""
    run = store.get_run(run_id)
    c = store.client()
    outputs = {m.model_id: c.get_logged_model(m.model_id) for m in run.outputs.model_outputs} \
        if run.outputs else {}
    for name in (GENERATOR, "model"):
        found = [model_id for model_id, model in outputs.items() if model.name == name]
        if found:
            return f"models:/{found[-1]}"
    raise ImgtransError(f"run '{run_id}' logged no generator model (did it finish training?); "
                        "pass a run that trained a model")


def generator_checkpoint(model_uri: str, dest: Path) -> Path:
    """The generator checkpoint inside a logged imgtrans model (models:/<id> or models:/<name>@<alias>)."""
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dest)))
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImgtransError(f"cannot load the model {model_uri} from {store.store_uri()}: {first}") from None
    found = sorted(local.rglob("generator.pt"))
    if not found:
        raise ImgtransError(f"{model_uri} is not an imgtrans generator model (no generator.pt inside)")
    return found[0]


def register(model_id: str, name: str, alias: str, description: str, tags: dict[str, str]) -> str:
    """Register a logged model as a new version of `name` (created when missing), point `alias` at it, and
    describe it; returns the version."""
    c = store.client()
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description="imgtrans generators: the champion of each study or retrain, "
                                                     "with its run, dataset and test metrics",
                                  tags={"task": "image-to-image translation"})
    version = mlflow.register_model(f"models:/{model_id}", name, tags=tags)
    c.update_model_version(name, version.version, description=description)
    c.set_registered_model_alias(name, alias, version.version)
    return version.version
