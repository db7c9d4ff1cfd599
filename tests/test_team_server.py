"""The team stack against the real servers: `imgtrans server` starts PostgreSQL and `mlflow server` on loopback;
training, export from the registry, studies with concurrent and killed workers, and a server restart mid-run."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import FAST, generator_uri, one_line_error

from imgtrans.cli import main
from imgtrans.team.network import free_port
from imgtrans.team.postgres import server_programs

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # real PostgreSQL and mlflow server processes
try:
    server_programs()
    import psycopg  # noqa: F401
except Exception as exc:  # only where PostgreSQL cannot be installed at all; .ci/run installs it
    pytestmark.append(pytest.mark.skip(reason=f"PostgreSQL is not installed here: {exc}"))


@dataclass
class Stack:
    """An `imgtrans server` process and the variables it printed."""

    root: Path
    port: int
    process: subprocess.Popen | None = None
    exports: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "imgtrans", "server", "--data-dir", str(self.root / "stack"), "--port",
             str(self.port), "--workers", "1"],
            # MLflow's lock for creating the store's tables goes in the temp directory: this stack's, removed with it.
            env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(self.root)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        self.exports = {}
        while len(self.exports) < 3:
            line = self.process.stdout.readline()
            assert line and time.monotonic() < deadline, self.process.stderr.read()[-3000:]
            key, value = line.removeprefix("export ").strip().split("=", 1)
            self.exports[key] = value

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(60)

    @property
    def uri(self) -> str:
        return self.exports["MLFLOW_TRACKING_URI"]

    @property
    def storage(self) -> str:
        return self.exports["IMGTRANS_STUDY_STORAGE"]


@pytest.fixture(scope="module")
def stack():
    # Outside pytest's private temp folder: PostgreSQL runs as its own account under root and must reach it.
    root = Path(tempfile.mkdtemp(prefix="team-stack-"))
    root.chmod(0o711)
    team = Stack(root, free_port())
    team.start()
    try:
        yield team
    finally:
        if team.process.poll() is None:
            team.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def on_stack(stack, monkeypatch):
    """This test's clients point at the team server only (no local store)."""
    for key, value in stack.exports.items():
        monkeypatch.setenv(key, value)
    return stack


def test_the_server_says_where_it_is_and_keeps_secrets_off_command_lines(stack):
    assert stack.uri == f"http://127.0.0.1:{stack.port}"
    assert stack.storage.startswith("postgresql://imgtrans@127.0.0.1:") and stack.storage.endswith("/optuna")
    passfile = Path(stack.exports["PGPASSFILE"])
    assert passfile.stat().st_mode & 0o777 == 0o600
    password = passfile.read_text().strip().rsplit(":", 1)[1]
    commands = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert "mlflow server" in commands and "postgres" in commands and password not in commands


def test_training_through_the_server_and_export_from_the_registry_elsewhere(on_stack, facades, tmp_path,
                                                                             monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    assert main(["pix2pix", "--dataset", str(facades), "--max-steps", "2", *FAST]) == 0
    client = MlflowClient()
    run = client.search_runs(["0"], max_results=1)[0]
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert run.data.params["netG"] == "unet" and "val/psnr" in run.data.metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/G_L1")] == [1, 2]
    assert {"checkpoints", "images"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    uri = generator_uri(run.info.run_id)
    assert mlflow.models.get_model_info(uri).flavors["python_function"]
    version = mlflow.register_model(uri, "facades")
    client.set_registered_model_alias("facades", "champion", version.version)

    elsewhere = tmp_path / "another-machine"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no local store here: everything comes through the URI
    assert main(["export", "--model-uri", "models:/facades@champion", "--output", "facades.onnx"]) == 0
    assert (elsewhere / "facades.onnx").stat().st_size > 0 and (elsewhere / "facades.json").exists()
    assert main(["evaluate", "--run-id", run.info.run_id, "--grid-images", "1", "--no-progress"]) == 0
    assert main(["compare", "--run-ids", run.info.run_id, "--output", "report"]) == 0
    assert "test/psnr" in client.get_run(run.info.run_id).data.metrics and (elsewhere / "report" / "report.md").exists()
    assert main(["dip", "--dataset", str(facades), "--crop-size", "32", "--width", "8", "--depth", "3",
                 "--input-depth", "8", "--num-iter", "2", "--no-progress", "--experiment", "dip"]) == 0
    assert main(["benchmark", "--generators", "unet_128", "--tile", "128", "--batch-sizes", "1", "--backends", "eager",
                 "--repeats", "1", "--device", "cpu", "--experiment", "bench"]) == 0
    for name in ("dip", "bench"):
        (other,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        assert other.info.status == "FINISHED"
    assert not (elsewhere / "mlruns").exists() and not (elsewhere / "mlflow.db").exists()


def test_three_study_workers_one_killed_share_one_study_on_postgresql(on_stack, facades, tmp_path):
    from test_study_workers import check_three_workers_one_killed

    check_three_workers_one_killed(facades, tmp_path, on_stack.storage)


def test_a_restarted_server_loses_no_logged_metric(on_stack, facades, monkeypatch):
    """The client retries while the server is down (MLflow's HTTP retries with backoff), so nothing is lost."""
    from mlflow.tracking import MlflowClient

    steps = 9  # 3 per epoch
    # Retries as MLflow makes them (up to 7), only closer together than its default backoff, to keep this short.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    outcome = {}
    training = threading.Thread(target=lambda: outcome.update(status=main(
        ["pix2pix", "--dataset", str(facades), "--epochs", str(steps // 3), "--experiment", "restart", *FAST])))
    training.start()  # in this process, on a thread of its own: the same client, without a second start-up
    client = MlflowClient()
    deadline = time.monotonic() + 120
    while True:  # stop the server once the run has logged a few steps
        assert training.is_alive() and time.monotonic() < deadline, outcome
        experiment = client.get_experiment_by_name("restart")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if runs and len(client.get_metric_history(runs[0].info.run_id, "train/G_L1")) >= 2:
            break
        time.sleep(0.2)
    assert on_stack.stop() in (0, 130)  # the run goes on logging into a server that is not there
    on_stack.start()
    training.join(240)
    assert outcome.get("status") == 0
    run = client.get_run(runs[0].info.run_id)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/G_L1")
    assert sorted({m.step for m in history}) == list(range(1, steps + 1))


def test_a_port_in_use_is_refused_in_one_line(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["server", "--port", str(port), "--data-dir", str(tmp_path / "stack")]) == 2
        assert f"port {port} on 127.0.0.1 is in use" in one_line_error(capsys)
        assert main(["server", "--port", str(free_port()), "--db-port", str(port), "--data-dir",
                     str(tmp_path / "stack")]) == 2
        assert f"database port {port} on 127.0.0.1 is in use" in one_line_error(capsys)
    assert not list((tmp_path / "stack").iterdir())  # no cluster made for a port it cannot have


@pytest.mark.parametrize("uri, message", [
    ("postgresql://mlflow@127.0.0.1:{closed}/mlflow", "cannot reach postgresql://mlflow@127.0.0.1:{closed}/mlflow"),
    ("postgresql://mlflow:secret@127.0.0.1:{closed}/mlflow", "take the password out of the URL"),
    ("sqlite:///mlflow.db", "a team server needs PostgreSQL"),
    ("notaurl", "backend_store_uri: 'notaurl' is not a database URL"),
    ("postgresql://mlflow@127.0.0.1:abc/mlflow", "is not a database URL; expected postgresql://USER@HOST:PORT/DB"),
    ("postgresql://mlflow:secret@127.0.0.1:abc/mlflow", "'postgresql://mlflow:***@127.0.0.1:abc/mlflow' is not a"),
])
def test_a_bad_database_is_refused_in_one_line(tmp_path, capsys, uri, message):
    closed = free_port()
    assert main(["server", "--port", str(free_port()), "--data-dir", str(tmp_path / "stack"),
                 "--backend-store-uri", uri.format(closed=closed)]) == 2
    line = one_line_error(capsys)
    assert message.format(closed=closed) in line and "secret" not in line
