"""The archive on a Ray cluster: a pool of actors, each one `FileTranslator` (one ONNX Runtime session) on a
GPU of its own, or on a CPU slot where the cluster has none, takes the files one at a time.

A lost actor costs only the file it was on: Ray restarts the actor (on another node when its own is gone)
and retries the file there — its constructor takes only small plain values, which travel with the actor's
definition and so survive the restart. Actors write outputs where the driver would (the input and output
folders must be mounted at the same paths on every node); the driver keeps the manifest. A file whose actor
was lost after putting its output in place but before reporting it is not written again (see
`FileTranslator`). Without a cluster address a local Ray is started for the run, its session files in a
scratch folder that goes with it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from contextlib import ExitStack
from typing import Iterator

from imgtrans.errors import ImgtransError, one_line
from imgtrans.files import scratch_dir
from imgtrans.infer.manifest import Outcome
from imgtrans.infer.worker import FileTranslator, Translated, TranslateSettings, Work

INSTALL_HINT = 'the Ray engine needs Ray: pip install "imgtrans[ray]"'
CONNECT_TIMEOUT_S = 10
FILE_RETRIES = 3  # a file is tried again this many times on a restarted actor


def actor_death(exc: Exception) -> str:
    """One line of why an actor died: the error its constructor raised (the last line of Ray's message, which
    carries the actor's traceback), or that its process was lost."""
    if getattr(exc, "actor_init_failed", False):
        return f"its Ray actor could not start: {one_line(exc)}"
    return f"its Ray actor died {FILE_RETRIES + 1} times on it (out of memory, or a crash reading it)"


def import_ray():
    try:
        import ray
    except ImportError:
        raise ImgtransError(f"--engine ray: {INSTALL_HINT}") from None
    return ray


def check_reachable(address: str) -> None:
    """A cluster's `host:port` that refuses connections is said at once (Ray itself retries for minutes)."""
    if address in ("", "auto") or "://" in address:
        return  # Ray's other forms ("auto", "ray://…") are Ray's to resolve
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ImgtransError(f"invalid Ray address '{address}': give the head's host:port (as `ray start --head` "
                            "prints it), auto, or ray://host:port — or leave it empty for a local cluster")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ImgtransError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check --ray-address "
                            "or RAY_ADDRESS (the head's address from `ray start --head`), or leave both empty for "
                            "a local cluster") from None


def quiet_ray_console() -> None:
    """Ray's notices would drown the run's own lines on the console; Ray's log files keep them."""
    logging.getLogger("ray").setLevel(logging.ERROR)


class RayFileTranslator:
    """An actor: one file at a time, as plain values in and out."""

    def __init__(self, settings: dict, threads: int, run_started_ns: int):
        # Ray sets CUDA_VISIBLE_DEVICES: the actor's GPU is its device 0.
        self.translate = FileTranslator(TranslateSettings(**settings), device_id=0, threads=threads)
        self.run_started_ns = run_started_ns

    def __call__(self, work: tuple) -> tuple[tuple, str]:
        outcome, report = self.translate(Work(*work), self.run_started_ns)
        return dataclasses.astuple(outcome), report


class RayEngine:
    """Connects to the cluster at `address` (empty: the one in RAY_ADDRESS, else a local one for this run)."""

    def __init__(self, settings: TranslateSettings, address: str, cpus_per_worker: int):
        self.ray = import_ray()
        self.settings = settings
        address = address or os.environ.get("RAY_ADDRESS", "")
        quiet_ray_console()
        self.cluster = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        check_reachable(address)
        self.scratch = ExitStack()  # a local cluster's session files, removed with it
        local = {} if address else {"_temp_dir": str(self.scratch.enter_context(scratch_dir("ray", short=True)))}
        try:
            self.ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING,
                          log_to_driver=False, configure_logging=False, **local)
        except (ConnectionError, RuntimeError, ValueError) as exc:  # what Ray says of addresses it rejects
            self.scratch.close()
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            advice = ("check --ray-address or RAY_ADDRESS, or leave both empty for a local cluster; a cluster with "
                      "token authentication also needs RAY_AUTH_MODE=token here") if address else \
                "check that Ray can start on this machine (`ray start --head` says why not)"
            raise ImgtransError(f"cannot reach {self.cluster} ({reason}); {advice}") from None
        resources = self.ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if gpus and settings.provider != "cpu":
            self.workers, self.threads, self.per_worker = gpus, 0, {"num_gpus": 1}
        else:
            if settings.provider in ("cuda", "tensorrt"):
                self.close()
                raise ImgtransError(f"--provider {settings.provider}: {self.cluster} has no GPU; "
                                    "use --provider cpu or auto")
            if cpus < cpus_per_worker:
                self.close()
                raise ImgtransError(f"--cpus-per-worker {cpus_per_worker}: {self.cluster} has "
                                    f"{cpus} CPUs; ask for at most that many")
            self.workers, self.threads = cpus // cpus_per_worker, cpus_per_worker
            self.per_worker = {"num_cpus": cpus_per_worker}

    def describe(self) -> str:
        slot = "GPU" if "num_gpus" in self.per_worker else \
            ("CPU" if self.threads == 1 else f"{self.threads} CPUs")
        actors = f"{self.workers} actor{'s' * (self.workers > 1)}"
        return f"{self.cluster[0].upper()}{self.cluster[1:]}: {actors}, one per {slot}"

    def params(self) -> dict:
        return {"engine": "ray", "workers": self.workers,
                "worker_resources": "1 GPU" if "num_gpus" in self.per_worker else f"{self.threads} CPU"}

    def __call__(self, works: list[Work], run_started_ns: int) -> Iterator[Translated]:
        # An actor is restarted as often as it dies; the file it was on is retried on the restarted actor, a few
        # times: a file that kills its actor every time (memory, a crashing decoder) is reported failed.
        actor = self.ray.remote(max_restarts=-1, max_task_retries=FILE_RETRIES, **self.per_worker)(RayFileTranslator)
        settings = dataclasses.asdict(self.settings)
        idle = [actor.remote(settings, self.threads, run_started_ns) for _ in range(min(self.workers, len(works)))]
        queue, running = list(reversed(works)), {}
        while queue or running:
            while idle and queue:
                worker, work = idle.pop(), queue.pop()
                running[worker.__call__.remote(tuple(work))] = worker, work
            (finished,), _ = self.ray.wait(list(running), num_returns=1)
            worker, work = running.pop(finished)
            idle.append(worker)
            try:
                outcome, report = self.ray.get(finished)
            except self.ray.exceptions.RayActorError as exc:
                yield Translated(Outcome(work.input, work.output, "failed", 0.0, actor_death(exc), work.input_size,
                                         work.input_mtime_ns, self.settings.recipe), "")
                continue
            yield Translated(Outcome(*outcome), report)

    def close(self) -> None:
        self.ray.shutdown()
        self.scratch.close()
