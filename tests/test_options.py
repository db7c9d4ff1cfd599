"""Every numeric option declares its valid range next to the field; values outside it are one-line errors."""

import typing

import pytest
from conftest import FAST, one_line_error

from imgtrans import config as config_mod
from imgtrans.cli import COMMANDS, main
from imgtrans.errors import ImgtransError

# Options any real number suits: the stage-length formula's α and k (dip) take either sign.
UNBOUNDED = {"e_alpha", "e_k"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_numeric_option_declares_its_range(command):
    cls = COMMANDS[command].config_class
    types = config_mod.field_types(cls)
    missing = [f.name for f in config_mod.fields(cls) if types[f.name] in (int, float)
               and f.name not in UNBOUNDED and not config_mod.bounds_of(cls, f.name)]
    assert not missing, f"{command}: declare ge/gt/le/lt for {missing}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_default_is_in_its_range(command):
    cls = COMMANDS[command].config_class
    config_mod.check_types(cls())


@pytest.mark.parametrize("flag, value, expected", [
    ("--lr", "nan", "invalid value nan for lr; expected a finite number"),
    ("--lr", "0", "invalid value 0.0 for lr; it must be > 0"),
    ("--beta1", "1.5", "invalid value 1.5 for beta1; it must be >= 0 and < 1"),
    ("--ngf", "0", "invalid value 0 for ngf; it must be >= 1"),
    ("--num-D", "0", "invalid value 0 for num_D; it must be >= 1"),
    ("--n-layers-D", "-1", "invalid value -1 for n_layers_D; it must be >= 1"),
    ("--batch-size", "-2", "invalid value -2 for batch_size; it must be >= 1"),
])
def test_out_of_range_option_is_one_line(facades, capsys, flag, value, expected):
    assert main(["pix2pix", "--dataset", str(facades), *FAST, flag, value]) == 2
    assert one_line_error(capsys) == f"imgtrans: error: {expected}"


def test_an_override_keeps_its_parents_range():
    from imgtrans.models.options import BicycleGANConfig

    assert BicycleGANConfig.__dataclass_fields__["batch_size"].default == 2
    with pytest.raises(ImgtransError, match="batch_size"):
        config_mod.parse_option(BicycleGANConfig, "batch_size", 0)


def test_checkpoint_configs_are_range_checked_too():
    from imgtrans.models.options import Pix2PixConfig

    with pytest.raises(ImgtransError, match="beta2"):
        config_mod.from_dict(Pix2PixConfig, {"beta2": 1.0})


def test_translate_and_benchmark_options_are_checked(capsys):
    assert main(["translate", "in", "out", "--model", "m.onnx", "--overlap", "-4"]) == 2
    assert "overlap" in one_line_error(capsys)
    assert main(["benchmark", "--tile", "0"]) == 2
    assert "tile" in one_line_error(capsys)


def test_bounds_are_known_keywords():
    with pytest.raises(TypeError):
        config_mod.opt(1, "x", min=0)
    assert typing.get_type_hints(config_mod.opt)


def test_a_saved_config_without_a_newer_option_keeps_what_it_ran_with():
    from imgtrans.models.options import Pix2PixConfig

    older = {"color_space": "lab", "layout": "colorization"}  # saved before chroma_filter existed
    assert config_mod.from_saved(Pix2PixConfig, older).chroma_filter == "gaussian"
    assert config_mod.from_saved(Pix2PixConfig, older | {"chroma_filter": "guided"}).chroma_filter == "guided"
    assert config_mod.from_dict(Pix2PixConfig, older).chroma_filter == "guided"  # a new run takes the default
    # An encoder U-Net saved before encoder_norm existed trained its encoder's batch-norm statistics.
    assert config_mod.from_saved(Pix2PixConfig, older | {"netG": "resnet18_unet"}).encoder_norm == "trained"
    assert config_mod.from_dict(Pix2PixConfig, older | {"netG": "resnet18_unet"}).encoder_norm == "frozen"
    # …and at the generator's learning rate.
    assert config_mod.from_saved(Pix2PixConfig, older | {"netG": "resnet18_unet"}).encoder_lr_factor == 1.0
    # A Lab colorizer saved before its colour terms existed trained without them.
    for term, default in (("lambda_perceptual", 0.3), ("lambda_chroma", 50.0)):
        assert getattr(config_mod.from_saved(Pix2PixConfig, older), term) == 0
        assert getattr(config_mod.from_dict(Pix2PixConfig, older), term) == default


def test_pix2pix_picks_its_generator_by_colour_space_unless_told():
    """netG=auto is resolved when the config is built (params, run names and checkpoints hold the generator
    itself), and it is not an option the user set: a resumed run keeps its checkpoint's generator."""
    from imgtrans.cli import build_parser, config_from_args
    from imgtrans.models.options import Pix2PixConfig

    assert Pix2PixConfig().netG == "unet"
    assert Pix2PixConfig(color_space="lab").netG == "efficientnet_lite0_unet"
    assert Pix2PixConfig(color_space="lab", netG="unet").netG == "unet"
    cfg, explicit = config_from_args(Pix2PixConfig, build_parser().parse_args(["pix2pix", "--color-space", "lab"]))
    assert cfg.netG == "efficientnet_lite0_unet" and explicit == {"color_space": "lab"}
    # What the run's description lists as changed from the defaults: not the generator auto picked.
    assert config_mod.changed(cfg) == {"color_space": "lab"}
    assert config_mod.changed(Pix2PixConfig(color_space="lab", netG="unet")) == {"color_space": "lab", "netG": "unet"}


def test_pix2pix_trains_a_lab_colorizer_at_scales_down_to_its_own_unless_told():
    """preprocess=auto resolves like norm=auto: random_scale_and_crop for Lab colorization (evaluate and translate
    colour at the images' own scale), the reference code's resize_and_crop otherwise; not an option the user set."""
    from imgtrans.cli import build_parser, config_from_args
    from imgtrans.models.options import Pix2PixConfig

    assert Pix2PixConfig().preprocess == "resize_and_crop"
    assert Pix2PixConfig(color_space="lab").preprocess == "random_scale_and_crop"
    assert Pix2PixConfig(color_space="lab", preprocess="crop").preprocess == "crop"
    cfg, explicit = config_from_args(Pix2PixConfig, build_parser().parse_args(["pix2pix", "--color-space", "lab"]))
    assert cfg.preprocess == "random_scale_and_crop" and config_mod.changed(cfg) == explicit == {"color_space": "lab"}
    # A run saved before auto existed holds the preprocessing it trained with.
    saved = config_mod.from_saved(Pix2PixConfig, {"color_space": "lab", "preprocess": "resize_and_crop"})
    assert saved.preprocess == "resize_and_crop"


def test_an_encoder_unet_saved_before_the_full_size_block_loads_without_it():
    from imgtrans.models.options import Pix2PixConfig

    assert Pix2PixConfig(color_space="lab").full_size_block
    assert not config_mod.from_saved(Pix2PixConfig, {"color_space": "lab"}).full_size_block


def test_pix2pix_leaves_a_lab_colorizer_without_batch_norm_unless_told():
    """norm=auto resolves like netG=auto: none for Lab colorization (at batch 1 a batch norm normalises each tile
    by its own statistics, and a tile of one colour loses which photograph it shows), batch otherwise. The
    pretrained encoder keeps its own frozen statistics either way."""
    import torch

    from imgtrans.cli import build_parser, config_from_args
    from imgtrans.data.codec import Codec
    from imgtrans.models.options import Pix2PixConfig
    from imgtrans.models.pix2pix import Pix2Pix

    assert Pix2PixConfig().norm == "batch"
    assert Pix2PixConfig(color_space="lab").norm == "none"
    assert Pix2PixConfig(color_space="lab", norm="batch").norm == "batch"
    cfg, explicit = config_from_args(Pix2PixConfig, build_parser().parse_args(["pix2pix", "--color-space", "lab"]))
    assert cfg.norm == "none" and config_mod.changed(cfg) == explicit == {"color_space": "lab"}
    # A run saved before auto existed holds the norm it trained with.
    assert config_mod.from_saved(Pix2PixConfig, {"color_space": "lab", "norm": "batch"}).norm == "batch"

    def batch_norms(**options) -> dict[str, int]:
        cfg = Pix2PixConfig(crop_size=64, layout="colorization", **options)
        model = Pix2Pix(cfg, Codec(True, cfg.color_space))
        return {name: sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
                for name, net in (("G", model.netG), ("D", model.netD))}

    assert batch_norms(color_space="lab") == {"G": 0, "D": 0}
    assert all(batch_norms(color_space="lab", norm="batch").values())
    assert all(batch_norms(color_space="rgb").values())


def test_pix2pix_trains_a_lab_colorizer_twice_as_long_unless_told():
    """n_epochs and n_epochs_decay -1 (auto) resolve when the config is built, like netG=auto."""
    from imgtrans.cli import build_parser, config_from_args
    from imgtrans.models.options import Pix2PixConfig

    def length(cfg: Pix2PixConfig) -> tuple[int, int, int]:
        return cfg.n_epochs, cfg.n_epochs_decay, cfg.total_epochs()

    assert length(Pix2PixConfig()) == (1, 1, 2)
    assert length(Pix2PixConfig(color_space="lab")) == (2, 2, 4)
    assert length(Pix2PixConfig(color_space="lab", n_epochs=1)) == (1, 2, 3)
    cfg, explicit = config_from_args(Pix2PixConfig, build_parser().parse_args(["pix2pix", "--color-space", "lab"]))
    assert length(cfg) == (2, 2, 4) and config_mod.changed(cfg) == explicit == {"color_space": "lab"}
    with pytest.raises(ImgtransError, match="n_epochs"):
        config_mod.parse_option(Pix2PixConfig, "n_epochs", "-2")


@pytest.mark.parametrize("model,args,error", [
    ("bicyclegan", ["--crop-size", "32"], "too small for the discriminator"),  # the second scale sees 16 px
    ("bicyclegan", ["--crop-size", "48", "--netG", "resnet_6blocks"], None),
    ("pix2pix", ["--crop-size", "16", "--netG", "resnet_6blocks"], "too small for the discriminator"),
    ("pix2pix", ["--crop-size", "16", "--netG", "resnet_6blocks", "--norm", "none"],
     "too small for the discriminator"),  # the convolutions, not the norm, need the room
    ("pix2pix", ["--crop-size", "16", "--netG", "resnet_6blocks", "--netD", "pixel"], None),
    ("cyclegan", ["--crop-size", "100", "--num-D", "3", "--netG", "resnet_6blocks"], None),  # scales 100, 50, 25
    ("cyclegan", ["--crop-size", "94", "--netG", "resnet_6blocks"], "a multiple of 4, got 94"),
])
def test_a_crop_too_small_or_odd_for_the_networks_is_one_line_before_training(facades, capsys, model, args, error):
    extra = ["--ngf", "4", "--ndf", "4", "--val-images", "0", "--sample-images", "0", "--no-progress",
             "--recalibrate-bn", "0"]
    assert main([model, "--dataset", str(facades), "--max-steps", "1", *extra, *args]) == (2 if error else 0)
    if error:
        assert error in one_line_error(capsys)
