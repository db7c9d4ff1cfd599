"""A study spec (`studies/*.yaml`) as a typed schema: what the study searches, how, and on what budget.

    model: pix2pix
    dataset: synthetic-facades
    fixed: {crop_size: 128}                     # options every trial uses
    budget: {max_steps: 400}                    # per trial
    full_budget: {n_epochs: 100, n_epochs_decay: 100}   # for retrain=true (default: the model's defaults)
    objectives: [{metric: val/psnr, direction: maximize}]
    sampler: tpe                                # tpe | random | nsga2
    pruner: median                              # median | hyperband | none | {type: threshold, lower: …}
    seed: 0                                     # the sampler seed of the worker that creates the study
    heartbeat: {interval: 10, grace_period: 30, max_retry: 1}   # database storages: a killed worker's trial
    search_space:
      lr: {type: float, low: 1e-5, high: 1e-3, log: true}
      ngf: {type: categorical, choices: [32, 64]}

Every value is checked where it is read, and the first problem is one line naming the file and the key.
Numbers are YAML 1.2's (`1e-3` is a number, as in JSON), and a key given twice is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from imgtrans import config as config_mod
from imgtrans.commands import RUNS
from imgtrans.errors import ImgtransError, validation_message

INFERENCE_METRIC = "infer/ms_per_image"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Distribution(_Strict):
    """`{type: float|int, low, high, log}` or `{type: categorical, choices}`."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.type == "categorical":
            if self.choices is None or not self.choices or self.low is not None or self.high is not None:
                raise ValueError("categorical needs a non-empty list of choices (and no low/high)")
            return self
        if self.choices is not None or self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs low and high (and no choices)")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high)):
            raise ValueError(f"int needs integers low < high, got low={self.low}, high={self.high}")
        if not self.low < self.high:
            raise ValueError(f"needs low < high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0, got {self.low}")
        return self

    def describe(self) -> str:
        if self.type == "categorical":
            return "in {" + ", ".join(map(str, self.choices)) + "}"
        return f"{self.type} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")

    def bounds(self) -> list[Any]:
        if self.type == "categorical":
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.type == "int" else [self.low, self.high]


# Options a study sets itself, not through fixed, search_space or the budgets.
OWN_FIELDS = {"dataset": "set the data with the spec's own `dataset:`",
              "experiment": "the study's runs go to the study command's `experiment`"}


class Objective(_Strict):
    metric: str
    direction: Literal["maximize", "minimize"]

    @field_validator("metric")
    @classmethod
    def _known_kind(cls, metric: str) -> str:
        if not (metric.startswith("val/") or metric == INFERENCE_METRIC):
            raise ValueError(f"needs a metric, val/<metric> or {INFERENCE_METRIC}")
        return metric


class Heartbeat(_Strict):
    """A worker records that its running trial is alive every `interval` s; after `grace_period` s without,
    the next worker to start a trial fails it and queues it again (at most `max_retry` times)."""

    interval: int = Field(10, ge=1)
    grace_period: int = Field(0, ge=0)  # 0 = three intervals
    max_retry: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _longer_than_interval(self):
        self.grace_period = self.grace_period or 3 * self.interval
        if self.grace_period <= self.interval:
            raise ValueError(f"grace_period must be longer than heartbeat.interval ({self.interval} s), "
                             f"got {self.grace_period}")
        return self


class Pruner(_Strict):
    type: Literal["median", "hyperband", "threshold", "none"]
    n_startup_trials: int = Field(3, ge=0)  # median
    lower: float | None = None  # threshold
    upper: float | None = None

    @model_validator(mode="after")
    def _threshold_has_a_bound(self):
        if self.type == "threshold" and self.lower is None and self.upper is None:
            raise ValueError("threshold needs lower, upper or both")
        return self


class StudySpec(_Strict):
    model: str
    dataset: str = Field("synthetic-facades", min_length=1)
    description: str = ""
    fixed: dict[str, Any] = Field(default_factory=dict)
    budget: dict[str, Any] = Field(default_factory=dict)
    full_budget: dict[str, Any] = Field(default_factory=dict)
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="val/psnr", direction="maximize")], min_length=1)
    sampler: Literal["tpe", "random", "nsga2"] = "tpe"
    pruner: Pruner = Field(default_factory=lambda: Pruner(type="median"))
    seed: int = Field(0, ge=0, lt=2 ** 32)
    heartbeat: Heartbeat = Field(default_factory=Heartbeat)
    search_space: dict[str, Distribution] = Field(min_length=1)

    @field_validator("model", mode="before")
    @classmethod
    def _a_run_kind(cls, model: Any) -> Any:
        if not isinstance(model, str) or model not in RUNS:
            raise ValueError(f"unknown model '{model}'; valid values: {', '.join(RUNS)}")
        return model

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_by_name(cls, pruner: Any) -> Any:
        return {"type": pruner} if isinstance(pruner, str) else pruner

    @model_validator(mode="after")
    def _options_of_the_model(self):
        kind = RUNS[self.model]
        sections = {"fixed": self.fixed, "search_space": self.search_space, "budget": self.budget,
                    "full_budget": self.full_budget}
        for section, options in sections.items():
            for name in options.keys() & OWN_FIELDS.keys():
                raise ValueError(f"{section}.{name}: {OWN_FIELDS[name]}")
        # A trial's config is fixed, then the sampled values, then the budget (the full budget for retrain=true):
        # an option in two of them would be silently overridden.
        for first, second in (("fixed", "search_space"), ("fixed", "budget"), ("search_space", "budget"),
                              ("fixed", "full_budget"), ("search_space", "full_budget")):
            for name in sorted(sections[first].keys() & sections[second].keys()):
                raise ValueError(f"'{name}' is set in both {first} and {second}; set each option in one of them")
        for section in ("fixed", "budget", "full_budget"):
            for name, value in getattr(self, section).items():
                _check_option(kind.config_class, section, name, [value])
        for name, dist in self.search_space.items():
            _check_option(kind.config_class, f"search_space.{name}", name, dist.bounds(), dist.type)
        known = kind.config_class.validation_metrics
        for objective in self.objectives:
            if objective.metric != INFERENCE_METRIC and objective.metric not in known:
                raise ValueError(f"objective '{objective.metric}' is not a validation metric of {self.model}; "
                                 f"valid values: {', '.join(known)}, {INFERENCE_METRIC}")
        if self.multi_objective and self.pruner.type != "none":
            raise ValueError("pruning is off for multi-objective studies (Optuna cannot prune them); set pruner: none")
        if not kind.trains_generator and any(o.metric == INFERENCE_METRIC for o in self.objectives):
            raise ValueError(f"{INFERENCE_METRIC} does not apply to {self.model}, which "
                             f"{kind.instead_of_a_generator} and has no generator")
        return self

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


def _check_option(cfg_cls: type, where: str, name: str, values: list[Any], search: str = "") -> None:
    """`name` an option of `cfg_cls` that takes `values` (drawn from a distribution of type `search`)."""
    fields = {f.name: f for f in config_mod.fields(cfg_cls)}
    if name not in fields:
        raise ValueError(f"unknown parameter '{name}' in {where.split('.')[0]} for model {cfg_cls.model_name} "
                         f"(see `imgtrans {cfg_cls.model_name} --help`)")
    if search == "float" and fields[name].type == "int":
        raise ValueError(f"{where}: {name} takes whole numbers; use type: int")
    for value in values:
        try:
            config_mod.parse_option(cfg_cls, name, value)
        except ImgtransError as exc:
            raise ValueError(f"{where}: {exc}") from None


class _SpecLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's (JSON's) numbers — PyYAML's YAML 1.1 reads `1e-3` as a string, `0100` as 64 and
    `1:04` as 64 — that refuses a key given twice."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_SpecLoader.add_implicit_resolver(_INT, re.compile(r"^[-+]?\d+$|^0x[0-9a-fA-F]+$|^0o[0-7]+$"), list("-+0123456789"))


def _construct_int(loader: _SpecLoader, node) -> int:
    text = loader.construct_scalar(node)
    try:  # 0100 is a hundred, 0o100 sixty-four
        return int(text, {"0x": 16, "0o": 8}.get(text[:2], 10))
    except ValueError:  # `!!int` on what is no number
        raise yaml.constructor.ConstructorError(None, None, f"'{text}' is not a whole number", node.start_mark) \
            from None


_SpecLoader.add_constructor(_INT, _construct_int)
_SpecLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise ImgtransError(f"study spec not found: {path}; see studies/*.yaml for examples")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SpecLoader)
    except UnicodeDecodeError:
        raise ImgtransError(f"{path}: not UTF-8 text; save the spec as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ImgtransError(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    try:
        return StudySpec.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ImgtransError(f"{path}: {validation_message(exc)}") from None
