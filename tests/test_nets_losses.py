import pytest
import torch

from imgtrans.errors import ImgtransError
from imgtrans.nets.discriminators import build_discriminator
from imgtrans.nets.generators import build_generator
from imgtrans.nets.layers import init_weights, pad_to_multiple
from imgtrans.nets.losses import GANLoss, gradient_penalty
from imgtrans.nets.naive import PixelwiseGenerator


@pytest.mark.parametrize("name,size", [("unet", 64), ("unet_128", 128), ("unet_256", 256),
                                       ("resnet_6blocks", 64), ("resnet_9blocks", 48)])
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_generator_shapes(name, size, norm):
    g = build_generator(name, 1, 2, ngf=4, norm=norm, dropout=True, crop_size=size)
    y = g(torch.randn(2, 1, size, size))
    assert y.shape == (2, 2, size, size)
    assert y.abs().max() <= 1  # tanh output


def test_unet_depth_follows_crop():
    assert build_generator("unet", 3, 3, ngf=4, norm="batch", dropout=False, crop_size=64).size_multiple == 64
    with pytest.raises(ImgtransError, match="power-of-two"):
        build_generator("unet", 3, 3, ngf=4, norm="batch", dropout=False, crop_size=96)
    with pytest.raises(ImgtransError, match="multiple of 256"):
        build_generator("unet_256", 3, 3, ngf=4, norm="batch", dropout=False, crop_size=128)


def test_unet_dropout_only_in_inner_decoder_levels():
    g = build_generator("unet_256", 3, 3, ngf=4, norm="batch", dropout=True, crop_size=256)
    with_dropout = [i for i, up in enumerate(g.up) if any(isinstance(m, torch.nn.Dropout) for m in up)]
    assert with_dropout == [4, 5, 6]  # the three ngf*8 decoder blocks, as in the paper


@pytest.mark.parametrize("name,size,patches", [("basic", 64, 6), ("basic", 256, 30), ("pixel", 32, 32)])
def test_discriminator_shapes(name, size, patches):
    d = build_discriminator(name, 6, ndf=4, n_layers=3, norm="batch")
    assert d(torch.randn(2, 6, size, size)).shape == (2, 1, patches, patches)


def test_n_layers_discriminator_depth():
    shallow = build_discriminator("n_layers", 3, ndf=4, n_layers=1, norm="instance")
    assert shallow(torch.randn(1, 3, 64, 64)).shape == (1, 1, 30, 30)


def test_invalid_names_list_valid_values():
    with pytest.raises(ImgtransError, match="valid values: unet"):
        build_generator("unet_512x", 3, 3, ngf=4, norm="batch", dropout=False, crop_size=64)
    with pytest.raises(ImgtransError, match="valid values: batch, instance, none"):
        build_generator("unet", 3, 3, ngf=4, norm="group", dropout=False, crop_size=64)
    with pytest.raises(ImgtransError, match="valid values: vanilla"):
        GANLoss("bce")


def test_init_normal_gain():
    net = init_weights(torch.nn.Conv2d(64, 64, 4), "normal", 0.02)
    assert abs(net.weight.std().item() - 0.02) < 0.002
    assert net.bias.abs().max() == 0


def test_gan_loss_values():
    logits = torch.zeros(2, 1, 4, 4)
    assert GANLoss("vanilla")(logits, True).item() == pytest.approx(0.693147, abs=1e-5)
    assert GANLoss("lsgan")(torch.full((2, 1, 4, 4), 0.5), True).item() == pytest.approx(0.25)
    assert GANLoss("lsgan")(torch.full((2, 1, 4, 4), 0.5), False).item() == pytest.approx(0.25)
    x = torch.tensor([2.0, -3.0])
    assert GANLoss("wgangp")(x, True).item() == pytest.approx(0.5)
    assert GANLoss("wgangp")(x, False).item() == pytest.approx(-0.5)
    hinge = GANLoss("hinge")
    assert hinge(x, True).item() == pytest.approx((0 + 4) / 2)  # relu(1 - x)
    assert hinge(x, False).item() == pytest.approx((3 + 0) / 2)  # relu(1 + x)
    assert hinge(x, True, for_discriminator=False).item() == pytest.approx(0.5)


def test_gradient_penalty_changes_discriminator_gradient():
    torch.manual_seed(0)
    d = build_discriminator("basic", 3, ndf=4, n_layers=3, norm="none")
    real, fake = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    loss = GANLoss("wgangp")

    def grads(with_gp: bool):
        d.zero_grad()
        total = loss(d(real), True) + loss(d(fake), False)
        if with_gp:
            torch.manual_seed(1)
            gp = gradient_penalty(d, real, fake, weight=10.0)
            assert gp.item() > 0
            total = total + gp
        total.backward()
        return torch.cat([p.grad.flatten() for p in d.parameters()])

    assert not torch.allclose(grads(False), grads(True))


def test_gradient_penalty_is_zero_for_unit_gradient_critic():
    # D(x) = sum(w * x) with ‖w‖ = 1 has gradient norm exactly 1 everywhere.
    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            w = torch.randn(1, 3, 8, 8)
            self.w = torch.nn.Parameter(w / w.norm())

        def forward(self, x):
            return (x * self.w).flatten(1).sum(1)

    gp = gradient_penalty(Linear(), torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8))
    assert gp.item() == pytest.approx(0.0, abs=1e-8)


def test_pad_to_multiple_keeps_size_information():
    x = torch.randn(1, 3, 50, 70)
    padded, size = pad_to_multiple(x, 32)
    assert padded.shape[-2:] == (64, 96) and size == (50, 70)
    assert torch.equal(padded[..., :50, :70], x)


def test_cgan_generator_is_local_and_keeps_the_input_size():
    """Seed 000's per-pixel generator has no global path: changing one corner of the input leaves the
    far corner of the output as it was."""
    torch.manual_seed(0)
    net = PixelwiseGenerator(3, 3, (3, 3, 2, 1)).eval()
    x = torch.rand(1, 3, 40, 56) * 2 - 1
    changed = x.clone()
    changed[..., :8, :8] = -changed[..., :8, :8]
    with torch.no_grad():
        out, out_changed = net(x), net(changed)
    assert out.shape == (1, 3, 40, 56)
    assert torch.equal(out[..., 20:, 28:], out_changed[..., 20:, 28:])
    assert not torch.equal(out[..., :8, :8], out_changed[..., :8, :8])


def stride_peak(generator: torch.nn.Module, size: int = 128) -> float:
    """Spectral energy of an untrained generator's output at the ×2 stride frequency (the checkerboard's),
    relative to its mean over the other non-zero frequencies; the input is smooth, so the output should be."""
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, size // 16, size // 16), size=size, mode="bilinear")
    with torch.no_grad():
        out = generator.eval()(smooth * 2 - 1)[0].mean(0)
    spectrum = torch.fft.fft2(out - out.mean()).abs() ** 2
    half = size // 2
    peak = spectrum[half, half] + spectrum[0, half] + spectrum[half, 0]
    return float(peak / 3 / spectrum.mean())


@pytest.mark.parametrize("name", ["unet", "resnet_6blocks"])
def test_resize_conv_upsampling_leaves_no_checkerboard(name):
    def generator(upsample):
        torch.manual_seed(1)
        return init_weights(build_generator(name, 3, 3, ngf=16, norm="instance", dropout=False, crop_size=128,
                                            upsample=upsample), "normal", 0.02)

    transpose, resize_conv = stride_peak(generator("transpose")), stride_peak(generator("resize_conv"))
    assert transpose > 10 * max(resize_conv, 1.0), (transpose, resize_conv)


def test_a_lab_colorizer_puts_no_colour_on_black_or_white_and_only_colours_sRGB_can_show():
    import numpy as np

    from imgtrans.data.codec import Codec
    from imgtrans.data.color import in_srgb_gamut
    from imgtrans.data.synthetic import aerial_scene
    from imgtrans.models.options import Pix2PixConfig
    from imgtrans.models.pix2pix import Pix2Pix
    from imgtrans.nets.gamut import LabGamutBound

    rgb = torch.from_numpy(aerial_scene(np.random.default_rng(3), 128)).permute(2, 0, 1).float() / 255
    rgb[:, :32] = 0.0  # a black border, as on scans
    rgb[:, -16:] = 1.0  # and a white one
    codec = Codec(colorization=True, color_space="lab")
    x = codec.encode_input(rgb)[None]
    lightness = (x + 1) * 50
    black, white = lightness < 0.01, lightness > 99.99  # the borders

    def colourfulness(ab):  # the spread of the decoded r, g, b: 0 for gray
        rgb = codec.decode_output(x, ab)
        return rgb.max(1, keepdim=True).values - rgb.min(1, keepdim=True).values

    predicted = torch.rand(1, 2, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1  # any a,b at all
    assert colourfulness(predicted)[black].mean() > 0.05 and colourfulness(predicted)[white].mean() > 0.05
    bounded = LabGamutBound()(x, predicted)
    assert in_srgb_gamut(torch.cat([x, bounded], 1)).all()
    assert colourfulness(bounded)[black].max() < 1 / 255 and colourfulness(bounded)[white].max() < 1 / 255
    target = codec.encode_target(rgb)[None]
    assert torch.equal(LabGamutBound()(x, target), target)  # colours sRGB can show are left as they are

    def generator(**options):
        return Pix2Pix(Pix2PixConfig(ngf=8, crop_size=128, **options), options.pop("codec", codec)).netG.eval()

    assert generator().lab.gamut is not None and generator(gamut_bound=False).lab.gamut is None
    assert build_generator("unet", 3, 3, ngf=4, norm="batch", dropout=False, crop_size=64).lab is None
    with torch.no_grad():
        assert in_srgb_gamut(torch.cat([x, generator()(x)], 1)).all()


def test_the_chroma_low_pass_keeps_flat_colour_and_removes_pixel_speckle():
    from imgtrans.nets.chroma import ChromaLowPass

    low_pass = ChromaLowPass(1.5).eval()
    flat = torch.full((1, 2, 32, 48), 0.3)
    assert torch.allclose(low_pass(flat), flat)
    speckle = torch.zeros(1, 2, 32, 48)
    speckle[..., ::2, ::2], speckle[..., 1::2, 1::2] = 1.0, 1.0  # a one-pixel checkerboard of colour
    smoothed = low_pass(speckle)
    assert smoothed.shape == speckle.shape and float(smoothed.std()) < 0.01 * float(speckle.std())
    edge = torch.zeros(1, 2, 32, 48)
    edge[..., 24:] = 1.0  # a colour edge stays where it was, only softened
    row = low_pass(edge)[0, 0, 16]
    assert row[:18].max() < 0.01 and row[30:].min() > 0.99 and 0.4 < float(row[23:25].mean()) < 0.6
    assert torch.equal(low_pass.train()(speckle), speckle)  # training sees the network's own output


def test_the_guided_chroma_filter_keeps_colour_to_lightness_edges():
    from imgtrans.nets.chroma import ChromaGuidedFilter, ChromaLowPass

    guided, gaussian = ChromaGuidedFilter(8).eval(), ChromaLowPass(3.0).eval()
    lightness = torch.full((1, 1, 32, 48), -0.6)
    lightness[..., 24:] = 0.4  # a darker field beside a lighter gray road
    ab = torch.zeros(1, 2, 32, 48)
    ab[..., :24] = 0.5  # colour on the field, none on the road
    speckle = 0.05 * torch.randn(1, 2, 32, 48, generator=torch.Generator().manual_seed(0))
    road_guided = guided(ab + speckle, lightness)[..., 24:]
    road_gaussian = gaussian(ab + speckle)[..., 24:]
    assert float(road_guided.abs().mean()) < 0.25 * float(road_gaussian.abs().mean())  # no bleed onto the road
    flat = torch.zeros(1, 1, 32, 48)  # where lightness is flat it smooths like a low-pass
    assert float(guided(speckle, flat).std()) < 0.2 * float(speckle.std())
    assert torch.equal(guided.train()(speckle, flat), speckle)  # training sees the network's own output
    # The largest chroma_blur (16: radius 40 guided, 48 Gaussian) on an image smaller than its reach.
    small = 0.5 + speckle[..., :20, :20]
    for wide in (ChromaGuidedFilter(40).eval(), ChromaLowPass(16.0).eval()):
        out = wide(small, torch.zeros(1, 1, 20, 20))
        assert out.shape == small.shape and torch.allclose(out, small.mean((2, 3), keepdim=True), atol=0.02)
    from imgtrans.nets.chroma import border_padded

    wide = torch.randn(1, 2, 4, 40)  # short and wide: its rows still reflect
    reflected = torch.nn.functional.pad(wide, (10, 10, 0, 0), mode="reflect")
    assert torch.equal(border_padded(wide, (10, 10, 0, 0)), reflected)
