"""Engines that run `FileTranslator`s over an archive's files on this machine: one session per GPU.

On a machine with several GPUs every GPU gets a session of its own (`--devices` picks some) and a thread that
feeds it files; ONNX Runtime releases the GIL while it computes, so the threads overlap reading, inference
and writing. Without a GPU there is one session, whose operators use every core. The Ray engine
(`imgtrans.infer.ray_engine`) runs the same translators on a cluster.
"""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Iterator

import torch

from imgtrans.errors import ImgtransError
from imgtrans.infer.session import GPU_PROVIDERS, choose_providers
from imgtrans.infer.worker import FileTranslator, Translated, TranslateSettings, Work


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def choose_devices(provider: str, devices: str) -> list[int]:
    """GPU indices for `--devices` ("all", or indices such as "0,2"); [0] when the provider computes on the CPU
    (one session, whose threads use every core)."""
    on_gpu = choose_providers(provider)[0] in GPU_PROVIDERS
    count = gpu_count() if on_gpu else 0
    if devices == "all":
        return list(range(count)) or [0]
    try:
        chosen = [int(index) for index in devices.split(",")]
    except ValueError:
        raise ImgtransError(f"invalid --devices '{devices}'; give 'all' or GPU indices such as 0,1") from None
    if not count:
        raise ImgtransError(f"--devices {devices} names GPUs, but the {provider} provider computes on the CPU here; "
                            "leave --devices at 'all'")
    wrong = [index for index in chosen if not 0 <= index < count]
    if wrong or len(set(chosen)) < len(chosen):
        raise ImgtransError(f"invalid --devices '{devices}': this machine has GPUs 0 to {count - 1}; name each "
                            "once")
    return chosen


class LocalEngine:
    """One `FileTranslator` per device; several take files from one queue in threads."""

    def __init__(self, settings: TranslateSettings, devices: list[int]):
        self.translators = [FileTranslator(settings, device_id) for device_id in devices]
        self.devices = devices

    @property
    def on_gpu(self) -> bool:
        return self.translators[0].generator.on_gpu

    def describe(self) -> str:
        first = self.translators[0]
        where = (f"{len(self.devices)} GPU{'s' * (len(self.devices) > 1)} ({', '.join(map(str, self.devices))})"
                 if self.on_gpu else "the CPU")
        return f"{first.generator.provider} on {where}, {first.tiles.describe()}"

    def params(self) -> dict:
        first = self.translators[0]
        return {"engine": "local", "provider": first.generator.provider, "workers": len(self.translators),
                "max_tile": first.tiles.max_tile}

    def close(self) -> None:
        """Frees the sessions' memory."""
        self.translators.clear()

    def __call__(self, works: list[Work], run_started_ns: int) -> Iterator[Translated]:
        if len(self.translators) == 1:  # in this thread, so that Ctrl-C stops it at once
            for work in works:
                yield self.translators[0](work, run_started_ns)
            return
        idle: queue.SimpleQueue[FileTranslator] = queue.SimpleQueue()
        for translator in self.translators:
            idle.put(translator)

        def translate(work: Work) -> Translated:
            translator = idle.get()
            try:
                return translator(work, run_started_ns)
            finally:
                idle.put(translator)

        with ThreadPoolExecutor(len(self.translators), thread_name_prefix="translate") as pool:
            futures = [pool.submit(translate, work) for work in works]
            try:
                for future in as_completed(futures):
                    yield future.result()
            finally:  # interrupted: the files in progress finish, the rest are not started
                for future in futures:
                    future.cancel()
