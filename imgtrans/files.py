"""Files that are complete or absent: written beside their place, then renamed, never interrupted halfway;
and scratch folders that go away with the job that made them, however it ends."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

from imgtrans import interrupts

SCRATCH_PREFIX = "imgtrans-"
OWNER_FILE = ".owner"
SHORT_PARENT = 24  # characters of a folder that `scratch_dir(short=True)` may use as it is


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def file_digest(path: Path) -> str:
    """The first 16 hex digits of a file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def temp_file_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """(fd, name) of a new hidden file in `path`'s folder, with the permissions of an ordinary new file
    (mkstemp's own 0600 would make every result private once renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    return fd, tmp


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call `write(file)` on a temporary file in the same folder, then rename it to `path`."""
    with interrupts.held():
        fd, tmp = temp_file_beside(path)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def unwritable_reason(path: Path) -> str | None:
    """Why a file could not be written at `path` (checked before a long job, not after it), or None."""
    if path.is_dir():
        return f"{path} is a folder"
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    return None if os.access(folder, os.W_OK) else f"{folder} is not writable"


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def write_secret(path: Path, text: str) -> Path:
    """A file only its owner can read, from the moment it exists (mode 0600 at creation, not after)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


@contextmanager
def scratch_dir(purpose: str, short: bool = False) -> Iterator[Path]:
    """A temporary folder for one job, removed when the block ends. While it exists its owner file is locked,
    so the folder of a process killed with -9 is recognised (unlocked) and removed by `sweep_scratch`.
    `short`: its path is at most a few dozen characters (under /tmp when TMPDIR is longer), for programs that
    put Unix sockets in it (their paths may not exceed 107 bytes)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{SCRATCH_PREFIX}{purpose}-", dir=_short_parent() if short else None))
    owner = os.open(staging / OWNER_FILE, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(owner, fcntl.LOCK_EX)
    path = staging.with_name(staging.name[1:])
    os.rename(staging, path)  # visible under the swept name only once locked
    try:
        yield path
    finally:
        os.close(owner)
        shutil.rmtree(path, ignore_errors=True)


def _short_parent() -> str:
    temp = tempfile.gettempdir()
    return temp if len(temp) <= SHORT_PARENT else "/tmp"


def sweep_scratch() -> list[Path]:
    """Remove the scratch folders of imgtrans processes that died without cleaning up; returns them."""
    removed = []
    parents = {Path(tempfile.gettempdir()), Path(_short_parent())}
    for path in (found for parent in parents for found in parent.glob(f"{SCRATCH_PREFIX}*")):
        try:
            owner = os.open(path / OWNER_FILE, os.O_RDWR)
        except OSError:  # not a folder of ours, or already gone
            continue
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # locked: its process is alive
            continue
        finally:
            os.close(owner)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
