"""Data-parallel training under torchrun, as real processes on the CPU with gloo: one run per job, the same
training as one process at the global batch, exact resume across an interrupt, and a crashing rank."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import FAST
from mlflow.tracking import MlflowClient
from test_model_zoo import ZOO

from imgtrans.cli import main
from imgtrans.compute.distributed import World, shard
from imgtrans.data.datasets import EpochSampler
from imgtrans.training.launch import _relay

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # real processes and servers

REPO = Path(__file__).resolve().parents[1]
# Instance norm and no dropout: then two processes at batch 1 compute exactly what one does at batch 2, up to
# the order of floating-point sums (batch norm would see half the batch per process).
SAME_MATH = [*FAST, "--batch-size", "1", "--norm", "instance", "--dropout", "false"]
TIMEOUT_S = 180
EPOCHS = 3
STEPS = 3 * EPOCHS  # 6 images per epoch, a global batch of 2


@pytest.mark.parametrize("size, batch", [(6, 1), (7, 2), (5, 2), (2, 3)])
def test_the_processes_share_every_epoch_evenly(size, batch):
    order = list(range(size))
    shards = [shard(order, batch, World(rank, 2)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1])  # the same number of equal steps
    assert set(shards[0]) | set(shards[1]) == set(order)  # every image, a few of the last batch twice
    assert len(shards[0]) + len(shards[1]) - size < 2
    assert shard(order, batch, World()) == order
    # Global batch k is the two processes' k-th batches side by side, as one process at twice the batch.
    assert shards[0][:batch] + shards[1][:batch] == order[:2 * batch]
    sampler = EpochSampler(size, seed=3, batch_size=batch, world=World(1, 2))
    assert [index for _, index in sampler] == shard(EpochSampler(size, seed=3).order(0), batch, World(1, 2))


def torchrun(*args: str, cwd: Path, launcher: bool = False, own_group: bool = False) -> subprocess.Popen:
    """`torchrun --standalone --nproc_per_node 2 -m imgtrans -- ARGS`, or (launcher) `imgtrans ARGS --nproc 2`,
    which starts the same, as `mlflow run -P nproc=2` does; one thread per process, as torchrun sets it by
    default (the module's job and a test's compare bit for bit only at the same thread count). `own_group`: in a
    process group of its own, as a terminal's foreground job is (for a Ctrl-C to the launcher and torchrun)."""
    command = [sys.executable, "-m", "imgtrans", *args, "--nproc", "2"] if launcher else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "imgtrans", "--",
         *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TMPDIR": str(cwd)}  # torchrun's logs
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=own_group)


def finished(job: subprocess.Popen) -> str:
    _, err = job.communicate(timeout=TIMEOUT_S)
    assert job.returncode == 0, err[-3000:]
    return err


def runs(experiment: str):
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def losses(run_id: str, key: str = "train/G_L1") -> list[float]:
    return [m.value for m in sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.fixture(scope="module")
def two_process_run(facades, tmp_path_factory, empty_store):
    """One uninterrupted 2-process job, in a store of its own."""
    folder = tmp_path_factory.mktemp("ddp")
    shutil.copyfile(empty_store, folder / "mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        finished(torchrun("pix2pix", "--dataset", str(facades), "--epochs", str(EPOCHS), "--experiment", "ddp",
                          *SAME_MATH, cwd=folder))
        (run,) = runs("ddp")
        history = {key: losses(run.info.run_id, key) for key in ("train/G_L1", "train/G_GAN", "train/D_real")}
    return run, history, folder


def test_two_processes_make_one_run_and_train_as_one_process_at_twice_the_batch(two_process_run, facades):
    run, history, _ = two_process_run
    assert run.info.status == "FINISHED"
    assert run.data.params["batch_size"] == "1" and run.data.params["global_batch_size"] == "2"
    assert run.data.params["world_size"] == "2" and "val/psnr" in run.data.metrics
    assert len(history["train/G_L1"]) == STEPS

    assert main(["pix2pix", "--dataset", str(facades), "--epochs", str(EPOCHS), "--experiment", "one", *SAME_MATH,
                 "--batch-size", "2"]) == 0
    (single,) = runs("one")
    for key, values in history.items():
        # The mean of two half-batch gradients is the full batch's; the sums happen in another order.
        assert losses(single.info.run_id, key) == pytest.approx(values, rel=1e-4), key


def test_ctrl_c_stops_a_job_in_one_line_and_it_resumes_exactly(two_process_run, facades, monkeypatch):
    """A terminal's Ctrl-C reaches the launcher and torchrun at once (one process group); torchrun passes it on to
    the processes, which it starts in sessions of their own."""
    _, history, folder = two_process_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    job = torchrun("pix2pix", "--dataset", str(facades), "--epochs", str(EPOCHS), "--experiment", "stopped",
                   *SAME_MATH, cwd=folder, launcher=True, own_group=True)
    deadline = time.monotonic() + TIMEOUT_S
    while not (started := runs("stopped")) or len(losses(started[0].info.run_id)) < 2:
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-3000:]
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGINT)
    _, err = job.communicate(timeout=TIMEOUT_S)
    run_id = started[0].info.run_id
    assert job.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.count("imgtrans: interrupted (SIGINT)") == 1 and f"continue with --resume {run_id}" in err, err
    stopped = MlflowClient().get_run(run_id)
    assert stopped.info.status == "KILLED" and stopped.data.tags["error"].startswith("interrupted (SIG")
    done = len(losses(stopped.info.run_id))
    assert done < STEPS

    finished(torchrun("pix2pix", "--resume", stopped.info.run_id, "--experiment", "stopped", "--no-progress",
                      cwd=folder))
    resumed = next(r for r in runs("stopped") if r.info.run_id != stopped.info.run_id)
    assert resumed.info.status == "FINISHED"
    for key, values in history.items():
        assert losses(stopped.info.run_id, key) + losses(resumed.info.run_id, key)[-(STEPS - done):] == values


# torchrun's handler, as torchrun sets it, met by a signal while another exception is handled (a logging cache
# miss, as seen in CI), or a process's own error raised the same way.
CHAINED_EXCEPTION = """
import os, signal, sys
from torch.distributed.elastic.multiprocessing.api import _terminate_process_handler
signal.signal(signal.SIGINT, _terminate_process_handler)
print("imgtrans: stopped at step 3; continue with --resume RUN", file=sys.stderr, flush=True)
try:
    {}[30]
except KeyError:
    os.kill(os.getpid(), signal.SIGINT) if sys.argv[1] == "signal" else int("x")
"""


def test_torchrun_stopped_while_handling_another_exception_shows_no_traceback_but_a_process_error_does(capsys):
    for cause, shown in (("signal", False), ("error", True)):
        job = subprocess.Popen([sys.executable, "-c", CHAINED_EXCEPTION, cause], stderr=subprocess.PIPE, text=True)
        death, _, said = _relay(job)
        job.wait(timeout=TIMEOUT_S)
        err = capsys.readouterr().err
        assert death is None and said == {"imgtrans: stopped at step 3; continue with --resume RUN"}, err
        assert ("Traceback" in err) == shown and ("KeyError: 30" in err) == shown, err
        assert ("ValueError: invalid literal" in err) == shown, err


def test_bad_input_one_process_finds_fails_the_job_with_its_line(facades, tmp_path):
    """An image only rank 1 decodes, truncated after its header (which rank 0 reads for the dataset's summary):
    the job ends at once, with rank 1's one line and status 2, its run FAILED with rank 1's reason."""
    data = tmp_path / "data"
    shutil.copytree(facades, data)
    first_of_rank_1 = shard(EpochSampler(6, seed=0).order(0), 1, World(1, 2))[0]
    names = sorted(p.name for p in (data / "train" / "A").iterdir())
    assert first_of_rank_1 != 0  # the image every process reads to detect the layout stays readable
    for side in ("A", "B"):
        path = data / "train" / side / names[first_of_rank_1]
        path.write_bytes(path.read_bytes()[:200])
    started = time.monotonic()
    job = torchrun("pix2pix", "--dataset", str(data), "--data-cache", "off", *SAME_MATH, cwd=tmp_path, launcher=True)
    _, err = job.communicate(timeout=TIMEOUT_S)
    assert job.returncode == 2 and time.monotonic() - started < 120 and "Traceback" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("imgtrans: error:")]
    assert f"cannot read image {data / 'train' / 'A' / names[first_of_rank_1]}" in line
    assert "--resume" not in err  # its first step: nothing to resume
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FAILED", err[-3000:]
    assert run.data.tags["error"].startswith("rank 1: ") and names[first_of_rank_1] in run.data.tags["error"]


def test_every_model_keeps_its_processes_identical_and_resumes_exactly(facades, tmp_path):
    """Every Trainer model, every network (CUT's F, BicycleGAN's E included), on 2 gloo processes: all processes
    hold the same weights after 4 steps, and 2 steps + a resume from that checkpoint give them bit for bit."""
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            str(REPO / "tests" / "zoo_job.py"), str(facades), str(tmp_path / "out")], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    out, err = job.communicate(timeout=TIMEOUT_S * 2)
    assert job.returncode == 0, err[-3000:]
    for model in ["pix2pix", *ZOO]:
        folder = tmp_path / "out" / model
        straight, other_rank, resumed = (torch.load(folder / name, weights_only=True) for name in
                                         ("straight/rank0.pt", "straight/rank1.pt", "resumed/rank0.pt"))
        assert straight.keys() == other_rank.keys() == resumed.keys()
        for key, value in straight.items():
            if not key.startswith(("pool_A.", "pool_B.")):  # each process's own generated images
                assert torch.equal(value, other_rank[key]), (model, key, "processes differ")
            assert torch.equal(value, resumed[key]), (model, key, "resume is not exact")


def test_a_killed_process_ends_the_job_in_one_line_and_leaves_nothing_behind(facades, tmp_path):
    """kill -9 of rank 1: no torchrun traceback, no "interrupted" from the survivor, the run FAILED with the
    reason, and torchrun's temporary folders gone."""
    import psutil

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    job = subprocess.Popen([sys.executable, "-m", "imgtrans", "pix2pix", "--dataset", str(facades), "--epochs", "100",
                            *SAME_MATH, "--checkpoint-minutes", "0", "--nproc", "2"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT_S
    while not (started := mlflow.search_runs(search_all_experiments=True, output_format="list")) or \
            len(losses(started[0].info.run_id)) < 2:
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-3000:]
        time.sleep(0.1)
    (rank_1,) = [p for p in psutil.Process(job.pid).children(recursive=True)
                 if p.environ().get("RANK") == "1" and "imgtrans" in " ".join(p.cmdline())]
    rank_1.kill()
    _, err = job.communicate(timeout=TIMEOUT_S)
    assert job.returncode != 0
    assert "Traceback" not in err and "interrupted (SIGTERM)" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("imgtrans: error:")]
    assert "the process of rank 1 was killed by SIGKILL" in line and started[0].info.run_id in line
    run = MlflowClient().get_run(started[0].info.run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "the process of rank 1 was killed by SIGKILL"
    assert not list(tmp.glob("torchelastic_*")) and not list(tmp.glob("imgtrans-*"))

