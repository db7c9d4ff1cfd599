"""Translate a whole archive: a folder (recursively) or a list file of scans.

Resumable (an output that exists is complete, because every output is
written to a temporary file and renamed), never writes into the input
folder, skips unreadable files with a reason, and ends with a manifest.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from imgtrans.data.codec import Codec
from imgtrans.data.images import IMAGE_EXTENSIONS, list_images
from imgtrans.errors import ImgtransError
from imgtrans.infer.io import OutputWriter, Scan, output_path_for, read_scan
from imgtrans.infer.tiling import Translate, translate_bands
from imgtrans.files import atomic_write_bytes

MANIFEST = "manifest.csv"
LIST_SUFFIXES = {".txt", ".lst", ".list"}


@dataclass
class Entry:
    input: Path
    relative: Path


@dataclass
class Outcome:
    input: str
    output: str
    status: str  # done | skipped | failed
    seconds: float
    error: str = ""


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
    """The output folder may be neither the input folder nor inside it, nor inside any input image's folder."""
    out = out_dir.resolve()
    folders = {source.resolve()} if source.is_dir() else set()
    folders |= {e.input.resolve().parent for e in entries}
    for folder in sorted(folders):
        if out == folder or folder in out.parents:
            raise ImgtransError(f"output folder {out_dir} is inside the input folder {folder}; choose a folder "
                                "outside it (inputs are never written to)")


def translate_scan(scan: Scan, writer: OutputWriter, *, translate: Translate, codec: Codec, tile: int,
                   overlap: int, batch_size: int) -> None:
    def network_rows(top: int, bottom: int) -> np.ndarray:
        rgb = torch.from_numpy(scan.rows(top, bottom))
        if rgb.shape[0] == 1:
            rgb = rgb.expand(3, -1, -1)
        return codec.encode_input(rgb).numpy()

    for top, out in translate_bands(network_rows, scan.height, scan.width, translate=translate,
                                    out_channels=codec.output_nc, tile=tile, overlap=overlap,
                                    batch_size=batch_size):
        rows = out.shape[1]
        rgb = codec.decode_output(torch.from_numpy(network_rows(top, top + rows)), torch.from_numpy(out))
        writer.write_rows(top, rgb.numpy())


def run_archive(source: Path, out_dir: Path, *, translate: Translate, codec: Codec, tile: int, overlap: int,
                batch_size: int, progress: bool = True) -> list[Outcome]:
    entries = collect_inputs(source)
    check_output_location(source, entries, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    bar = tqdm(entries, disable=not progress, unit="img", dynamic_ncols=True)
    done_count, started = 0, time.perf_counter()
    for entry in bar:
        target = output_path_for(entry.relative, out_dir)
        if target.exists():
            outcomes.append(Outcome(str(entry.input), str(target), "skipped", 0.0))
            continue
        t0 = time.perf_counter()
        writer = None
        try:
            scan = read_scan(entry.input)
            writer = OutputWriter(target, scan.height, scan.width, scan.geo_tags)
            translate_scan(scan, writer, translate=translate, codec=codec, tile=tile, overlap=overlap,
                           batch_size=batch_size)
            writer.commit()
            done_count += 1
            outcomes.append(Outcome(str(entry.input), str(target), "done", time.perf_counter() - t0))
        except (ImgtransError, OSError, ValueError) as exc:
            if writer is not None:
                writer.abort()
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            tqdm.write(f"imgtrans: skipped {entry.input}: {message}", file=sys.stderr)
            outcomes.append(Outcome(str(entry.input), str(target), "failed", time.perf_counter() - t0, message))
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        bar.set_postfix(img_per_s=f"{done_count / max(time.perf_counter() - started, 1e-9):.2f}", refresh=False)
    write_manifest(out_dir / MANIFEST, outcomes)
    return outcomes


def write_manifest(path: Path, outcomes: list[Outcome]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["input", "output", "status", "seconds", "error"])
    for o in outcomes:
        writer.writerow([o.input, o.output, o.status, f"{o.seconds:.3f}", o.error])
    atomic_write_bytes(path, buffer.getvalue().encode())
