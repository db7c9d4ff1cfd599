"""A trained Lab colorizer scored and exported at another `class_temperature` than its own: the scores go to the
evaluation run alone, the ONNX graph decodes at it, and a model without colour classes refuses it in one line."""

import json

import mlflow
import pytest
from conftest import FAST, generator_uri, one_line_error, trained_lab_colorizer
from mlflow.tracking import MlflowClient

from imgtrans.cli import main
from imgtrans.errors import ImgtransError
from imgtrans.tracking.models import generator_checkpoint
from imgtrans.training.checkpoint import load_model


def runs_of(command: str) -> list:
    return [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
            if r.data.tags.get("mlflow.runName", "").startswith(f"{command}-")]


def test_a_colorizer_is_scored_and_exported_at_another_class_temperature(aerial, tmp_path, capsys, monkeypatch):
    run = trained_lab_colorizer(aerial, tmp_path, monkeypatch, steps=2)
    run_id = run.info.run_id
    assert main(["evaluate", "--run-id", run_id]) == 0
    own = MlflowClient().get_run(run_id).data.metrics

    assert main(["evaluate", "--run-id", run_id, "--class-temperature", "0.05"]) == 0
    assert "run " + run_id + " keeps its model's own scores" in capsys.readouterr().out
    assert MlflowClient().get_run(run_id).data.metrics == own  # the run's scores stay its model's
    (colder,) = [r for r in runs_of("evaluate") if r.data.params.get("class_temperature") == "0.05"]
    assert colder.info.run_name == f"evaluate-T0.05-{run.info.run_name}"
    assert "class_temperature 0.05" in colder.data.tags["mlflow.note.content"]
    scored = colder.data.metrics
    assert {"test/psnr", "test/ssim", "test/colourfulness_ratio", "test/cast"} <= set(scored)
    # Decoded nearer its most likely colour class, the same network colours differently (bolder where that class
    # is a colour; after two steps it may not be).
    assert scored["test/colourfulness"] != pytest.approx(own["test/colourfulness"], rel=1e-3)

    model = load_model(generator_checkpoint(generator_uri(run_id), tmp_path / "model"), class_temperature=0.05)
    assert model.cfg.class_temperature == 0.05 and model.generator().classes.temperature == 0.05

    assert main(["export", "--run-id", run_id, "--class-temperature", "0.05"]) == 0  # beside the model's own export
    exported = tmp_path / "export" / f"pix2pix-{run_id}-T0.05"
    assert exported.with_name(exported.name + ".onnx").is_file()
    assert json.loads(exported.with_name(exported.name + ".json").read_text())["config"]["class_temperature"] == 0.05
    (export_run,) = runs_of("export")
    assert export_run.info.run_name == f"export-T0.05-{run.info.run_name}"
    assert export_run.data.params["class_temperature"] == "0.05"
    assert float(export_run.data.params["parity_max_abs_error"]) < 1e-4

    assert main(["evaluate", "--run-id", run_id, "--class-temperature", "2"]) == 2
    assert "class_temperature" in one_line_error(capsys)


def test_a_model_without_colour_classes_refuses_another_class_temperature(facades, tmp_path, capsys):
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "1"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert main(["export", "--run-id", run.info.run_id, "--class-temperature", "0.2"]) == 2
    assert "class_temperature applies to a Lab colorizer with colour classes" in one_line_error(capsys)
    assert not (tmp_path / "export").exists()
    with pytest.raises(ImgtransError, match="leave it at 0"):
        load_model(generator_checkpoint(generator_uri(run.info.run_id), tmp_path / "model"), class_temperature=0.2)
