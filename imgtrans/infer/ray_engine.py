"""The archive on a Ray cluster: Ray Data streams the file list through a pool of actors, each one
`FileTranslator` (one ONNX Runtime session) on a GPU of its own, or on a CPU slot where the cluster has none.

Each file is a block of its own, so a lost actor costs only the file it was on: Ray Data restarts the actor
(on another node when its own is gone) and retries the file there. Actors write outputs where the driver would (the input and
output folders must be mounted at the same paths on every node); the driver keeps the manifest. A file
whose actor was lost after putting its output in place but before reporting it is not written again (see
`FileTranslator`).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Iterator

import numpy as np

from imgtrans.errors import ImgtransError
from imgtrans.infer.manifest import COLUMNS, Outcome
from imgtrans.infer.worker import FileTranslator, Translated, TranslateSettings, Work

INSTALL_HINT = 'the Ray engine needs Ray: pip install "imgtrans[ray]"'
CONNECT_TIMEOUT_S = 10


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImgtransError(f"--engine ray: {INSTALL_HINT}") from None
    return ray


def plain(value):
    """A Python value for a NumPy scalar of a Ray Data column."""
    return value.item() if isinstance(value, np.generic) else value


def check_reachable(address: str) -> None:
    """A cluster's `host:port` that refuses connections is said at once (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # Ray's other forms ("auto", "ray://…") are Ray's to resolve
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ImgtransError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check --ray-address "
                            "or RAY_ADDRESS (the head's address from `ray start --head`), or leave both empty for "
                            "a local cluster") from None


def quiet_ray_console() -> None:
    """Ray's notices would drown the run's own lines on the console; Ray's log files keep them."""
    logging.getLogger("ray").setLevel(logging.ERROR)
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.ERROR)


class RayFileTranslator:
    """A Ray Data actor: batches of `Work` columns in, `Outcome` columns (and each file's report) out."""

    def __init__(self, settings: TranslateSettings, threads: int, run_started_ns: int):
        self.translate = FileTranslator(settings, device_id=0, threads=threads)  # Ray sets CUDA_VISIBLE_DEVICES
        self.run_started_ns = run_started_ns

    def __call__(self, batch: dict) -> dict:
        results = [self.translate(Work(*map(plain, values)), self.run_started_ns)
                   for values in zip(*(batch[name] for name in Work._fields))]
        columns = {name: [getattr(outcome, name) for outcome, _ in results] for name in COLUMNS}
        return columns | {"report": [report for _, report in results]}


class RayEngine:
    """Connects to the cluster at `address` (empty: the one in RAY_ADDRESS, else a local one for this run)."""

    def __init__(self, settings: TranslateSettings, address: str, cpus_per_worker: int):
        self.ray = import_ray()
        self.settings = settings
        address = address or os.environ.get("RAY_ADDRESS", "")
        quiet_ray_console()
        self.address = address or "a local cluster"
        check_reachable(address)
        try:
            self.ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING,
                          log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImgtransError(f"cannot reach the Ray cluster at {self.address} ({reason}); check --ray-address "
                                "or RAY_ADDRESS, or leave both empty for a local cluster") from None
        resources = self.ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if gpus and settings.provider != "cpu":
            self.workers, self.threads, self.per_worker = gpus, 0, {"num_gpus": 1}
        else:
            if settings.provider in ("cuda", "tensorrt"):
                self.close()
                raise ImgtransError(f"--provider {settings.provider}: the Ray cluster at {self.address} has no GPU; "
                                    "use --provider cpu or auto")
            if cpus < cpus_per_worker:
                self.close()
                raise ImgtransError(f"--cpus-per-worker {cpus_per_worker}: the Ray cluster at {self.address} has "
                                    f"{cpus} CPUs; ask for at most that many")
            self.workers, self.threads = cpus // cpus_per_worker, cpus_per_worker
            self.per_worker = {"num_cpus": cpus_per_worker}
        context = self.ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the run's own bar counts files
        context.print_on_execution_start = False

    def describe(self) -> str:
        slot = "GPU" if "num_gpus" in self.per_worker else f"{self.threads} CPU{'s' * (self.threads > 1)}"
        return f"Ray at {self.address}: {self.workers} actor{'s' * (self.workers > 1)}, one per {slot}"

    def params(self) -> dict:
        return {"engine": "ray", "workers": self.workers,
                "worker_resources": "1 GPU" if "num_gpus" in self.per_worker else f"{self.threads} CPU"}

    def __call__(self, works: list[Work], run_started_ns: int) -> Iterator[Translated]:
        data = self.ray.data.from_items([work._asdict() for work in works], override_num_blocks=len(works))
        results = data.map_batches(
            RayFileTranslator, batch_size=1, compute=self.ray.data.ActorPoolStrategy(size=min(self.workers, len(works))),
            fn_constructor_kwargs={"settings": self.settings, "threads": self.threads,
                                   "run_started_ns": run_started_ns}, **self.per_worker)
        for row in results.iter_rows():
            report = row.pop("report")
            yield Translated(Outcome(**{name: plain(row[name]) for name in COLUMNS}), report)

    def close(self) -> None:
        self.ray.shutdown()
