"""The Lab colorizer's inference scale: at inference its heads are computed on the input enlarged, the sides rounded
to the generator's multiple, and brought back to the input's grids before decoding; training colours at 1; the
exported graph enlarges any input shape as PyTorch does; `evaluate` and `export` can choose another scale (a model
without colour classes refuses one: tests/test_neutral_odds.py)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    assert_exports_with_parity,
    evaluated_otherwise,
    exported_otherwise,
    generator_uri,
    one_line_error,
    trained_lab_colorizer,
)

from imgtrans import config as config_mod
from imgtrans.cli import main
from imgtrans.data.codec import Codec
from imgtrans.models.options import Pix2PixConfig
from imgtrans.models.pix2pix import Pix2Pix
from imgtrans.nets.generators import build_generator
from imgtrans.nets.lab_colorizer import Heads
from imgtrans.tracking.models import generator_checkpoint
from imgtrans.training.checkpoint import load_model


def colorizer(inference_scale: float) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator("unet", 1, 2, ngf=4, norm="instance", dropout=False, crop_size=32, gamut=True,
                           chroma_blur=1.0, colour_classes=True, class_stride=4, neutral_gate=True,
                           neutral_annealing=True, inference_scale=inference_scale)


@pytest.mark.parametrize("scale, side, enlarged", [(1.25, 32, 32), (1.25, 64, 96), (1.25, 128, 160),
                                                   (1.5, 64, 96), (2.0, 96, 192), (1.1, 320, 352)])
def test_the_sides_are_enlarged_to_the_nearest_multiple_of_the_generator(scale, side, enlarged):
    net = colorizer(scale)
    assert net.size_multiple == 32 and net.scaled(side) == enlarged


def test_at_inference_the_heads_are_computed_enlarged_and_brought_back_to_the_input_grids():
    net, plain = colorizer(1.25), colorizer(1.0)
    seen = []
    net.net.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape)))
    x = torch.rand(2, 1, 64, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net.train()(x), plain.train()(x))  # training colours at the input's own scale
        assert seen.pop() == (2, 1, 64, 128)
        out = net.eval()(x)
        assert seen.pop() == (2, 1, 96, 160)
        big = plain.eval().heads(F.interpolate(x, size=(96, 160), mode="bilinear", align_corners=False))
        back = Heads(F.interpolate(big.colour, size=(16, 32), mode="bilinear", align_corners=False),
                     F.interpolate(big.gate, size=(64, 128), mode="bilinear", align_corners=False))
        assert out.shape == (2, 2, 64, 128)
        assert torch.allclose(out, plain.decode(x, back), atol=1e-6)
        assert not torch.allclose(out, plain(x), atol=1e-3)


def test_the_exported_graph_enlarges_every_input_shape_as_pytorch_does(tmp_path):
    cfg = Pix2PixConfig(ngf=4, ndf=4, crop_size=64, netG="unet", norm="instance", color_space="lab",
                        layout="colorization", inference_scale=1.25, self_ensemble="hflip")
    torch.manual_seed(0)
    model = Pix2Pix(cfg, Codec(True, "lab"))
    assert model.generator().scale_per_mille == 1250
    # the parity shapes' sides 64, 128, 192 and these enlarged to 96, 160, 256 (rounded up), 192 (down), 320
    assert_exports_with_parity(model, tmp_path, torch.rand(1, 1, 160, 256) * 2 - 1)


def test_evaluate_and_export_choose_another_scale_and_old_runs_keep_their_own(aerial, tmp_path, capsys, monkeypatch):
    older = {"color_space": "lab", "layout": "colorization"}  # saved before inference_scale existed
    assert config_mod.from_saved(Pix2PixConfig, older).inference_scale == 1
    assert config_mod.from_dict(Pix2PixConfig, older).inference_scale == 1.25

    run = trained_lab_colorizer(aerial, tmp_path, monkeypatch)
    run_id = run.info.run_id
    assert run.data.params["inference_scale"] == "1.25"

    own_size = evaluated_otherwise(run, capsys, "x1", "--inference-scale", "1")
    assert own_size.data.params["inference_scale"] == "1.0"
    assert "inference_scale 1" in own_size.data.tags["mlflow.note.content"]
    assert "test/psnr" in own_size.data.metrics

    assert exported_otherwise(run, "x1.5", "--inference-scale", "1.5")["inference_scale"] == 1.5

    checkpoint = generator_checkpoint(generator_uri(run_id), tmp_path / "model")
    assert load_model(checkpoint).generator().scale_per_mille == 1250
    assert load_model(checkpoint, inference_scale=1.0).generator().scale_per_mille == 1000

    assert main(["export", "--run-id", run_id, "--inference-scale", "0.5"]) == 2
    assert "inference_scale" in one_line_error(capsys)
