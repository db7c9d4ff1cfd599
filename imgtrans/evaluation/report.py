"""A report across evaluated runs: one row per run, and the same test inputs translated by each.

Inputs are plain records (`RunSummary`, built from MLflow runs by `summaries`), so the report itself is
independent of MLflow and easy to test.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from imgtrans.data.sheets import sheet_from_files
from imgtrans.files import atomic_write_bytes

SHEET_FILE = "samples.jpg"
BASELINE_PREFIX = "baseline/"
# What a run must beat its trivial baselines on (higher is better).
BASELINE_METRICS = ("psnr", "ssim", "colourfulness_ratio")
COLOUR_MARKS = ("colourfulness_ratio", "cast")  # marked for colorizers only: a label map's colours are no target

METRICS = [("psnr", "PSNR ↑"), ("ssim", "SSIM ↑"), ("lpips", "LPIPS ↓"), ("fid", "FID ↓"), ("kid", "KID ↓"),
           ("is", "IS ↑"), ("colourfulness_ratio", "colour ratio ↑"), ("chroma_error", "Δab ↓"),
           ("cast", "cast (truth) ↓")]
# Colour reads as the model zoo reports it: the ratio to 2 decimals, Lab chroma to 1 (a gray copy's float noise is 0).
COLOUR_DECIMALS = {"colourfulness_ratio": 2, "chroma_error": 1, "cast": 1, "cast_truth": 1}
KEY_PARAMS = ["dataset", "netG", "netD", "gan_mode", "norm", "lambda_L1", "ngf", "ndf", "color_space",
              "crop_size", "batch_size", "lr", "n_epochs", "n_epochs_decay", "max_steps"]


@dataclass
class RunSummary:
    run_id: str
    name: str
    model: str
    params: dict[str, str]
    generator_params: int | None
    train_minutes: float | None
    metrics: dict[str, float]  # without the split prefix: psnr, psnr_std, ms_per_image, n_images, …
    settings: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # metric → why
    samples: dict[str, list[bytes]] = field(default_factory=dict)  # kind → PNG bytes
    link: str = ""  # the run's page in the MLflow UI


def varying_params(runs: list[RunSummary]) -> list[str]:
    """Key params that differ between the runs (all present ones when there is a single run)."""
    present = [k for k in KEY_PARAMS if any(k in r.params for r in runs)]
    if len(runs) < 2:
        return [k for k in present if k in ("netG", "gan_mode", "color_space")]
    return [k for k in present if len({r.params.get(k) for r in runs}) > 1]


def _number(metrics: dict[str, float], name: str) -> str:
    return f"{metrics[name]:.{COLOUR_DECIMALS[name]}f}" if name in COLOUR_DECIMALS else f"{metrics[name]:.4g}"


def _cell(metrics: dict[str, float], name: str) -> str:
    if name not in metrics:
        return "n/a"
    if name == "cast" and "cast_truth" in metrics:
        return f"{_number(metrics, 'cast')} ({_number(metrics, 'cast_truth')})"
    std = metrics.get(f"{name}_std")
    return f"{_number(metrics, name)} ± {std:.2g}" if std is not None else _number(metrics, name)


def casts_colour(metrics: dict[str, float]) -> bool:
    """Whether outputs put more colour on near-neutral pixels than the truth has there."""
    return "cast" in metrics and "cast_truth" in metrics and metrics["cast"] > metrics["cast_truth"]


def mark(run: RunSummary, metric: str) -> str:
    """✗ where the run does not beat its best baseline or, for a colorizer (scored against the grayscale copy),
    keeps less colour than that copy or casts a tint the truth does not have."""
    colorizer = "grayscale" in baselines(run)
    if metric in COLOUR_MARKS and not colorizer:
        return ""
    failed = below_baseline(run, metric) if metric in BASELINE_METRICS else \
        metric == "cast" and casts_colour(run.metrics)
    return " ✗" if failed else ""


def baselines(run: RunSummary) -> dict[str, dict[str, float]]:
    """The trivial baselines scored on the run's own evaluation images: name → metrics (psnr, psnr_std, …)."""
    found: dict[str, dict[str, float]] = {}
    for key, value in run.metrics.items():
        if key.startswith(BASELINE_PREFIX):
            name, metric = key[len(BASELINE_PREFIX):].split("/", 1)
            found.setdefault(name, {})[metric] = value
    return found


def below_baseline(run: RunSummary, metric: str) -> bool:
    """Whether the run does not beat the best of its trivial baselines on `metric` (higher is better)."""
    best = [b[metric] for b in baselines(run).values() if metric in b]
    return bool(best) and metric in run.metrics and run.metrics[metric] <= max(best)


def table(runs: list[RunSummary], linked: bool = False) -> tuple[list[str], list[list[str]]]:
    """One row per run, then one per trivial baseline (per dataset and image count), with ✗ marks (`mark`)."""
    params = varying_params(runs)
    header = ["run", "model", *params, "G params (M)", "train min", "ms/image", "N", *[t for _, t in METRICS]]
    rows = []
    for r in runs:
        rows.append([
            f"[{r.name}]({r.link})" if r.link and linked else r.name, r.model, *[r.params.get(k, "") for k in params],
            f"{r.generator_params / 1e6:.3g}" if r.generator_params else "n/a",
            f"{r.train_minutes:.1f}" if r.train_minutes is not None else "n/a",
            f"{r.metrics['ms_per_image']:.2f}" if "ms_per_image" in r.metrics else "n/a",
            f"{int(r.metrics['n_images'])}" if "n_images" in r.metrics else "n/a",
            *[_cell(r.metrics, m) + mark(r, m) for m, _ in METRICS],
        ])
    shown = set()
    for r in runs:
        for name, metrics in baselines(r).items():
            key = (name, tuple(sorted(metrics.items())))  # one row per distinct baseline: same images, same scores
            if key in shown:
                continue
            shown.add(key)
            rows.append([f"baseline: {name}", "—", *[r.params.get(k, "") if k == "dataset" else "" for k in params],
                         "—", "—", "—", f"{int(r.metrics['n_images'])}" if "n_images" in r.metrics else "n/a",
                         *[_cell(metrics, m) for m, _ in METRICS]])
    return header, rows


def settings_notes(runs: list[RunSummary]) -> list[str]:
    notes = ["PSNR and SSIM: per image in rgb, data range 1.0, mean ± std over the evaluated images.",
             "baseline rows: what a model that learned nothing scores on the same images — the grayscale copy of "
             "the input for colorization, the input itself otherwise; ✗ marks a PSNR or SSIM that does not beat the "
             "run's best baseline and, for a colorizer, such a colour ratio and a cast above the truth's.",
             "colour ratio: the outputs' mean colourfulness (Hasler & Süsstrunk) over the targets' (0 for a gray "
             "copy); Δab: mean |Δa| + |Δb| in CIE Lab; cast: mean chroma of the outputs on pixels whose target is "
             "near-neutral (C* < 5), the truth's own in brackets."]
    for r in runs:
        s = r.settings
        if "fid_n_real" in s:
            notes.append(f"{r.name}: FID/KID on N={s['fid_n_real']} real and {s['fid_n_generated']} generated "
                         f"images, resize {s.get('fid_resize', '?')}, KID subsets of {s.get('kid_subset_size', '?')}"
                         + (f" — {s['fid_warning']}" if "fid_warning" in s else ""))
    reasons: dict[str, dict[str, list[str]]] = {}  # why → metric → runs
    for r in runs:
        for metric, why in r.unavailable.items():
            reasons.setdefault(why, {}).setdefault(metric, []).append(r.name)
    for why, metrics in reasons.items():
        names = sorted({name for names in metrics.values() for name in names})
        who = "every run" if len(names) == len(runs) else ", ".join(names)
        notes.append(f"{why} ({who})")
    return notes


def markdown(runs: list[RunSummary], title: str, sheet: str | None = None) -> str:
    """`sheet`: the address of the side-by-side image, shown when given."""
    header, rows = table(runs, linked=True)
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", *[f"- {note}" for note in settings_notes(runs)]]
    if sheet:
        columns = ", ".join(heading for heading, _, _ in side_by_side(runs))
        lines += ["", f"![The same test inputs, translated by each run]({sheet})", "", f"Columns: {columns}.",
                  *(["", note] if (note := sheet_note(runs)) else [])]
    return "\n".join(lines) + "\n"


def sheet_runs(runs: list[RunSummary]) -> tuple[list[RunSummary], list[RunSummary]]:
    """(the runs the side-by-side sheet shows, the runs it leaves out): of the runs that kept samples, those
    evaluated on the first one's test inputs (dataset and split), and those evaluated on others."""
    with_samples = [r for r in runs if r.samples.get("output")]
    if not with_samples:
        return [], []

    def inputs(run: RunSummary) -> tuple[str | None, str | None]:
        return run.settings.get("dataset"), run.settings.get("split")

    first = inputs(with_samples[0])
    return ([r for r in with_samples if inputs(r) == first], [r for r in with_samples if inputs(r) != first])


def side_by_side(runs: list[RunSummary]) -> list[tuple[str, str, list[bytes]]]:
    """Columns of the shared test inputs, as (heading, model, PNGs of equal count): input, the output of
    every run in the sheet (`sheet_runs`), target (model "" for those two). Empty when no run kept samples."""
    shown, _ = sheet_runs(runs)
    if not shown:
        return []
    first = shown[0]
    count = min(len(r.samples["output"]) for r in shown)
    return [("input", "", first.samples["input"][:count]),
            *[(r.name, r.model, r.samples["output"][:count]) for r in shown],
            ("target", "", first.samples["target"][:count])]


def sheet_note(runs: list[RunSummary]) -> str:
    """What the sheet leaves out, or ""."""
    shown, other = sheet_runs(runs)
    if not other:
        return ""
    return (f"Not in the sheet, evaluated on other test inputs than {shown[0].name}: "
            f"{', '.join(r.name for r in other)}.")


def sample_sheet(runs: list[RunSummary]) -> bytes | None:
    """One JPEG of the shared test inputs: input | each run's output | target, a row per input, each column
    headed by its run's name. None when no run kept sample images."""
    columns = side_by_side(runs)
    if not columns:
        return None
    buffer = io.BytesIO()
    Image.fromarray(sheet_from_files({heading: images for heading, _, images in columns})).save(buffer, "JPEG",
                                                                                               quality=90)
    return buffer.getvalue()


def csv_text(runs: list[RunSummary]) -> str:
    header, rows = table(runs)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run_id", *header])
    run_ids = [r.run_id for r in runs] + [""] * (len(rows) - len(runs))  # the baselines' rows follow the runs'
    for run_id, row in zip(run_ids, rows):
        writer.writerow([run_id, *row])
    return buffer.getvalue()


def _img(png: bytes) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def html_page(runs: list[RunSummary], title: str) -> str:
    header, rows = table(runs)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:center}img{width:160px;image-rendering:pixelated}"
             "</style></head><body>", f"<h1>{html.escape(title)}</h1><table><tr>"]
    parts += [f"<th>{html.escape(h)}</th>" for h in header]
    parts.append("</tr>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    parts.append("</table><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in settings_notes(runs)) + "</ul>")
    columns = side_by_side(runs)
    if columns:
        parts.append("<h2>The same test inputs, translated by each run</h2><table><tr>")
        parts += [f"<th>{html.escape(heading)}" + (f"<br>{html.escape(model)}" if model else "") + "</th>"
                  for heading, model, _ in columns]
        parts.append("</tr>")
        for row in zip(*(images for _, _, images in columns)):
            parts.append("<tr>" + "".join(f"<td>{_img(png)}</td>" for png in row) + "</tr>")
        parts.append("</table>" + (f"<p>{html.escape(note)}</p>" if (note := sheet_note(runs)) else ""))
    parts.append("</body></html>")
    return "".join(parts)


def write_reports(runs: list[RunSummary], title: str, folder: Path) -> list[Path]:
    """report.md, report.csv, report.html and, when the runs kept sample images, samples.jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    sheet = sample_sheet(runs)
    files = {"report.md": markdown(runs, title, SHEET_FILE if sheet else None).encode(),
             "report.csv": csv_text(runs).encode(), "report.html": html_page(runs, title).encode()}
    if sheet:
        files[SHEET_FILE] = sheet
    return [atomic_write_bytes(folder / name, data) for name, data in files.items()]
