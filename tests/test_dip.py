"""Deep Image Prior (classic and progressive), its perceptual loss, and DIP → diffusion."""

import json
import math

import mlflow
import numpy as np
import pytest
import torch
from conftest import figures, write_image
from mlflow.tracking import MlflowClient

from imgtrans.cli import main
from imgtrans.data.splits import dataset_label
from imgtrans.diffusion.noise_schedules import NoiseSchedule, ScheduleConfig
from imgtrans.diffusion.samplers import DDIMSampler
from imgtrans.dip.model import DeepImagePrior, stage_plan, total_iterations
from imgtrans.dip.nets import DIP_NETS, build_dip_net
from imgtrans.dip.options import DIPConfig
from imgtrans.errors import ImgtransError
from imgtrans.nets.perceptual import PerceptualLoss
from imgtrans.training import checkpoint

# A DIP run small enough for a CPU test: a 32 px crop and a narrow network.
SMALL = ["--crop-size", "32", "--width", "8", "--depth", "3", "--input-depth", "8", "--log-every", "5",
         "--no-progress"]


def vgg16_file(folder):
    """A file laid out like torchvision's vgg16-397923af.pth (features.* keys), with random weights."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(1)
    path = folder / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}, path)
    return path


def dip(dataset, *extra):
    return main(["dip", "--dataset", str(dataset), *SMALL, *extra])


def runs():
    return mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["attributes.start_time ASC"])


@pytest.mark.parametrize("name", DIP_NETS)
def test_dip_nets_map_noise_to_an_image(name):
    depth = 5 if name == "unet" else 3
    net = build_dip_net(name, 8, 3, width=8, depth=depth)
    out = net(torch.rand(2, 8, 64, 64) * 0.1)
    assert out.shape == (2, 3, 64, 64) and out.abs().max() <= 1
    assert 64 % net.size_multiple == 0


def test_progressive_stages_follow_the_formula():
    cfg = DIPConfig(mode="progressive", schedule="linear", beta_min=0.001, beta_max=0.01, stages=5, e_max=200,
                    e_alpha=0.3, e_k=-100.0)
    plan = stage_plan(cfg)
    betas = np.linspace(0.001, 0.01, 5)[::-1]  # fitted strongest noise first
    assert [s.beta for s in plan] == pytest.approx(betas)
    assert [s.iterations for s in plan] == [round(200 * (1 - 0.3 * math.exp(100 * b))) for b in betas]
    assert all(a.noise_std > b.noise_std for a, b in zip(plan, plan[1:]))  # strong → weak noise
    assert plan[-1].alpha_bar == pytest.approx(1 - 0.001)
    assert total_iterations(cfg) == sum(s.iterations for s in plan)
    assert total_iterations(DIPConfig(mode="progressive", stages=5, e_max=200, max_steps=7)) == 7


def test_progressive_stage_parameters_that_give_no_iterations_are_rejected():
    with pytest.raises(ImgtransError, match="e_alpha"):
        stage_plan(DIPConfig(mode="progressive", e_alpha=0.9, e_k=-300.0))
    with pytest.raises(ImgtransError, match="beta_start"):
        stage_plan(DIPConfig(mode="progressive", beta_min=0.02, beta_max=0.01))


def test_perceptual_loss_math_with_a_random_backbone(tmp_path):
    torch.manual_seed(0)
    loss = PerceptualLoss(None)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    y = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(x, x).item() == 0 and loss(x, y).item() > 0
    pred = x.clone().requires_grad_(True)
    loss(pred, y).backward()
    assert pred.grad.abs().sum() > 0
    # Weights come from a torchvision VGG16 state-dict file; the same file gives the same loss.
    path = vgg16_file(tmp_path)
    a, b = PerceptualLoss(path), PerceptualLoss(path)
    assert a(x, y).item() == b(x, y).item()
    assert torch.equal(a.features[0].weight, torch.load(path)["features.0.weight"])
    gray = torch.rand(1, 1, 32, 32)
    assert a(gray, gray).item() == 0


def test_mask_hides_unknown_pixels_from_the_loss():
    model = DeepImagePrior(DIPConfig(net="dncnn", width=4, depth=3, input_depth=2), channels=1)
    out = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    mask = torch.ones(1, 1, 4, 4)
    mask[..., :2, :] = 0
    target[..., :2, :] = 5.0  # only where the mask says unknown
    assert model.loss(out, target, mask)["loss"].item() == 0
    assert model.loss(out, target, None)["loss"].item() > 0


def test_the_dip_iteration_is_ready_for_capture_and_its_warm_up_leaves_no_trace():
    from imgtrans.compute.runtime import Runtime
    from imgtrans.training.graphed_step import _TrainingState, training_step_for, why_not_graphed

    cfg = DIPConfig(net="skip", width=8, depth=2, input_depth=4, reg_noise_std=0.05)
    torch.manual_seed(0)
    model = DeepImagePrior(cfg, channels=3)
    runtime = Runtime(torch.device("cpu"))
    model.setup(runtime)
    assert model.graph_capture_obstacle() is None  # reg_noise_std draws with the device RNG, which a graph replays
    step, status = training_step_for(model, runtime, cfg, full_batch=1)
    assert step == model.training_step and status == "off: not on a CUDA device"
    assert why_not_graphed(model, runtime, DIPConfig(cuda_graphs=False)) == "cuda_graphs=false"

    g = torch.Generator().manual_seed(1)
    batch = {"A": torch.rand(1, 4, 32, 32, generator=g) * 0.1, "B": torch.rand(1, 3, 32, 32, generator=g) * 2 - 1}
    model.training_step(batch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    saved = _TrainingState(model)
    torch.manual_seed(2)
    expected = model.training_step(batch)
    saved.restore()  # what a capture's warm-up does before the first replay
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    torch.manual_seed(2)
    again = model.training_step(batch)
    assert torch.equal(again["output"], expected["output"]) and torch.equal(again["loss"], expected["loss"])


def test_two_step_dip_run_logs_curves_and_images(aerial):
    assert dip(aerial, "--max-steps", "2", "--epochs", "2") == 0
    (run,) = runs()
    client = MlflowClient()
    assert run.info.status == "FINISHED" and run.data.tags["model"] == "dip"
    for name in ("dip/psnr_noisy", "dip/psnr_clean", "train/loss", "val/psnr", "val/ssim"):
        assert name in run.data.metrics, name
    assert {"best_psnr_clean", "best_iteration", "input_psnr_clean"} <= set(figures(run.info.run_id))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dip/psnr_clean")] == [1, 2]
    files = {a.path for a in client.list_artifacts(run.info.run_id, "dip")}
    assert {"dip/restored.png", "dip/best.png", "dip/degraded.png", "dip/clean.png", "dip/psnr_curve.png"} <= files
    assert any(a.path.startswith("checkpoints") for a in client.list_artifacts(run.info.run_id))


@pytest.mark.slow
def test_dip_beats_the_noisy_input_within_a_few_hundred_iterations(aerial):
    assert main(["dip", "--dataset", str(aerial), "--crop-size", "48", "--width", "32", "--depth", "4",
                 "--input-depth", "16", "--max-steps", "300", "--epochs", "3", "--log-every", "50",
                 "--noise-std", "0.15", "--no-progress"]) == 0
    found = figures(runs()[0].info.run_id)
    assert found["best_psnr_clean"] > found["input_psnr_clean"] + 1.0
    assert 0 < found["best_iteration"] <= 300


def test_progressive_mode_runs_its_stages(aerial):
    assert dip(aerial, "--mode", "progressive", "--stages", "3", "--e-max", "4", "--e-k", "-10") == 0
    run = runs()[0]
    expected = [round(4 * (1 - 0.3 * math.exp(10 * b))) for b in np.linspace(0.001, 0.01, 3)[::-1]]
    assert figures(run.info.run_id)["iterations"] == sum(expected)
    assert run.data.params["stage_iterations"] == ",".join(map(str, expected))


def test_dip_resumes_exactly(aerial, tmp_path, capsys):
    def weights(run_id, where):
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/last.pt",
                                                   dst_path=str(tmp_path / where))
        return checkpoint.read(path)["nets"]

    assert dip(aerial, "--max-steps", "6", "--epochs", "1", "--reg-noise-std", "0.05") == 0
    assert dip(aerial, "--max-steps", "3", "--epochs", "1", "--reg-noise-std", "0.05") == 0
    straight, first = [r.info.run_id for r in runs()]
    assert main(["dip", "--resume", first, "--max-steps", "6", "--no-progress"]) == 0
    resumed = runs()[-1]
    assert resumed.data.params["max_steps"] == "6" and resumed.data.params["width"] == "8"
    a, b = weights(straight, "a"), weights(resumed.info.run_id, "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "**Result**: val/psnr=" in resumed.data.tags["mlflow.note.content"]
    # The split the image is from, recorded by the run and kept by its checkpoint for the resumed one.
    assert [d.dataset.name for d in resumed.inputs.dataset_inputs] == [f"{dataset_label(str(aerial))}/test"]
    assert " 3 iterations in " in resumed.data.tags["mlflow.note.content"]  # of 6: the first 3 ran before
    assert main(["dip", "--resume", resumed.info.run_id, "--max-steps", "6", "--no-progress"]) == 2
    assert "nothing left to fit: the checkpoint" in capsys.readouterr().err


def test_missing_vgg_weights_disable_the_perceptual_term(aerial, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    assert dip(aerial, "--max-steps", "2", "--lambda-perceptual", "0.1") == 0
    run = runs()[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["lambda_perceptual"] == "0.0"
    assert "Perceptual loss disabled: perceptual loss unavailable" in run.data.tags["mlflow.note.content"]
    assert "vgg16-397923af.pth" in capsys.readouterr().err


def test_perceptual_term_uses_a_given_weights_file(aerial, tmp_path):
    path = vgg16_file(tmp_path)
    assert dip(aerial, "--max-steps", "2", "--lambda-perceptual", "0.1", "--vgg-weights", str(path)) == 0
    run = runs()[0]
    assert run.data.params["lambda_perceptual"] == "0.1"
    assert "Perceptual loss: VGG16 from" in run.data.tags["mlflow.note.content"]


def test_own_image_with_mask_and_output_file(tmp_path):
    rng = np.random.default_rng(0)
    image = write_image(tmp_path / "in" / "noisy.png", rng.integers(0, 256, (40, 36), dtype=np.uint8))
    mask = np.full((40, 36), 255, np.uint8)
    mask[10:20, 10:20] = 0
    mask_path = write_image(tmp_path / "in" / "mask.png", mask)
    before = sorted(p.name for p in (tmp_path / "in").iterdir())
    out = tmp_path / "out" / "restored.png"
    assert main(["dip", "--image", str(image), "--noise-std", "0", "--mask", str(mask_path), "--output", str(out),
                 *SMALL, "--crop-size", "0", "--max-steps", "2"]) == 0
    from PIL import Image

    with Image.open(out) as restored:
        assert restored.size == (36, 40) and restored.mode == "L"
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == before
    run = runs()[0]
    assert "dip/psnr_noisy" in run.data.metrics and "dip/psnr_clean" not in run.data.metrics
    assert "dataset" not in run.data.params and "image_index" not in run.data.params  # the image was given
    (data,) = run.inputs.dataset_inputs  # the files read: the image and its mask
    assert data.dataset.name == "noisy.png/image" and json.loads(data.dataset.source)["uri"] == str(tmp_path / "in")
    assert json.loads(data.dataset.profile)["files"] == 2 and data.tags[0].value == "image"
    assert "**Result**: 2 iterations in " in run.data.tags["mlflow.note.content"]  # no clean reference to score


@pytest.mark.parametrize("args,message", [
    (["--image", "missing.png"], "image file not found"),
    (["--net", "vgg"], "valid values: skip, unet, resnet, dncnn"),
    (["--mode", "progressive", "--e-alpha", "2"], "e_alpha"),
    (["--lr", "0"], "for lr; it must be > 0"),
    (["--depth", "5"], "too small for net=skip with depth 5"),
    (["--clean", "clean.png"], "give noise_std=0 with it"),
    (["--mode", "progressive", "--beta-min", "0.02", "--beta-max", "0.01"], "beta_min (0.02) must be below beta_max"),
])
def test_bad_dip_input_is_a_one_line_error(aerial, args, message, capsys):
    assert dip(aerial, *args, "--max-steps", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_an_output_that_cannot_be_written_is_refused_before_the_fit(tmp_path, capsys):
    image = write_image(tmp_path / "x.png", np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "folder.png").mkdir()
    for output, message in ((image, "would overwrite an input file"),
                            (image / "out.png", f"cannot be written ({image} is a file, not a folder)"),
                            (tmp_path / "folder.png", f"cannot be written ({tmp_path / 'folder.png'} is a folder)")):
        assert main(["dip", "--image", str(image), "--output", str(output), *SMALL, "--max-steps", "1"]) == 2
        assert message in capsys.readouterr().err
    assert not runs()  # refused before any run began


def test_sampling_from_a_noised_estimate_starts_at_t_start():
    schedule = NoiseSchedule(ScheduleConfig("linear", 1000))
    sampler = DDIMSampler(schedule)
    steps = sampler.set_timesteps(13, start=249)
    assert steps[0] == 249 and steps[-1] == 0 and len(steps) == 13
    with pytest.raises(ImgtransError, match="between 1 and 250"):
        sampler.set_timesteps(251, start=249)
    # With an ideal denoiser for the image `point`, starting from its noised copy returns it.
    point = torch.linspace(-1, 1, 16, dtype=torch.float64).view(1, 1, 4, 4)
    x = schedule.add_noise(point, torch.randn(1, 1, 4, 4, dtype=torch.float64), torch.tensor([249]))
    for t in steps.tolist():
        ab = schedule.alpha_bar(torch.tensor([t]), x)
        x = sampler.step((x - ab.sqrt() * point) / (1 - ab).sqrt(), t, x)
    assert torch.allclose(x, point, atol=1e-6)


@pytest.mark.slow
def test_dip_diffusion_compares_the_dip_start_with_pure_noise(facades):
    assert main(["diffusion", "--dataset", str(facades), "--crop-size", "32", "--batch-size", "2", "--max-steps", "1",
                 "--base-channels", "8", "--channel-mults", "1,2", "--timesteps", "50", "--val-images", "1",
                 "--sample-images", "1", "--val-sample-steps", "2", "--no-progress"]) == 0
    diffusion_run = runs()[0].info.run_id
    assert main(["dip_diffusion", "--diffusion-run", diffusion_run, *SMALL, "--num-iter", "2", "--t-start", "20",
                 "--sample-steps", "10"]) == 0
    run = runs()[-1]
    found = figures(run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["imgtrans.source_runs"] == diffusion_run
    assert found["dip_diffusion/steps_from_noise"] == 10 and found["dip_diffusion/steps_from_dip"] == 4
    for name in ("dip", "dip_diffusion", "noise_start"):
        assert f"dip_diffusion/psnr_{name}" in found and f"dip_diffusion/ssim_{name}" in found
    for name in ("time/dip_s", "time/diffusion_from_dip_s", "time/diffusion_from_noise_s"):
        assert name in found, name
    assert "dip/psnr_clean" in run.data.metrics
    # Its DIP part done, a resume still samples (a run interrupted while sampling is resumed so).
    assert main(["dip_diffusion", "--resume", run.info.run_id, "--no-progress"]) == 0
    assert runs()[-1].info.status == "FINISHED"


def test_dip_diffusion_checks_t_start_before_fitting(facades, capsys):
    assert main(["diffusion", "--dataset", str(facades), "--crop-size", "32", "--batch-size", "2", "--max-steps", "1",
                 "--base-channels", "8", "--channel-mults", "1,2", "--timesteps", "50", "--val-images", "0",
                 "--sample-images", "0", "--no-progress"]) == 0
    assert main(["dip_diffusion", "--diffusion-run", runs()[0].info.run_id, *SMALL, "--t-start", "50"]) == 2
    assert "t_start must be below the model's timesteps (50)" in capsys.readouterr().err
    assert main(["dip_diffusion", "--diffusion-run", runs()[0].info.run_id, *SMALL, "--t-start", "20",
                 "--sample-steps", "60"]) == 2
    assert "sample_steps must be at most the model's timesteps (50), got 60" in capsys.readouterr().err
    assert "dip/psnr_clean" not in runs()[-1].data.metrics


def test_a_dataset_image_is_taken_as_a_model_of_its_direction_takes_it(facades):
    from imgtrans.dip.images import dataset_image

    forward, backward = dataset_image(str(facades), 0), dataset_image(str(facades), 0, "BtoA")
    assert torch.equal(forward[0], backward[1]) and torch.equal(forward[1], backward[0])


def test_dip_diffusion_needs_a_diffusion_run(capsys):
    assert main(["dip_diffusion", *SMALL]) == 2
    assert "diffusion_run is required" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["dip", "dip_diffusion"])
def test_entry_points_take_the_common_parameters(name):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "MLproject").read_text()
    command = text.split(f"\n  {name}:\n")[1].split("command:")[1].splitlines()[0]
    for common in ("dataset", "epochs", "max_steps", "batch_size", "crop_size", "seed", "device", "resume"):
        assert f"--{common.replace('_', '-')} {{{common}}}" in command


def test_resume_refuses_another_stage_layout(aerial, capsys):
    assert dip(aerial, "--mode", "progressive", "--stages", "3", "--e-max", "4", "--e-k", "-10",
               "--max-steps", "2") == 0
    run_id = runs()[0].info.run_id
    assert main(["dip", "--resume", run_id, "--stages", "4", "--no-progress"]) == 2
    assert "another mode or number of stages" in capsys.readouterr().err
    # The checkpoint holds the images: another crop or noise would be logged, not used.
    for option, value in (("--crop-size", "16"), ("--noise-std", "0.3")):
        assert main(["dip", "--resume", run_id, option, value, "--no-progress"]) == 2
        name = option[2:].replace("-", "_")
        assert f"{name} cannot change on resume: the checkpoint holds the images the run restores" in \
            capsys.readouterr().err


def test_a_plain_folder_of_images_is_a_source(tmp_path):
    for i in range(3):
        write_image(tmp_path / "photos" / f"{i}.png", np.random.default_rng(i).integers(0, 256, (32, 32, 3), np.uint8))
    assert dip(tmp_path / "photos", "--max-steps", "2") == 0
    assert runs()[0].data.params["image"].endswith("test image 0")
