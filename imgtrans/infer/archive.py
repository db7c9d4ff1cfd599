"""Translate a whole archive: a folder (recursively), a list file of scans, or one image.

Outputs mirror the inputs' paths under the output folder, which holds only
outputs and the manifest: it is neither inside the input folder (never
written to) nor contains it.

- Collisions are refused: when two inputs would be written to one output
  (`scan.png` and `scan.bmp` — formats other than PNG, TIFF and JPEG become
  PNG —, or a list file naming one file twice, or two files of one name from
  outside the list's folder), nothing is translated and the error names both.
- `manifest.csv` (`imgtrans.infer.manifest`) has one record per output.
  Records of outputs not in this run are kept, so the manifest stays complete
  across runs.
- Resuming: an output is skipped ("already done") only when it exists and the
  manifest says this same input — path, size and modification time — produced
  it with this same recipe in an earlier run. Any other output is translated
  again and replaced.
- The manifest is rewritten atomically every few seconds and when the run
  ends, however it ends, so the rerun of an interrupted run skips what it
  finished. Outputs are written to hidden `.part` files and renamed; `.part`
  files left by a killed run (or a lost worker) are removed when the next run
  starts (or this one ends).
- Unreadable files are reported and skipped, with status failed.
- The translation itself is an engine's (`imgtrans.infer.engines`): one
  session, one per GPU, or a Ray cluster; the results come back in any order.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Protocol

from tqdm import tqdm

from imgtrans.data.images import IMAGE_EXTENSIONS, list_images
from imgtrans.errors import ImgtransError
from imgtrans.infer.io import TEMP_SUFFIX, output_path_for
from imgtrans.infer.manifest import MANIFEST, Manifest, Outcome, input_id
from imgtrans.infer.worker import Translated, Work

LIST_SUFFIXES = {".txt", ".lst", ".list"}


class Engine(Protocol):
    """What translates the files (`engines.LocalEngine`, `ray_engine.RayEngine`)."""

    def __call__(self, works: list[Work], run_started_ns: int) -> Iterator[Translated]:
        """Each work's result, in the order they finish; `run_started_ns` as `FileTranslator` takes it."""

    def describe(self) -> str:
        """Where and how it translates, for the line the command prints."""

    def params(self) -> dict:
        """The same, as the MLflow params of a `translate` run."""

    def close(self) -> None:
        """Releases its sessions, or its connection to the cluster."""


@dataclass
class Entry:
    input: Path
    relative: Path


class Job(NamedTuple):
    input: Path
    target: Path


def collect_inputs(source: Path) -> list[Entry]:
    if not source.exists():
        raise ImgtransError(f"input not found: {source}; give an image, a folder of images or a list file")
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


def run_archive(jobs: list[Job], out_dir: Path, start_engine: Callable[[], Engine], recipe: str, *,
                progress: bool = True, verbose: bool = False) -> list[Outcome]:
    """Translate every input of `plan_archive` not already done with `recipe` (the settings' `recipe`); the
    outcomes of this run, skipped ones first. The engine is started only when there is something to do (a
    rerun of a finished archive starts no session, no cluster), and closed at the end."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with only_writer(out_dir):
        return _run_archive(jobs, out_dir, start_engine, recipe, progress=progress, verbose=verbose)


@contextmanager
def only_writer(out_dir: Path) -> Iterator[None]:
    """Hold the output folder for this run: a second run into it would remove the first's `.part` files and the
    two would overwrite each other's manifest. Where the filesystem cannot lock a folder, it goes unheld."""
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ImgtransError(f"another `imgtrans translate` is writing into {out_dir}; wait for it to end or "
                                "choose another output folder") from None
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # the lock goes with it


def _run_archive(jobs: list[Job], out_dir: Path, start_engine: Callable[[], Engine], recipe: str, *,
                 progress: bool, verbose: bool) -> list[Outcome]:
    remove_stale_temp_files(out_dir)
    manifest = Manifest(out_dir / MANIFEST)
    manifest.save()
    run_started_ns = manifest.path.stat().st_mtime_ns  # on the clock of the filesystem the outputs go to
    outcomes: list[Outcome] = []
    works: list[Work] = []
    for job in jobs:
        output = str(job.target.relative_to(out_dir))
        identity = input_id(job.input)  # before reading: a file changed meanwhile is retranslated next time
        earlier = manifest.done_earlier(output, identity, recipe) if job.target.exists() else None
        if earlier is not None:
            outcomes.append(dataclasses.replace(earlier, status="skipped"))
            manifest.add(outcomes[-1])
        else:
            works.append(Work(identity.path, os.path.abspath(job.target), output, identity.size, identity.mtime_ns))
    engine = start_engine() if works else None
    bar = tqdm(total=len(jobs), initial=len(outcomes), disable=not progress, unit="img", dynamic_ncols=True)
    translated = 0
    try:
        for outcome, report in engine(works, run_started_ns) if engine is not None else ():
            if outcome.status == "failed":
                tqdm.write(f"imgtrans: skipped {outcome.input}: {outcome.error}", file=sys.stderr)
            elif verbose and report:
                tqdm.write(f"imgtrans: {outcome.input}: {report}", file=sys.stderr)
            manifest.add(outcome)
            outcomes.append(outcome)
            translated += outcome.status == "done"
            bar.set_postfix(img_per_s=f"{translated / max(bar.format_dict['elapsed'], 1e-9):.2f}", refresh=False)
            bar.update()  # draws the rate with the count it goes with
    finally:
        bar.close()
        manifest.save()
        try:
            if engine is not None:
                engine.close()
        finally:  # with every worker stopped, what a lost or interrupted one left
            remove_stale_temp_files(out_dir)
    return outcomes
