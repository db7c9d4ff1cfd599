"""ONNX export and tiled, resumable archive translation."""

import mlflow
import numpy as np
import onnx
import pytest
import tifffile
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from conftest import FAST, interrupt_translation, make_scans, run_translate, tiny_model, tree_digest
from imgtrans.cli import main
from imgtrans.data.codec import Codec
from imgtrans.errors import ImgtransError
from imgtrans.infer.archive import MANIFEST
from imgtrans.infer.io import read_scan
from imgtrans.infer.session import OnnxGenerator
from imgtrans.infer.tiling import blend_window, tile_starts, translate_bands
from imgtrans.onnx_export import Sidecar, export_model, sidecar_path


# --- export -------------------------------------------------------------------

@pytest.mark.parametrize("netG,norm", [("unet", "batch"), ("resnet_6blocks", "instance"), ("unet", "none")])
def test_export_parity_at_two_sizes(tmp_path, netG, norm):
    model = tiny_model(netG, norm, Codec(False))
    path, sidecar = export_model(model, tmp_path / "g")
    assert sidecar.parity_max_abs_error < 1e-4
    session = OnnxGenerator(path, "cpu")
    m = max(sidecar.size_multiple, 64)
    for shape in [(1, 3, m, m * 2), (3, 3, 2 * m, m)]:
        x = torch.rand(shape) * 2 - 1
        with torch.no_grad():
            expected = model.netG(x).numpy()
        assert np.abs(session(x.numpy()) - expected).max() < 1e-4


def test_fp16_export_keeps_normalisation_in_fp32(tmp_path):
    path, sidecar = export_model(tiny_model("resnet_6blocks", "instance", Codec(False)), tmp_path / "h",
                                 precision="fp16")
    assert sidecar.precision == "fp16" and sidecar.parity_max_abs_error < 3e-2
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O
    half = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT16}
    assert half, "weights should be fp16"
    norm_inputs = {i for node in graph.node if node.op_type == "InstanceNormalization" for i in node.input[1:]}
    assert norm_inputs and not norm_inputs & half


def test_sidecar_round_trip(exported):
    sidecar = Sidecar.load(sidecar_path(exported))
    assert sidecar.codec_obj == Codec(True, "lab")
    assert (sidecar.input_channels, sidecar.output_channels) == (1, 2)
    assert sidecar.size_multiple == 64 and sidecar.tile_size % 64 == 0
    assert sidecar.config["ngf"] == 4 and sidecar.config["netG"] == "unet"
    sidecar.save(exported.with_name("copy.json"))
    assert Sidecar.load(exported.with_name("copy.json")) == sidecar


def test_missing_sidecar_is_a_clear_error(tmp_path, exported):
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(exported.read_bytes())
    with pytest.raises(ImgtransError, match="sidecar .* not found"):
        OnnxGenerator(lonely)


# --- tiling ----------------------------------------------------------------------

def test_tile_starts_cover_with_overlap():
    assert tile_starts(100, 128, 16) == [0]
    starts = tile_starts(1000, 256, 32)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 32 for a, b in zip(starts, starts[1:]))


def test_blend_window_is_positive_and_flat_inside():
    w = blend_window(64, 64, 16)
    assert w.min() > 0 and w[16:48, 16:48].min() == 1.0


def run_tiled(image: np.ndarray, fn, tile: int, overlap: int) -> np.ndarray:
    c, h, w = image.shape
    out = np.zeros((c, h, w), np.float32)
    covered = np.zeros(h, int)
    for top, rows in translate_bands(lambda a, b: image[:, a:b], h, w, translate=fn, out_channels=c,
                                     tile=tile, overlap=overlap, batch_size=3):
        out[:, top:top + rows.shape[1]] = rows
        covered[top:top + rows.shape[1]] += 1
    assert (covered == 1).all()  # every row produced exactly once, top to bottom
    return out


def test_pointwise_network_has_no_seams():
    image = np.random.default_rng(0).random((2, 150, 230), dtype=np.float32)
    out = run_tiled(image, lambda x: np.tanh(x) * 0.5, tile=64, overlap=16)
    np.testing.assert_allclose(out, np.tanh(image) * 0.5, atol=1e-6)


def box_filter(x: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(x)
    padded = torch.nn.functional.pad(t, (2, 2, 2, 2), mode="reflect")
    return torch.nn.functional.avg_pool2d(padded, 5, stride=1).numpy()


def test_local_network_agrees_away_from_seams_and_blends_smoothly():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:200, 0:300].astype(np.float32)
    image = (np.sin(xx / 17) * np.cos(yy / 23))[None] + 0.05 * rng.random((1, 200, 300), dtype=np.float32)
    whole = box_filter(image[None])[0]
    tiled = run_tiled(image, box_filter, tile=64, overlap=16)
    error = np.abs(tiled - whole)
    assert error.max() < 0.05  # the receptive field only changes 2 px at tile borders, and blending hides it
    row_starts, col_starts = tile_starts(200, 64, 16), tile_starts(300, 64, 16)
    interior = np.ones((200, 300), bool)
    for s in row_starts:
        interior[max(s - 3, 0):s + 3] = False
        interior[max(s + 61, 0):s + 67] = False
    for s in col_starts:
        interior[:, max(s - 3, 0):s + 3] = False
        interior[:, max(s + 61, 0):s + 67] = False
    assert error[0][interior[None][0]].max() < 1e-5
    # No visible seam: output gradients near tile borders look like gradients elsewhere.
    grad = np.abs(np.diff(tiled[0], axis=1))
    assert grad.max() <= np.abs(np.diff(whole[0], axis=1)).max() * 1.2


# --- archives ----------------------------------------------------------------------

def test_archive_outputs_match_input_sizes_and_report_corrupt_files(tmp_path, exported, capsys):
    scans = make_scans(tmp_path / "scans")
    (scans / "bad.png").write_bytes(b"\x89PNG broken")
    before = tree_digest(scans)
    assert run_translate(exported, scans, tmp_path / "out") == 1
    assert tree_digest(scans) == before  # the input folder is untouched
    out = tmp_path / "out"
    assert tifffile.imread(out / "big.tif").shape == (300, 200, 3)
    assert Image.open(out / "sub" / "small.png").size == (50, 70)
    assert Image.open(out / "color.jpg").size == (90, 40)
    manifest = (out / "manifest.csv").read_text()
    assert "bad.png" in manifest and "failed" in manifest and manifest.count(",done,") == 3
    err = capsys.readouterr().err
    assert "bad.png" in err and "1 file(s) could not be translated" in err
    assert not list(out.rglob("*.part"))


def test_interrupted_archive_resumes_with_nothing_lost(tmp_path, exported, monkeypatch):
    scans = make_scans(tmp_path / "scans")
    assert run_translate(exported, scans, tmp_path / "reference") == 0

    interrupt_translation(monkeypatch, on_call=2)
    assert run_translate(exported, scans, tmp_path / "out") == 130
    done_first = {p.name for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert done_first == {"big.tif", MANIFEST} and not list((tmp_path / "out").rglob("*.part"))
    monkeypatch.undo()
    assert run_translate(exported, scans, tmp_path / "out") == 0
    manifest = (tmp_path / "out" / "manifest.csv").read_text()
    assert manifest.count(",skipped,") == 1 and manifest.count(",done,") == 2
    ref, out = tree_digest(tmp_path / "reference"), tree_digest(tmp_path / "out")
    ref.pop("manifest.csv"), out.pop("manifest.csv")
    assert ref == out


def test_output_inside_input_is_refused(tmp_path, exported, capsys):
    scans = make_scans(tmp_path / "scans")
    assert run_translate(exported, scans, scans / "out") == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (scans / "out").exists()


def test_geotiff_georeferencing_is_kept(tmp_path, exported):
    scans = tmp_path / "geo"
    scans.mkdir()
    geo = [
        (33550, "d", 3, (0.5, 0.5, 0.0), False),                                   # pixel scale
        (33922, "d", 12, (0, 0, 0, 440720.0, 3751320.0, 0, 10, 20, 0, 440725.0, 3751310.0, 0), False),  # GCPs
        (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32611), False),  # EPSG:32611
        (34737, "s", 0, "WGS 84 / UTM zone 11N|", False),
    ]
    tifffile.imwrite(scans / "ortho.tif", (np.random.default_rng(0).random((90, 130)) * 65535).astype(np.uint16),
                     extratags=geo)
    assert run_translate(exported, scans, tmp_path / "out") == 0
    with tifffile.TiffFile(tmp_path / "out" / "ortho.tif") as tif:
        tags = tif.pages[0].tags
        assert tif.pages[0].shape == (90, 130, 3)
        assert tags[33550].value == (0.5, 0.5, 0.0)
        assert tags[33922].value == geo[1][3]
        assert tags[34735].value == geo[2][3]
        assert tags[34737].value.startswith("WGS 84 / UTM zone 11N")


def test_16bit_scan_keeps_its_range(tmp_path):
    path = tmp_path / "g16.tif"
    tifffile.imwrite(path, np.array([[0, 65535], [32768, 1000]], np.uint16))
    scan = read_scan(path)
    assert scan.pixels.dtype == np.uint16
    np.testing.assert_allclose(scan.rows(0, 2)[0], np.array([[0, 1], [32768 / 65535, 1000 / 65535]]), rtol=1e-6)


def test_list_file_input(tmp_path, exported):
    make_scans(tmp_path / "scans")
    listing = tmp_path / "todo.txt"
    listing.write_text("# two of three\nscans/big.tif\nscans/sub/small.png\n")
    assert run_translate(exported, listing, tmp_path / "out") == 0
    assert (tmp_path / "out" / "scans" / "big.tif").exists() and not (tmp_path / "out" / "scans" / "color.jpg").exists()


# --- through the commands -------------------------------------------------------------

def test_export_command_from_a_run(facades, tmp_path, aerial):
    assert main(["pix2pix", "--dataset", str(aerial), "--color-space", "lab", *FAST, "--max-steps", "1"]) == 0
    run_id = mlflow.search_runs(search_all_experiments=True).iloc[0].run_id
    assert main(["export", "--run-id", run_id, "--output", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x.onnx").exists() and (tmp_path / "x.json").exists()
    export_run = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                  if r.info.run_id != run_id][0]
    assert export_run.data.metrics["export/parity_max_abs_error"] < 1e-4
    assert "export" in {a.path for a in MlflowClient().list_artifacts(export_run.info.run_id)}
    assert main(["export", "--run-id", "feedbeef"]) == 2


def test_results_are_ordinary_files_not_private_ones(tmp_path):
    import os
    import stat

    from imgtrans.files import FILE_MODE, atomic_write_bytes

    umask = os.umask(0)
    os.umask(umask)
    path = atomic_write_bytes(tmp_path / "out" / "x.bin", b"data")
    assert stat.S_IMODE(os.stat(path).st_mode) == FILE_MODE == 0o666 & ~umask
