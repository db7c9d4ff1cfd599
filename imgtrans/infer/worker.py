"""One archive file at a time on one ONNX Runtime session: read, translated tile by tile, written atomically.

`FileTranslator` is what every engine (`imgtrans.infer.engines`) runs, one per GPU or CPU slot, so a file
gives the same output whichever engine and worker translated it. Its inputs and results are plain values
(`Work`, `Outcome`) that travel to Ray actors and back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError

from imgtrans.data.codec import Codec
from imgtrans.errors import ImgtransError, one_line
from imgtrans.export.sidecar import Sidecar, sidecar_path
from imgtrans.infer.io import OutputWriter, Scan, read_scan
from imgtrans.infer.manifest import Outcome
from imgtrans.infer.session import OnnxGenerator
from imgtrans.infer.tile_rule import TileRule
from imgtrans.infer.tiling import SeamEnergy, Translate, seam_positions, translate_bands


class Work(NamedTuple):
    """One file to translate: absolute paths (workers may run in other folders), its output relative to the
    output folder, and the input's size and modification time when the run planned it."""

    input: str
    target: str
    output: str
    input_size: int
    input_mtime_ns: int


@dataclass(frozen=True)
class TranslateSettings:
    """What decides a file's output, the same for every worker."""

    model: str
    provider: str = "auto"
    tile: int = 0
    margin: int = -1
    overlap: int = -1
    batch_size: int = 8
    output_bits: str = "auto"  # "8", "16" or "auto" (16 for 16-bit and float scans, 8 otherwise)
    recipe: str = ""  # recorded in the manifest: the model's digest and the settings above that matter

    def check(self) -> Sidecar:
        """The model's sidecar, once the settings are known to suit it: bad settings fail here, before any
        worker starts."""
        model = Path(self.model)
        if not model.is_file():
            raise ImgtransError(f"ONNX model not found: {model}; export one with `imgtrans export`")
        if model.suffix.lower() != ".onnx":
            raise ImgtransError(f"model {model} is not an .onnx file; give the graph `imgtrans export` wrote (its "
                                "sidecar .json lies beside it)")
        check_onnx(model)
        sidecar = Sidecar.load(sidecar_path(model))
        TileRule.create(sidecar, "CPUExecutionProvider", self.tile, self.margin, self.overlap)
        return sidecar


def check_onnx(model: Path) -> None:
    """A graph ONNX can read (not truncated, not another file renamed), before any output is written."""
    try:
        onnx.load(str(model), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise ImgtransError(f"{model} is not a readable ONNX model ({one_line(exc)}); export it again with "
                            "`imgtrans export`") from None


class Translated(NamedTuple):
    outcome: Outcome
    report: str  # how the file was tiled, with its seam energy; empty when it was not translated


def translate_scan(scan: Scan, writer: OutputWriter, *, translate: Translate, device: torch.device, codec: Codec,
                   tiles: TileRule, batch_size: int) -> str:
    """Translate and write one scan; returns how it was tiled, with the seam energy where there are seams.
    Its rows go to `device` (the network's) as they are read (a Lab model's finished rows once more, for their
    lightness); each finished band comes back once, as pixels."""
    def network_rows(top: int, bottom: int) -> torch.Tensor:
        rgb = scan.rows(top, bottom, device)
        if rgb.shape[0] == 1:
            rgb = rgb.expand(3, -1, -1)
        return codec.encode_input(rgb)

    tiling = tiles.for_image(scan.height, scan.width)
    row_plan, col_plan = tiling.plans(scan.height, scan.width)
    seams = SeamEnergy(seam_positions(row_plan), seam_positions(col_plan))
    for top, out in translate_bands(network_rows, scan.height, scan.width, translate=translate,
                                    out_channels=codec.output_nc, tiling=tiling,
                                    batch_size=tiles.batch_size(tiling, batch_size)):
        rows = out.shape[1]
        rgb = codec.decode_output(network_rows(top, top + rows), out).cpu().numpy()
        if not np.isfinite(rgb).all():
            raise ImgtransError(f"the model's output is NaN or infinite in rows {top}–{top + rows}; check that "
                                "the model was exported from a run that trained without diverging")
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


def committed_since(target: Path, since_ns: int) -> bool:
    """Whether `target` was put in place at or after `since_ns` (the output filesystem's clock)."""
    try:
        return target.stat().st_mtime_ns >= since_ns
    except OSError:
        return False


class FileTranslator:
    """Callable: `Work` → `Translated`, on one session (`device_id`: its GPU; `threads`: its CPU threads)."""

    def __init__(self, settings: TranslateSettings, device_id: int = 0, threads: int = 0):
        self.settings = settings
        self.generator = OnnxGenerator(Path(settings.model), settings.provider, device_id, threads)
        sidecar = self.generator.sidecar
        self.tiles = TileRule.create(sidecar, self.generator.provider, settings.tile, settings.margin,
                                     settings.overlap, device_id)
        self.options = dict(translate=self.generator.run_bound, device=self.generator.device,
                            codec=sidecar.codec_obj, tiles=self.tiles, batch_size=settings.batch_size)

    def __call__(self, work: Work, run_started_ns: int = 0) -> Translated:
        """An unreadable input is reported as failed. An output this run already put in place (`run_started_ns`
        on the output filesystem's clock) is not written again: its worker was lost before it could report."""
        t0 = time.perf_counter()
        status, error, report = "done", "", ""
        target = Path(work.target)
        if not (run_started_ns and committed_since(target, run_started_ns)):
            try:
                report = translate_file(Path(work.input), target, self.settings.output_bits, **self.options)
            except (ImgtransError, OSError, ValueError) as exc:
                status, error = "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        outcome = Outcome(work.input, work.output, status, time.perf_counter() - t0, error, work.input_size,
                          work.input_mtime_ns, self.settings.recipe)
        return Translated(outcome, report)
