"""The loop's fast path on any device: checkpoints written in the background from a host copy, validation every
`val_every` epochs, and the time the loop spends blocked, logged."""

import threading

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import FAST
from imgtrans import checkpoint
from imgtrans.cli import main


def test_a_background_checkpoint_holds_the_state_of_the_moment_it_was_taken(tmp_path):
    weights = torch.zeros(512, 512)
    written, release = threading.Event(), threading.Event()

    def on_saved(path):
        written.set()
        release.wait(10)

    saver = checkpoint.BackgroundSaver(on_saved)
    path = tmp_path / "last.pt"
    saver.save({"format": checkpoint.FORMAT, "nets": {"w": weights}}, path)
    weights += 1  # training goes on while the file is written
    assert written.wait(10)
    release.set()
    saver.wait()
    assert torch.equal(checkpoint.read(path)["nets"]["w"], torch.zeros(512, 512))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_failed_background_save_is_raised_in_the_training_thread(tmp_path):
    (tmp_path / "blocker").write_text("a file where the checkpoint folder should be")
    saver = checkpoint.BackgroundSaver(lambda path: None)
    saver.save({"format": checkpoint.FORMAT}, tmp_path / "blocker" / "last.pt")
    with pytest.raises(OSError):
        saver.wait()
    saver.wait()  # reported once


def metric_steps(run_id: str, key: str) -> list[int]:
    return [m.step for m in MlflowClient().get_metric_history(run_id, key)]


def test_validation_every_n_epochs_and_blocked_times_are_logged(facades):
    # 6 training images, batch 2: 3 steps per epoch; 5 epochs; validate after epochs 2 and 4, and at the end.
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--epochs", "5", "--val-every", "2",
                 "--checkpoint-minutes", "0"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert metric_steps(run.info.run_id, "val/psnr") == [6, 12, 15]
    assert metric_steps(run.info.run_id, "time/validation_s") == [6, 12, 15]
    assert metric_steps(run.info.run_id, "time/checkpoint_s") == [3, 6, 9, 12, 15]  # every epoch end (minutes=0)
    assert run.data.params["val_every"] == "2" and run.data.params["checkpoint_minutes"] == "0.0"


def test_by_default_a_short_run_checkpoints_once_at_the_end(facades):
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--epochs", "3"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert metric_steps(run.info.run_id, "time/checkpoint_s") == [9]
    assert checkpoint.read(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="checkpoints/last.pt"))["position"]["step"] == 9
