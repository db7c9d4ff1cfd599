"""Writing files so that a crash never leaves a half-written one: write beside it, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def temp_file_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """(fd, name) of a new hidden file in `path`'s folder, with the permissions of an ordinary new file
    (mkstemp's own 0600 would make every result private once renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    return fd, tmp


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call `write(file)` on a temporary file in the same folder, then rename it to `path`."""
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))
