"""The manifest of an output folder: one record per output, across every run into it, saved atomically.

Columns: input (absolute path), output (relative to the output folder), status (done, skipped, failed),
seconds, error, input_size, input_mtime_ns and recipe (what made the output: the model's digest and the
settings that decide it). Records are kept sorted by output, so the file does not depend on the order in
which workers finished.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from imgtrans.errors import ImgtransError, one_line
from imgtrans.files import atomic_write_bytes

MANIFEST = "manifest.csv"
MANIFEST_SAVE_EVERY_S = 2.0


@dataclass
class Outcome:
    """One manifest record; its fields are the manifest's columns."""

    input: str
    output: str
    status: str  # done | skipped (done by an earlier run) | failed
    seconds: float
    error: str = ""
    input_size: int = -1
    input_mtime_ns: int = -1
    recipe: str = ""  # what made the output from the input: the model's digest and the settings that matter

    @classmethod
    def from_row(cls, row: dict[str, str]) -> Outcome:
        return cls(row["input"], row["output"], row["status"], float(row["seconds"]), row["error"],
                   int(row["input_size"]), int(row["input_mtime_ns"]), row["recipe"])

    def row(self) -> list[str]:
        return [self.input, self.output, self.status, f"{self.seconds:.3f}", self.error, str(self.input_size),
                str(self.input_mtime_ns), self.recipe]


COLUMNS = [f.name for f in dataclasses.fields(Outcome)]
IDENTIFYING_COLUMNS = {"input", "output", "status"}  # in every version's manifest, which has no column but COLUMNS


class InputId(NamedTuple):
    """What identifies an input across runs."""

    path: str  # absolute, links and `..` resolved
    size: int
    mtime_ns: int


def input_id(path: Path) -> InputId:
    try:
        stat = path.stat()
    except OSError:  # reading it will fail and say why
        return InputId(os.path.realpath(path), -1, -1)
    # The file itself, however its folder was spelled (`..`, a link): what a rerun must recognise, and what is read.
    return InputId(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)



class Manifest:
    """The records of every run into one output folder, keyed by output; saved atomically."""

    def __init__(self, path: Path):
        self.path = path
        self.records = self._load(path)
        self.saved_at = time.monotonic()

    @staticmethod
    def _load(path: Path) -> dict[str, Outcome]:
        """Records that can be parsed; a manifest of an older format counts as none (all is retranslated). A file
        of that name that is no manifest is refused: it is the user's, not ours to overwrite."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise ImgtransError(f"cannot read the manifest {path} ({one_line(exc)}); fix or move it away") from None
        try:
            reader = csv.DictReader(io.StringIO(text))
            columns = set(reader.fieldnames or ())
            if text.strip() and not IDENTIFYING_COLUMNS <= columns <= set(COLUMNS):
                raise csv.Error("not the columns of one")
            rows = list(reader)
        except csv.Error as exc:
            raise ImgtransError(f"{path} is not a manifest of `imgtrans translate` ({exc}); move it away or choose "
                                "another output folder") from None
        records = {}
        for row in rows:
            try:
                record = Outcome.from_row(row)
            except (KeyError, TypeError, ValueError):
                continue
            records[record.output] = record
        return records

    def done_earlier(self, output: str, identity: InputId, recipe: str) -> Outcome | None:
        """The record of `output` if an earlier run translated it from this same input with this same recipe."""
        record = self.records.get(output)
        if record is None or record.status not in ("done", "skipped") or record.recipe != recipe:
            return None
        return record if InputId(record.input, record.input_size, record.input_mtime_ns) == identity else None

    def add(self, outcome: Outcome) -> None:
        self.records[outcome.output] = outcome
        if time.monotonic() - self.saved_at >= MANIFEST_SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        writer.writerows(record.row() for record in sorted(self.records.values(), key=lambda r: r.output))
        atomic_write_bytes(self.path, buffer.getvalue().encode())
        self.saved_at = time.monotonic()
