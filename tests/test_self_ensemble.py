"""The Lab colorizer's self-ensemble: scores averaged over the input's mirror images at inference make the output
exactly equivariant to them, training sees one view, and `evaluate` and `export` can choose another ensemble (a
model without colour classes refuses one: tests/test_neutral_odds.py)."""

import mlflow
import pytest
import torch
from conftest import (
    FAST,
    evaluated_otherwise,
    exported_otherwise,
    figures,
    generator_uri,
    one_line_error,
    trained_lab_colorizer,
)
from mlflow.tracking import MlflowClient

from imgtrans import config as config_mod
from imgtrans.cli import main
from imgtrans.models.options import Pix2PixConfig
from imgtrans.nets.generators import build_generator
from imgtrans.nets.lab_colorizer import mirror, unmirror
from imgtrans.tracking.models import generator_checkpoint
from imgtrans.training import checkpoint
from imgtrans.training.checkpoint import load_model


def test_the_eight_mirrors_are_distinct_and_each_is_undone():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)  # not square
    views = [mirror(x, k) for k in range(8)]
    assert len({(tuple(v.shape), tuple(v.flatten().tolist())) for v in views}) == 8
    for k, view in enumerate(views):
        assert torch.equal(unmirror(view, k), x)


def colorizer(self_ensemble: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator("unet", 1, 2, ngf=4, norm="batch", dropout=False, crop_size=32, gamut=True,
                           chroma_blur=1.0, colour_classes=True, class_stride=4, neutral_gate=True,
                           neutral_annealing=True, self_ensemble=self_ensemble)


@pytest.mark.parametrize("self_ensemble, symmetries", [("hflip", [1]), ("flips", [1, 2, 3]),
                                                       ("dihedral", range(1, 8))])
def test_the_self_ensemble_makes_the_colours_equivariant_to_its_mirrors(self_ensemble, symmetries):
    net, single = colorizer(self_ensemble).eval(), colorizer("none").eval()
    x = torch.rand(2, 1, 32, 64) * 2 - 1  # two images, not square: the transposed views are a batch of their own
    with torch.no_grad():
        out = net(x)
        for k in range(1, 8):
            mirrored = net(mirror(x, k))
            equal = torch.allclose(mirrored, mirror(out, k), atol=1e-5)
            assert equal == (k in symmetries), k
            # one pass is not: the network alone has no symmetry
            assert not torch.allclose(single(mirror(x, k)), mirror(single(x), k), atol=1e-3)


def test_training_sees_one_view():
    ensemble, single = colorizer("dihedral").train(), colorizer("none").train()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.equal(ensemble(x), single(x))
    assert not torch.equal(ensemble.eval()(x), single.eval()(x))


def test_evaluate_and_export_choose_another_self_ensemble_and_old_runs_keep_one_pass(aerial, tmp_path, capsys,
                                                                                    monkeypatch):
    older = {"color_space": "lab", "layout": "colorization"}  # saved before self_ensemble existed
    assert config_mod.from_saved(Pix2PixConfig, older).self_ensemble == "none"
    assert config_mod.from_dict(Pix2PixConfig, older).self_ensemble == "flips"

    run = trained_lab_colorizer(aerial, tmp_path, monkeypatch)
    run_id = run.info.run_id
    assert run.data.params["self_ensemble"] == "flips"

    single = evaluated_otherwise(run, capsys, "ens-none", "--self-ensemble", "none")
    assert single.data.params["self_ensemble"] == "none"
    assert "self_ensemble none" in single.data.tags["mlflow.note.content"]

    exported = exported_otherwise(run, "T0.2-ens-hflip", "--self-ensemble", "hflip", "--class-temperature", "0.2")
    assert exported["self_ensemble"] == "hflip" and exported["class_temperature"] == 0.2

    assert main(["export", "--run-id", run_id, "--self-ensemble", "all"]) == 2
    assert "valid values: own, none, hflip, flips, dihedral" in one_line_error(capsys)

    checkpoint = generator_checkpoint(generator_uri(run_id), tmp_path / "model")
    assert load_model(checkpoint).generator().views == 4
    assert load_model(checkpoint, self_ensemble="dihedral").generator().views == 8


def test_batch_norm_recalibration_measures_one_view(aerial, tmp_path):
    """Training and the recalibrated statistics do not depend on the ensemble: mirrored views in one batch would
    give batch norm statistics the network never trained with."""
    saved = {}
    for ensemble in ("none", "dihedral"):
        assert main(["pix2pix", "--dataset", str(aerial), *FAST, "--max-steps", "2", "--color-space", "lab",
                     "--netG", "unet", "--norm", "batch", "--recalibrate-bn", "4", "--self-ensemble", ensemble]) == 0
        run = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                 order_by=["attributes.start_time DESC"])[0]
        assert figures(run.info.run_id)["bn_recalibrated"] in (0.0, 1.0)
        saved[ensemble] = checkpoint.read(MlflowClient().download_artifacts(
            run.info.run_id, "checkpoints/last.pt", str(tmp_path / ensemble)))["nets"]
    assert saved["none"].keys() == saved["dihedral"].keys()
    for name, tensor in saved["none"].items():
        assert torch.equal(tensor, saved["dihedral"][name]), name
