"""docs/model-zoo/truth_parts.py: a Lab colorizer's scores with a part of the truth put in. Its own row is the
model's output; with the truth's gate no gray pixel keeps colour; with the truth's gate and a,b the output is the
truth, but for what the low-pass smooths and the near-neutral pixels, which go gray."""

import importlib.util
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import FAST

from imgtrans.cli import main

FOLDER = Path(__file__).parents[1] / "docs" / "model-zoo"


def truth_parts():
    sys.path.insert(0, str(FOLDER))  # it imports cast_sources beside it, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location("truth_parts", FOLDER / "truth_parts.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(FOLDER))


def test_the_truth_put_in_part_by_part(aerial, capsys):
    assert main(["pix2pix", "--dataset", str(aerial), *FAST, "--max-steps", "1", "--color-space", "lab"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert main(["evaluate", "--run-id", run.info.run_id]) == 0
    scores = truth_parts().scores(run.info.run_id, "", "test")
    own, logged = scores["the model"], mlflow.get_run(run.info.run_id).data.metrics
    assert own["psnr"] == pytest.approx(logged["test/psnr"], abs=1e-3)
    assert own["cast"] == pytest.approx(logged["test/cast"], abs=1e-3)
    assert scores["the truth's gate"]["cast"] < 0.01 and scores["the truth's gate and a,b"]["cast"] < 0.01
    assert scores["the truth's gate and a,b"]["psnr"] > max(s["psnr"] for name, s in scores.items()
                                                            if name != "the truth's gate and a,b")
    assert len({round(s["colourfulness_ratio"], 6) for s in scores.values()}) == len(scores)  # every part differs
