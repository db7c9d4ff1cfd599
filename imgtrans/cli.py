"""The `imgtrans` command. Every MLproject entry point calls one of its subcommands.

    imgtrans pix2pix --dataset synthetic-facades --max-steps 200
    imgtrans export --run-id <run id>
    imgtrans translate scans/ colorized/ --model export/pix2pix-<run id>.onnx
    imgtrans <command> --help
"""

from __future__ import annotations

import argparse
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from imgtrans import config as config_mod
from imgtrans.errors import ImgtransError, one_line
from imgtrans.models import MODELS
from imgtrans.models.dip import DIPConfig, DIPDiffusionConfig
from imgtrans.models.base import resolve_device


@dataclass(frozen=True)
class Command:
    name: str
    config_class: type
    run: Callable[[Any, dict[str, Any], argparse.Namespace], int]
    help: str


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise ImgtransError(f"{message} (see `{self.prog} --help`)")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    types = config_mod.field_types(cls)
    for f in config_mod.fields(cls):
        tp = types[f.name]
        choices = config_mod.choices_of(tp)
        help_text = f.metadata.get("help", "")
        if choices:
            help_text += f" ({'|'.join(choices)})"
        bounds = config_mod.bounds_of(cls, f.name)
        if bounds:
            help_text += f" ({config_mod.describe_range(bounds)})"
        if f.metadata.get("positional"):
            parser.add_argument(f"{f.name}_positional", nargs="?", default=None, metavar=f.name.upper(),
                                help=f"{help_text} (or {flag(f.name)})")
        names = [flag(f.name)] + ([f"--{f.name}"] if "_" in f.name else []) + f.metadata.get("aliases", [])
        # A bare boolean flag means true; MLproject passes an explicit true/false.
        extra = {"nargs": "?", "const": "true"} if tp is bool else {}
        parser.add_argument(*names, dest=f.name, default=None, metavar="CHOICE" if choices else tp.__name__.upper(),
                            help=f"{help_text} [default: {f.default!r}]", **extra)


def config_from_args(cls: type, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The config, and the values that differ from the defaults (what the user asked for)."""
    values = {}
    for f in config_mod.fields(cls):
        raw = getattr(args, f.name)
        if raw is None:
            raw = getattr(args, f"{f.name}_positional", None)
        values[f.name] = f.default if raw is None else config_mod.parse_option(cls, f.name, raw)
    cfg = cls(**values)
    defaults = cls()
    explicit = {k: v for k, v in values.items() if v != getattr(defaults, k)}
    return cfg, explicit


# --- commands ------------------------------------------------------------------

def train_command(cfg, explicit: dict[str, Any], args: argparse.Namespace) -> int:
    from imgtrans.tracking import tracked_run
    from imgtrans.train import Trainer, resolve_resume

    config_mod.validate(cfg)
    cfg, payload = resolve_resume(cfg, explicit)
    with tracked_run(cfg.experiment, run_name=cfg.model_name) as tracker:
        result = Trainer(cfg, tracker, resume_payload=payload, progress=not args.no_progress).fit()
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in result.val_metrics.items())
    print(f"imgtrans: {cfg.model_name} finished: run {result.run_id}, {result.step} steps"
          f"{', ' + metrics if metrics else ''}")
    return 0


def dip_command(cfg, explicit: dict[str, Any], args: argparse.Namespace) -> int:
    """`dip` and `dip_diffusion`: per-image optimisation, not the Trainer's epochs over a dataset."""
    from imgtrans.tracking import tracked_run
    from imgtrans.train import resolve_resume

    cfg.validate()
    cfg, payload = resolve_resume(cfg, explicit)
    cfg.validate()
    with tracked_run(cfg.experiment, run_name=cfg.model_name) as tracker:
        if cfg.model_name == "dip_diffusion":
            from imgtrans import dip_diffusion

            metrics = dip_diffusion.run(cfg, tracker, payload, progress=not args.no_progress).metrics
            summary = ", ".join(f"{k.split('/')[1]}={v:.4g}" for k, v in metrics.items())
        else:
            from imgtrans.restoration import DIPRunner

            result = DIPRunner(cfg, tracker, resume_payload=payload, progress=not args.no_progress).fit()
            summary = ", ".join(f"{k}={v:.4f}" for k, v in result.val_metrics.items())
            if result.best_iteration is not None:
                summary += f", best iteration {result.best_iteration}"
    print(f"imgtrans: {cfg.model_name} finished: run {tracker.run_id}" + (f", {summary}" if summary else ""))
    return 0


def export_command(cfg: config_mod.ExportConfig, explicit, args) -> int:
    from pathlib import Path

    from imgtrans.checkpoint import load_model
    from imgtrans.files import scratch_dir
    from imgtrans.onnx_export import export_model
    from imgtrans.tracking import generator_checkpoint, tracked_run

    if bool(cfg.run_id) == bool(cfg.model_uri):
        raise ImgtransError("give exactly one of run_id or model_uri")
    source = cfg.model_uri or f"runs:/{cfg.run_id}/model"
    with tracked_run(cfg.experiment, run_name="export") as tracker, scratch_dir("export") as tmp:
        model = load_model(generator_checkpoint(source, tmp))
        name = cfg.output or f"export/{model.cfg.model_name}-{cfg.run_id or 'model'}"
        if cfg.precision == "fp16" and not cfg.output:
            name += "-fp16"
        path, sidecar = export_model(model, Path(name), precision=cfg.precision, source=source)
        tracker.log_params({"source": source, "precision": cfg.precision, "opset": sidecar.opset,
                            "onnx_path": str(path)})
        tracker.log_metrics({"export/parity_max_abs_error": sidecar.parity_max_abs_error}, step=0)
        tracker.log_onnx(path)
    print(f"imgtrans: exported {source} to {path} (parity max abs error {sidecar.parity_max_abs_error:.2e}, "
          f"{sidecar.precision}, opset {sidecar.opset})")
    return 0


def translate_command(cfg: config_mod.TranslateConfig, explicit, args) -> int:
    from imgtrans.infer.command import translate_archive_command

    return translate_archive_command(cfg, progress=not args.no_progress)


def benchmark_command(cfg: config_mod.BenchmarkConfig, explicit, args) -> int:
    import platform

    import torch

    from imgtrans import benchmark
    from imgtrans.tracking import tracked_run

    device = resolve_device(cfg.device)
    gpu = device.type == "cuda"

    def listed(text: str, default: str, cast=str, valid=None) -> list:
        items = [cast(x.strip()) for x in (default if text == "auto" else text).split(",") if x.strip()]
        bad = [x for x in items if valid is not None and x not in valid]
        if bad:
            raise ImgtransError(f"invalid value '{bad[0]}'; valid values: {', '.join(valid)}")
        return items

    from imgtrans.nets.generators import GENERATORS

    generators = listed(cfg.generators, cfg.generators, valid=GENERATORS)
    batches = listed(cfg.batch_sizes, "1,8,16,32,64" if gpu else "1,4", int)
    backends = listed(cfg.backends, "eager,compile,ort-cuda,ort-tensorrt" if gpu else "eager,ort-cpu",
                      valid=("eager", "compile", "ort-cpu", "ort-cuda", "ort-tensorrt"))
    precisions = listed(cfg.precisions, "fp32,fp16,bf16" if gpu else "fp32", valid=("fp32", "fp16", "bf16"))
    repeats = cfg.repeats or (20 if gpu else 5)
    name = torch.cuda.get_device_name(0) if gpu else (platform.processor() or "cpu")
    with tracked_run(cfg.experiment, run_name="benchmark") as tracker:
        tracker.log_params({**config_mod.to_dict(cfg), "device_name": name, "torch": torch.__version__})
        rows = benchmark.inference_rows(generators, cfg.tile, batches, precisions, backends, device,
                                        warmup=3 if gpu else 1, repeats=repeats)
        train_rows = []
        if cfg.train:
            steps = cfg.train_steps or (30 if gpu else 3)
            models = listed(cfg.train_models, cfg.train_models, valid=tuple(MODELS))
            train_rows = [benchmark.train_row(m, b, steps, cfg.tile, device) for m in models
                          for b in listed(cfg.train_batch_sizes, cfg.train_batch_sizes, int)]
        sampling_rows = []
        if cfg.sampling:
            sampling_rows = benchmark.sampling_rows(
                listed(cfg.sampling_sizes, cfg.sampling_sizes, int), precisions,
                cfg.sampling_batch or (16 if gpu else 1), cfg.sampling_steps, cfg.sampling_channels, device,
                repeats=3 if gpu else 1)
        dip_rows = []
        if cfg.dip:
            dip_rows = benchmark.dip_rows(cfg.dip_size, precisions, [False, True] if gpu else [False], device,
                                          cfg.dip_iterations or (50 if gpu else 3))
        report = f"# imgtrans benchmark on {name} (torch {torch.__version__})\n\n" + \
            benchmark.format_inference(rows) + "\n"
        if train_rows:
            report += "\n" + benchmark.format_training(train_rows) + "\n"
        if sampling_rows:
            report += "\n" + benchmark.format_sampling(sampling_rows) + "\n"
        if dip_rows:
            report += "\n" + benchmark.format_dip(dip_rows) + "\n"
        if not gpu:
            report += "\nNo GPU here: the GPU targets were not measured; CPU figures are for ratios only.\n"
        tracker.log_metrics(benchmark.as_metrics(rows, train_rows, sampling_rows, dip_rows), step=0)
        tracker.log_text(report, "benchmark.md")
    print(report)
    return 0


def evaluate_command(cfg: config_mod.EvaluateConfig, explicit, args) -> int:
    import os

    from imgtrans.evaluate import evaluate
    from imgtrans.files import scratch_dir
    from imgtrans.tracking import RunWriter, generator_checkpoint, tracked_run

    if not cfg.run_id:
        raise ImgtransError("run_id is required: the training run to evaluate")
    target = RunWriter(cfg.run_id)
    device = resolve_device(cfg.device)
    with scratch_dir("evaluate") as tmp:
        ckpt = generator_checkpoint(f"runs:/{cfg.run_id}/model", tmp / "model")
        (tmp / "results").mkdir()
        result = evaluate(cfg, ckpt, device, tmp / "results")
        target.log_artifacts(result.artifacts, f"evaluation/{cfg.split}")
    prefix = "test" if cfg.split == "test" else "eval_val"
    metrics = {f"{prefix}/{k}": v for k, v in result.metrics.items()}
    tags = {f"imgtrans.{prefix}.{k}": v for k, v in result.tags.items()}
    for message in dict.fromkeys(m.message for m in result.unavailable):
        print(f"imgtrans: warning: {message}", file=sys.stderr)
    for missing in result.unavailable:
        tags[f"imgtrans.{prefix}.unavailable.{missing.metric}"] = missing.message
    target.log_metrics(metrics)
    target.set_tags(tags)
    if "MLFLOW_RUN_ID" in os.environ and os.environ["MLFLOW_RUN_ID"] != cfg.run_id:
        with tracked_run("") as tracker:
            tracker.set_tags({"imgtrans.evaluated_run": cfg.run_id})
            tracker.log_metrics(metrics, step=0)
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        if not key.endswith("_std"):
            std = metrics.get(f"{key}_std")
            print(f"{key:<{width}}  {value:.4f}" + (f" ± {std:.4f}" if std is not None else ""))
    print(f"imgtrans: logged {len(metrics)} metrics and evaluation/{cfg.split}/ to run {cfg.run_id}")
    return 0


def compare_command(cfg: config_mod.CompareConfig, explicit, args) -> int:
    from contextlib import nullcontext
    from pathlib import Path

    from imgtrans.compare import markdown, write_reports
    from imgtrans.files import scratch_dir
    from imgtrans.tracking import run_summaries, tracked_run

    run_ids = [r.strip() for r in cfg.run_ids.split(",") if r.strip()]
    runs = run_summaries(cfg.experiment, run_ids, cfg.split)
    title = f"imgtrans comparison: {cfg.experiment or ('selected runs' if run_ids else 'current experiment')} " \
            f"({cfg.split} split, {len(runs)} runs)"
    with tracked_run(cfg.report_experiment, run_name="compare") as tracker, \
            (nullcontext(Path(cfg.output)) if cfg.output else scratch_dir("compare")) as folder:
        paths = write_reports(runs, title, folder)
        tracker.log_params({"experiment": cfg.experiment, "run_ids": ",".join(r.run_id for r in runs),
                            "split": cfg.split})
        for path in paths:
            tracker.log_artifact(path, "report")
    print(markdown(runs, title))
    print(f"imgtrans: report logged to run {tracker.run_id} ({', '.join('report/' + p.name for p in paths)})"
          + (f" and written to {folder}" if cfg.output else ""))
    return 0


def study_command(cfg: config_mod.StudyConfig, explicit, args) -> int:
    from imgtrans import studies

    return studies.command(cfg, progress=not args.no_progress)


def _module_doc(cls) -> str:
    return (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]


COMMANDS: dict[str, Command] = {
    **{name: Command(name, cls.config_class, train_command, f"train {name}: {_module_doc(cls)}")
       for name, cls in MODELS.items()},
    "dip": Command("dip", DIPConfig, dip_command, "restore one image with Deep Image Prior (classic or progressive)"),
    "dip_diffusion": Command("dip_diffusion", DIPDiffusionConfig, dip_command,
                             "DIP output as the start of a trained diffusion model's reverse process (SDEdit)"),
    "export": Command("export", config_mod.ExportConfig, export_command,
                      "export a run's generator to ONNX (+ sidecar JSON) with a parity check"),
    "translate": Command("translate", config_mod.TranslateConfig, translate_command,
                         "translate a folder, list file or image with an exported model (tiled, resumable)"),
    "evaluate": Command("evaluate", config_mod.EvaluateConfig, evaluate_command,
                        "test metrics (PSNR, SSIM, LPIPS, FID, KID, IS) of a run, logged to that run"),
    "compare": Command("compare", config_mod.CompareConfig, compare_command,
                       "a Markdown/CSV/HTML report across evaluated runs, with the same inputs side by side"),
    "study": Command("study", config_mod.StudyConfig, study_command,
                     "an Optuna study over a model (trials = nested MLflow runs); `study best` prints the best"),
    "benchmark": Command("benchmark", config_mod.BenchmarkConfig, benchmark_command,
                         "inference and training throughput per backend, precision and batch size"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imgtrans", description="Image-to-image translation experiments tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        add_config_arguments(p, command.config_class)
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from imgtrans import interrupts
    from imgtrans.files import sweep_scratch

    parser = build_parser()
    try:
        with interrupts.handled():
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help()
                return 2
            sweep_scratch()
            command = COMMANDS[args.command]
            cfg, explicit = config_from_args(command.config_class, args)
            return command.run(cfg, explicit, args)
    except ImgtransError as exc:
        message = one_line(exc)
        _end_run("FAILED", message)
        print(f"imgtrans: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        _end_run("KILLED", interrupts.reason(exc))
        print(f"imgtrans: {interrupts.reason(exc)}", file=sys.stderr)
        return interrupts.exit_code(exc)
    except Exception as exc:  # a bug, not bad input: keep the traceback
        _end_run("FAILED", f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1


def _end_run(status: str, message: str) -> None:
    """A run that ended before its command's own run could (e.g. a bad option under `mlflow run`)."""
    from imgtrans.tracking import end_active_run

    end_active_run(status, message)
