from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_COUNTS, random_rgb, write_image
from PIL import Image

from imgtrans.data import synthetic, transforms
from imgtrans.data.codec import Codec
from imgtrans.data.color import lab_to_rgb, rgb_to_lab
from imgtrans.data.datasets import EpochSampler, build_data
from imgtrans.data.images import load_image, read_header
from imgtrans.data.sources import detect_layout, find_source
from imgtrans.errors import ImgtransError


def cfg(dataset, **kw):
    base = dict(dataset=str(dataset), layout="auto", direction="AtoB", color_space="rgb", load_size=0,
                crop_size=32, preprocess="resize_and_crop", flip=True, seed=0, max_dataset_size=0)
    return SimpleNamespace(**{**base, **kw})


# --- built-in data ---------------------------------------------------------

def test_synthetic_same_seed_same_pixels(tmp_path):
    for name in synthetic.SYNTHETIC:
        a = synthetic.SYNTHETIC[name].make(synthetic.image_rng(name, "train", 3))
        b = synthetic.SYNTHETIC[name].make(synthetic.image_rng(name, "train", 3))
        c = synthetic.SYNTHETIC[name].make(synthetic.image_rng(name, "train", 4))
        for key in a:
            assert np.array_equal(np.asarray(a[key]), np.asarray(b[key]))
            assert not np.array_equal(np.asarray(a[key]), np.asarray(c[key]))


def test_synthetic_images_have_content(facades, aerial):
    photo = np.asarray(Image.open(facades / "train" / "B" / "0000.png")).astype(float)
    labels = np.asarray(Image.open(facades / "train" / "A" / "0000.png")).reshape(-1, 3)
    assert photo.shape == (synthetic.SIZE, synthetic.SIZE, 3) and photo.std() > 20
    palette = {tuple(c) for c in synthetic.FACADE_PALETTE}
    assert {tuple(c) for c in np.unique(labels, axis=0)} <= palette
    assert len(np.unique(labels, axis=0)) >= 5
    scene = np.asarray(Image.open(aerial / "train" / "0000.png")).astype(float)
    assert scene.std() > 15 and scene.reshape(-1, 3).std(0).min() > 5


def test_ensure_synthetic_uses_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(synthetic, "SPLITS", TINY_COUNTS)
    root = synthetic.ensure_synthetic("synthetic-facades")
    assert root.parent == tmp_path / "cache"
    assert len(list((root / "train" / "A").glob("*.png"))) == 6
    assert synthetic.ensure_synthetic("synthetic-facades") == root
    with pytest.raises(ImgtransError, match="unknown built-in dataset"):
        synthetic.ensure_synthetic("synthetic-cats")


# --- layouts -----------------------------------------------------------------

def make_aligned(root, n=4, h=40):
    for split in ("train", "test"):
        for i in range(n):
            a, b = np.full((h, h, 3), 30, np.uint8), np.full((h, h, 3), 200, np.uint8)
            write_image(root / split / f"{i}.png", np.concatenate([a, b], 1))
    return root


def test_aligned_layout_and_direction(tmp_path):
    root = make_aligned(tmp_path / "aligned")
    assert detect_layout(root) == "aligned"
    data = build_data(cfg(root, preprocess="none"))
    item = data.train[0]
    assert item["A"].shape == (3, 40, 40)
    assert item["A"].mean() < 0 < item["B"].mean()
    swapped = build_data(cfg(root, preprocess="none", direction="BtoA")).train[0]
    assert torch.allclose(swapped["A"], item["B"]) and torch.allclose(swapped["B"], item["A"])
    assert len(data.val) == 4  # no val split: the test split is used


def test_paired_layout(facades):
    data = build_data(cfg(facades))
    assert data.source.layout == "paired" and len(data.train) == 6 and len(data.val) == 2
    item = data.train[(0, 1)]
    assert item["A"].shape == item["B"].shape == (3, 32, 32)
    swapped = build_data(cfg(facades, direction="BtoA"))
    assert swapped.source.pairs["train"][0] == tuple(reversed(data.source.pairs["train"][0]))


def test_paired_layout_with_split_inside(tmp_path):
    for side in "AB":
        for i in range(3):
            write_image(tmp_path / side / "train" / f"{i}.png", random_rgb(16, 16, i))
    source = find_source(str(tmp_path), "paired")
    assert len(source.pairs["train"]) + len(source.pairs["val"]) == 3  # no val split: one held out
    assert source.pairs["train"][0][0].parent == tmp_path / "A" / "train"


def test_unpaired_layout(tmp_path):
    for side, n in (("A", 5), ("B", 3)):
        for i in range(n):
            write_image(tmp_path / f"train{side}" / f"{i}.png", random_rgb(36, 36, i))
    assert detect_layout(tmp_path) == "unpaired"
    data = build_data(cfg(tmp_path), unpaired=True)
    assert len(data.train) == 4 and len(data.val) == 1  # no testA/testB: every 10th held out
    assert data.train[(0, 3)]["B"].shape == (3, 32, 32)


def test_single_folder_holds_out_every_tenth(tmp_path):
    for i in range(20):
        write_image(tmp_path / f"{i:02d}.jpg", random_rgb(24, 32, i))
    source = find_source(str(tmp_path))
    assert source.layout == "single"
    assert len(source.a["train"]) == 18 and len(source.a["val"]) == 2
    assert not set(source.a["train"]) & set(source.a["val"])


@pytest.mark.parametrize("filled,empty", [("test", "val"), ("val", "test")])
def test_an_empty_val_or_test_folder_is_served_by_the_other(tmp_path, filled, empty):
    for split, count in (("train", 3), (filled, 2)):
        for i in range(count):
            write_image(tmp_path / split / f"{i}.png", random_rgb(24, 32, i))
    (tmp_path / empty).mkdir()
    source = find_source(str(tmp_path))
    assert source.a["val"] == source.a["test"] and len(source.a["test"]) == 2


@pytest.mark.parametrize("space,out_nc", [("rgb", 3), ("lab", 2)])
def test_colorization_pairs(aerial, space, out_nc):
    data = build_data(cfg(aerial, color_space=space))
    item = data.val[0]
    assert item["A"].shape == (1, 32, 32) and item["B"].shape == (out_nc, 32, 32)
    rgb = data.codec.decode_output(item["A"], item["B"])
    gray = rgb.mul(torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0)
    if space == "rgb":
        assert torch.allclose(gray * 2 - 1, item["A"][0], atol=1e-5)


def test_lab_needs_colorization(facades):
    with pytest.raises(ImgtransError, match="color_space=lab needs a colorization dataset"):
        build_data(cfg(facades, color_space="lab"))


def test_lab_reads_a_folder_of_photographs_as_colorization_data(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        for i in range(2):
            write_image(tmp_path / split / f"{i}.png", random_rgb(40, 40, seed=i))
    data = build_data(cfg(tmp_path, color_space="lab"))
    assert data.source.layout == "single" and data.codec.colorization
    assert data.has_targets  # each photograph is the truth of its gray input: validation and evaluate score them
    assert data.train[0]["A"].shape[0] == 1 and data.train[0]["B"].shape[0] == 2
    from imgtrans.config import TrainConfig

    for layout in ("single", "auto", "colorization"):  # named as detected: the same
        TrainConfig(dataset=str(tmp_path), layout=layout, color_space="lab").validate()
    with pytest.raises(ImgtransError, match="color_space=lab needs layout=colorization or single"):
        TrainConfig(dataset=str(tmp_path), layout="paired", color_space="lab").validate()


def test_lab_round_trip():
    rgb = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-6)
    white = rgb_to_lab(torch.ones(1, 3, 1, 1))
    assert torch.allclose(white.flatten(), torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)  # L=100, a=b=0


def test_codec_channels():
    assert (Codec(False).input_nc, Codec(False).output_nc) == (3, 3)
    assert (Codec(True, "rgb").input_nc, Codec(True, "rgb").output_nc) == (1, 3)
    assert (Codec(True, "lab").input_nc, Codec(True, "lab").output_nc) == (1, 2)


# --- transforms ----------------------------------------------------------------

@pytest.mark.parametrize("preprocess,expected", [
    ("resize_and_crop", (32, 32)), ("random_scale_and_crop", (32, 32)), ("crop", (32, 32)), ("scale_width", (24, 32)),
    ("scale_width_and_crop", (32, 32)), ("none", (60, 84)),
])
def test_preprocess_sizes(preprocess, expected):
    rng = np.random.default_rng(0)
    geometry = transforms.plan(63, 84, preprocess=preprocess, load_size=36, crop_size=32, flip=True, rng=rng)
    assert transforms.apply(torch.rand(3, 63, 84), geometry).shape[1:] == expected


@pytest.mark.parametrize("preprocess,advice", [
    ("crop", "lower crop_size, or use preprocess=resize_and_crop"),  # crop reads no load_size
    ("scale_width_and_crop", "lower crop_size, raise load_size or use preprocess=resize_and_crop"),
])
def test_a_crop_larger_than_the_image_says_what_helps(preprocess, advice):
    with pytest.raises(ImgtransError, match=advice):
        transforms.plan(20, 20, preprocess=preprocess, load_size=24, crop_size=32, flip=False, rng=None)


def test_random_scale_jitters_between_native_and_load_size():
    rng = np.random.default_rng(0)
    plans = [transforms.plan(40, 60, preprocess="random_scale_and_crop", load_size=36, crop_size=32, flip=False,
                             rng=rng) for _ in range(50)]
    factors = [p.resize[1] / 60 for p in plans]
    assert all(abs(p.resize[0] / 40 - f) < 0.02 for p, f in zip(plans, factors))  # the aspect ratio is kept
    assert 1.0 <= min(factors) < 1.03 and 36 / 32 - 0.03 < max(factors) <= 36 / 32 + 0.01
    assert len({p.crop[:2] for p in plans}) > 10
    evaluation = transforms.plan(40, 60, preprocess="random_scale_and_crop", load_size=36, crop_size=32, flip=True,
                                 rng=None)
    assert evaluation == transforms.Geometry(None, (4, 14, 32, 32), False)  # native scale, centre crop


def test_pair_gets_identical_augmentation(tmp_path):
    for split, i in (("train", 0), ("train", 1), ("val", 2)):
        image = random_rgb(48, 48, i)
        write_image(tmp_path / split / "A" / f"{i}.png", image)
        write_image(tmp_path / split / "B" / f"{i}.png", image)
    data = build_data(cfg(tmp_path))
    for epoch in range(4):
        item = data.train[(epoch, 0)]
        assert torch.equal(item["A"], item["B"])
    assert not torch.equal(data.train[(0, 0)]["A"], data.train[(1, 0)]["A"])  # epochs differ
    assert torch.equal(data.train[(2, 1)]["A"], data.train[(2, 1)]["A"])  # reproducible


def test_sampler_resumes_mid_epoch():
    sampler = EpochSampler(10, seed=3)
    sampler.set_position(2)
    full = list(sampler)
    sampler.set_position(2, skip=4)
    assert list(sampler) == full[4:]
    sampler.set_position(3)
    assert [i for _, i in sampler] != [i for _, i in full]


# --- image files -----------------------------------------------------------------

def test_16bit_grayscale_keeps_precision(tmp_path):
    values = np.array([[0, 1000], [40000, 65535]], np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    loaded = load_image(path)
    assert loaded.shape == (2, 2, 1)
    assert np.allclose(loaded[..., 0], values / 65535.0)


def test_rgba_and_gray_inputs(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").shape == (4, 4, 3)
    assert load_image(tmp_path / "a.png")[..., 0].min() == 1.0
    Image.fromarray(np.full((4, 4), 128, np.uint8)).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == (4, 4, 1)


def test_exif_orientation_is_applied_so_pairs_line_up_as_viewers_show_them(tmp_path):
    y, x = np.mgrid[0:32, 0:48]
    shown = np.stack([x * 5, y * 7, np.full_like(x, 128)], -1).astype(np.uint8)  # 48 × 32 as a viewer shows it
    stored = tmp_path / "train" / "A" / "x.jpg"  # kept turned, with the EXIF tag that turns it back
    stored.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90° clockwise to display
    Image.fromarray(np.rot90(shown, 1)).save(stored, quality=100, exif=exif)
    write_image(tmp_path / "train" / "B" / "x.png", shown)
    assert read_header(stored) == ((48, 32), "rgb")
    assert load_image(stored).shape == (32, 48, 3)
    assert np.abs(load_image(stored) * 255 - shown).mean() < 2  # the same pixels, up to JPEG's loss
    data = build_data(cfg(tmp_path, preprocess="none", flip=False))
    assert data.train.rgb_pair(0)[0].shape == data.train.rgb_pair(0)[1].shape == (3, 32, 48)


def test_a_header_look_decodes_no_pixels(tmp_path):
    """Summaries read every file's header: decoding the pixels too would make them as slow as a pass over the data."""
    path = write_image(tmp_path / "x.png", random_rgb(64, 48))
    path.write_bytes(path.read_bytes()[:200])  # the header and no pixels
    assert read_header(path) == ((48, 64), "rgb")
    with pytest.raises(ImgtransError, match="truncated"):
        load_image(path)


def test_float_colour_tiffs_are_summarised_as_they_are_read(tmp_path):
    import tifffile

    from imgtrans.data.splits import summarize

    path = tmp_path / "f.tif"
    tifffile.imwrite(path, np.random.default_rng(0).random((8, 12, 3), dtype=np.float32), photometric="rgb")
    assert read_header(path) == ((12, 8), "rgb float") and load_image(path).shape == (8, 12, 3)
    summary = summarize(tmp_path, [path], 1, "train", str(tmp_path), "single", "rgb")
    assert (summary.sizes, summary.channels) == ("12×8", "rgb float")


# --- bad input -------------------------------------------------------------------

def test_corrupt_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImgtransError, match="broken.png"):
        load_image(bad)


def test_mismatched_ab_folders(tmp_path):
    write_image(tmp_path / "train" / "A" / "x.png", random_rgb(8, 8))
    write_image(tmp_path / "train" / "B" / "y.png", random_rgb(8, 8))
    with pytest.raises(ImgtransError, match="A and B folders do not match"):
        find_source(str(tmp_path))


def test_missing_and_empty_dataset(tmp_path):
    with pytest.raises(ImgtransError, match="dataset folder not found"):
        find_source(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImgtransError, match="no images found"):
        find_source(str(tmp_path / "empty"))


def test_two_files_of_one_name_in_a_paired_folder_are_refused(tmp_path):
    for side in "AB":
        write_image(tmp_path / "train" / side / "x.png", random_rgb(8, 8))
    write_image(tmp_path / "train" / "A" / "x.jpg", random_rgb(8, 8))
    with pytest.raises(ImgtransError, match="x.jpg and x.png in .*A have one name: pairs are matched by name"):
        find_source(str(tmp_path))


@pytest.mark.parametrize("text", ["{not json", '{"name": "mine"}', "[1, 2]"])
def test_a_layout_file_imgtrans_did_not_write_is_one_line(tmp_path, text):
    write_image(tmp_path / "x.png", random_rgb(8, 8))
    (tmp_path / synthetic.LAYOUT_FILE).write_text(text)
    with pytest.raises(ImgtransError, match="is not an imgtrans layout file"):
        find_source(str(tmp_path))
