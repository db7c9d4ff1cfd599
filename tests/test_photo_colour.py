"""docs/model-zoo/photo_colour.py, the photographs' check that is repeated on photographs the project never saw:
its preparation cuts any photographs into strips without leaking test or validation pixels into training."""

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).parents[1] / "docs" / "model-zoo" / "photo_colour.py"
TILE = 128


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("photo_colour", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def photo_colour(script, capsys):
    """The script's command line, run in this process: its exit status and what it wrote to stderr."""
    def run(*args) -> SimpleNamespace:
        capsys.readouterr()
        try:
            script.main([str(arg) for arg in args])
            status = 0
        except SystemExit as exit_:
            status = exit_.code
        return SimpleNamespace(returncode=status, stderr=capsys.readouterr().err)
    return run


def test_prepare_within_cuts_any_photographs_into_disjoint_strips_and_refuses_to_mix(tmp_path, photo_colour):
    rng = np.random.default_rng(0)
    photos = {}
    for name, size in (("harbour", (300, 640)), ("field", (260, 700))):
        photos[name] = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(photos[name]).save(tmp_path / f"{name}.png")
    folder = tmp_path / "prepared"

    done = photo_colour("prepare", folder, "within", tmp_path / "harbour.png", tmp_path / "field.png")
    assert done.returncode == 0, done.stderr
    tiles = {part: sorted(p.stem for p in (folder / "tiles" / part).glob("*.png")) for part in ("train", "val", "test")}
    # tops 0, 64 and 128 in strips 2 and 3 of each
    assert len(tiles["test"]) == len(tiles["val"]) == 3 + 3
    # training tiles every 32 px left of strip 2 (5 columns) and right of strip 3 (harbour 1, field 2): 6 rows in
    # harbour's 300 px, 5 in field's 260
    assert len(tiles["train"]) == 6 * (5 + 1) + 5 * (5 + 2)
    for part, names in tiles.items():
        for name in names:
            photo, top, left = re.fullmatch(r"(\w+)-(\d+)-(\d+)", name).groups()
            top, left = int(top), int(left)
            stored = np.asarray(Image.open(folder / "tiles" / part / f"{name}.png"))
            assert np.array_equal(stored, photos[photo][top:top + TILE, left:left + TILE])
            strip = {"test": (2 * TILE, 3 * TILE), "val": (3 * TILE, 4 * TILE)}.get(part)
            if strip:
                assert (left, left + TILE) == strip
            else:  # no training pixel in the tested or validated columns
                assert left + TILE <= 2 * TILE or left >= 4 * TILE
    for name, image in photos.items():
        assert np.array_equal(np.asarray(Image.open(folder / "full" / f"{name}.png")), image)
    assert sorted(p.name for p in folder.iterdir()) == ["full", "tiles"]  # no temporary folder left

    again = photo_colour("prepare", folder, "within", tmp_path / "harbour.png")
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "exists; prepare into a new folder" in again.stderr
    assert sorted(p.stem for p in (folder / "tiles" / "test").glob("*.png")) == tiles["test"]


def test_within_more_twice_adds_the_other_photographs_and_repeats_the_tested_ones_own_training_tiles(tmp_path,
                                                                                                    photo_colour):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (200, 600, 3), dtype=np.uint8)).save(tmp_path / "harbour.png")
    parts = ("train", "val", "test")
    tiles = {}
    for protocol in ("within", "within_more_twice"):
        done = photo_colour("prepare", tmp_path / protocol, protocol, tmp_path / "harbour.png")
        assert done.returncode == 0, done.stderr
        tiles[protocol] = {part: {p.stem: p.read_bytes() for p in (tmp_path / protocol / "tiles" / part).glob("*.png")}
                           for part in parts}

    own, twice = tiles["within"], tiles["within_more_twice"]
    for part in ("val", "test"):
        assert twice[part] == own[part]
    assert own["train"]
    for name, png in own["train"].items():
        assert twice["train"][name] == twice["train"][f"{name}-twice"] == png
    others = set(twice["train"]) - set(own["train"]) - {f"{name}-twice" for name in own["train"]}
    assert others and all(not name.startswith("harbour") for name in others)


def test_prepare_refuses_a_photograph_too_narrow_for_the_strips_and_writes_nothing(tmp_path, photo_colour):
    Image.fromarray(np.zeros((200, 4 * TILE - 1, 3), np.uint8)).save(tmp_path / "narrow.png")
    done = photo_colour("prepare", tmp_path / "prepared", "within", tmp_path / "narrow.png")
    assert done.returncode == 2
    assert done.stderr.strip() == ("photo_colour.py: error: narrow is 511×200 px; within needs photographs at least "
                                   "512 px wide and 128 px high")
    assert not (tmp_path / "prepared").exists()


def test_prepare_scales_a_large_photograph_down_to_the_short_side_and_keeps_it_whole_on_request(tmp_path, script,
                                                                                                   photo_colour):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8)).save(tmp_path / "large.png")
    Image.fromarray(rng.integers(0, 256, (300, 640, 3), dtype=np.uint8)).save(tmp_path / "small.png")

    assert photo_colour("prepare", tmp_path / "scaled", "within", tmp_path / "large.png",
                        tmp_path / "small.png").returncode == 0
    assert Image.open(tmp_path / "scaled" / "full" / "large.png").size == (683, 512)
    small = np.asarray(Image.open(tmp_path / "small.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "scaled" / "full" / "small.png")), small)
    scaled = script.within({"large": np.zeros((512, 683, 3), np.uint8), "small": small})
    assert len(list((tmp_path / "scaled" / "tiles" / "train").glob("*.png"))) == len(scaled["train"])

    kept = photo_colour("prepare", tmp_path / "kept", "within", tmp_path / "large.png", "--short-side", 0)
    assert kept.returncode == 0
    assert Image.open(tmp_path / "kept" / "full" / "large.png").size == (1200, 900)
    done = photo_colour("prepare", tmp_path / "refused", "within", tmp_path / "large.png", "--short-side", -1)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--short-side is -1" in done.stderr
    assert not (tmp_path / "refused").exists()


def test_usage_errors_are_one_line(photo_colour):
    done = photo_colour("prepare", "folder", "photo.png")  # a photograph where the protocol goes
    assert done.returncode == 2
    assert done.stderr == ("photo_colour.py: error: argument protocol: invalid choice: 'photo.png' (choose from "
                           "'within', 'within_more', 'within_more_twice', 'across') (see photo_colour.py prepare "
                           "--help)\n")
    done = photo_colour("score", "nowhere", "sheet.jpg", "a=run")
    assert done.returncode == 2
    assert done.stderr == ("photo_colour.py: error: nowhere has no full/ photographs; run `photo_colour.py prepare "
                           "nowhere` first\n")


def test_score_refuses_an_unknown_inference_setting_before_exporting_anything(tmp_path, photo_colour):
    (tmp_path / "full").mkdir()
    done = photo_colour("score", tmp_path, tmp_path / "sheet.jpg", "a=run@0.2", "b=run@neutral_odds=1.5,odds=2")
    assert done.returncode == 2
    assert done.stderr == ("photo_colour.py: error: unknown setting 'odds=2': give a class_temperature (a number) "
                           "or one of class_temperature=<value>, self_ensemble=<value>, neutral_odds=<value>, "
                           "neutral_blur=<value>, inference_scale=<value>\n")
    assert not (tmp_path / "models").exists()
