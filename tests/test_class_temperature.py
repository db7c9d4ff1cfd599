"""A trained Lab colorizer scored and exported at another `class_temperature` than its own: the scores go to the
evaluation run alone, the ONNX graph decodes at it, and a model without colour classes refuses it in one line."""

import mlflow
import pytest
from conftest import FAST, evaluated_otherwise, exported_otherwise, generator_uri, one_line_error, trained_lab_colorizer
from mlflow.tracking import MlflowClient

from imgtrans.cli import main
from imgtrans.errors import ImgtransError
from imgtrans.tracking.models import generator_checkpoint
from imgtrans.training.checkpoint import load_model


def test_a_colorizer_is_scored_and_exported_at_another_class_temperature(aerial, tmp_path, capsys, monkeypatch):
    run = trained_lab_colorizer(aerial, tmp_path, monkeypatch, steps=2)
    run_id = run.info.run_id
    assert main(["evaluate", "--run-id", run_id]) == 0
    own = MlflowClient().get_run(run_id).data.metrics

    colder = evaluated_otherwise(run, capsys, "T0.05", "--class-temperature", "0.05")
    assert colder.data.params["class_temperature"] == "0.05"
    assert "class_temperature 0.05" in colder.data.tags["mlflow.note.content"]
    scored = colder.data.metrics
    assert {"test/psnr", "test/ssim", "test/colourfulness_ratio", "test/cast"} <= set(scored)
    # Decoded nearer its most likely colour class, the same network colours differently (bolder where that class
    # is a colour; after two steps it may not be).
    assert scored["test/colourfulness"] != pytest.approx(own["test/colourfulness"], rel=1e-3)

    model = load_model(generator_checkpoint(generator_uri(run_id), tmp_path / "model"), class_temperature=0.05)
    assert model.cfg.class_temperature == 0.05 and model.generator().classes.temperature == 0.05

    assert exported_otherwise(run, "T0.05", "--class-temperature", "0.05")["class_temperature"] == 0.05
    assert (tmp_path / "export" / f"pix2pix-{run_id}-T0.05.onnx").is_file()  # beside the model's own export

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
