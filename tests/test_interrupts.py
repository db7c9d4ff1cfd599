"""Interrupts, kills and leftovers, with real processes: SIGTERM/SIGINT end a run KILLED after a checkpoint it
resumes from exactly; a run killed with -9 is recognised as stale; no temporary folder outlives its command."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import FAST, one_line_error
from mlflow.tracking import MlflowClient

from imgtrans import interrupts
from imgtrans.cli import main
from imgtrans.errors import ImgtransError
from imgtrans.files import (
    SCRATCH_PREFIX,
    atomic_write,
    scratch_dir,
    sweep_scratch,
    write_secret,
)
from imgtrans.training import checkpoint

# Long enough that the process is still training when the signal comes (3 steps per epoch on the tiny set).
LONG = ["--epochs", "100", "--val-images", "0", "--sample-images", "0", "--checkpoint-minutes", "0"]


def start_training(dataset: Path, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "TMPDIR": str(tmp_path)}
    return subprocess.Popen([sys.executable, "-m", "imgtrans", "pix2pix", "--dataset", str(dataset), *FAST, *LONG],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc: subprocess.Popen, step: int, timeout: float = 120) -> str:
    """The run id once its process has logged `step` (FAST logs every step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
        if runs:
            history = MlflowClient().get_metric_history(runs[0].info.run_id, "train/G_L1")
            if history and max(m.step for m in history) >= step:
                return runs[0].info.run_id
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"training did not reach step {step} in {timeout}s")


def saved_checkpoint(run_id: str, tmp_path: Path) -> dict:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/last.pt",
                                               dst_path=str(tmp_path / "downloads" / run_id))
    return checkpoint.read(path)


def scratch_left(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{SCRATCH_PREFIX}*")) + sorted(folder.glob(f".{SCRATCH_PREFIX}*"))


def stop_with(signum: int, facades: Path, tmp_path: Path) -> str:
    """Train in a real process, send `signum` after step 2: it checkpoints, ends KILLED, leaves no scratch."""
    proc = start_training(facades, tmp_path)
    run_id = wait_for_step(proc, 2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err and f"continue with --resume {run_id}" in err
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == f"interrupted ({signal.Signals(signum).name})"
    assert not scratch_left(tmp_path)
    return run_id


@pytest.mark.slow
@pytest.mark.integration
def test_ctrl_c_checkpoints_and_ends_the_run_killed(facades, tmp_path):
    run_id = stop_with(signal.SIGINT, facades, tmp_path)
    assert saved_checkpoint(run_id, tmp_path)["position"]["step"] >= 2


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_checkpoints_ends_the_run_killed_and_resumes_exactly(facades, tmp_path):
    run_id = stop_with(signal.SIGTERM, facades, tmp_path)
    stopped_at = saved_checkpoint(run_id, tmp_path)["position"]["step"]
    assert stopped_at >= 2
    end = ["--max-steps", str(stopped_at + 2)]
    assert main(["pix2pix", "--resume", run_id, *end, "--no-progress"]) == 0
    assert main(["pix2pix", "--dataset", str(facades), *FAST, *LONG, *end]) == 0
    resumed, straight = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                           order_by=["attributes.start_time ASC"])[1:]
    a, b = saved_checkpoint(resumed.info.run_id, tmp_path), saved_checkpoint(straight.info.run_id, tmp_path)
    assert a["position"] == b["position"]
    for name, tensor in a["nets"].items():
        assert torch.equal(tensor, b["nets"][name]), name


@pytest.mark.slow
@pytest.mark.integration
def test_a_run_killed_with_sigkill_is_marked_stale_when_resumed(facades, tmp_path, monkeypatch):
    proc = start_training(facades, tmp_path)
    run_id = wait_for_step(proc, 4)
    proc.kill()
    proc.wait(timeout=30)
    assert MlflowClient().get_run(run_id).info.status == "RUNNING"
    assert scratch_left(tmp_path)  # nothing could clean up after -9 …
    step = saved_checkpoint(run_id, tmp_path)["position"]["step"]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["pix2pix", "--resume", run_id, "--max-steps", str(step + 1), "--no-progress"]) == 0
    assert not scratch_left(tmp_path)  # … so the next command swept it
    stale = MlflowClient().get_run(run_id)
    assert stale.info.status == "KILLED" and "ended without closing the run" in stale.data.tags["error"]


def dead_process_owner() -> str:
    """The owner tag of a process that has ended."""
    import psutil

    from imgtrans.tracking.store import owner_tag

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(proc.pid).create_time()
    proc.wait()
    return owner_tag().split()[0] + f" {proc.pid} {started:.2f}"


def test_any_next_command_closes_the_runs_of_dead_processes(facades, capsys):
    """A run whose process died (kill -9, a lost machine) is KILLED by the next command that opens a run in its
    experiment; `imgtrans runs close-dead` does it alone."""
    from imgtrans.tracking import store

    client = MlflowClient()
    dead = client.create_run("0", run_name="dead", tags={store.OWNER_TAG: dead_process_owner()}).info.run_id
    alive = client.create_run("0", run_name="alive", tags={store.OWNER_TAG: store.owner_tag()}).info.run_id
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "1"]) == 0
    assert client.get_run(dead).info.status == "KILLED"
    assert "ended without closing the run" in client.get_run(dead).data.tags["error"]
    assert client.get_run(alive).info.status == "RUNNING"  # this process: alive
    assert "closed run dead" in capsys.readouterr().err
    finished = client.search_runs(["0"], "attributes.status = 'FINISHED'")[0]
    for ended in (finished, client.get_run(dead)):  # the owner and liveness tags went with the process
        assert not {store.OWNER_TAG, store.ALIVE_TAG} & ended.data.tags.keys(), ended.data.tags

    other_host = client.create_run("0", run_name="elsewhere", tags={
        store.OWNER_TAG: "another-host 1 1.00", store.ALIVE_TAG: str(int(time.time()) - 7200)}).info.run_id
    assert main(["runs", "close-dead"]) == 0
    assert client.get_run(other_host).info.status == "RUNNING"  # another host's process cannot be checked …
    assert main(["runs", "close-dead", "--older-than", "1"]) == 0  # … unless it has been silent too long
    assert client.get_run(other_host).info.status == "KILLED"
    assert "gave no sign of life for 2.0 h" in client.get_run(other_host).data.tags["error"]


def test_resuming_a_run_that_died_before_its_first_checkpoint_says_so(capsys):
    from imgtrans.tracking import store

    client = MlflowClient()
    dead = client.create_run("0", run_name="early", tags={store.OWNER_TAG: dead_process_owner()}).info.run_id
    assert main(["pix2pix", "--resume", dead, "--no-progress"]) == 2
    line = one_line_error(capsys)
    assert "has no checkpoints/last.pt" in line and "before its first checkpoint" in line
    assert client.get_run(dead).info.status == "KILLED"


def interrupt_during_step(monkeypatch, step: int) -> None:
    """Ctrl-C arrives while training step `step` runs (in this process, as from a terminal)."""
    from imgtrans.models.pix2pix import Pix2Pix

    original, calls = Pix2Pix.training_step, []

    def step_and_interrupt(self, batch):
        calls.append(batch)
        if len(calls) == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch)

    monkeypatch.setattr(Pix2Pix, "training_step", step_and_interrupt)


def test_an_interrupt_on_an_epochs_last_step_stops_after_its_validation(facades, monkeypatch):
    """The checkpoint it stops with counts the epoch's validation, which a resumed run would otherwise skip."""
    interrupt_during_step(monkeypatch, 3)  # the tiny set's epoch: 3 steps
    args = ["pix2pix", "--dataset", str(facades), *FAST, "--epochs", "4", "--val-every", "1",
            "--checkpoint-minutes", "0"]
    assert main(args) == 130
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "KILLED"
    assert [m.step for m in MlflowClient().get_metric_history(run.info.run_id, "val/psnr")] == [3]
    with tempfile.TemporaryDirectory() as tmp:
        assert saved_checkpoint(run.info.run_id, Path(tmp))["best"]["step"] == 3


def test_an_interrupt_on_the_last_step_keeps_the_model_and_the_checkpoint(facades, monkeypatch):
    """The last step's interrupt is taken once the model is logged, and the run keeps its checkpoint even with
    keep_checkpoints=none (a run that stops early always does)."""
    interrupt_during_step(monkeypatch, 2)
    args = ["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "2", "--keep-checkpoints", "none"]
    assert main(args) == 130
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "KILLED" and run.outputs.model_outputs
    assert {m.step for m in MlflowClient().get_metric_history(run.info.run_id, "val/psnr")} == {2}
    with tempfile.TemporaryDirectory() as tmp:
        assert saved_checkpoint(run.info.run_id, Path(tmp))["position"]["step"] == 2


def test_resuming_past_the_end_is_an_error(facades, tmp_path, capsys):
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "3"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert main(["pix2pix", "--resume", run.info.run_id, "--max-steps", "2", "--no-progress"]) == 2
    assert "nothing left to train: the checkpoint" in one_line_error(capsys)


@pytest.mark.slow
@pytest.mark.integration
def test_no_scratch_folder_outlives_its_command(facades, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "2"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert main(["pix2pix", "--resume", run.info.run_id, "--max-steps", "3", "--no-progress"]) == 0
    assert main(["export", "--run-id", run.info.run_id, "--output", str(tmp_path / "g.onnx")]) == 0
    assert main(["evaluate", "--run-id", run.info.run_id]) == 0
    assert main(["compare", "--no-progress"]) == 0
    assert main(["pix2pix", "--dataset", str(tmp_path / "missing"), *FAST]) == 2
    # torch's compiler cache, made where the process first imports it (torchvision does), is torch's to keep.
    assert [p for p in scratch.iterdir() if not p.name.startswith("torchinductor_")] == []


def test_sweep_removes_only_folders_whose_process_died(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = ("import os, signal; from imgtrans.files import scratch_dir; "
            "held = scratch_dir('dead'); held.__enter__(); os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=60)
    (dead,) = scratch_left(tmp_path)
    with scratch_dir("alive") as alive:
        assert sweep_scratch() == [dead]
        assert alive.is_dir()
    assert not scratch_left(tmp_path)


def test_an_interrupt_never_leaves_a_half_written_file(tmp_path):
    path = tmp_path / "state.pt"
    atomic_write(path, lambda fh: torch.save({"old": 1}, fh))
    state = {"weights": torch.randn(256, 256)}

    def write(fh):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the file is being written
        torch.save(state, fh)

    with interrupts.handled(), pytest.raises(interrupts.Interrupted) as caught:
        atomic_write(path, write)
    assert caught.value.exit_code == 130
    assert torch.equal(torch.load(path)["weights"], state["weights"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "state.pt"]  # mlflow.db: the test's store


def test_a_deferred_loop_gets_the_interrupt_at_its_safe_point():
    saved = []
    with interrupts.handled(), pytest.raises(interrupts.Interrupted):
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            saved.append("still running")  # the first signal waits for the loop's check
            interrupts.stop_if_pending(lambda: saved.append("checkpoint"), "step 1", "run")
    assert saved == ["still running", "checkpoint"]


def test_a_damaged_checkpoint_is_refused(facades, tmp_path, capsys):
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "2"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    path = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/last.pt",
                                                    dst_path=str(tmp_path / "ckpt")))
    checkpoint.read(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside the weights
    path.write_bytes(bytes(data))
    with pytest.raises(ImgtransError, match="is damaged"):
        checkpoint.read(path)
    assert main(["pix2pix", "--resume", str(path), "--max-steps", "4", "--no-progress"]) == 2
    assert "is damaged" in one_line_error(capsys)


def test_a_secret_is_private_from_creation(tmp_path):
    old = os.umask(0)  # the most permissive umask: the mode must not come from it
    try:
        fresh = write_secret(tmp_path / "fresh", "s3cret")
        existing = tmp_path / "existing"
        existing.write_text("old")
        existing.chmod(0o644)
        write_secret(existing, "s3cret")
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in (fresh, existing)] == [0o600, 0o600]
    assert existing.read_text() == "s3cret"
