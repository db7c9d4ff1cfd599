"""The training loop through the real `imgtrans` command, into a temporary MLflow store."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import FAST, figures, generator_uri, one_line_error, random_rgb, write_image
from mlflow.tracking import MlflowClient

from imgtrans.cli import main
from imgtrans.project_file import render
from imgtrans.training import checkpoint

REPO = Path(__file__).resolve().parents[1]


def train(dataset, *extra, expect=0):
    code = main(["pix2pix", "--dataset", str(dataset), *FAST, *extra])
    assert code == expect
    return code


def runs():
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, order_by=["attributes.start_time ASC"])


def last_checkpoint(run_id: str, tmp: Path) -> dict:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/last.pt", dst_path=str(tmp))
    return checkpoint.read(path)


def test_two_step_run_logs_the_contract(facades, tmp_path):
    train(facades, "--max-steps", "2")
    (run,) = runs()
    client = MlflowClient()
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model"] == "pix2pix" and params["lambda_L1"] == "100.0" and params["max_steps"] == "2"
    metrics = run.data.metrics
    for name in ("train/G_GAN", "train/G_L1", "train/D_real", "train/D_fake", "val/psnr", "val/ssim",
                 "time/images_per_s", "time/step_s"):
        assert name in metrics, name
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/G_L1")] == [1, 2]
    assert params["torch"] == torch.__version__
    assert "mlflow.source.git.commit" in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", "config.json", "images", "samples"} <= artifacts
    assert any(a.path.endswith(".png") for a in client.list_artifacts(run.info.run_id, "images"))
    # The logged model loads and translates with nothing retyped.
    model = mlflow.pyfunc.load_model(generator_uri(run.info.run_id))
    out = model.predict(random_rgb(64, 64)[None].astype("float32") / 255)
    assert out.shape == (1, 64, 64, 3) and 0 <= out.min() and out.max() <= 1


@pytest.mark.slow
def test_exact_resume(facades, tmp_path):
    """2 steps, resume, 2 more steps == 4 steps straight (crossing an epoch end: 3 steps/epoch)."""
    train(facades, "--max-steps", "4")
    train(facades, "--max-steps", "2")
    first_half = runs()[1].info.run_id
    train(facades, "--resume", first_half, "--max-steps", "4")
    straight, _, resumed = runs()
    assert resumed.data.tags["imgtrans.resumed_from"] == first_half
    assert resumed.data.params["ngf"] == "4"
    a = last_checkpoint(straight.info.run_id, tmp_path / "a")
    b = last_checkpoint(resumed.info.run_id, tmp_path / "b")
    assert a["position"] == b["position"] == {"step": 4, "epoch": 1, "batch_in_epoch": 1, "world_size": 1}
    for key, value in a["nets"].items():
        assert torch.equal(value, b["nets"][key]), key
    assert a["optimizers"]["G"]["state"][0]["exp_avg"].equal(b["optimizers"]["G"]["state"][0]["exp_avg"])


@pytest.mark.slow
def test_resume_from_checkpoint_path_keeps_architecture(facades, tmp_path):
    train(facades, "--max-steps", "1", "--ngf", "8", "--netG", "resnet_6blocks")
    ckpt = tmp_path / "ck"
    last_checkpoint(runs()[0].info.run_id, ckpt)
    # Only the step cap is given again: the checkpoint's ngf and netG are reused.
    assert main(["pix2pix", "--dataset", str(facades), "--resume", str(ckpt / "last.pt"), "--max-steps", "2",
                 "--no-progress", "--val-images", "1"]) == 0
    params = runs()[1].data.params
    assert params["ngf"] == "8" and params["netG"] == "resnet_6blocks"


@pytest.mark.slow
def test_same_seed_same_losses(facades):
    train(facades, "--max-steps", "3", "--seed", "7")
    train(facades, "--max-steps", "3", "--seed", "7")
    train(facades, "--max-steps", "3", "--seed", "8")
    client = MlflowClient()
    hist = [[m.value for m in client.get_metric_history(r.info.run_id, "train/G_L1")] for r in runs()]
    assert hist[0] == hist[1]
    assert hist[0] != hist[2]


@pytest.mark.parametrize("gan_mode", ["lsgan", "wgangp", "hinge"])
def test_gan_modes_train(facades, gan_mode):
    train(facades, "--max-steps", "1", "--gan-mode", gan_mode, "--val-images", "0", "--sample-images", "0")
    (run,) = runs()
    assert ("train/D_gp" in run.data.metrics) == (gan_mode == "wgangp")


def test_colorization_in_lab(aerial):
    train(aerial, "--max-steps", "1", "--color-space", "lab", "--netG", "resnet_6blocks")
    (run,) = runs()
    assert run.info.status == "FINISHED" and "val/psnr" in run.data.metrics


def test_aligned_real_layout(tmp_path, monkeypatch):
    for split in ("train", "val"):
        for i in range(3):
            write_image(tmp_path / "facades" / split / f"{i}.jpg", random_rgb(64, 128, i))
    monkeypatch.chdir(tmp_path)
    train("facades", "--max-steps", "2")  # a folder named relative to where the command runs
    (train_input, _) = runs()[0].inputs.dataset_inputs
    assert json.loads(train_input.dataset.profile)["layout"] == "aligned"
    assert json.loads(train_input.dataset.source)["uri"] == str(tmp_path / "facades")  # where it is, from anywhere


# --- bad input: one line, exit 2, run FAILED --------------------------------

def test_missing_dataset(tmp_path, capsys):
    train(tmp_path / "nowhere", expect=2)
    assert "dataset folder not found" in one_line_error(capsys)
    (run,) = runs()
    assert run.info.status == "FAILED" and "not found" in run.data.tags["error"]


def test_empty_dataset(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    train(tmp_path / "empty", expect=2)
    assert "no images found" in one_line_error(capsys)


def test_corrupt_image(tmp_path, capsys):
    root = tmp_path / "data"
    for split in ("train", "val"):
        for i in range(2):
            write_image(root / split / "A" / f"{i}.png", random_rgb(64, 64, i))
            write_image(root / split / "B" / f"{i}.png", random_rgb(64, 64, i))
    (root / "train" / "B" / "1.png").write_bytes(b"garbage")
    train(root, "--max-steps", "4", expect=2)
    assert "1.png" in one_line_error(capsys)
    assert runs()[0].info.status == "FAILED"


def test_unreadable_image_found_first_by_layout_detection(tmp_path, capsys):
    write_image(tmp_path / "train" / "b.png", random_rgb(64, 64))
    (tmp_path / "train" / "a.png").write_bytes(b"not a png")
    train(tmp_path, expect=2)
    assert "cannot read image" in (line := one_line_error(capsys)) and "a.png" in line


def test_crop_larger_than_the_images(facades, capsys):
    train(facades, "--preprocess", "crop", "--crop-size", "512", expect=2)
    assert "crop_size 512 is larger than a" in one_line_error(capsys)


def whole_images(root: Path, sizes: list[tuple[int, int]]) -> None:
    """Paired images of these (height, width) for training, one of the first size for validation."""
    for split, here in (("train", sizes), ("val", sizes[:1])):
        for i, (h, w) in enumerate(here):
            for side in ("A", "B"):
                write_image(root / split / side / f"{i}.png", random_rgb(h, w, i))


def test_whole_images_of_different_sizes_in_batches_are_refused_before_the_first_step(tmp_path, capsys):
    whole_images(tmp_path, [(64, 64)] * 5 + [(128, 64)])  # any batch of 2 may hold the last one, or none may
    train(tmp_path, "--preprocess", "none", "--max-steps", "1", expect=2)
    assert one_line_error(capsys).startswith(
        f"imgtrans: error: training images of different sizes ({tmp_path / 'train' / 'A' / '0.png'} 64×64, "
        f"{tmp_path / 'train' / 'A' / '5.png'} 64×128) at batch_size=2; use batch_size=1")
    assert [r.data.metrics for r in runs()] in ([], [{}])  # not one step taken
    train(tmp_path, "--preprocess", "none", "--max-steps", "1", "--batch-size", "1")


@pytest.mark.parametrize("preprocess, sizes, trained", [
    ("none", [(48, 48)], "48×48"),  # the U-Net of a 64 px crop takes 64s
    ("scale_width", [(64, 64)] * 3 + [(100, 64)], "64×100"),  # width 64 (crop_size), its height kept in scale
])
def test_whole_images_that_do_not_fit_the_generator_are_refused_before_the_first_step(tmp_path, capsys, preprocess,
                                                                                      sizes, trained):
    whole_images(tmp_path, sizes)
    train(tmp_path, "--preprocess", preprocess, "--max-steps", "1", "--batch-size", "1", expect=2)
    line = one_line_error(capsys)
    odd = tmp_path / "train" / "A" / f"{len(sizes) - 1}.png"
    assert line.startswith(f"imgtrans: error: training image {odd} is {trained} px (preprocess={preprocess}), which "
                           "does not fit the generator")
    assert "multiples of 64 px" in line and "preprocess=resize_and_crop" in line
    assert [r.data.metrics for r in runs()] in ([], [{}])


def test_mismatched_folders(tmp_path, capsys):
    write_image(tmp_path / "train" / "A" / "a.png", random_rgb(8, 8))
    write_image(tmp_path / "train" / "B" / "b.png", random_rgb(8, 8))
    train(tmp_path, expect=2)
    assert "do not match" in one_line_error(capsys)


def test_invalid_option_lists_valid_values(facades, capsys):
    train(facades, "--gan-mode", "bce", expect=2)
    line = one_line_error(capsys)
    assert "bce" in line and "vanilla, lsgan, wgangp, hinge" in line
    train(facades, "--batch-size", "two", expect=2)
    assert "expected an integer" in one_line_error(capsys)
    train(facades, "--no-such-flag", "1", expect=2)
    assert "unrecognized arguments: --no-such-flag 1 (see `imgtrans pix2pix --help`)" in one_line_error(capsys)


def test_unknown_run_id(facades, capsys):
    train(facades, "--resume", "0123456789abcdef", expect=2)
    assert "no MLflow run with id '0123456789abcdef'" in one_line_error(capsys)


# --- the MLproject contract ---------------------------------------------------

def test_mlproject_is_generated_from_configs():
    assert (REPO / "MLproject").read_text() == render(), "run: python -m imgtrans.project_file > MLproject"


def test_mlproject_defaults_parse_back_to_the_config_defaults():
    import yaml

    from imgtrans.cli import COMMANDS
    from imgtrans.config import field_types, fields, parse_value

    project = yaml.safe_load((REPO / "MLproject").read_text())
    assert set(project["entry_points"]) == {name for name, command in COMMANDS.items() if command.entry_point}
    for name, command in COMMANDS.items():
        if not command.entry_point:
            continue
        params = project["entry_points"][name]["parameters"]
        types = field_types(command.config_class)
        assert set(params) == {f.name for f in fields(command.config_class)}, name
        for f in fields(command.config_class):
            assert parse_value(f.name, types[f.name], params[f.name]["default"]) == f.default, (name, f.name)


@pytest.mark.slow
@pytest.mark.integration
def test_mlflow_run_entry_point(facades, tmp_path, monkeypatch, capsys):
    """`mlflow run . -e pix2pix` as a user types it, into this test's store, and into the same experiment as
    `imgtrans pix2pix` (both: the current one, Default unless MLFLOW_EXPERIMENT_NAME says otherwise)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    params = ["dataset", str(facades), "max_steps", "2", "ngf", "4", "ndf", "4", "crop_size", "64",
              "val_images", "2"]
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "pix2pix", "--env-manager", "local"]
    for key, value in zip(params[::2], params[1::2]):
        cmd += ["-P", f"{key}={value}"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    train(facades, "--max-steps", "1")
    run, plain = runs()
    assert run.info.experiment_id == plain.info.experiment_id == "0"
    assert run.info.status == "FINISHED"
    assert "val/psnr" in run.data.metrics and run.data.params["max_steps"] == "2"
    assert "checkpoints" in {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
    assert mlflow.models.get_model_info(generator_uri(run.info.run_id)).flavors["python_function"]
    assert run.info.run_name == f"pix2pix-unet-vanilla-{Path(facades).name}"  # the project's run, renamed
    # MLflow Projects makes the run in its experiment (and names it in MLFLOW_RUN_ID): one asked for by parameter
    # cannot be honoured silently.
    monkeypatch.setenv("MLFLOW_RUN_ID", MlflowClient().create_run("0").info.run_id)
    train(facades, "--max-steps", "1", "--experiment", "elsewhere", expect=2)
    assert "but `mlflow run` put it in 'Default'; run it as `mlflow run --experiment-name 'elsewhere'" in \
        one_line_error(capsys)


@pytest.mark.slow
def test_runs_follow_the_experiment_the_user_names(facades, monkeypatch):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "facades-study")
    train(facades, "--max-steps", "1")
    train(facades, "--max-steps", "1", "--experiment", "other")
    named, other = runs()
    assert MlflowClient().get_experiment(named.info.experiment_id).name == "facades-study"
    assert MlflowClient().get_experiment(other.info.experiment_id).name == "other"


def test_a_deleted_experiment_is_one_line_saying_how_to_restore_it(facades, capsys):
    client = MlflowClient()
    client.delete_experiment(client.create_experiment("gone"))
    train(facades, "--max-steps", "1", "--experiment", "gone", expect=2)
    assert "the MLflow experiment 'gone' was deleted; restore it" in one_line_error(capsys)


def test_nan_loss_stops_with_a_clear_error(facades, monkeypatch, capsys):
    from imgtrans.models.pix2pix import Pix2Pix

    monkeypatch.setattr(Pix2Pix, "training_step", lambda self, batch: {"G_L1": torch.tensor(float("nan"))})
    train(facades, "--max-steps", "3", expect=2)
    assert "training diverged by step 1: G_L1 became NaN/inf" in one_line_error(capsys)
    assert runs()[0].info.status == "FAILED"


def test_a_later_generator_is_kept_over_a_better_score_only_within_the_validation_noise():
    from imgtrans.training.best import updated, within_noise

    model = torch.nn.Linear(2, 2)

    def validation(best, step, metric, scores, within=1.0):
        scores = torch.tensor(scores)
        return updated(best, metric, {metric: scores.mean().item()}, scores, step, model, within)

    best = validation(None, 1, "val/psnr", [20.0, 21.0, 22.0, 23.0])
    assert best["step"] == best["value_step"] == 1 and updated(best, "val/psnr", {}, None, 2, model, 1.0) is best
    # 0.05 dB below on average, the images' differences spread wider than that: the later generator.
    noisy = validation(best, 2, "val/psnr", [20.3, 20.8, 22.2, 22.5])
    assert noisy["step"] == 2 and noisy["value_step"] == 1 and noisy["value"] == best["value"]
    assert validation(best, 2, "val/psnr", [20.3, 20.8, 22.2, 22.5], within=0)["step"] == 1  # strictly the best
    # Below on every image by more than that spread: the best stays, even after a generator within its noise.
    assert validation(noisy, 3, "val/psnr", [19.5, 20.4, 21.6, 22.5])["step"] == 2
    # Measured against the best score: a slow decline does not carry the kept generator down with it (this one is
    # within the noise of the kept generator's scores, not of the best's).
    lower = [19.8, 20.75, 21.85, 22.8]
    assert within_noise(torch.tensor([20.3, 20.8, 22.2, 22.5]), torch.tensor(lower), 1.0)
    drifted = validation(noisy, 3, "val/psnr", lower)
    assert drifted["step"] == 2 and not within_noise(best["scores"], torch.tensor(lower), 1.0)
    # A better score is the new reference; metrics without per-image scores compare by the score alone.
    assert validation(drifted, 4, "val/psnr", [20.1, 21.1, 22.1, 23.1])["value_step"] == 4
    kid = updated(None, "val/kid", {"val/kid": 0.2}, None, 1, model, 1.0)
    assert updated(kid, "val/kid", {"val/kid": 0.1}, None, 2, model, 1.0)["step"] == 2
    assert updated(kid, "val/kid", {"val/kid": 0.21}, None, 2, model, 1.0) is kid


def test_the_run_keeps_the_generator_of_its_best_validation(facades):
    # a high lr: scores move between epochs; strictly the best score
    train(facades, "--epochs", "3", "--lr", "0.01", "--val-every", "1", "--keep-best-within", "0")
    (run,) = runs()
    history = {m.step: m.value for m in MlflowClient().get_metric_history(run.info.run_id, "val/psnr")}
    best_step = max(history, key=history.get)
    assert best_step != max(history)  # (with this seed the best is not the last)
    assert run.data.tags["best_step"] == str(best_step)
    # kept with the statistics it was scored with: the batch-norm recalibration was the final generator's
    assert not [name for name in figures(run.info.run_id) if name.startswith("bn_")]
    (output,) = run.outputs.model_outputs
    assert output.step == best_step
    linked = {m.key: m for m in MlflowClient().get_logged_model(output.model_id).metrics}
    assert linked["val/psnr"].value == history[best_step] and linked["val/psnr"].step == best_step
    with tempfile.TemporaryDirectory() as tmp:  # the checkpoint carries it on, for an exact resume
        kept = last_checkpoint(run.info.run_id, Path(tmp))["best"]
    assert kept["step"] == best_step and kept["nets"]["netG.down.0.0.weight"].shape[0] == 4
    assert kept["scores"].mean().item() == pytest.approx(history[best_step], abs=1e-4)  # its per-image PSNR


def test_a_checkpoint_holds_the_best_weights_only_when_they_are_not_its_own():
    from imgtrans.training.best import for_checkpoint, restored, updated

    model = torch.nn.Linear(2, 2)
    best = updated(None, "val/psnr", {"val/psnr": 1.0}, torch.ones(2), 5, model, 1.0)
    assert for_checkpoint(best, 7) is best and for_checkpoint(best, 5)["nets"] is None
    again = restored(for_checkpoint(best, 5), model, "val/psnr")
    assert again["step"] == 5 and all(torch.equal(again["nets"][k], v) for k, v in best["nets"].items())
    # A checkpoint saved before the per-image scores compares by the score alone.
    older = restored({k: v for k, v in best.items() if k not in ("scores", "value_step")}, model, "val/psnr")
    assert older["scores"] is None and older["value_step"] == 5
    # A run resumed with another keep_best compares anew (or keeps the last), not against another metric's score.
    assert restored(best, model, "val/ssim") is None and restored(best, model, "last") is None


def test_a_resumed_run_takes_every_option_given_even_a_default_value(facades, capsys, monkeypatch):
    train(facades, "--max-steps", "2", "--flip", "false", "--val-images", "0", "--lr", "0.001")
    first = runs()[0].info.run_id
    assert main(["pix2pix", "--resume", first, "--max-steps", "3", "--flip", "true", "--no-progress"]) == 0
    assert runs()[-1].data.params["flip"] == "True"  # the default, given: not the checkpoint's false
    assert main(["pix2pix", "--resume", first, "--max-steps", "3", "--lr", "0.0002", "--no-progress"]) == 2
    assert "lr cannot change on resume" in one_line_error(capsys)
    # Under `mlflow run` every option is passed: there only values other than the defaults count as given.
    monkeypatch.setenv("MLFLOW_RUN_ID", "")
    from imgtrans.cli import ONLY_GIVEN_OPTIONS, build_parser, config_from_args
    from imgtrans.models.options import Pix2PixConfig

    args = build_parser().parse_args(["pix2pix", "--flip", "true", "--max-steps", "5"])
    assert config_from_args(Pix2PixConfig, args)[1] == {"flip": True, "max_steps": 5}
    monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)
    assert config_from_args(Pix2PixConfig, args)[1] == {"max_steps": 5}
    monkeypatch.setenv(ONLY_GIVEN_OPTIONS, "1")  # a torchrun job's processes, given the options by `nproc`
    assert config_from_args(Pix2PixConfig, args)[1] == {"flip": True, "max_steps": 5}
