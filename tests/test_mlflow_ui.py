"""What MLflow's UI shows, read through MlflowClient as the UI reads it: runs told apart by name, tags and
description; effective params; datasets as inputs; models with signatures and their metrics; samples at
stable paths; evaluation, comparison and export runs linked to their sources; a study's one parent."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import FAST
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from test_studies import write_spec

from imgtrans.cli import main
from imgtrans.tracking import store


def all_runs() -> list:
    return mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["attributes.start_time ASC"])


def by_role(role: str) -> list:
    return [r for r in all_runs() if r.data.tags.get(store.ROLE_TAG) == role]


@pytest.mark.slow
def test_training_runs_are_told_apart_and_carry_data_model_and_samples(facades):
    client = MlflowClient()
    for gan_mode, seed in (("vanilla", "0"), ("lsgan", "0"), ("lsgan", "0"), ("lsgan", "1")):
        assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "2", "--gan-mode", gan_mode,
                     "--seed", seed]) == 0
    first, second, third, fourth = by_role("train")
    label = Path(facades).name
    assert [r.info.run_name for r in (first, second, third, fourth)] == [
        f"pix2pix-unet-vanilla-{label}", f"pix2pix-unet-lsgan-{label}", f"pix2pix-unet-lsgan-{label}-2",
        f"pix2pix-unet-lsgan-{label}-seed1"]
    assert second.data.tags["gan_mode"] == "lsgan" and second.data.tags["model"] == "pix2pix"
    assert second.data.tags["mlflow.source.name"] == "imgtrans pix2pix"
    description = second.data.tags[store.DESCRIPTION_TAG]
    assert "`gan_mode=lsgan`" in description and "**Result**: 2 steps, val/psnr=" in description

    params = second.data.params
    assert params["device"] == "cpu" and params["precision"] == "fp32" and params["cuda_graphs"] == "False"
    assert "lambda_gp" not in params and "chroma_blur" not in params  # options that do not apply
    assert "resume" not in params and "experiment" not in params  # nothing empty
    assert "log_every" not in params and "num_workers" not in params  # bookkeeping, not what the run computes
    assert json.loads(client.download_artifacts(second.info.run_id, "config.json", ".") and
                      Path("config.json").read_text())["lambda_gp"] == 10.0  # the whole request stays

    inputs = {d.tags[0].value: d.dataset for d in second.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation"}
    assert inputs["train"].name == f"{label}/train" and len(inputs["train"].digest) == 16
    assert json.loads(inputs["train"].profile)["images"] == 6

    (output,) = second.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.name == "generator" and model.source_run_id == second.info.run_id
    linked = {m.key: m for m in model.metrics}
    assert set(linked) == {"val/psnr", "val/ssim"} and linked["val/psnr"].dataset_name == f"{label}/val"
    signature = Model.load(f"models:/{output.model_id}").signature
    assert signature.inputs.inputs[0].shape == (-1, -1, -1, 3)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{output.model_id}")
    assert pyfunc.predict(np.full((1, 64, 64, 3), 0.5, np.float32)).shape == (1, 64, 64, 3)

    samples = [a.path for a in client.list_artifacts(second.info.run_id, "samples")]
    assert samples == ["samples/epoch_001.png"]
    assert "samples.png" in {a.path for a in client.list_artifacts(second.info.run_id)}  # for the compare page
    assert any(a.path.endswith(".png") for a in client.list_artifacts(second.info.run_id, "images"))
    experiment = client.get_experiment(second.info.experiment_id)
    assert experiment.tags[store.EXPERIMENT_KIND_TAG] == store.MODEL_TRAINING

    # Evaluation: metrics on the run and its model, an evaluation run that links back; compare and export too.
    for run in (first, second):
        assert main(["evaluate", "--run-id", run.info.run_id, "--no-progress"]) == 0
    evaluated = client.get_run(second.info.run_id)
    assert {"test/psnr", "test/ssim"} <= set(evaluated.data.metrics)
    assert not any(k.endswith("_std") or k.endswith("n_images") for k in evaluated.data.metrics)
    assert "test/colourfulness_ratio" not in evaluated.data.metrics  # a label map's colours are no target
    model = client.get_logged_model(output.model_id)
    assert {m.key for m in model.metrics} >= {"test/psnr", "test/ssim"}
    ranked = mlflow.search_logged_models(experiment_ids=[second.info.experiment_id], output_format="list",
                                         order_by=[{"field_name": "metrics.test/psnr", "ascending": False}])
    scores = [next((m.value for m in r.metrics if m.key == "test/psnr"), None) for r in ranked]
    assert scores[2] is None and scores[0] >= scores[1]  # the two evaluated models first, the best on top
    per_image = Path(client.download_artifacts(second.info.run_id, "evaluation/test/per_image.csv", "."))
    assert per_image.read_text().splitlines()[0].startswith("file,index,psnr")
    evaluations = by_role("evaluate")
    assert [r.info.run_name for r in evaluations] == [f"evaluate-{first.info.run_name}",
                                                     f"evaluate-{second.info.run_name}"]
    assert evaluations[1].data.tags["imgtrans.source_runs"] == second.info.run_id
    assert second.info.run_id in evaluations[1].data.tags[store.DESCRIPTION_TAG]
    assert {"grid.png", "per_image.csv"} <= {a.path for a in client.list_artifacts(evaluations[1].info.run_id)}
    (scored_on,) = evaluations[1].inputs.dataset_inputs  # the images it scored, as on the evaluated run
    assert scored_on.dataset.name == f"{label}/test" and scored_on.tags[0].value == "test"

    assert main(["compare", "--no-progress"]) == 0
    (compare,) = by_role("compare")
    assert set(compare.data.tags["imgtrans.source_runs"].split(",")) == {first.info.run_id, second.info.run_id}
    report = compare.data.tags[store.DESCRIPTION_TAG]
    assert f"[{first.info.run_name}]" in report and f"[{second.info.run_name}]" in report
    assert f"get-artifact?path=report/samples.jpg&run_uuid={compare.info.run_id}" in report
    assert "experiment" not in compare.data.params

    assert main(["export", "--run-id", second.info.run_id, "--no-progress"]) == 0
    (export,) = by_role("export")
    assert export.info.run_name == f"export-{second.info.run_name}"
    assert export.data.tags["imgtrans.source_runs"] == second.info.run_id
    (onnx_output,) = export.outputs.model_outputs
    assert client.get_logged_model(onnx_output.model_id).name == "generator-onnx"
    assert Model.load(f"models:/{onnx_output.model_id}").signature.inputs.inputs[0].shape == (-1, 3, -1, -1)


@pytest.mark.slow
def test_a_study_has_one_parent_that_links_its_best_trial(facades, tmp_path):
    spec = write_spec(tmp_path, facades)
    storage = tmp_path / "s.db"
    for _ in range(2):  # two workers, one after the other
        assert main(["study", "--spec", str(spec), "--storage", str(storage), "--study-name", "s", "--n-trials",
                     "1", "--no-progress"]) == 0
    (parent,) = by_role("study")
    trials = by_role("trial")
    assert len(trials) == 2 and {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.info.run_name == "study-s"
    best = parent.data.tags["optuna.best_trial_run"]
    assert best in {t.info.run_id for t in trials} and best in parent.data.tags[store.DESCRIPTION_TAG]
    assert not any(k.startswith("trial.") for t in trials for k in t.data.params)  # each param once
    assert not any(k.startswith("optuna/objective") for t in trials for k in t.data.metrics)


def test_a_param_mlflow_run_logged_is_effective_only_where_the_value_differs():
    """MLflow Projects logs the command line's text (`true`, `2e-4`); the same value spelled otherwise is no
    other value, and only a value that took effect otherwise gets a `.effective` column."""
    from imgtrans.tracking.tracker import MlflowTracker

    client = MlflowClient()
    run = client.create_run("0")
    for key, text in (("flip", "true"), ("lr", "2e-4"), ("max_steps", "0")):
        client.log_param(run.info.run_id, key, text)
    MlflowTracker(run.info.run_id, "0").log_params({"flip": True, "lr": 0.0002, "max_steps": 5})
    params = client.get_run(run.info.run_id).data.params
    assert params == {"flip": "true", "lr": "2e-4", "max_steps": "0", "max_steps.effective": "5"}
