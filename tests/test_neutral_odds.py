"""A trained Lab colorizer scored and exported with its gate's odds of gray divided by `neutral_odds`: more colour
kept, the scores on the evaluation run alone, the ONNX graph deciding at those odds, runs saved before it at their
own; and a model without what an inference option needs (the gate, the colour classes) refuses it in one line."""

import pytest
from conftest import evaluated_otherwise, exported_otherwise, generator_uri, one_line_error, trained_lab_colorizer
from mlflow.tracking import MlflowClient

from imgtrans import config as config_mod
from imgtrans.cli import main
from imgtrans.models.options import Pix2PixConfig
from imgtrans.tracking.models import generator_checkpoint
from imgtrans.training.checkpoint import load_model


def test_evaluate_and_export_decide_at_other_odds_of_gray(aerial, tmp_path, capsys, monkeypatch):
    assert config_mod.from_saved(Pix2PixConfig, {"color_space": "lab", "layout": "colorization"}).neutral_odds == 1

    run = trained_lab_colorizer(aerial, tmp_path, monkeypatch, steps=2)
    run_id = run.info.run_id
    assert run.data.params["neutral_odds"] == "0.35"
    assert main(["evaluate", "--run-id", run_id]) == 0
    own = MlflowClient().get_run(run_id).data.metrics

    laxer = evaluated_otherwise(run, capsys, "odds4", "--neutral-odds", "4")
    assert laxer.data.params["neutral_odds"] == "4.0"
    assert "neutral_odds 4" in laxer.data.tags["mlflow.note.content"]
    # Fewer pixels called gray: every pixel keeps more of its colour.
    assert laxer.data.metrics["test/colourfulness"] > own["test/colourfulness"]

    checkpoint = generator_checkpoint(generator_uri(run_id), tmp_path / "model")
    assert load_model(checkpoint).generator().neutral_odds == 0.35
    assert load_model(checkpoint, neutral_odds=4.0).generator().neutral_odds == 4

    assert exported_otherwise(run, "odds4", "--neutral-odds", "4")["neutral_odds"] == 4

    assert main(["evaluate", "--run-id", run_id, "--neutral-odds", "-1"]) == 2
    assert "neutral_odds" in one_line_error(capsys)


@pytest.mark.parametrize("without, needs, refused", [
    ("--colorization-loss=l1", "colour classes (colorization_loss=", [("self_ensemble", "hflip", "own"),
                                                                      ("inference_scale", "1.25", "0")]),
    ("--neutral-gate=false", "a neutral gate (neutral_gate=true)", [("neutral_odds", "2", "0"),
                                                                    ("neutral_blur", "2", "-1")]),
])
def test_a_colorizer_without_what_an_inference_option_needs_refuses_it(aerial, tmp_path, capsys, monkeypatch,
                                                                       without, needs, refused):
    run = trained_lab_colorizer(aerial, tmp_path, monkeypatch, without)
    for option, value, own in refused:
        assert option not in run.data.params
        assert main(["export", "--run-id", run.info.run_id, f"--{option.replace('_', '-')}", value]) == 2
        message = one_line_error(capsys)
        assert f"{option} applies to a Lab colorizer with {needs}" in message and f"leave it at {own}" in message
    assert not (tmp_path / "export").exists()
