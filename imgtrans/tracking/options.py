"""The options of the `runs` command (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from imgtrans.config import EXPERIMENT_HELP, opt


@dataclass
class RunsConfig:
    action: Literal["close-dead"] = field(default="close-dead", metadata={
        "help": "close-dead: mark runs whose process died while they were RUNNING as KILLED", "positional": True})
    older_than: float = opt(0.0, "also close RUNNING runs of other hosts that gave no sign of life for this many "
                                 "hours (their processes cannot be checked from here); 0 = this host's only", ge=0)
    experiment: str = opt("", EXPERIMENT_HELP)
