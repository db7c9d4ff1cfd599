"""docs/model-zoo/cast_sources.py, where a Lab colorizer's cast comes from: one run, or several runs' heads averaged
(a run averaged with itself is that run); runs whose colour heads differ, or an unknown run, refuse in one line;
near-neutral pixels banded by their distance from strong colour; the colourfulness each photograph lacks and the
cast it adds."""

import importlib.util
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import FAST

from imgtrans.cli import main

SCRIPT = Path(__file__).parents[1] / "docs" / "model-zoo" / "cast_sources.py"


def cast_sources():
    spec = importlib.util.spec_from_file_location("cast_sources", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_several_runs_are_one_ensemble_and_a_run_with_itself_is_that_run(aerial, capsys):
    for loss in ("both", "l1"):
        assert main(["pix2pix", "--dataset", str(aerial), *FAST, "--max-steps", "1", "--color-space", "lab",
                     "--colorization-loss", loss]) == 0
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["start_time"])
    classes, regression = (run.info.run_id for run in runs)
    script = cast_sources()
    capsys.readouterr()

    script.main([classes], "", "test")
    alone = capsys.readouterr().out.splitlines()
    script.main([classes, classes], "", "test")
    twice = capsys.readouterr().out.splitlines()
    assert alone[0].startswith("test split, the run: PSNR ")
    assert twice[0].startswith("test split, 2 runs' averaged heads: PSNR ")
    assert twice[0].split(": ", 1)[1] == alone[0].split(": ", 1)[1]
    assert twice[1:] == alone[1:]
    assert "the gate's ROC AUC" in alone[1]
    table = alone[next(i for i, line in enumerate(alone) if "colourfulness: truth" in line) + 1:]
    sums = torch.tensor([[float(v) for v in line.split("|")[1].split()] for line in table])
    assert len(table) > 1 and torch.allclose(sums[:, 0] - sums[:, 1], sums[:, 2], atol=0.11)
    ratio = float(alone[0].rsplit(" ", 1)[1])
    assert abs(float(sums[:, 1].sum() / sums[:, 0].sum()) - ratio) < 0.006  # the ratio is the sums' quotient

    photographs = alone[next(i for i, line in enumerate(alone) if "|Δa|+|Δb| | near-neutral" in line) + 1:]
    photographs = [line.split("|")[2].split() for line in photographs[:len(table)]]
    cast = float(alone[1].split("cast ")[1].split(",")[0])
    tolerance = 0.006 * len(photographs)  # each figure is rounded
    assert abs(sum(float(p[0]) for p in photographs) - 1) < tolerance  # every near-neutral pixel, once
    assert abs(sum(float(p[-1]) for p in photographs) - cast) < tolerance  # the parts of the split's cast

    with pytest.raises(SystemExit, match=f"run {regression} has other colour heads than run {classes}"):
        script.main([classes, regression], "", "test")
    with pytest.raises(SystemExit, match="no MLflow run with id 'missing'"):
        script.main([classes, "missing"], "", "test")


def test_distance_bands_count_pixels_from_the_nearest_strongly_coloured_one_in_the_max_norm():
    strong = torch.zeros(1, 41, 41, dtype=torch.bool)
    strong[0, 20, 20] = True
    band = cast_sources().distance_band(strong)[0]
    assert band[20, 20] == band[22, 18] == 0  # within 2 px, diagonals too
    assert band[20, 23] == band[12, 20] == 1  # 3–8 px
    assert band[20, 36] == band[4, 4] == 2  # 9–16 px
    assert band[20, 37] == band[0, 0] == 3  # farther
    assert (cast_sources().distance_band(torch.zeros(1, 8, 8, dtype=torch.bool)) == 3).all()
