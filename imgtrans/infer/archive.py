"""Translate a whole archive: a folder (recursively), a list file of scans, or one image.

Outputs mirror the inputs' paths under the output folder, which holds only
outputs and the manifest: it is neither inside the input folder (never
written to) nor contains it.

- Collisions are refused: when two inputs would be written to one output
  (`scan.png` and `scan.bmp` — formats other than PNG, TIFF and JPEG become
  PNG —, or a list file naming one file twice, or two files of one name from
  outside the list's folder), nothing is translated and the error names both.
- `manifest.csv` has one record per output (relative to the output folder):
  input (absolute path), output, status (done, skipped, failed), seconds,
  error, input_size and input_mtime_ns. Records of outputs not in this run
  are kept, so the manifest stays complete across runs.
- Resuming: an output is skipped ("already done") only when it exists and the
  manifest says this same input — path, size and modification time — produced
  it in an earlier run. Any other output is translated again and replaced.
- The manifest is rewritten atomically every few seconds and when the run
  ends, however it ends, so the rerun of an interrupted run skips what it
  finished. Outputs are written to hidden `.part` files and renamed; `.part`
  files left by a killed run are removed when the next run starts.
- Unreadable files are reported and skipped, with status failed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from imgtrans.data.codec import Codec
from imgtrans.data.images import IMAGE_EXTENSIONS, list_images
from imgtrans.errors import ImgtransError
from imgtrans.files import atomic_write_bytes
from imgtrans.infer.io import TEMP_SUFFIX, OutputWriter, Scan, output_path_for, read_scan
from imgtrans.infer.tile_rule import TileRule
from imgtrans.infer.tiling import SeamEnergy, Translate, seam_positions, translate_bands

MANIFEST = "manifest.csv"
LIST_SUFFIXES = {".txt", ".lst", ".list"}
MANIFEST_SAVE_EVERY_S = 2.0


@dataclass
class Entry:
    input: Path
    relative: Path


class Job(NamedTuple):
    input: Path
    target: Path


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


class InputId(NamedTuple):
    """What identifies an input across runs."""

    path: str  # absolute
    size: int
    mtime_ns: int


def input_id(path: Path) -> InputId:
    try:
        stat = path.stat()
    except OSError:  # reading it will fail and say why
        return InputId(str(path.absolute()), -1, -1)
    return InputId(str(path.absolute()), stat.st_size, stat.st_mtime_ns)



class Manifest:
    """The records of every run into one output folder, keyed by output; saved atomically."""

    def __init__(self, path: Path):
        self.path = path
        self.records = self._load(path)
        self.saved_at = time.monotonic()

    @staticmethod
    def _load(path: Path) -> dict[str, Outcome]:
        """Records that can be parsed; a manifest of an older format counts as none (all is retranslated)."""
        try:
            rows = list(csv.DictReader(io.StringIO(path.read_text())))
        except (OSError, ValueError, csv.Error):  # none yet, or unreadable
            return {}
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
        writer.writerows(record.row() for record in self.records.values())
        atomic_write_bytes(self.path, buffer.getvalue().encode())
        self.saved_at = time.monotonic()


def collect_inputs(source: Path) -> list[Entry]:
    if not source.exists():
        raise ImgtransError(f"input not found: {source}")
    if source.is_dir():
        entries = [Entry(p, p.relative_to(source)) for p in list_images(source, recursive=True)]
    elif source.suffix.lower() in LIST_SUFFIXES:
        entries = []
        for line in source.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            path = Path(line).expanduser()
            path = path if path.is_absolute() else source.parent / path
            try:
                relative = path.resolve().relative_to(source.parent.resolve())
            except ValueError:
                relative = Path(path.name)
            entries.append(Entry(path, relative))
    elif source.suffix.lower() in IMAGE_EXTENSIONS:
        entries = [Entry(source, Path(source.name))]
    else:
        raise ImgtransError(f"{source} is neither a folder, an image nor a list file ({', '.join(LIST_SUFFIXES)})")
    if not entries:
        raise ImgtransError(f"no images found in {source}")
    return entries


def check_output_location(source: Path, entries: list[Entry], out_dir: Path) -> None:
    """The output folder holds only outputs and the manifest: it may be neither an input folder, nor inside
    one (inputs are never written to), nor contain one."""
    out = out_dir.resolve()
    folders = {source.resolve()} if source.is_dir() else set()
    folders |= {e.input.resolve().parent for e in entries}
    for folder in sorted(folders):
        if out == folder or folder in out.parents:
            raise ImgtransError(f"output folder {out_dir} is inside the input folder {folder}; choose a folder "
                                "outside it (inputs are never written to)")
        if out in folder.parents:
            raise ImgtransError(f"output folder {out_dir} contains the input folder {folder}; choose a folder "
                                "apart from it (the output folder holds only outputs and the manifest)")


def assign_outputs(entries: list[Entry], out_dir: Path) -> list[Job]:
    """Each entry with its output; two entries with one output are refused, naming both."""
    owners: dict[Path, Path] = {}
    for entry in entries:
        target = output_path_for(entry.relative, out_dir)
        owner = owners.get(target)
        if owner is None:
            owners[target] = entry.input
            continue
        if owner.resolve() == entry.input.resolve():
            raise ImgtransError(f"{owner} is listed twice; list each file once")
        raise ImgtransError(f"{owner} and {entry.input} would both be written to {target}; rename one of them "
                            "(formats other than PNG, TIFF and JPEG are written as PNG)")
    return [Job(source, target) for target, source in owners.items()]


def plan_archive(source: Path, out_dir: Path) -> list[Job]:
    """The inputs of `source` with their outputs, checked before anything is written or loaded."""
    entries = collect_inputs(source)
    check_output_location(source, entries, out_dir)
    return assign_outputs(entries, out_dir)


def remove_stale_temp_files(out_dir: Path) -> None:
    """Hidden temporary files of a run killed before it could clean up: outputs' `.part` files, the manifest's."""
    for stale in [*out_dir.rglob(f".*{TEMP_SUFFIX}"), *out_dir.glob(f".{MANIFEST}.*")]:
        if stale.is_file():
            stale.unlink()


def translate_scan(scan: Scan, writer: OutputWriter, *, translate: Translate, codec: Codec, tiles: TileRule,
                   batch_size: int) -> str:
    """Translate and write one scan; returns how it was tiled, with the seam energy where there are seams."""
    def network_rows(top: int, bottom: int) -> np.ndarray:
        rgb = torch.from_numpy(scan.rows(top, bottom))
        if rgb.shape[0] == 1:
            rgb = rgb.expand(3, -1, -1)
        return codec.encode_input(rgb).numpy()

    tiling = tiles.for_image(scan.height, scan.width)
    row_plan, col_plan = tiling.plans(scan.height, scan.width)
    seams = SeamEnergy(seam_positions(row_plan), seam_positions(col_plan))
    for top, out in translate_bands(network_rows, scan.height, scan.width, translate=translate,
                                    out_channels=codec.output_nc, tiling=tiling,
                                    batch_size=tiles.batch_size(tiling, batch_size)):
        rows = out.shape[1]
        rgb = codec.decode_output(torch.from_numpy(network_rows(top, top + rows)), torch.from_numpy(out)).numpy()
        seams.update(rgb)
        writer.write_rows(top, rgb)
    ratio = seams.ratio()
    return tiling.describe(scan.height, scan.width) + (f", seam energy {ratio:.3f}" if ratio is not None else "")


def translate_file(source: Path, target: Path, output_bits: str, **translate_options) -> str:
    """One scan to its output, atomically: `target` is either replaced whole or untouched."""
    scan = read_scan(source)
    bits = scan.bits if output_bits == "auto" else int(output_bits)
    writer = OutputWriter(target, scan.height, scan.width, scan.geo_tags, bits)
    try:
        report = translate_scan(scan, writer, **translate_options)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return report


def translate_job(job: Job, output: str, identity: InputId, recipe: str, output_bits: str,
                  options: dict, verbose: bool = False) -> Outcome:
    """Translate one input; an unreadable one is reported and recorded as failed."""
    t0 = time.perf_counter()
    status, error = "done", ""
    try:
        report = translate_file(job.input, job.target, output_bits, **options)
        if verbose:
            tqdm.write(f"imgtrans: {job.input}: {report}", file=sys.stderr)
    except (ImgtransError, OSError, ValueError) as exc:
        status, error = "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        tqdm.write(f"imgtrans: skipped {job.input}: {error}", file=sys.stderr)
    return Outcome(identity.path, output, status, time.perf_counter() - t0, error, identity.size, identity.mtime_ns,
                   recipe)


def run_archive(jobs: list[Job], out_dir: Path, *, translate: Translate, codec: Codec, tiles: TileRule,
                batch_size: int, output_bits: str = "auto", model_digest: str = "", progress: bool = True,
                verbose: bool = False) -> list[Outcome]:
    """Translate every input of `plan_archive` not already done; the outcomes of this run, in order.

    `output_bits`: "8", "16" or "auto" (16 for 16-bit and float scans, 8 otherwise). `model_digest` names the
    model: an output another model (or other tiling or bits) made is translated again.
    """
    recipe = f"model {model_digest}, {tiles.recipe()}, bits {output_bits}"
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out_dir)
    manifest = Manifest(out_dir / MANIFEST)
    options = dict(translate=translate, codec=codec, tiles=tiles, batch_size=batch_size)
    outcomes: list[Outcome] = []
    bar = tqdm(jobs, disable=not progress, unit="img", dynamic_ncols=True)
    done_count, started = 0, time.perf_counter()
    try:
        for job in bar:
            output = str(job.target.relative_to(out_dir))
            identity = input_id(job.input)  # before reading: a file changed meanwhile is retranslated next time
            earlier = manifest.done_earlier(output, identity, recipe) if job.target.exists() else None
            if earlier is not None:
                outcome = dataclasses.replace(earlier, status="skipped")
            else:
                outcome = translate_job(job, output, identity, recipe, output_bits, options, verbose)
            manifest.add(outcome)
            outcomes.append(outcome)
            done_count += outcome.status == "done"
            bar.set_postfix(img_per_s=f"{done_count / max(time.perf_counter() - started, 1e-9):.2f}", refresh=False)
    finally:
        manifest.save()
    return outcomes
