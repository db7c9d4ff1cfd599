"""Colour as classes (Zhang et al., "Colorful Image Colorization"): the quantised gamut, soft encoding, the
rebalanced loss, annealed-mean decoding, and a pix2pix colorizer trained, resumed and exported with it."""

import pytest
import torch
from conftest import assert_exports_with_parity

from imgtrans.data.codec import Codec
from imgtrans.data.color import AB_SCALE, in_srgb_gamut
from imgtrans.errors import ImgtransError
from imgtrans.models.options import Pix2PixConfig
from imgtrans.models.pix2pix import Pix2Pix
from imgtrans.nets.colour_classes import (
    NEIGHBOURS,
    ColourClasses,
    class_centres,
    soft_encode,
)
from imgtrans.nets.lab_colorizer import LabColorizer


def test_the_classes_are_the_cells_of_the_srgb_gamut():
    centres = class_centres()
    assert 250 <= len(centres) <= 320  # the paper's grid of 10 has 313
    assert torch.all(centres.remainder(10) == 0) and centres.abs().max() <= 130
    # Each centre's cell holds an sRGB colour at some lightness: the nearest gray-ish L finds one for most.
    lab = torch.stack([torch.zeros(len(centres)), centres[:, 0] / AB_SCALE, centres[:, 1] / AB_SCALE])
    levels = torch.linspace(-0.9, 0.9, 19)
    inside = torch.stack([in_srgb_gamut(torch.cat([torch.full((1, len(centres)), float(level)), lab[1:]])[:, :, None],
                                        tolerance=0.05) for level in levels]).any(0)
    assert inside.float().mean() > 0.8


def test_soft_encoding_weighs_the_nearest_centres():
    centres = class_centres()
    ab = torch.tensor([[20.0, -30.0], [3.0, 4.0]]).T.reshape(1, 2, 1, 2)
    encoded = soft_encode(ab, centres)
    assert encoded.shape == (1, len(centres), 1, 2)
    assert torch.allclose(encoded.sum(1), torch.ones(1, 1, 2))
    assert ((encoded > 0).sum(1) == NEIGHBOURS).all()
    exact = (centres == torch.tensor([20.0, -30.0])).all(1).nonzero().item()
    assert encoded[0, :, 0, 0].argmax() == exact


def test_rebalancing_favours_rare_colours_and_keeps_the_expected_weight():
    classes = ColourClasses()
    assert torch.allclose(classes.class_weights(), torch.ones(classes.count))  # the uniform prior: no change
    gray_brown = torch.zeros(1, 2, 16, 16)
    gray_brown[:, 0], gray_brown[:, 1] = 10 / AB_SCALE, 10 / AB_SCALE
    classes.fit_prior([gray_brown])
    weights = classes.class_weights()
    assert (classes.prior * weights).sum() == pytest.approx(1, abs=1e-5)
    common = torch.cdist(torch.tensor([[10.0, 10.0]]), classes.centres).argmin()
    rare = torch.cdist(torch.tensor([[60.0, 60.0]]), classes.centres).argmin()
    assert weights[rare] > 1 > weights[common]


def test_the_annealed_mean_lies_between_the_mean_and_the_mode():
    classes = ColourClasses()
    red = torch.cdist(torch.tensor([[60.0, 40.0]]), classes.centres).argmin()
    gray = torch.cdist(torch.tensor([[0.0, 0.0]]), classes.centres).argmin()
    logits = torch.full((1, classes.count, 1, 1), -30.0)
    logits[0, red], logits[0, gray] = 0.0, 0.3  # gray slightly more likely than red
    probabilities = torch.softmax(logits, 1)[0, :, 0, 0]
    mean = (probabilities[:, None] * classes.centres).sum(0)
    annealed = classes.decode(logits)[0, :, 0, 0] * AB_SCALE
    assert 0 < annealed.norm() < mean.norm()  # sharper, towards the mode (gray) but not all the way
    sharper = ColourClasses(temperature=0.05).eval().decode(logits)[0, :, 0, 0] * AB_SCALE
    assert sharper.norm() < annealed.norm()  # at inference, at the model's own temperature: nearer the mode
    assert torch.equal(ColourClasses(temperature=0.05).decode(logits), classes.decode(logits))  # training: the paper's
    one_hot = torch.full((1, classes.count, 1, 1), -50.0)
    one_hot[0, red] = 50.0
    assert torch.allclose(classes.decode(one_hot)[0, :, 0, 0] * AB_SCALE, classes.centres[red], atol=1e-3)


def test_a_distribution_unsure_of_the_hue_decodes_to_less_colour_than_it_expects():
    """Two saturated hues equally likely: the annealed distribution expects their chroma, its mean a,b is grayish."""
    classes = ColourClasses()
    red, teal = (torch.cdist(torch.tensor([ab]), classes.centres).argmin() for ab in ([60.0, 40.0], [-40.0, -30.0]))
    logits = torch.full((1, classes.count, 1, 1), -30.0)
    logits[0, red] = logits[0, teal] = 0.0
    distribution = classes.annealed(logits)[0, :, 0, 0]
    assert distribution[red] == pytest.approx(0.5) and distribution[teal] == pytest.approx(0.5)
    expected = float(distribution @ classes.centres.norm(dim=1))
    assert expected == pytest.approx(float(classes.centres[torch.stack([red, teal])].norm(dim=1).mean()), rel=1e-4)
    assert float((classes.decode(logits)[0, :, 0, 0] * AB_SCALE).norm()) < expected / 4


def test_the_loss_is_lowest_for_the_targets_classes():
    classes = ColourClasses()
    target = torch.zeros(1, 2, 4, 4)
    target[:, 0] = 40 / AB_SCALE
    right = soft_encode(target * AB_SCALE, classes.centres).clamp(min=1e-6).log()
    wrong = soft_encode(-target * AB_SCALE, classes.centres).clamp(min=1e-6).log()
    assert classes.loss(right, target) < classes.loss(wrong, target)


def colorizer(loss: str, **options) -> Pix2Pix:
    torch.manual_seed(0)
    cfg = Pix2PixConfig(ngf=4, ndf=4, crop_size=64, color_space="lab", layout="colorization", colorization_loss=loss,
                        **{"lambda_perceptual": 0.0, **options})  # the perceptual term: test_lab_colour_terms
    return Pix2Pix(cfg, Codec(True, "lab"))


def test_quarter_resolution_classes_score_4x4_blocks_against_the_blocks_mean_colour():
    generator = colorizer("classification").generator()
    assert generator.class_stride == 4 and generator.classes is not None
    x = torch.rand(2, 1, 64, 128) * 2 - 1
    with torch.no_grad():
        heads = generator.heads(x)
    assert heads.colour.shape == (2, generator.classes.count, 16, 32) and heads.gate.shape == (2, 1, 64, 128)
    assert generator.eval()(x).shape == (2, 2, 64, 128)
    # Each 4 × 4 block is scored against its mean a,b: columns alternately red and green cost what gray costs.
    stripes = torch.zeros(2, 2, 64, 128)
    stripes[:, 0, :, 0::2], stripes[:, 0, :, 1::2] = 40 / AB_SCALE, -40 / AB_SCALE
    striped, gray = (float(generator.losses(heads, target)["class"]) for target in (stripes, torch.zeros_like(stripes)))
    assert striped == pytest.approx(gray, rel=1e-5)
    full = colorizer("classification", class_resolution="full").generator()
    assert full.heads(x).colour.shape == (2, full.classes.count, 64, 128)


def test_a_classifying_colorizer_saved_before_quarter_resolution_scores_every_pixel():
    from dataclasses import asdict

    from imgtrans.config import from_saved
    from imgtrans.training.checkpoint import model_payload

    old = colorizer("both", class_resolution="full")
    cfg = from_saved(Pix2PixConfig, {k: v for k, v in asdict(old.cfg).items() if k != "class_resolution"})
    assert cfg.class_resolution == "full" and Pix2PixConfig().class_resolution == "quarter"
    assert from_saved(Pix2PixConfig, {"color_space": "lab"}).colorization_loss == "l1"  # from before the classes
    again = Pix2Pix(cfg, Codec(True, "lab"))
    again.load_state_dict(model_payload(old)["nets"])
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    assert torch.equal(again.eval().translate(x), old.eval().translate(x))


def test_a_classifying_colorizer_trains_on_the_class_loss_and_decodes_inside_its_generator():
    model = colorizer("classification")
    assert isinstance(model.generator(), LabColorizer) and model.generator().classes is not None
    batch = {"A": torch.rand(2, 1, 64, 64) * 2 - 1, "B": (torch.rand(2, 2, 64, 64) - 0.5) * 0.6}
    losses = _step(model, batch)
    assert {"G_GAN", "G_class"} <= set(losses) and "G_L1" not in losses
    assert {"G_L1", "G_class"} <= set(_step(colorizer("both"), batch))
    model.eval()
    out = model.translate(batch["A"])
    assert out.shape == (2, 2, 64, 64) and out.abs().max() <= 1


def _step(model: Pix2Pix, batch: dict) -> dict:
    model.configure_optimizers()
    return model.training_step(batch)


def test_the_prior_comes_from_the_training_targets_and_stays_with_the_weights(aerial):
    from imgtrans.data.datasets import build_data
    from imgtrans.training.checkpoint import model_payload

    model = colorizer("both")
    cfg = model.cfg
    data = build_data(Pix2PixConfig(**{**cfg.__dict__, "dataset": str(aerial)}), unpaired=False)
    model.fit_to_data(data.train)
    prior = model.netG.classes.prior
    assert not torch.allclose(prior, torch.full_like(prior, 1 / len(prior)))
    assert torch.equal(model_payload(model)["nets"]["netG.classes.prior"], prior)


def test_classification_needs_lab():
    with pytest.raises(ImgtransError, match="colorization_loss=classification needs color_space=lab"):
        Pix2PixConfig(colorization_loss="classification").validate()


@pytest.mark.parametrize("resolution", ["quarter", "full"])
def test_a_classifying_colorizer_exports_with_its_decoding(tmp_path, resolution):
    assert_exports_with_parity(colorizer("classification", class_resolution=resolution), tmp_path,
                               torch.rand(1, 1, 64, 128) * 2 - 1)
