"""The neutral gate of a Lab colorizer: where it says gray the output is gray, sharp through the low-pass; its
loss follows the target's gray pixels; with colour classes it is annealed at their temperature; pix2pix trains
and exports with it; a run saved before it loads without it."""

import math

import pytest
import torch
from conftest import assert_exports_with_parity

from imgtrans.data.codec import Codec
from imgtrans.data.color import AB_SCALE, NEUTRAL_CHROMA
from imgtrans.models.options import Pix2PixConfig
from imgtrans.models.pix2pix import Pix2Pix
from imgtrans.nets.chroma import LabOutput
from imgtrans.nets.colour_classes import TRAINING_TEMPERATURE, ColourClasses
from imgtrans.nets.lab_colorizer import LabColorizer
from imgtrans.nets.layers import Generator


class Fixed(Generator):
    """A network whose raw output is given."""

    def __init__(self, heads: torch.Tensor):
        super().__init__()
        self.out = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out


def raw_heads(gate: torch.Tensor) -> torch.Tensor:
    """One colour everywhere (a,b logits 0.5, 0.3) and the given gate logits (1, 1, H, W)."""
    colour = torch.tensor([0.5, 0.3]).view(1, 2, 1, 1).expand(1, 2, *gate.shape[-2:])
    return torch.cat([colour, gate], 1)


def test_the_output_keeps_one_minus_p_neutral_of_its_colour_and_a_gray_stripe_stays_sharp_through_the_low_pass():
    gate = torch.full((1, 1, 32, 32), -30.0)
    gate[..., 15:17] = 30.0  # a 2 px gray road
    x = torch.zeros(1, 1, 32, 32)  # flat lightness: a guided filter would spread colour over it
    colorizer = LabColorizer(Fixed(raw_heads(gate)), LabOutput(gamut=False, chroma_blur=3.0), None, gate=True).eval()
    ab = colorizer(x)
    assert torch.all(ab[..., 15:17] == 0)
    assert torch.allclose(ab[..., :14], torch.tanh(torch.tensor([0.5, 0.3])).view(1, 2, 1, 1).expand(1, 2, 32, 14))
    half = LabColorizer(Fixed(raw_heads(torch.zeros(1, 1, 4, 4))), None, None, gate=True)(torch.zeros(1, 1, 4, 4))
    assert torch.allclose(half, 0.5 * torch.tanh(torch.tensor([0.5, 0.3])).view(1, 2, 1, 1).expand(1, 2, 4, 4))


def test_the_gate_loss_is_lowest_where_it_names_the_targets_gray_pixels():
    target = torch.full((1, 2, 8, 8), 30 / AB_SCALE)
    target[..., :, :3] = (NEUTRAL_CHROMA / 2) / AB_SCALE  # near-neutral on the left
    neutral = torch.zeros(1, 1, 8, 8)
    neutral[..., :3] = 1

    def loss(gate: torch.Tensor) -> float:
        colorizer = LabColorizer(Fixed(raw_heads(gate)), None, None, gate=True)
        return float(colorizer.losses(colorizer.heads(torch.zeros(1, 1, 8, 8)), target)["neutral"])

    right, wrong = loss(8 * (2 * neutral - 1)), loss(-8 * (2 * neutral - 1))
    assert right < 0.01 < 5 < wrong


def test_the_gray_weight_counts_only_the_gray_pixels_of_the_gate_loss():
    target = torch.full((1, 2, 8, 8), 30 / AB_SCALE)
    target[..., :, :3] = 0  # gray on the left
    colorizer = LabColorizer(Fixed(raw_heads(torch.zeros(1, 1, 8, 8))), None, None, gate=True)
    heads = colorizer.heads(torch.zeros(1, 1, 8, 8))  # p = 0.5 everywhere: each pixel costs log 2

    def gate_loss(gray_weight: float) -> float:
        return float(colorizer.losses(heads, target, gray_weight)["neutral"])

    gray, coloured = 3 * 8, 5 * 8
    assert gate_loss(1.0) == pytest.approx(math.log(2))
    assert gate_loss(10.0) == pytest.approx(math.log(2) * (10 * gray + coloured) / (gray + coloured))


@pytest.mark.parametrize("anneal", [False, True])
def test_with_colour_classes_the_gate_is_annealed_at_their_temperature(anneal):
    """Gray-or-colour decoded by the annealed mean over its two outcomes: sigmoid(logit / T), T the classes' own
    (the paper's 0.38 in training, `class_temperature` at inference); unannealed, the gate's probability."""
    classes = ColourClasses(temperature=0.05)
    logits = torch.zeros(1, classes.count, 4, 4)
    logits[:, 7] = 5.0  # one likely colour
    gate = torch.tensor([-2.0, -0.5, 0.5, 2.0]).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    colorizer = LabColorizer(Fixed(torch.cat([logits, gate], 1)), None, classes, gate=True, anneal_gate=anneal)
    never_gray = LabColorizer(Fixed(torch.cat([logits, torch.full_like(gate, -80.0)], 1)), None, classes, gate=True)
    x = torch.zeros(1, 1, 4, 4)
    for training, temperature in ((True, TRAINING_TEMPERATURE), (False, 0.05)):
        for net in (colorizer, never_gray):
            net.train(training)
        kept = colorizer(x) / never_gray(x)
        expected = 1 - torch.sigmoid(gate / (temperature if anneal else 1.0))
        assert torch.allclose(kept, expected.expand_as(kept), atol=1e-6)
    assert not LabColorizer(Fixed(gate), None, None, gate=True, anneal_gate=True).anneal_gate  # no classes: none


@pytest.mark.parametrize("anneal", [False, True])
def test_at_inference_the_gate_decides_at_its_odds_of_gray_divided_by_neutral_odds(anneal):
    classes = ColourClasses(temperature=0.2) if anneal else None
    if anneal:
        colour = torch.zeros(1, classes.count, 4, 4)
        colour[:, 7] = 5.0  # one likely colour
    else:
        colour = raw_heads(torch.zeros(1, 1, 4, 4))[:, :2]
    gate = torch.tensor([-2.0, -0.5, 0.5, 2.0]).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    laxer = LabColorizer(Fixed(torch.cat([colour, gate], 1)), None, classes, gate=True, anneal_gate=anneal,
                         neutral_odds=3.0)
    never_gray = LabColorizer(Fixed(torch.cat([colour, torch.full_like(gate, -80.0)], 1)), None, classes, gate=True)
    x = torch.zeros(1, 1, 4, 4)
    for training, temperature, odds in ((True, TRAINING_TEMPERATURE, 1.0), (False, 0.2, 3.0)):
        for net in (laxer, never_gray):
            net.train(training)
        kept = laxer(x) / never_gray(x)
        # odds of gray exp(logit / T) divided by 3: the logit lowered by log 3 before the annealing
        expected = 1 - torch.sigmoid((gate - math.log(odds)) / (temperature if anneal else 1.0))
        assert torch.allclose(kept, expected.expand_as(kept), atol=1e-6)


def test_at_inference_the_gate_decides_on_its_logit_averaged_over_a_box_of_radius_neutral_blur():
    gate = torch.full((1, 1, 32, 32), -6.0)
    gate[..., 8, 8] = 6.0  # one pixel called gray inside a coloured region
    gate[..., 20:27] = 6.0  # a gray band 7 px wide, wider than the box
    blurred = LabColorizer(Fixed(raw_heads(gate)), None, None, gate=True, neutral_blur=2)
    per_pixel = LabColorizer(Fixed(raw_heads(gate)), None, None, gate=True)
    never_gray = LabColorizer(Fixed(raw_heads(torch.full_like(gate, -80.0))), None, None, gate=True).eval()
    x = torch.zeros(1, 1, 32, 32)
    assert torch.equal(blurred(x), per_pixel(x))  # training decides per pixel
    blurred.eval()
    per_pixel.eval()
    kept, kept_per_pixel = blurred(x) / never_gray(x), per_pixel(x) / never_gray(x)
    assert kept_per_pixel[..., 8, 8].max() < 0.01 and kept[..., 8, 8].min() > 0.9  # the lone pixel keeps its colour
    assert kept[..., 22:25].max() < 0.01  # the band's middle stays gray
    box = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(gate, (2,) * 4, mode="reflect"), 5, stride=1)
    assert torch.allclose(kept, (1 - torch.sigmoid(box)).expand_as(kept), atol=1e-6)


def gated(loss: str = "l1", **options) -> Pix2Pix:
    torch.manual_seed(0)
    cfg = Pix2PixConfig(**{"ngf": 4, "ndf": 4, "crop_size": 64, "color_space": "lab", "layout": "colorization",
                           "neutral_gate": True, "colorization_loss": loss, "lambda_perceptual": 0.0, **options})
    return Pix2Pix(cfg, Codec(True, "lab"))  # the perceptual term: test_lab_colour_terms


@pytest.mark.parametrize("loss", ["l1", "both"])
def test_pix2pix_with_the_gate_trains_on_its_cross_entropy_beside_its_colour_loss(loss):
    model = gated(loss)
    generator = model.generator()
    assert isinstance(generator, LabColorizer) and generator.gate
    model.configure_optimizers()
    batch = {"A": torch.rand(2, 1, 64, 64) * 2 - 1, "B": (torch.rand(2, 2, 64, 64) - 0.5) * 0.2}
    losses = model.training_step(batch)
    assert {"G_GAN", "G_L1", "G_neutral"} <= set(losses)
    assert ("G_class" in losses) == (loss == "both")
    model.eval()
    assert model.translate(batch["A"]).shape == (2, 2, 64, 64)


def test_the_gate_learns_which_pixels_are_gray():
    """A stripe of gray across coloured ground, told apart only by its texture (flat against noisy): after a
    few dozen steps the gate puts more probability of gray on the stripe than off it. (Instance norm, no dropout:
    eval mode computes what training did, without batch-norm statistics that lag a short run.)"""
    model = gated(lr=2e-3, norm="instance", dropout=False, crop_size=32)
    model.configure_optimizers()
    gray = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    gray[..., 12:20] = True
    for _ in range(60):
        lightness = torch.where(gray, torch.zeros(4, 1, 32, 32), torch.randn(4, 1, 32, 32) * 0.3)
        ab = torch.where(gray, 0.0, torch.tensor([40 / AB_SCALE, 20 / AB_SCALE]).view(1, 2, 1, 1))
        model.training_step({"A": lightness, "B": ab.expand(4, 2, 32, 32)})
    model.eval()
    with torch.no_grad():
        p = torch.sigmoid(model.generator().heads(lightness).gate)
    assert p[gray.expand_as(p)].mean() > p[~gray.expand_as(p)].mean() + 0.15


@pytest.mark.parametrize("loss, blur", [("l1", 0), ("both", 2)])
def test_a_gated_colorizer_exports_with_its_gate(tmp_path, loss, blur):
    model = gated(loss, neutral_blur=blur)
    assert model.generator().anneal_gate == (loss == "both") and model.generator().neutral_blur == blur
    assert_exports_with_parity(model, tmp_path, torch.rand(1, 1, 64, 128) * 2 - 1)


def test_a_lab_colorizer_saved_before_the_gate_loads_without_it():
    from dataclasses import asdict

    from imgtrans.config import from_saved
    from imgtrans.training.checkpoint import model_payload

    old = Pix2Pix(Pix2PixConfig(ngf=4, ndf=4, crop_size=64, color_space="lab", layout="colorization",
                                colorization_loss="l1", neutral_gate=False), Codec(True, "lab"))
    saved = {k: v for k, v in asdict(old.cfg).items()
             if k not in ("neutral_gate", "lambda_neutral", "neutral_gray_weight", "neutral_annealing")}
    cfg = from_saved(Pix2PixConfig, saved)
    assert not cfg.neutral_gate and Pix2PixConfig(color_space="lab").neutral_gate
    assert cfg.neutral_gray_weight == 1 and Pix2PixConfig().neutral_gray_weight == 10
    assert not cfg.neutral_annealing and Pix2PixConfig().neutral_annealing
    again = Pix2Pix(cfg, Codec(True, "lab"))
    again.load_state_dict(model_payload(old)["nets"])
    assert not isinstance(again.generator(), LabColorizer)
