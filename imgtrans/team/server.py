"""`imgtrans server`: the team stack on one machine — an MLflow tracking server on PostgreSQL that also serves
the artifacts, and the database Optuna studies share — started in the foreground and stopped together.

    imgtrans server                                  # a PostgreSQL cluster of its own in ./team-server
    imgtrans server --backend-store-uri postgresql://mlflow@db.lab:5432/mlflow    # an existing database

It prints the variables that point clients at it (MLFLOW_TRACKING_URI, IMGTRANS_STUDY_STORAGE, PGPASSFILE).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url

from imgtrans.errors import ImgtransError
from imgtrans.studies.options import STUDY_STORAGE_VARIABLE
from imgtrans.team.network import advertised, local, port_in_use
from imgtrans.team.options import ServerConfig
from imgtrans.team.postgres import LocalCluster, check_database_url, redacted

START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20
GRACEFUL_STOP_S = 2  # for requests in flight when the server is stopped (clients retry the rest)


@dataclass
class Databases:
    mlflow: str  # as the tracking server, on this machine, reaches it
    optuna: str  # as study workers anywhere reach it
    optuna_here: str  # as this machine reaches it
    environment: dict[str, str]
    cluster: LocalCluster | None = None

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


def open_databases(cfg: ServerConfig) -> Databases:
    """The existing databases the options name (checked), or the local cluster, started."""
    if cfg.backend_store_uri:
        check_database_url(cfg.backend_store_uri, "backend_store_uri")
        optuna = cfg.optuna_storage or _same_server(cfg.backend_store_uri, "optuna")
        check_database_url(optuna, "optuna_storage")
        return Databases(cfg.backend_store_uri, optuna, optuna, {})
    if cfg.optuna_storage:
        raise ImgtransError("optuna_storage goes with backend_store_uri; the local cluster has its own 'optuna' "
                            "database")
    cluster = LocalCluster(Path(cfg.data_dir), host=cfg.host, port=cfg.db_port)
    try:
        cluster.start()
    except BaseException:  # started but its databases could not be made: not left running
        cluster.stop()
        raise
    return Databases(cluster.url("mlflow", for_clients=False), cluster.url("optuna"),
                     cluster.url("optuna", for_clients=False), cluster.environment(), cluster)


def _same_server(url: str, database: str) -> str:

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def create_study_schema(url: str, environment: dict[str, str]) -> None:
    """Optuna's tables, created once here: study workers started at once would otherwise race to create them."""
    passfile = environment.get("PGPASSFILE")
    engine_kwargs = {"connect_args": {"passfile": passfile}} if passfile else {}
    optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs).engine.dispose()


def tracking_server(cfg: ServerConfig, databases: Databases, artifacts: str, log: Path) -> subprocess.Popen:
    """`mlflow server` on the MLflow database, its output in `log`. The database URL goes through the
    environment, not the command line."""
    command = [sys.executable, "-m", "mlflow", "server", "--host", cfg.host, "--port", str(cfg.port),
               "--artifacts-destination", artifacts, "--workers", str(cfg.workers),
               # A client's idle keep-alive connection would otherwise hold a stop for the whole STOP_TIMEOUT_S.
               "--uvicorn-opts", f"--timeout-graceful-shutdown {GRACEFUL_STOP_S}"]
    environment = {**os.environ, **databases.environment, "MLFLOW_BACKEND_STORE_URI": databases.mlflow}
    with open(log, "a") as output:
        return subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                start_new_session=True)


def exited(server: subprocess.Popen, log: Path) -> ImgtransError:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return ImgtransError(f"the MLflow server exited with status {server.returncode}: "
                         f"{lines[-1] if lines else 'no output'} (see {log})")


def wait_until_healthy(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise exited(server, log)
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise ImgtransError(f"the MLflow server did not answer on {url} within {START_TIMEOUT_S} s")


def stop(server: subprocess.Popen) -> None:
    """The server and its workers (one process group)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    try:  # workers that outlived their parent
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def exports(tracking_uri: str, databases: Databases) -> list[str]:
    """Shell lines that point a client at the stack."""
    variables = {"MLFLOW_TRACKING_URI": tracking_uri, STUDY_STORAGE_VARIABLE: databases.optuna,
                 **databases.environment}
    return [f"export {key}={shlex.quote(value)}" for key, value in variables.items()]


def server_command(cfg: ServerConfig, explicit: dict, progress: bool) -> int:
    if port_in_use(cfg.host, cfg.port):
        raise ImgtransError(f"port {cfg.port} on {cfg.host} is in use (another server?); choose another with --port")
    folder = Path(cfg.data_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    artifacts, log = cfg.artifacts_destination or str(folder / "artifacts"), folder / "mlflow-server.log"
    databases = open_databases(cfg)
    server = None
    try:
        create_study_schema(databases.optuna_here, databases.environment)
        server = tracking_server(cfg, databases, artifacts, log)
        wait_until_healthy(server, f"http://{local(cfg.host)}:{cfg.port}", log)
        tracking_uri = f"http://{advertised(cfg.host)}:{cfg.port}"
        print(f"imgtrans: team server at {tracking_uri} — runs in {redacted(databases.mlflow)}, artifacts in "
              f"{artifacts}, studies in {redacted(databases.optuna)}, log {log}; Ctrl-C stops it", file=sys.stderr)
        print("\n".join(exports(tracking_uri, databases)), flush=True)
        server.wait()
        raise exited(server, log)
    finally:
        if server is not None:
            stop(server)
        databases.stop()
