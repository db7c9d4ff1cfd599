"""Metric math against references (no pretrained weights), and the evaluate / compare commands."""

import math

import mlflow
import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import (
    FAST,
    evaluation_summary,
    generator_uri,
    one_line_error,
    random_inception_file,
    trained_lab_colorizer,
)
from mlflow.tracking import MlflowClient
from PIL import Image
from skimage.metrics import structural_similarity

from imgtrans.cli import main
from imgtrans.data.sheets import HEADER
from imgtrans.evaluation.report import RunSummary
from imgtrans.evaluation.report import table as report_table
from imgtrans.metrics.colour import ColourSums, colourfulness
from imgtrans.metrics.distribution import DistributionMetrics, FidelityInception
from imgtrans.metrics.perceptual import lpips_network, lpips_per_image
from imgtrans.metrics.quality import psnr_per_image, ssim_per_image
from imgtrans.tracking.store import ROLE_TAG
from imgtrans.weights import ALEXNET, INCEPTION, resolve_weights, weights_file


class RandomFeatures(torch.nn.Module):
    """A fixed random feature extractor standing in for Inception."""

    def __init__(self, dim: int = 8):
        super().__init__()
        torch.manual_seed(123)
        self.conv = torch.nn.Conv2d(3, dim, 5, stride=2)
        self.num_features = dim

    def forward(self, x):
        return torch.tanh(self.conv(x.float())).mean((2, 3))


def image_sets(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, 3, 32, 32, generator=g)
    fake = (real * 0.7 + 0.3 * torch.rand(n, 3, 32, 32, generator=g)) ** 1.5
    return real, fake


def test_fid_matches_scipy_sqrtm():
    real, fake = image_sets()
    features = RandomFeatures()
    dist = DistributionMetrics(features, kid_subset_size=40, kid_subsets=1)
    dist.update(real, fake)
    with pytest.warns(UserWarning, match="sample-size bias"):
        result = dist.compute()
    with torch.no_grad():
        f1, f2 = features(real).double().numpy(), features(fake).double().numpy()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert result.values["fid"] == pytest.approx(expected, rel=1e-4)
    assert result.settings["fid_n_real"] == "40" and "fid_warning" in result.settings


def test_distribution_metrics_take_images_of_any_size_and_say_when_too_few():
    real, fake = image_sets(6)
    whole = DistributionMetrics(RandomFeatures(), kid_subset_size=4, kid_subsets=1)
    whole.update(real, fake)
    mixed = DistributionMetrics(RandomFeatures(), kid_subset_size=4, kid_subsets=1)
    mixed.update(real[:3], fake[:3])
    mixed.update(real[3:, :, :24, :20], fake[3:, :, :24, :20])  # stored sizes differ from image to image
    with pytest.warns(UserWarning):
        a, b = whole.compute().values, mixed.compute().values
    assert math.isfinite(b["fid"]) and b["fid"] != a["fid"]
    one = DistributionMetrics(RandomFeatures())
    one.update(real[:1], fake[:1])
    result = one.compute()
    assert result.values == {} and result.unavailable == "FID, KID and IS need at least 2 images; 1 scored"


def test_kid_is_unbiased_mmd_with_one_subset():
    real, fake = image_sets()
    features = RandomFeatures()
    dist = DistributionMetrics(features, kid_subset_size=40, kid_subsets=1)
    dist.update(real, fake)
    with pytest.warns(UserWarning):
        kid = dist.compute().values["kid"]
    with torch.no_grad():
        x, y = features(real).double(), features(fake).double()
    d = x.shape[1]

    def k(a, b):
        return (a @ b.T / d + 1) ** 3

    m = x.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    mmd = ((kxx.sum() - kxx.diag().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diag().sum()) / (m * (m - 1))
           - 2 * kxy.mean())
    assert kid == pytest.approx(float(mmd), rel=1e-4)  # torchmetrics accumulates in float32


def test_inception_score_of_uniform_logits_is_one():
    class UniformLogits(torch.nn.Module):
        num_features = 10

        def forward(self, x):
            return torch.zeros(x.shape[0], 10)

    real, fake = image_sets(20)
    dist = DistributionMetrics(RandomFeatures(), UniformLogits(), kid_subset_size=10, kid_subsets=2)
    dist.update(real, fake)
    with pytest.warns(UserWarning):
        values = dist.compute().values
    assert values["is"] == pytest.approx(1.0, abs=1e-3)  # torchmetrics adds an epsilon inside its log


def test_psnr_known_values():
    a = torch.full((2, 3, 16, 16), 0.4)
    assert psnr_per_image(a, a + 0.1).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)
    assert psnr_per_image(a, a + 0.01)[0].item() == pytest.approx(40.0, abs=1e-3)


def test_ssim_known_values_and_skimage_parity():
    a = torch.full((1, 3, 32, 32), 0.3)
    b = torch.full((1, 3, 32, 32), 0.6)
    assert ssim_per_image(a, a).item() == pytest.approx(1.0, abs=1e-6)
    c1 = (0.01 * 1.0) ** 2
    constant = (2 * 0.3 * 0.6 + c1) / (0.3 ** 2 + 0.6 ** 2 + c1)  # σ = 0: only the luminance term remains
    assert ssim_per_image(a, b).item() == pytest.approx(constant, abs=1e-6)
    rng = np.random.default_rng(0)
    x = rng.random((48, 48, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    reference = structural_similarity(x, y, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    ours = ssim_per_image(torch.from_numpy(x).permute(2, 0, 1)[None], torch.from_numpy(y).permute(2, 0, 1)[None])
    assert ours.item() == pytest.approx(reference, abs=2e-3)


def test_psnr_and_ssim_equal_torchmetrics():
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 40, 37, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    ssim = structural_similarity_index_measure(a.double(), b.double(), data_range=1.0, reduction="none").float()
    psnr = peak_signal_noise_ratio(a.double(), b.double(), data_range=1.0, reduction="none", dim=(1, 2, 3))
    assert torch.equal(ssim_per_image(a, b), ssim)
    assert psnr_per_image(a, b).tolist() == pytest.approx(psnr.tolist(), abs=1e-5)


def test_sample_grid_is_torchvisions_layout():
    from torchvision.utils import make_grid

    from imgtrans.data.sheets import sample_grid

    columns = [torch.rand(3, 3, 8, 10) for _ in range(4)]
    expected = make_grid(torch.stack(columns, 1).flatten(0, 1), nrow=4, padding=2, pad_value=1.0)
    assert torch.equal(sample_grid(columns), expected)


def test_lpips_math_with_random_backbone():
    net = lpips_network(None)
    real, fake = image_sets(4)
    same = lpips_per_image(net, real, real)
    assert torch.allclose(same, torch.zeros(4), atol=1e-6)
    d1, d2 = lpips_per_image(net, real, fake), lpips_per_image(net, fake, real)
    assert (d1 > 0).all() and torch.allclose(d1, d2, atol=1e-5)


def test_weights_are_looked_up_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert weights_file(INCEPTION) is None
    path, message = resolve_weights(INCEPTION, "", "FID", "inception_weights")  # tests run offline
    assert path is None and INCEPTION.filename in message and "inception_weights=<path>" in message
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / INCEPTION.filename).write_bytes(b"x")
    assert weights_file(INCEPTION) == tmp_path / "hub" / "checkpoints" / INCEPTION.filename
    assert weights_file(INCEPTION, str(tmp_path / "elsewhere.pth")) is None


@pytest.mark.skipif(weights_file(ALEXNET) is None, reason="AlexNet weights not in the torch hub cache")
def test_real_lpips_weights_load():
    net = lpips_network(weights_file(ALEXNET))
    real, fake = image_sets(2)
    assert (lpips_per_image(net, real, fake) > 0).all()


@pytest.mark.skipif(weights_file(INCEPTION) is None, reason="FID Inception weights not in the hub cache")
def test_real_inception_features():
    features = FidelityInception(weights_file(INCEPTION))
    assert features(torch.rand(2, 3, 64, 64)).shape == (2, 2048)


# --- evaluate and compare ------------------------------------------------------------

@pytest.mark.slow
def test_evaluate_and_compare_two_runs(facades, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    for gan_mode in ("vanilla", "lsgan"):
        assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "2", "--gan-mode", gan_mode,
                     "--experiment", "zoo"]) == 0
    client = MlflowClient()
    exp = client.get_experiment_by_name("zoo")
    run_ids = [r.info.run_id for r in client.search_runs([exp.experiment_id])]
    for run_id in run_ids:
        assert main(["evaluate", "--run-id", run_id, "--grid-images", "2"]) == 0
    err = capsys.readouterr().err
    assert err.count("LPIPS unavailable") == 2 and INCEPTION.filename in err  # said once per evaluation
    run = client.get_run(run_ids[0])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert "test/psnr" in metrics and "test/ssim" in metrics and "test/fid" not in metrics
    summary = evaluation_summary(run_ids[0])
    assert summary["metrics"]["n_images"] == 2 and "psnr_std" in summary["metrics"]
    assert set(summary["unavailable"]) == {"lpips", "fid", "kid", "is"}
    assert run.data.tags["imgtrans.test.unavailable"].count("FID/KID/IS unavailable") == 1
    artifacts = {a.path for a in client.list_artifacts(run_ids[0], "evaluation/test")}
    assert {"evaluation/test/per_image.csv", "evaluation/test/grid.png", "evaluation/test/samples"} <= artifacts

    assert main(["compare", "--experiment", "zoo", "--output", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "gan_mode" in out and "lsgan" in out and "vanilla" in out and "± " in out
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64") == 2 * 4  # 2 rows × (input, 2 outputs, target)
    sheet = Image.open(tmp_path / "report" / "samples.jpg")
    # 4 columns of 64 px tiles enlarged to 256 px, a header row, 2 rows
    assert sheet.size == (2 + 4 * (256 + 2), HEADER + 2 + 2 * (256 + 2))
    report = (tmp_path / "report" / "report.md").read_text()
    names = [client.get_run(run_id).info.run_name for run_id in run_ids]
    assert "](samples.jpg)" in report and all(f"[{name}](" in report for name in names)
    assert f"Columns: input, {names[0]}, {names[1]}, target." in report or \
        f"Columns: input, {names[1]}, {names[0]}, target." in report
    import csv

    with open(tmp_path / "report" / "report.csv", newline="") as fh:
        csv_rows = list(csv.reader(fh))[1:]
    assert sorted(row[0] for row in csv_rows[:2]) == sorted(run_ids)
    assert [row[0] for row in csv_rows[2:]] == [""] and csv_rows[2][1] == "baseline: input"  # as in report.md

    assert main(["evaluate", "--run-id", run_ids[0], "--grid-images", "0"]) == 0  # scores only, no images
    newest = client.search_runs([exp.experiment_id], f"tags.`{ROLE_TAG}` = 'evaluate'",
                                order_by=["attributes.start_time DESC"])[0]
    assert {a.path for a in client.list_artifacts(newest.info.run_id)} == {"per_image.csv"}

    # Scores of part of the split are not the run's; max_images as large as the split is the whole of it.
    capsys.readouterr()
    assert main(["evaluate", "--run-id", run_ids[0], "--max-images", "1"]) == 0
    shown = capsys.readouterr()
    assert "on 1 of the split's 2 images to evaluation run" in shown.out
    assert "evaluating test: 100%" in shown.err  # its progress bar
    assert main(["evaluate", "--run-id", run_ids[0], "--max-images", "5", "--no-progress"]) == 0
    shown = capsys.readouterr()
    assert f"to run {run_ids[0]} and its model" in shown.out and "evaluating" not in shown.err


def test_evaluate_unknown_run(capsys):
    assert main(["evaluate", "--run-id", "doesnotexist"]) == 2
    assert "no MLflow run with id 'doesnotexist'" in capsys.readouterr().err


def test_compare_without_evaluations(facades, capsys):
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "1", "--experiment", "bare"]) == 0
    assert main(["compare", "--experiment", "bare"]) == 2
    assert "no evaluated runs" in capsys.readouterr().err


@pytest.mark.slow
def test_weight_files_in_the_hub_cache_enable_every_metric(facades, tmp_path, monkeypatch):
    """Files with the libraries' names (here from random networks) make LPIPS/FID/KID/IS appear."""
    import torchvision

    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), checkpoints / ALEXNET.filename)
    random_inception_file(checkpoints / INCEPTION.filename)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "1"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    run_id = run.info.run_id
    assert main(["evaluate", "--run-id", run_id, "--kid-subset-size", "2"]) == 0
    run = MlflowClient().get_run(run_id)
    for name in ("test/lpips", "test/fid", "test/kid", "test/is"):
        assert name in run.data.metrics, name
    summary = evaluation_summary(run_id)
    assert summary["settings"]["fid_n_real"] == "2" and "kid_std" in summary["metrics"]
    assert not summary["unavailable"] and "imgtrans.test.unavailable" not in run.data.tags
    assert main(["evaluate", "--run-id", run_id, "--max-images", "1"]) == 0  # one image: no distribution to compare
    evaluation = mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["start_time DESC"],
                                    filter_string=f"tags.`imgtrans.source_runs` = '{run_id}'")[0]
    assert evaluation_summary(evaluation.info.run_id)["unavailable"]["fid"] == \
        "FID, KID and IS need at least 2 images; 1 scored"


def test_a_weights_file_of_another_network_or_damaged_is_one_line(facades, tmp_path, capsys):
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "1"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    other, damaged = tmp_path / "other.pth", tmp_path / "damaged.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    damaged.write_bytes(b"not a checkpoint")
    for option, path, name in (("--lpips-weights", other, ALEXNET.filename),
                               ("--inception-weights", damaged, INCEPTION.filename)):
        assert main(["evaluate", "--run-id", run.info.run_id, option, str(path)]) == 2
        assert f"{path} is not a readable {name} (" in one_line_error(capsys)


def test_a_colorizer_of_a_photograph_folder_is_validated_and_evaluated(tmp_path, monkeypatch):
    from conftest import random_rgb, write_image

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    for split, count in (("train", 3), ("val", 2), ("test", 2)):
        for i in range(count):
            write_image(tmp_path / "photos" / split / f"{i}.png", random_rgb(72, 80, seed=i))
    assert main(["pix2pix", "--dataset", str(tmp_path / "photos"), *FAST, "--max-steps", "2",
                 "--color-space", "lab"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert "val/psnr" in run.data.metrics  # each photograph is the truth of its gray input
    assert main(["evaluate", "--run-id", run.info.run_id]) == 0
    assert {"test/psnr", "test/cast"} <= set(MlflowClient().get_run(run.info.run_id).data.metrics)


def test_a_colorizer_is_scored_against_the_grayscale_copy(aerial, tmp_path, capsys, monkeypatch):
    run = trained_lab_colorizer(aerial, tmp_path, monkeypatch)
    assert main(["evaluate", "--run-id", run.info.run_id]) == 0
    metrics = {f"test/{k}": v for k, v in evaluation_summary(run.info.run_id)["metrics"].items()}
    assert {"test/baseline/grayscale/psnr", "test/baseline/grayscale/ssim_std"} <= set(metrics)
    logged = MlflowClient().get_run(run.info.run_id).data.metrics  # a colorizer is ranked by its colour too
    assert {"test/colourfulness_ratio", "test/cast", "test/chroma_error"} <= set(logged)
    assert main(["compare", "--run-ids", run.info.run_id]) == 0
    out = capsys.readouterr().out
    assert "| baseline: grayscale |" in out
    assert metrics["test/baseline/grayscale/colourfulness_ratio"] == pytest.approx(0, abs=1e-4)
    below = sum(metrics[f"test/{m}"] <= metrics[f"test/baseline/grayscale/{m}"]
                for m in ("psnr", "ssim", "colourfulness_ratio"))
    assert out.count(" ✗ |") == below + (metrics["test/cast"] > metrics["test/cast_truth"])

    # Scans of any size are scored whole, at their stored size: here 100 × 150 and 70 × 90 (not multiples of 64).
    from PIL import Image

    from imgtrans.data.codec import Codec
    from imgtrans.data.synthetic import aerial_scene
    from imgtrans.metrics.quality import psnr_per_image
    from imgtrans.tracking.models import generator_checkpoint
    from imgtrans.training.checkpoint import load_model

    scans = tmp_path / "scans"
    for split, (h, w) in (("train", (100, 150)), ("test", (100, 150)), ("val", (70, 90))):
        (scans / split).mkdir(parents=True)
        Image.fromarray(aerial_scene(np.random.default_rng(h), 160)[:h, :w]).save(scans / split / "0.png")
    assert main(["evaluate", "--run-id", run.info.run_id, "--dataset", str(scans), "--split", "val"]) == 0
    # Another folder's scores are not the run's own: they go to the evaluation run alone.
    assert "eval_val/psnr" not in MlflowClient().get_run(run.info.run_id).data.metrics
    evaluation = mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["start_time DESC"],
                                    filter_string=f"tags.`imgtrans.source_runs` = '{run.info.run_id}'")[0]
    assert evaluation_summary(evaluation.info.run_id, "val")["settings"]["image_size"].startswith("stored size")
    model = load_model(generator_checkpoint(generator_uri(run.info.run_id), tmp_path / "model")).eval()
    codec = Codec(colorization=True, color_space="lab")
    rgb = torch.from_numpy(np.array(Image.open(scans / "val" / "0.png"))).permute(2, 0, 1)[None].float() / 255
    x = codec.encode_input(rgb)
    target = codec.decode_output(x, codec.encode_target(rgb))
    expected = psnr_per_image(codec.decode_output(x, model.translate(x)), target)
    assert evaluation.data.metrics["eval_val/psnr"] == pytest.approx(float(expected), abs=1e-3)


def test_colourfulness_known_values():
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1
    gray = torch.full((1, 3, 8, 8), 0.4)
    # rg = 255, yb = 127.5 everywhere: no spread, 0.3 · |mean| (Hasler & Süsstrunk).
    assert colourfulness(red).item() == pytest.approx(0.3 * math.hypot(255, 127.5), rel=1e-5)
    assert colourfulness(gray).item() == pytest.approx(0, abs=1e-4)


def test_colour_sums_see_washed_out_and_cast_outputs():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(4, 3, 16, 16, generator=generator)
    target[:, :, :8] = target[:, :1, :8]  # the top half gray: near-neutral pixels
    identical, gray = ColourSums(), ColourSums()
    identical.update(target, target)
    gray.update(target.mean(1, keepdim=True).expand_as(target), target)
    same = identical.results()
    assert same["colourfulness_ratio"] == pytest.approx(1) and same["chroma_error"] == pytest.approx(0, abs=1e-4)
    assert same["cast"] == pytest.approx(same["cast_truth"]) and same["cast_truth"] < 1
    assert gray.results()["colourfulness_ratio"] < 0.05 and gray.results()["chroma_error"] > 5

    sepia = torch.stack([target.mean(1) * 1.0, target.mean(1) * 0.85, target.mean(1) * 0.6], 1)
    tinted = ColourSums()
    tinted.update(sepia, target)
    assert tinted.results()["cast"] > 5 * tinted.results()["cast_truth"]

    # Batch by batch (or process by process, summed) is the same as all at once.
    halves = ColourSums(), ColourSums()
    halves[0].update(sepia[:1], target[:1])
    halves[1].update(sepia[1:], target[1:])
    summed = ColourSums.from_tensor(halves[0].as_tensor() + halves[1].as_tensor()).results()
    assert summed == pytest.approx(tinted.results())


def test_compare_marks_a_washed_out_or_tinted_colorizer():
    base = {"psnr": 25.0, "ssim": 0.9, "colourfulness_ratio": 0.8, "chroma_error": 6.0, "cast": 2.0,
            "cast_truth": 2.5, "baseline/grayscale/psnr": 20.0, "baseline/grayscale/ssim": 0.85,
            "baseline/grayscale/colourfulness_ratio": 2.4e-07, "n_images": 4}  # a gray copy's float noise
    good = RunSummary("a", "good", "pix2pix", {}, None, None, base)
    tinted = RunSummary("b", "tinted", "pix2pix", {}, None, None, base | {"cast": 4.0, "ssim": 0.8})
    _, rows = report_table([good, tinted])
    assert not any("✗" in cell for cell in rows[0])
    assert [cell for cell in rows[1] if "✗" in cell] == ["0.8 ✗", "4.0 (2.5) ✗"]
    assert rows[2][0] == "baseline: grayscale" and "0.00" in rows[2]
    # Not a colorizer (its baseline is the input, e.g. a label map): no colour marks.
    facades = {k.replace("grayscale", "input"): v for k, v in base.items()}
    facades["baseline/input/colourfulness_ratio"] = 4.7
    _, rows = report_table([RunSummary("c", "facades", "pix2pix", {}, None, None, facades | {"cast": 9.0})])
    assert not any("✗" in cell for cell in rows[0])


def test_the_grayscale_baseline_is_neutral_and_keeps_lightness():
    from imgtrans.data.codec import Codec

    rgb = torch.rand(2, 3, 8, 8)
    for space in ("lab", "rgb"):
        codec = Codec(colorization=True, color_space=space)
        name, gray = codec.trivial_output(codec.encode_input(rgb))
        assert name == "grayscale" and gray.shape == rgb.shape
        assert torch.allclose(gray[:, 0], gray[:, 1], atol=2e-3) and torch.allclose(gray[:, 1], gray[:, 2], atol=2e-3)
    name, same = Codec(colorization=False).trivial_output(rgb * 2 - 1)
    assert name == "input" and torch.allclose(same, rgb, atol=1e-6)


def test_the_side_by_side_sheet_holds_only_runs_of_the_same_test_inputs():
    from imgtrans.evaluation.report import RunSummary, markdown, side_by_side

    def run(name, dataset, inputs):  # thumbnails differ with each run's crop size: the data decides
        return RunSummary(run_id=name, name=name, model="pix2pix", params={}, generator_params=None,
                          train_minutes=None, metrics={"psnr": 20.0}, settings={"dataset": dataset, "split": "test"},
                          samples={"input": inputs, "output": [b"out-" + x for x in inputs], "target": [b"t"] * 2})

    facades = [b"facade-1", b"facade-2"]
    runs = [run("a", "/d/facades", facades), run("b", "/d/aerial", [b"aerial-1", b"aerial-2"]),
            run("c", "/d/facades", [b"facade-1 at another crop"])]
    assert [heading for heading, _, _ in side_by_side(runs)] == ["input", "a", "c", "target"]
    assert side_by_side(runs)[0][2] == facades[:1]  # as many rows as every shown run has
    assert "Not in the sheet, evaluated on other test inputs than a: b." in markdown(runs, "t", "samples.jpg")
    assert "Not in the sheet" not in markdown(runs[::2], "t", "samples.jpg")
