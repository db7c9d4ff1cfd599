"""`translate` on real archives: output collisions, what "already done" means, interrupted and killed runs,
16-bit and float scans, a corrupt sidecar and a GPU provider that is not there (issue #13)."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import interrupt_translation, make_scans, run_translate, tree_digest
from PIL import Image

from imgtrans.data import images
from imgtrans.errors import ImgtransError
from imgtrans.export.sidecar import sidecar_path
from imgtrans.infer import io as infer_io
from imgtrans.infer import manifest, session
from imgtrans.infer.manifest import MANIFEST


def manifest_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / MANIFEST, newline="") as fh:
        return {row["output"]: row for row in csv.DictReader(fh)}


def statuses(out: Path) -> dict[str, str]:
    return {output: row["status"] for output, row in manifest_rows(out).items()}


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgtrans: error: "), lines
    return lines[0]


def outputs(out: Path) -> dict[str, str]:
    digest = tree_digest(out)
    digest.pop(MANIFEST)
    return digest


# --- collisions ---------------------------------------------------------------------------

def test_two_inputs_with_one_output_are_refused_naming_both(tmp_path, exported, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(scans / "scan.png")
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(scans / "scan.bmp")
    assert run_translate(exported, scans, tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert "scan.png" in line and "scan.bmp" in line
    assert not (tmp_path / "out").exists()  # refused before anything was translated


@pytest.mark.parametrize("listing,expected", [
    ("scans/big.tif\nscans/./big.tif\n", "listed twice"),
    ("a/x.png\nb/x.png\n", "a/x.png and"),  # both outside the list's folder: outputs named after the file only
], ids=["same-file", "same-name"])
def test_list_file_entries_with_one_output_are_refused(tmp_path, exported, capsys, listing, expected):
    make_scans(tmp_path / "scans")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / folder / "x.png")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "todo.txt").write_text("".join(f"../{line}\n" for line in listing.splitlines()))
    assert run_translate(exported, lists / "todo.txt", tmp_path / "out") == 2
    assert expected in one_error_line(capsys)


def test_output_folder_holding_the_input_folder_is_refused(tmp_path, exported, capsys):
    scans = make_scans(tmp_path / "archive" / "scans")
    (scans / ".notes.part").write_text("the owner's, not ours")
    assert run_translate(exported, scans, tmp_path / "archive") == 2
    assert "contains the input folder" in one_error_line(capsys)
    assert (scans / ".notes.part").exists()


# --- what "already done" means ----------------------------------------------------------------

def test_manifest_records_each_input_and_reruns_skip_only_what_it_vouches_for(tmp_path, exported):
    scans = make_scans(tmp_path / "scans")
    out = tmp_path / "out"
    assert run_translate(exported, scans, out) == 0
    rows = manifest_rows(out)
    big = rows["big.tif"]
    stat = (scans / "big.tif").stat()
    assert big["input"] == str((scans / "big.tif").absolute())
    assert (int(big["input_size"]), int(big["input_mtime_ns"])) == (stat.st_size, stat.st_mtime_ns)
    assert run_translate(exported, scans, out) == 0
    assert run_translate(exported, scans, out) == 0  # skipped records keep what makes them skippable
    assert set(statuses(out).values()) == {"skipped"}
    assert manifest_rows(out)["big.tif"]["input_mtime_ns"] == big["input_mtime_ns"]


def test_changed_input_is_translated_again(tmp_path, exported):
    scans = make_scans(tmp_path / "scans")
    out = tmp_path / "out"
    assert run_translate(exported, scans, out) == 0
    before = outputs(out)
    Image.fromarray(np.full((70, 50), 30, np.uint8)).save(scans / "sub" / "small.png")
    os.utime(scans / "sub" / "small.png", ns=(1, 1))
    assert run_translate(exported, scans, out) == 0
    assert statuses(out) == {"big.tif": "skipped", "color.jpg": "skipped", "sub/small.png": "done"}
    assert outputs(out)["sub/small.png"] != before["sub/small.png"]


def test_another_model_or_tiling_translates_again(tmp_path, exported):
    scans = make_scans(tmp_path / "scans")
    out = tmp_path / "out"
    assert run_translate(exported, scans, out) == 0
    import onnx

    retrained = tmp_path / "retrained.onnx"
    shutil.copy(exported.with_suffix(".json"), retrained.with_suffix(".json"))
    model = onnx.load(str(exported))
    model.doc_string = "retrained"  # another file: another digest
    onnx.save(model, str(retrained))
    assert run_translate(retrained, scans, out) == 0
    assert set(statuses(out).values()) == {"done"}
    assert run_translate(retrained, scans, out, "--overlap", "16") == 0
    assert set(statuses(out).values()) == {"done"}
    assert run_translate(retrained, scans, out, "--overlap", "16") == 0
    assert set(statuses(out).values()) == {"skipped"}


def test_output_without_a_manifest_record_is_replaced(tmp_path, exported):
    scans = make_scans(tmp_path / "scans")
    assert run_translate(exported, scans, tmp_path / "reference") == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / "big.tif").write_bytes(b"left over by something else")
    assert run_translate(exported, scans, out) == 0
    assert set(statuses(out).values()) == {"done"}
    assert outputs(out) == outputs(tmp_path / "reference")


def test_a_manifest_found_through_another_spelling_of_the_input_folder_still_skips(tmp_path, exported):
    scans = make_scans(tmp_path / "scans")
    (tmp_path / "elsewhere").mkdir()
    out = tmp_path / "out"
    assert run_translate(exported, tmp_path / "elsewhere" / ".." / "scans", out) == 0
    assert run_translate(exported, scans, out) == 0
    assert set(statuses(out).values()) == {"skipped"}


def test_an_input_folder_reached_through_a_link_and_dotdot_is_read_where_it_is(tmp_path, exported):
    make_scans(tmp_path / "deep" / "scans")
    (tmp_path / "deep" / "inner").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "deep" / "inner")  # link/.. is deep/, not tmp_path
    out = tmp_path / "out"
    assert run_translate(exported, tmp_path / "link" / ".." / "scans", out) == 0
    assert set(statuses(out).values()) == {"done"}
    assert manifest_rows(out)["big.tif"]["input"] == str(tmp_path / "deep" / "scans" / "big.tif")


@pytest.mark.parametrize("text", ["id,name\n1,notes\n", "input,output,status,reviewer\na.png,a.png,ok,Ann\n"],
                         ids=["other-columns", "more-columns"])
def test_a_file_named_like_the_manifest_that_is_not_one_is_refused_and_kept(tmp_path, exported, capsys, text):
    scans = make_scans(tmp_path / "scans")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(text)
    assert run_translate(exported, scans, out) == 2
    assert "is not a manifest of `imgtrans translate`" in one_error_line(capsys)
    assert (out / MANIFEST).read_text() == text and sorted(out.iterdir()) == [out / MANIFEST]


def test_a_bare_flag_before_the_folders_leaves_them_to_be_the_folders(tmp_path, exported, capsys):
    from imgtrans.cli import main

    scans, out = make_scans(tmp_path / "scans"), tmp_path / "out"
    assert main(["translate", "--verbose", str(scans), str(out), "--model", str(exported), "--no-progress"]) == 0
    assert set(statuses(out).values()) == {"done"} and "imgtrans: " in capsys.readouterr().err  # verbose: tilings
    assert main(["translate", "--verbose", "false", str(scans), str(out), "--model", str(exported),
                 "--no-progress"]) == 0


def test_a_folder_given_both_by_position_and_by_option_must_be_one(tmp_path, exported, capsys):
    from conftest import one_line_error

    scans = make_scans(tmp_path / "scans")
    assert run_translate(exported, scans, tmp_path / "a", "--output", str(tmp_path / "b")) == 2
    assert f"OUTPUT {tmp_path / 'a'} and --output {tmp_path / 'b'} disagree" in one_line_error(capsys)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert run_translate(exported, scans, tmp_path / "a", "--output", f"{tmp_path / 'a'}/") == 0  # the same: fine


def test_a_second_run_into_a_folder_being_written_is_refused(tmp_path, exported, capsys):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    held = os.open(out, os.O_RDONLY)  # as the first run holds it
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert run_translate(exported, make_scans(tmp_path / "scans"), out) == 2
        assert "another `imgtrans translate` is writing into" in one_error_line(capsys)
        assert list(out.iterdir()) == []
    finally:
        os.close(held)
    assert run_translate(exported, tmp_path / "scans", out) == 0


def test_a_model_that_outputs_nan_fails_the_file_instead_of_writing_it(tmp_path, exported, monkeypatch):
    real = session.OnnxGenerator.run_bound

    def diverged(self, x, out=None):
        return real(self, x, out).fill_(float("nan"))

    monkeypatch.setattr(session.OnnxGenerator, "run_bound", diverged)
    out = tmp_path / "out"
    assert run_translate(exported, make_scans(tmp_path / "scans"), out) == 2
    rows = manifest_rows(out)
    assert {row["status"] for row in rows.values()} == {"failed"} and sorted(outputs(out)) == []
    assert "the model's output is NaN or infinite in rows" in rows["big.tif"]["error"]


# --- interrupted and killed runs ------------------------------------------------------------------

def test_interrupted_run_records_what_it_finished(tmp_path, exported, monkeypatch):
    scans = make_scans(tmp_path / "scans")
    out = tmp_path / "out"
    interrupt_translation(monkeypatch, on_call=3)
    assert run_translate(exported, scans, out) == 130
    assert statuses(out) == {"big.tif": "done", "color.jpg": "done"}
    monkeypatch.undo()
    assert run_translate(exported, scans, out) == 0
    assert statuses(out) == {"big.tif": "skipped", "color.jpg": "skipped", "sub/small.png": "done"}


def test_manifest_is_saved_during_the_run_not_only_at_its_end(tmp_path, exported, monkeypatch):
    """What a `kill -9`, which runs no cleanup, would find on disk."""
    scans = make_scans(tmp_path / "scans")
    out = tmp_path / "out"
    monkeypatch.setattr(manifest, "MANIFEST_SAVE_EVERY_S", 0.0)
    on_disk = []

    def look_at_the_manifest():
        on_disk.append(set(statuses(out)) if (out / MANIFEST).exists() else set())

    interrupt_translation(monkeypatch, on_call=3, check=look_at_the_manifest)
    run_translate(exported, scans, out)
    assert on_disk == [set(), {"big.tif"}, {"big.tif", "color.jpg"}]


def test_temporary_files_of_a_killed_run_are_removed(tmp_path, exported):
    scans = make_scans(tmp_path / "scans")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale = [out / ".big.tif.k2j4x8ab.tif.part", out / "sub" / ".small.png.0a9s8d7f.png.part",
             out / ".manifest.csv.x81kq0zz"]
    for path in stale:
        path.write_bytes(b"half a file")
    assert run_translate(exported, scans, out) == 0
    assert sorted(p.name for p in out.rglob(".*")) == []
    assert set(outputs(out)) == {"big.tif", "color.jpg", "sub/small.png"}


def test_an_output_whose_writer_fails_to_start_leaves_no_temporary_file(tmp_path, monkeypatch):
    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(infer_io.tifffile, "memmap", no_room)
    (tmp_path / "out").mkdir()
    with pytest.raises(OSError):
        infer_io.OutputWriter(tmp_path / "out" / "scan.tif", 8, 8, [])
    assert list((tmp_path / "out").iterdir()) == []


# --- 16-bit and float scans ------------------------------------------------------------------------

def test_no_data_in_a_float_scan_is_read_as_black_not_spread_over_the_output(tmp_path, exported):
    gray = np.random.default_rng(1).random((64, 64), dtype=np.float32)
    gray[:8, :8] = np.nan
    scan = tmp_path / "scans" / "nodata.tif"
    scan.parent.mkdir()
    tifffile.imwrite(scan, gray)
    assert np.array_equal(infer_io.read_scan(scan).rows(0, 8)[0, :8, :8], torch.zeros(8, 8))
    assert run_translate(exported, scan, tmp_path / "out") == 0
    result = tifffile.imread(tmp_path / "out" / "nodata.tif")
    assert statuses(tmp_path / "out") == {"nodata.tif": "done"} and result[8:, 8:].std() > 0

def test_16bit_rgb_tiff_keeps_its_precision(tmp_path):
    values = np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 1001 + 7  # not multiples of 257
    tifffile.imwrite(tmp_path / "rgb16.tif", values, photometric="rgb")
    np.testing.assert_array_equal(images.load_image(tmp_path / "rgb16.tif"), values / np.float32(65535))


def test_16bit_rgb_png_keeps_its_precision(tmp_path):
    values = np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 1001 + 7
    (tmp_path / "rgb16.png").write_bytes(infer_io.png16_bytes(values))
    np.testing.assert_array_equal(images.read_pixels(tmp_path / "rgb16.png"), values)
    np.testing.assert_array_equal(images.load_image(tmp_path / "rgb16.png"), values / np.float32(65535))


def test_float_rgb_tiff_is_read_as_unit_range_clipped(tmp_path):
    values = np.repeat(np.array([[-0.5, 0.25], [0.5, 2.0]], np.float32)[..., None], 3, axis=-1)
    tifffile.imwrite(tmp_path / "f.tif", values, photometric="rgb")
    np.testing.assert_array_equal(images.load_image(tmp_path / "f.tif"), np.clip(values, 0, 1))


@pytest.fixture
def scans16(tmp_path) -> Path:
    scans = make_scans(tmp_path / "scans16")  # 8-bit TIFF, PNG and JPEG ...
    gray = (np.random.default_rng(3).random((60, 70)) * 65535).astype(np.uint16)
    tifffile.imwrite(scans / "gray16.tif", gray)  # ... and 16-bit ones
    Image.fromarray(gray).save(scans / "gray16.png")
    return scans


def test_16bit_scans_give_16bit_results_by_default(tmp_path, exported, scans16):
    assert run_translate(exported, scans16, tmp_path / "auto") == 0
    assert run_translate(exported, scans16, tmp_path / "eight", "--output-bits", "8") == 0
    for name in ("gray16.tif", "gray16.png"):
        auto = images.read_pixels(tmp_path / "auto" / name)
        eight = images.read_pixels(tmp_path / "eight" / name)
        assert auto.dtype == np.uint16 and eight.dtype == np.uint8 and auto.shape == eight.shape == (60, 70, 3)
        assert np.abs(auto / 257.0 - eight).max() <= 1
    assert images.read_pixels(tmp_path / "auto" / "big.tif").dtype == np.uint8  # 8-bit scan, 8-bit result


def test_output_bits_16_widens_8bit_scans_but_jpeg_stays_8bit(tmp_path, exported):
    scans = make_scans(tmp_path / "scans")
    assert run_translate(exported, scans, tmp_path / "out", "--output-bits", "16") == 0
    assert tifffile.imread(tmp_path / "out" / "big.tif").dtype == np.uint16
    assert images.read_pixels(tmp_path / "out" / "sub" / "small.png").dtype == np.uint16
    assert Image.open(tmp_path / "out" / "color.jpg").mode == "RGB"


# --- the model and the provider -------------------------------------------------------------------

@pytest.mark.parametrize("change", ["{not json", "[1, 2]", '{"format": "imgtrans-onnx/1", "model": "x"}',
                                    {"size_multiple": "abc"}, {"size_multiple": 0}, {"precision": "fp8"},
                                    {"codec": {"colorization": "yes"}}, b"\xff\xfe"],
                         ids=["invalid", "not-an-object", "incomplete", "text-multiple", "zero-multiple",
                              "unknown-precision", "bad-codec", "not-utf8"])
def test_corrupt_sidecar_is_one_line_saying_to_re_export(tmp_path, exported, capsys, change):
    model = tmp_path / "m.onnx"
    shutil.copy(exported, model)
    if isinstance(change, dict):
        text = json.dumps({**json.loads(sidecar_path(exported).read_text()), **change})
        sidecar_path(model).write_text(text)
    elif isinstance(change, bytes):
        sidecar_path(model).write_bytes(change)
    else:
        sidecar_path(model).write_text(change)
    scans = make_scans(tmp_path / "scans")
    assert run_translate(model, scans, tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert str(sidecar_path(model)) in line and "re-export" in line


@pytest.mark.parametrize("model,extra,message", [
    ("truncated.onnx", (), "is not a readable ONNX model"),
    ("sidecar.json", (), "is not an .onnx file"),
    ("m.onnx", ("--margin", "1100"), "the largest tile for this model"),  # tile 0: each image's own tile
])
def test_a_bad_model_or_tiling_is_refused_before_anything_is_written(tmp_path, exported, capsys, model, extra,
                                                                     message):
    path = tmp_path / "models" / model
    path.parent.mkdir()
    shutil.copy(sidecar_path(exported), sidecar_path(path))
    data = exported.read_bytes()
    path.write_bytes(data[:len(data) // 2] if model == "truncated.onnx" else data)
    assert run_translate(path, make_scans(tmp_path / "scans"), tmp_path / "out", *extra) == 2
    assert message in one_error_line(capsys) and not (tmp_path / "out").exists()


def test_gpu_provider_without_a_gpu_is_refused(tmp_path, exported, capsys, monkeypatch):
    monkeypatch.setattr(session, "_gpu_present", lambda: False)
    scans = make_scans(tmp_path / "scans")
    assert run_translate(exported, scans, tmp_path / "out", "--provider", "cuda") == 2
    line = one_error_line(capsys)
    assert "cuda" in line and "--provider cpu or auto" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA cannot start")
def test_provider_that_onnxruntime_cannot_start_is_refused(exported, monkeypatch):
    monkeypatch.setattr(session, "usable_providers", lambda: ["cuda", "cpu"])  # as if a GPU were there
    with pytest.raises(ImgtransError, match="provider cuda could not be started"):
        session.OnnxGenerator(exported, "cuda")
