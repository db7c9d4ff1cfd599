"""What `imgtrans` can do, by name, without importing torch: every run kind (`RUNS`) and every command
(`COMMANDS`), each with its options (a config dataclass) and where its code lives ("module:attribute",
imported only when it runs).

A run kind is a class built as `Kind(cfg, tracker, resume_payload=None, progress=True, on_validation=None)`
whose `fit()` returns a result with `run_id`, `val_metrics` (what a study optimises) and `summary()` (the
line printed at the end); `imgtrans.training.runs` has the protocol and the command that starts any kind.
The Trainer (every model of `models.options`), DIP and DIP→diffusion are the kinds, so the CLI and studies
never branch on a name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from imgtrans.benchmarks.options import BenchmarkConfig
from imgtrans.config import RunConfig
from imgtrans.dip.options import DIPConfig, DIPDiffusionConfig
from imgtrans.errors import ImgtransError
from imgtrans.evaluation.options import CompareConfig, EvaluateConfig
from imgtrans.export.options import ExportConfig
from imgtrans.infer.options import TranslateConfig
from imgtrans.models import options as model_options
from imgtrans.studies.options import StudyConfig
from imgtrans.team.options import ServerConfig
from imgtrans.tracking.options import RunsConfig


def load(target: str) -> Any:
    """The attribute a "module:attribute" string names, importing its module."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class RunKind:
    config_class: type[RunConfig]
    runner: str  # "module:Class" of the runner
    help: str
    # What a run that trains no generator (for `export`, a study's `retrain`, infer/ms_per_image) does instead.
    instead_of_a_generator: str = ""
    # Whether it trains data-parallel over the processes torchrun starts (nproc > 1).
    distributed: bool = False

    @property
    def trains_generator(self) -> bool:
        return not self.instead_of_a_generator

    def create(self, cfg: RunConfig, tracker, resume_payload: dict | None = None, progress: bool = True,
               on_validation=None):
        return load(self.runner)(cfg, tracker, resume_payload=resume_payload, progress=progress,
                                 on_validation=on_validation)


def _summary(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0]


MODEL_CONFIGS: tuple[type[RunConfig], ...] = (
    model_options.Pix2PixConfig, model_options.CycleGANConfig, model_options.CUTConfig,
    model_options.FastCUTConfig, model_options.BicycleGANConfig, model_options.CVAEConfig,
    model_options.CGANConfig, model_options.DiffusionConfig)

RUNS: dict[str, RunKind] = {
    **{cls.model_name: RunKind(cls, "imgtrans.training.trainer:Trainer", f"train {cls.model_name}: {_summary(cls)}",
                               distributed=True)
       for cls in MODEL_CONFIGS},
    "dip": RunKind(DIPConfig, "imgtrans.dip.runner:DIPRunner",
                   "restore one image with Deep Image Prior (classic or progressive)", "restores one image"),
    "dip_diffusion": RunKind(DIPDiffusionConfig, "imgtrans.dip.diffusion:DIPDiffusionRun",
                             "DIP output as the start of a trained diffusion model's reverse process (SDEdit)",
                             "restores one image with a trained diffusion model"),
}


def run_kind(name: str) -> RunKind:
    try:
        return RUNS[name]
    except KeyError:
        raise ImgtransError(f"unknown model '{name}'; valid values: {', '.join(RUNS)}") from None


@dataclass(frozen=True)
class Command:
    """A subcommand: its options (a config dataclass), its handler — "module:function", called with (cfg,
    explicit options, progress) and returning the exit status — and a line of help."""

    config_class: type
    handler: str
    help: str
    entry_point: bool = True  # also an MLproject entry point (a long-running server is not a run)
    progress_bar: bool = False  # whether it shows one (every command takes --no-progress, for scripts' sake)

    def run(self, cfg: Any, explicit: dict[str, Any], progress: bool) -> int:
        return load(self.handler)(cfg, explicit, progress)


COMMANDS: dict[str, Command] = {
    **{name: Command(kind.config_class, "imgtrans.training.runs:start", kind.help, progress_bar=True)
       for name, kind in RUNS.items()},
    "export": Command(ExportConfig, "imgtrans.export.command:export_command",
                      "export a run's generator to ONNX (+ sidecar JSON) with a parity check"),
    "translate": Command(TranslateConfig, "imgtrans.infer.command:translate_command",
                         "translate a folder, list file or image with an exported model (tiled, resumable)",
                         progress_bar=True),
    "evaluate": Command(EvaluateConfig, "imgtrans.evaluation.evaluate:evaluate_command",
                        "test metrics (PSNR, SSIM, LPIPS, FID, KID, IS) of a run, logged to that run",
                        progress_bar=True),
    "compare": Command(CompareConfig, "imgtrans.evaluation.compare:compare_command",
                       "a Markdown/CSV/HTML report across evaluated runs, with the same inputs side by side"),
    "study": Command(StudyConfig, "imgtrans.studies.command:study_command",
                     "an Optuna study over a model (trials = nested MLflow runs); `study best` prints the best",
                     progress_bar=True),
    "benchmark": Command(BenchmarkConfig, "imgtrans.benchmarks.command:benchmark_command",
                         "inference and training throughput per backend, precision and batch size"),
    "runs": Command(RunsConfig, "imgtrans.tracking.command:runs_command",
                    "close runs that processes which died left RUNNING (`runs close-dead`, --older-than for other "
                    "hosts)",
                    entry_point=False),
    "server": Command(ServerConfig, "imgtrans.team.server:server_command",
                      "a team's MLflow tracking server on PostgreSQL, serving artifacts, and the study database",
                      entry_point=False),
}
