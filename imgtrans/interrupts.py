"""Ctrl-C and SIGTERM (what schedulers and preemption send) as one exception, raised where it is safe.

`handled()` turns both signals into `Interrupted` for the duration of a command. Two
kinds of region change when it is raised:

- `held()`: never inside. A file being written or an artifact being copied is
  finished first, so an interrupt cannot leave a half-written file behind.
- `deferred()`: at the loop's next `stop_if_pending()` check, where the training loop
  saves a checkpoint of the state between two steps and stops. A second signal
  stops at once (outside a held region).
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm import tqdm

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RESUME_HINT = "continue with --resume"  # and the run's id


class Interrupted(KeyboardInterrupt):
    """An interrupt by signal; the process exits with 128 + the signal number (130 Ctrl-C, 143 SIGTERM)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted ({signal.Signals(signum).name})")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code(exc: KeyboardInterrupt) -> int:
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


def reason(exc: KeyboardInterrupt) -> str:
    return str(exc) if isinstance(exc, Interrupted) else "interrupted (SIGINT)"


class _State:
    held = 0
    deferred = 0
    received: list[int] = []


def _on_signal(signum, frame) -> None:
    _State.received.append(signum)
    if _State.held or (_State.deferred and len(_State.received) == 1):
        return
    _raise()


def _raise() -> None:
    signum = _State.received[0]
    _State.received = []
    raise Interrupted(signum)


@contextmanager
def handled() -> Iterator[None]:
    """Deliver SIGINT and SIGTERM as `Interrupted` while the block runs (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    _State.received = []
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def held() -> Iterator[None]:
    """No interrupt inside the block; one that arrived is raised when it ends (unless a deferred loop owns it).
    Signals interrupt only the main thread, so in another thread (a background checkpoint) there is nothing
    to hold."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _State.held += 1
    try:
        yield
    finally:
        _State.held -= 1
    if _State.received and not _State.held and (not _State.deferred or len(_State.received) > 1):
        _raise()


@contextmanager
def deferred() -> Iterator[None]:
    """A loop that calls `stop_if_pending()` at safe points; an interrupt still pending at the end is raised there."""
    _State.deferred += 1
    try:
        yield
    finally:
        _State.deferred -= 1
    if _State.received and not _State.deferred:
        _raise()


def pending(everywhere: Callable[[bool], bool] = lambda pending: pending) -> bool:
    """Whether an interrupt waits for a deferred loop's safe point. `everywhere(pending)` is whether any process
    of the job has one: then every process has (they stop together)."""
    if not everywhere(bool(_State.received)):
        return False
    if not _State.received:  # another process of the job was signalled
        _State.received.append(signal.SIGTERM)
    return True


def stop_if_pending(save: Callable[[], object], position: str, run_id: str,
                    everywhere: Callable[[bool], bool] = lambda pending: pending) -> None:
    """At a loop's safe point: if an interrupt is pending (on any process of the job: `pending`), save a
    checkpoint, say so and raise it."""
    if pending(everywhere):
        save()
        # Above the progress bar, not run on after it.
        tqdm.write(f"imgtrans: stopped at {position}; {RESUME_HINT} {run_id}", file=sys.stderr)
        _raise()


def ignore_in_worker(worker_id: int) -> None:
    """Data-loader workers leave interrupts to the main process, which stops them after its checkpoint."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
