"""The options of the `study` command (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from imgtrans.config import EXPERIMENT_HELP, opt

STUDY_STORAGE_VARIABLE = "IMGTRANS_STUDY_STORAGE"  # the default study storage, as `imgtrans server` prints it


@dataclass
class StudyConfig:
    action: Literal["run", "best"] = field(default="run", metadata={
        "help": "run: optimise (add n_trials trials); best: print the best configuration", "positional": True})
    spec: str = opt("", "a study spec (YAML), e.g. studies/pix2pix.yaml")
    n_trials: int = opt(10, "trials this worker adds; start the command N times to run N workers", ge=1)
    storage: str = opt("", "Optuna storage: a SQLAlchemy URL, a journal file (*.log / *.journal), or a file "
                           f"path for SQLite; default ${STUDY_STORAGE_VARIABLE}, else studies/<study_name>.db")
    study_name: str = field(default="", metadata={"help": "default: the spec file's name", "aliases": ["--study"]})
    max_steps: int = opt(0, "per-trial step budget; 0 = the spec's budget", ge=0)
    retrain: bool = opt(False, "after the study, retrain the best config with the full budget and register it")
    register_as: str = opt("", "registered model name for retrain; default: the study name")
    experiment: str = opt("", EXPERIMENT_HELP)
