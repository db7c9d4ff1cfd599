"""ONNX export and tiled, resumable archive translation."""

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
import tifffile
import torch
from conftest import (
    FAST,
    interrupt_translation,
    make_scans,
    run_translate,
    tiny_model,
    tree_digest,
    write_image,
)
from mlflow.tracking import MlflowClient
from PIL import Image

from imgtrans.cli import main
from imgtrans.data.codec import Codec
from imgtrans.data.images import to_float
from imgtrans.errors import ImgtransError
from imgtrans.export.onnx import export_model
from imgtrans.export.sidecar import Sidecar, sidecar_path
from imgtrans.infer.io import Scan, read_scan
from imgtrans.infer.manifest import MANIFEST
from imgtrans.infer.session import OnnxGenerator
from imgtrans.infer.tile_rule import TileRule
from imgtrans.infer.tiling import (
    SeamEnergy,
    Span,
    Tiling,
    seam_positions,
    span_weights,
    spans,
    translate_bands,
)

# --- export -------------------------------------------------------------------

@pytest.mark.parametrize("netG,norm", [("unet", "batch"), ("resnet_6blocks", "instance"), ("unet", "none"),
                                       ("resnet18_unet", "batch"), ("efficientnet_lite0_unet", "batch")])
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
        assert np.abs(session.run_bound(x).numpy() - expected).max() < 1e-4


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


def test_io_bound_calls_match_plain_onnxruntime(exported):
    """`run_bound`: ONNX Runtime reading and writing the tensors' own memory gives what a plain run returns."""
    session = OnnxGenerator(exported, "cpu")
    x = torch.rand(2, 1, 64, 128) * 2 - 1
    out = torch.full((2, 2, 64, 128), float("nan"))
    assert session.run_bound(x, out) is out
    assert np.array_equal(out.numpy(), session.session.run(None, {"input": x.numpy()})[0])
    with pytest.raises(ImgtransError, match="run_bound needs float32 tensors on cpu, got torch.float64"):
        session.run_bound(x.double())


def test_gpu_providers_get_their_options(exported, tmp_path):
    from imgtrans.infer.session import PROVIDERS, provider_options

    trt = provider_options(PROVIDERS["tensorrt"], exported, 1, cuda_graph=False)
    assert trt["device_id"] == "1" and trt["trt_engine_cache_enable"] == "True" and trt["trt_fp16_enable"] == "False"
    cache = Path(trt["trt_engine_cache_path"])
    assert cache.parent == exported.with_suffix(".trt")
    again = tmp_path / exported.name  # the same file name, other weights: engines of its own
    again.write_bytes(exported.read_bytes() + b"\0")
    assert Path(provider_options(PROVIDERS["tensorrt"], again, 1, cuda_graph=False)["trt_engine_cache_path"]).name \
        != cache.name
    assert provider_options(PROVIDERS["cuda"], exported, 0, cuda_graph=True)["enable_cuda_graph"] == "1"
    assert "enable_cuda_graph" not in provider_options(PROVIDERS["cuda"], exported, 0, cuda_graph=False)


def test_sidecar_round_trip(exported):
    sidecar = Sidecar.load(sidecar_path(exported))
    assert sidecar.codec_obj == Codec(True, "lab")
    assert (sidecar.input_channels, sidecar.output_channels) == (1, 2)
    assert sidecar.size_multiple == 64 and sidecar.tile_size % 64 == 0
    assert sidecar.config["ngf"] == 4 and sidecar.config["netG"] == "unet"
    sidecar.save(exported.with_name("copy.json"))
    assert Sidecar.load(exported.with_name("copy.json")) == sidecar


def test_the_default_tile_is_the_whole_image_when_it_fits_else_the_largest_that_does(exported, tmp_path, capsys):
    sidecar = Sidecar.load(sidecar_path(exported))
    assert sidecar.bytes_per_pixel > 0 and sidecar.receptive_radius == 0  # a U-Net sees its whole input
    rule = TileRule.create(sidecar, "CPUExecutionProvider")
    assert rule.max_tile % 64 == 0 and rule.max_tile >= 512
    # One tile, a rectangle: each side rounded up to the multiple 64 only.
    assert [(t.height, t.width) for t in (rule.for_image(150, 230), rule.for_image(100, 2000))] == [
        (192, 256), (128, 2048)]
    small = dataclasses.replace(rule, max_tile=128)
    assert small.for_image(300, 500) == Tiling(128, 128, 16, 16)
    assert small.batch_size(Tiling(128, 128, 16, 16), 8) == 8
    assert dataclasses.replace(small, budget=small.bytes_per_pixel * 128 ** 2 * 3).batch_size(
        Tiling(128, 128, 16, 16), 8) == 3  # three tiles of 128 px fit the budget, not eight
    with pytest.raises(ImgtransError, match="tile 64 leaves nothing"):
        TileRule.create(sidecar, "CPUExecutionProvider", tile=64, margin=28)

    scans = make_scans(tmp_path / "scans")
    assert run_translate(exported, scans, tmp_path / "whole", "--verbose") == 0
    err = capsys.readouterr().err
    assert err.count(": one tile") == 3
    assert run_translate(exported, scans, tmp_path / "tiled", "--verbose", "--tile", "64") == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if "big.tif" in x)
    assert "7 × 5 tiles of 64×64 px (margin 8, overlap 8), seam energy" in line


def test_outputs_do_not_depend_on_the_device_its_memory_or_the_tile_setting(exported, tmp_path, monkeypatch):
    """The automatic tile comes from the model and the image: a device with little free memory (which only
    batches fewer tiles), a large --tile, and the whole-image PyTorch pass all give the same pixels."""
    from imgtrans.infer import session as session_module
    from imgtrans.infer import tile_rule

    scans = make_scans(tmp_path / "scans")
    shapes = []
    real_call = session_module.OnnxGenerator.run_bound
    monkeypatch.setattr(session_module.OnnxGenerator, "run_bound",
                        lambda self, x, *a, **k: shapes.append(tuple(x.shape)) or real_call(self, x, *a, **k))
    outputs = {}
    for name, free, extra in (("small device", 10 ** 7, []), ("large device", 10 ** 12, []),
                              ("large tile", 10 ** 12, ["--tile", "1024"])):
        monkeypatch.setattr(tile_rule, "free_memory", lambda provider, device_id=0, free=free: free)
        assert run_translate(exported, scans, tmp_path / name, *extra) == 0
        outputs[name] = {k: v for k, v in tree_digest(tmp_path / name).items() if k != "manifest.csv"}
    assert outputs["small device"] == outputs["large device"] == outputs["large tile"]
    assert (1, 1, 128, 64) in shapes  # the 70 × 50 scan: padded to the multiple 64 only, not to a square tile

    model = tiny_model()
    rgb = torch.from_numpy(np.asarray(Image.open(scans / "color.jpg"), np.float32) / 255).permute(2, 0, 1)[None]
    x = model.codec.encode_input(rgb)
    expected = model.codec.decode_output(x, model.translate(x))[0].permute(1, 2, 0).numpy() * 255
    got = np.asarray(Image.open(tmp_path / "large device" / "color.jpg"), np.float32)
    assert np.abs(got - expected).mean() < 2  # the same pass, up to float rounding and JPEG's loss


def test_a_strip_is_translated_as_a_strip(exported, tmp_path, monkeypatch):
    from imgtrans.infer import session as session_module

    shapes = []
    real_call = session_module.OnnxGenerator.run_bound
    monkeypatch.setattr(session_module.OnnxGenerator, "run_bound",
                        lambda self, x, *a, **k: shapes.append(tuple(x.shape)) or real_call(self, x, *a, **k))
    write_image(tmp_path / "strips" / "strip.png", np.full((100, 2000), 128, np.uint8))
    assert run_translate(exported, tmp_path / "strips", tmp_path / "out") == 0
    assert shapes == [(1, 1, 128, 2048)]  # not 2048 × 2048


def test_missing_sidecar_is_a_clear_error(tmp_path, exported):
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(exported.read_bytes())
    with pytest.raises(ImgtransError, match="sidecar .* not found"):
        OnnxGenerator(lonely)


# --- tiling ----------------------------------------------------------------------

def test_spans_cover_the_image_with_cores_inside_their_windows():
    assert spans(100, 128, 16, 16) == [Span(0, 0, 100)]
    plan = spans(1000, 256, 32, 32)
    assert plan[0].core_start == 0 and plan[-1].core_end == 1000
    for a, b in zip(plan, plan[1:]):
        assert a.core_end - b.core_start >= 32  # neighbours cross-fade over at least `overlap` px
    for s in plan:
        assert 0 <= s.window <= s.core_start < s.core_end <= s.window + 256 <= 1000
        # every core pixel away from the image border has `margin` px of context on both sides
        assert s.core_start == 0 or s.core_start - s.window >= 32
        assert s.core_end == 1000 or s.window + 256 - s.core_end >= 32
    weights = sum(np.pad(span_weights(s, 1000, 256, 32).numpy(), (s.window, 1000 - 256 - s.window)) for s in plan)
    assert weights.min() > 0.99 and weights.max() < 1.01  # cross-fades sum to one


def run_tiled(image: np.ndarray, fn, tiling: Tiling) -> tuple[np.ndarray, float | None]:
    """The tiled output of the numpy network `fn`, and its seam energy."""
    c, h, w = image.shape
    out = np.zeros((fn(np.zeros((1, c, tiling.height, tiling.width), np.float32)).shape[1], h, w), np.float32)
    covered = np.zeros(h, int)
    rows, cols = tiling.plans(h, w)
    seams = SeamEnergy(seam_positions(rows), seam_positions(cols))
    for top, band in translate_bands(lambda a, b: torch.from_numpy(image[:, a:b]), h, w,
                                     translate=lambda x: torch.from_numpy(fn(x.numpy())), out_channels=out.shape[0],
                                     tiling=tiling, batch_size=3):
        band = band.numpy()
        out[:, top:top + band.shape[1]] = band
        covered[top:top + band.shape[1]] += 1
        seams.update(band)
    assert (covered == 1).all()  # every row produced exactly once, top to bottom
    return out, seams.ratio()


def test_pointwise_network_has_no_seams():
    image = np.random.default_rng(0).random((2, 150, 230), dtype=np.float32)
    out, _ = run_tiled(image, lambda x: np.tanh(x) * 0.5, Tiling(64, 64, 8, 16))
    np.testing.assert_allclose(out, np.tanh(image) * 0.5, atol=1e-6)


def box_filter(x: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(x)
    padded = torch.nn.functional.pad(t, (2, 2, 2, 2), mode="reflect")
    return torch.nn.functional.avg_pool2d(padded, 5, stride=1).numpy()


def test_margins_of_the_receptive_radius_reproduce_the_whole_image():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:200, 0:300].astype(np.float32)
    image = (np.sin(xx / 17) * np.cos(yy / 23))[None] + 0.05 * rng.random((1, 200, 300), dtype=np.float32)
    whole = box_filter(image[None])[0]
    exact, _ = run_tiled(image, box_filter, Tiling(64, 64, 2, 16))  # the box filter reaches 2 px
    np.testing.assert_allclose(exact, whole, atol=1e-6)
    without_margin, _ = run_tiled(image, box_filter, Tiling(64, 64, 0, 16))
    assert np.abs(without_margin - whole).max() > 1e-4  # tiles then see their own padding


def aerial_mosaic(size: int) -> np.ndarray:
    """A synthetic aerial scene as the network-space L channel of a colorization model."""
    from imgtrans.data.codec import Codec
    from imgtrans.data.synthetic import aerial_scene

    rgb = torch.from_numpy(aerial_scene(np.random.default_rng(7), size)).permute(2, 0, 1).float() / 255
    return Codec(colorization=True, color_space="lab").encode_input(rgb).numpy()


def generator_fn(name: str, **options):
    from imgtrans.nets.generators import build_generator
    from imgtrans.nets.layers import init_weights

    torch.manual_seed(0)
    net = init_weights(build_generator(name, 1, 2, ngf=8, norm="batch", dropout=False, **options), "normal", 0.02)
    for m in net.modules():  # batch statistics that are not the init's zeros and ones, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()

    def fn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()
    return net, fn


@pytest.mark.parametrize("self_ensemble", ["none", "dihedral"])
def test_resnet_tiles_with_receptive_field_margins_equal_one_whole_pass(self_ensemble):
    from imgtrans.export.onnx import receptive_radius
    from imgtrans.nets.lab_colorizer import LabColorizer

    view, _ = generator_fn("resnet_6blocks", crop_size=256)
    net = LabColorizer(view, None, None, False, self_ensemble=self_ensemble).eval()
    radius = receptive_radius(net, 1, 4)
    # The mirror images of the centre pixel lie a pixel off it: an ensemble reaches a pixel further than a view.
    assert radius == receptive_radius(view, 1, 4) + (self_ensemble != "none") and 0 < radius < 128

    def fn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()
    image = aerial_mosaic(512)
    whole = fn(image[None])[0]
    # 300: an eighth of it (the overlap) is no multiple of the stride grid; 64: a margin of the user's
    for tile, margin in ((256, -1), (300, -1), (300, 64)):
        rule = TileRule(4, 256, tile=tile, margin=margin, receptive_radius=radius)
        tiled, _ = run_tiled(image, fn, rule.for_image(512, 512))
        assert np.abs(tiled - whole).max() < 1e-5, tile  # windows on the stride grid: the same sums but in order


def test_unet_tiles_leave_no_visible_grid():
    from imgtrans.export.onnx import receptive_radius

    net, fn = generator_fn("unet", crop_size=64)
    assert receptive_radius(net, 1, 64) == 0  # a U-Net sees its whole input: no margin makes tiles exact
    image = aerial_mosaic(512)
    _, naive = run_tiled(image, fn, Tiling(64, 64, 0, 0))
    _, chosen = run_tiled(image, fn, TileRule(64, 64, receptive_radius=0).for_image(512, 512))
    assert abs(naive - 1) > 0.5  # the measure sees the grid where tiles meet edge to edge
    assert chosen == pytest.approx(1.0, abs=0.1)


# --- archives ----------------------------------------------------------------------

def test_archive_outputs_match_input_sizes_and_report_corrupt_files(tmp_path, exported, capsys):
    scans = make_scans(tmp_path / "scans")
    (scans / "bad.png").write_bytes(b"\x89PNG broken")
    before = tree_digest(scans)
    assert run_translate(exported, scans, tmp_path / "out") == 2
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
    # as training reads it: to_float's values exactly, from the file's own byte order too
    big_endian = Scan(scan.pixels.astype(">u2"))
    assert torch.equal(big_endian.rows(0, 2), torch.from_numpy(to_float(scan.pixels).transpose(2, 0, 1).copy()))


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
    assert main(["export", "--run-id", run_id, "--output", str(tmp_path / "models") + "/"]) == 0  # into a folder
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [f"pix2pix-{run_id}.json",
                                                                       f"pix2pix-{run_id}.onnx"]
    export_run = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                  if r.info.run_id != run_id][-1]
    assert float(export_run.data.params["parity_max_abs_error"]) < 1e-4
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
