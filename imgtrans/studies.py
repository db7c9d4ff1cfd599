"""Optuna studies over any model, tracked in MLflow: a parent run per worker, a nested run per trial.

Specs live in top-level `studies/*.yaml`:

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
      lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      ngf: {type: categorical, choices: [32, 64]}

Workers: every process started with the same spec and storage adds `n_trials`
trials to the same study; Optuna's storage hands out trial numbers, so none
is lost or run twice. Each worker samples with a seed of its own, and the
stores are created under a lock, so workers may all start at once.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import optuna
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState

from imgtrans import config as config_mod
from imgtrans.errors import ImgtransError, one_line
from imgtrans.files import scratch_dir
from imgtrans.runs import RUNS

TOP_LEVEL = {"model", "dataset", "fixed", "budget", "full_budget", "objectives", "sampler", "pruner", "seed",
             "heartbeat", "search_space", "description"}
SAMPLERS = ("tpe", "random", "nsga2")
PRUNER_KEYS = {"median": {"type", "n_startup_trials"}, "hyperband": {"type"},
               "threshold": {"type", "lower", "upper"}, "none": {"type"}}
DISTRIBUTION_KEYS = {"float": {"type", "low", "high", "log"}, "int": {"type", "low", "high", "log"},
                     "categorical": {"type", "choices"}}
INFERENCE_METRIC = "infer/ms_per_image"
WORKER_DIED = "worker died (heartbeat lost)"


@dataclass
class Objective:
    metric: str
    direction: str


@dataclass
class Heartbeat:
    """A worker records that its running trial is alive every `interval` s; after `grace_period` s without,
    the next worker to start a trial fails it and queues it again (at most `max_retry` times)."""

    interval: int = 10
    grace_period: int = 30
    max_retry: int = 1


@dataclass
class StudySpec:
    path: Path
    model: str
    dataset: str
    search_space: dict[str, dict[str, Any]]
    objectives: list[Objective]
    fixed: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    full_budget: dict[str, Any] = field(default_factory=dict)
    sampler: str = "tpe"
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})
    seed: int = 0
    heartbeat: Heartbeat = field(default_factory=Heartbeat)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


# --- spec -----------------------------------------------------------------------------------------------


def _fail(path: Path, message: str) -> NoReturn:
    raise ImgtransError(f"{path}: {message}")


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    data = _mapping(path, "the top level", _read_yaml(path))
    _check_keys(path, "", data, TOP_LEVEL)
    model = data.get("model")
    if not isinstance(model, str) or model not in RUNS:
        _fail(path, f"unknown model '{model}'; valid values: {', '.join(RUNS)}")
    cfg_cls = RUNS[model].config_class
    dataset = data.get("dataset", "synthetic-facades")
    if not isinstance(dataset, str) or not dataset:
        _fail(path, f"dataset: expected a dataset name or folder, got {dataset!r}")
    objectives = _objectives(path, model, data.get("objectives"))
    sampler = data.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        _fail(path, f"invalid sampler '{sampler}'; valid values: {', '.join(SAMPLERS)}")
    pruner = _pruner(path, data.get("pruner", "median"))
    if len(objectives) > 1 and pruner["type"] != "none":
        _fail(path, "pruning is off for multi-objective studies (Optuna cannot prune them); set pruner: none")
    return StudySpec(
        path, model, dataset, _search_space(path, cfg_cls, data.get("search_space")), objectives,
        fixed=_options(path, cfg_cls, "fixed", data.get("fixed")),
        budget=_options(path, cfg_cls, "budget", data.get("budget")),
        full_budget=_options(path, cfg_cls, "full_budget", data.get("full_budget")),
        sampler=sampler, pruner=pruner, seed=_integer(path, "seed", data.get("seed", 0), 0, 2 ** 32 - 1),
        heartbeat=_heartbeat(path, data.get("heartbeat")))


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ImgtransError(f"study spec not found: {path}; see studies/*.yaml for examples")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        _fail(path, f"not valid YAML ({str(exc).splitlines()[0]})")


def _mapping(path: Path, where: str, value: Any) -> dict:
    if not isinstance(value, dict):
        _fail(path, f"{where}: expected a mapping, got {value!r}")
    return value


def _check_keys(path: Path, where: str, mapping: dict, valid: set[str]) -> None:
    unknown = sorted(str(key) for key in set(mapping) - valid)
    if unknown:
        prefix = f"{where}: " if where else ""
        _fail(path, f"{prefix}unknown key '{unknown[0]}'; valid keys: {', '.join(sorted(valid))}")


def _integer(path: Path, where: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    valid = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not valid or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        _fail(path, f"{where}: expected an integer {bounds}, got {value!r}")
    return value


def _number(path: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(path, f"{where}: expected a number, got {value!r}")
    return value


def _check_option_name(path: Path, cfg_cls: type, section: str, name: Any) -> None:
    if name not in {f.name for f in config_mod.fields(cfg_cls)}:
        _fail(path, f"unknown parameter '{name}' in {section} for model {cfg_cls.model_name} "
                    f"(see `imgtrans {cfg_cls.model_name} --help`)")


def _check_option_value(path: Path, cfg_cls: type, where: str, name: str, value: Any) -> None:
    """A valid value of the option: its type, one of its choices, within its range."""
    try:
        config_mod.parse_option(cfg_cls, name, value)
    except ImgtransError as exc:
        _fail(path, f"{where}: {exc}")


def _options(path: Path, cfg_cls: type, section: str, values: Any) -> dict[str, Any]:
    values = _mapping(path, section, {} if values is None else values)
    for name, value in values.items():
        _check_option_name(path, cfg_cls, section, name)
        _check_option_value(path, cfg_cls, section, name, value)
    return values


def _search_space(path: Path, cfg_cls: type, space: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(space, dict) or not space:
        _fail(path, "search_space must map at least one parameter to a distribution")
    for name, dist in space.items():
        _check_option_name(path, cfg_cls, "search_space", name)
        _check_distribution(path, cfg_cls, name, dist)
    return space


def _check_distribution(path: Path, cfg_cls: type, name: Any, dist: Any) -> None:
    where = f"search_space.{name}"
    kind = _mapping(path, where, dist).get("type")
    if kind not in ("float", "int", "categorical"):
        _fail(path, f"{where}: type must be float, int or categorical, got {kind!r}")
    _check_keys(path, where, dist, DISTRIBUTION_KEYS[kind])
    if kind == "categorical":
        choices = dist.get("choices")
        if not isinstance(choices, list) or not choices:
            _fail(path, f"{where}: categorical needs a non-empty list of choices")
        values = choices
    else:
        low, high = dist.get("low"), dist.get("high")
        number = int if kind == "int" else (int, float)
        if any(isinstance(v, bool) or not isinstance(v, number) for v in (low, high)) or low >= high:
            what = "integers" if kind == "int" else "numbers"
            _fail(path, f"{where}: needs {what} low < high, got low={low}, high={high}")
        if not isinstance(dist.get("log", False), bool):
            _fail(path, f"{where}: log must be true or false")
        if dist.get("log") and low <= 0:
            _fail(path, f"{where}: a log scale needs low > 0, got {low}")
        values = [low, high]
    for value in values:
        _check_option_value(path, cfg_cls, where, name, value)


def _objectives(path: Path, model: str, objectives: Any) -> list[Objective]:
    objectives = objectives or [{"metric": "val/psnr", "direction": "maximize"}]
    if not isinstance(objectives, list):
        _fail(path, f"objectives: expected a list of {{metric, direction}} mappings, got {objectives!r}")
    result = []
    for index, objective in enumerate(objectives):
        where = f"objectives[{index}]"
        _check_keys(path, where, _mapping(path, where, objective), {"metric", "direction"})
        metric, direction = objective.get("metric"), objective.get("direction")
        if not isinstance(metric, str) or not (metric.startswith("val/") or metric == INFERENCE_METRIC):
            _fail(path, f"{where}: needs a metric, val/<metric> or {INFERENCE_METRIC}, got {metric!r}")
        if direction not in ("maximize", "minimize"):
            _fail(path, f"{where}: direction must be maximize or minimize, got {direction!r}")
        if metric == INFERENCE_METRIC and not RUNS[model].trains_generator:
            _fail(path, f"{INFERENCE_METRIC} does not apply to {model}, which {RUNS[model].instead_of_a_generator} "
                        "and has no generator")
        result.append(Objective(metric, direction))
    return result


def _pruner(path: Path, pruner: Any) -> dict[str, Any]:
    pruner = pruner if isinstance(pruner, dict) else {"type": pruner}
    kind = pruner.get("type")
    if kind not in tuple(PRUNER_KEYS):
        _fail(path, f"invalid pruner '{kind}'; valid values: {', '.join(PRUNER_KEYS)}")
    _check_keys(path, "pruner", pruner, PRUNER_KEYS[kind])
    if "n_startup_trials" in pruner:
        _integer(path, "pruner.n_startup_trials", pruner["n_startup_trials"], 0)
    if kind == "threshold":
        if not {"lower", "upper"} & set(pruner):
            _fail(path, "pruner: threshold needs lower, upper or both")
        for key in {"lower", "upper"} & set(pruner):
            _number(path, f"pruner.{key}", pruner[key])
    return pruner


def _heartbeat(path: Path, heartbeat: Any) -> Heartbeat:
    values = _mapping(path, "heartbeat", {} if heartbeat is None else heartbeat)
    _check_keys(path, "heartbeat", values, {f.name for f in dataclasses.fields(Heartbeat)})
    interval = _integer(path, "heartbeat.interval", values.get("interval", Heartbeat.interval), 1)
    grace_period = _integer(path, "heartbeat.grace_period", values.get("grace_period", 3 * interval), 1)
    if grace_period <= interval:
        _fail(path, f"heartbeat.grace_period must be longer than heartbeat.interval ({interval} s), "
                    f"got {grace_period}")
    return Heartbeat(interval, grace_period,
                     _integer(path, "heartbeat.max_retry", values.get("max_retry", Heartbeat.max_retry), 0))


# --- storage, workers ------------------------------------------------------------------------------------


def resolve_storage(storage: str, study_name: str):
    """SQLAlchemy URL, journal file, or a file path for SQLite; default: IMGTRANS_STUDY_STORAGE (what
    `imgtrans server` prints), else studies/<study_name>.db."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = storage or os.environ.get(config_mod.STUDY_STORAGE_VARIABLE, "")
    if not storage:
        Path("studies").mkdir(exist_ok=True)
        storage = f"studies/{study_name}.db"
    if "://" in storage:
        return storage
    path = Path(storage).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".log", ".journal"):
        return JournalStorage(JournalFileBackend(str(path)))
    return f"sqlite:///{path}"


def sqlite_file(location: Any) -> Path | None:
    """The database file of a SQLite URL; None for anything else (other databases, journals, servers)."""
    if not isinstance(location, str) or not location.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(location).database
    return Path(database).resolve() if database and database != ":memory:" else None


@contextmanager
def locked(files: Iterable[Path]) -> Iterator[None]:
    """Hold `<file>.lock` beside each file: SQLite schemas (Optuna's, MLflow's) are created without one, and
    workers started at once on a fresh file would create them twice and crash."""
    with ExitStack() as stack:
        for file in sorted(set(files)):
            file.parent.mkdir(parents=True, exist_ok=True)
            lock = stack.enter_context(open(f"{file}.lock", "w"))
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def worker_id() -> str:
    """This process, as recorded in the user attribute `worker` of its trials."""
    return f"{socket.gethostname()}:{os.getpid()}"


def report_failure(number: int, reason: str) -> None:
    print(f"imgtrans: trial {number} failed: {reason}", file=sys.stderr)


def on_stale_trial(max_retry: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """What a worker does with a trial that Optuna failed because its worker stopped beating."""
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def fail_and_retry(study: optuna.Study, trial: FrozenTrial) -> None:
        from mlflow.exceptions import MlflowException

        from imgtrans.tracking import fail_runs_of_dead_trial

        report_failure(trial.number, WORKER_DIED)
        retry(study, trial)
        try:
            fail_runs_of_dead_trial(study.study_name, trial.number, WORKER_DIED)
        except MlflowException as exc:  # the study goes on; only the dead runs' status is left behind
            print(f"imgtrans: warning: trial {trial.number}'s MLflow runs are left RUNNING: {one_line(exc)}",
                  file=sys.stderr)

    return fail_and_retry


def make_storage(location, heartbeat: Heartbeat):
    """A journal as it is (Optuna has no heartbeat for it); a database URL with the spec's heartbeat."""
    if not isinstance(location, str):
        return location
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(location, heartbeat_interval=heartbeat.interval,
                                          grace_period=heartbeat.grace_period,
                                          heartbeat_stale_trial_callback=on_stale_trial(heartbeat.max_retry))


def make_sampler(spec: StudySpec, seed: int):
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: StudySpec):
    kind = spec.pruner["type"]
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner.get("n_startup_trials", 3))
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if kind == "threshold":
        return optuna.pruners.ThresholdPruner(lower=spec.pruner.get("lower"), upper=spec.pruner.get("upper"))
    return optuna.pruners.NopPruner()


def open_study(spec: StudySpec, study_name: str, location) -> tuple[optuna.Study, int]:
    """Create the study, or join it; returns it with this worker's sampler seed.

    The worker that creates the study samples with the spec's seed, so that one worker on a fresh study is
    reproducible; every other worker, and every continuation, with a seed derived from the spec's seed, this
    worker (host, pid) and the trials already in the study, so that workers do not propose each other's points."""
    storage = make_storage(location, spec.heartbeat)
    try:
        study = optuna.create_study(study_name=study_name, storage=storage, sampler=make_sampler(spec, spec.seed),
                                    pruner=make_pruner(spec), directions=[o.direction for o in spec.objectives])
        return study, spec.seed
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=make_pruner(spec))
        key = f"{spec.seed}:{worker_id()}:{len(study.trials)}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "little")
        study.sampler = make_sampler(spec, seed)
        return study, seed


# --- trials ----------------------------------------------------------------------------------------------


def sample(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    params = {}
    for name, dist in space.items():
        if dist["type"] == "float":
            params[name] = trial.suggest_float(name, dist["low"], dist["high"], log=bool(dist.get("log")))
        elif dist["type"] == "int":
            params[name] = trial.suggest_int(name, int(dist["low"]), int(dist["high"]), log=bool(dist.get("log")))
        else:
            params[name] = trial.suggest_categorical(name, dist["choices"])
    return params


def trial_config(spec: StudySpec, params: dict[str, Any], budget: dict[str, Any], experiment: str):
    values = {**spec.fixed, **params, **budget, "dataset": spec.dataset, "experiment": experiment}
    cfg = config_mod.from_dict(RUNS[spec.model].config_class, values)
    cfg.validate()
    return cfg


@torch.no_grad()
def inference_ms_per_image(model, data, images: int = 8) -> float:
    from torch.utils.data import Subset

    from imgtrans.data.datasets import make_loader

    batch = next(iter(make_loader(Subset(data, range(min(images, len(data)))), batch_size=images)))
    model.eval()
    model.translate(batch["A"])  # warm-up
    start = time.perf_counter()
    model.translate(batch["A"])
    if model.runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / batch["A"].shape[0]


def objective_values(spec: StudySpec, result) -> list[float]:
    values = []
    for obj in spec.objectives:
        if obj.metric == INFERENCE_METRIC:
            value = inference_ms_per_image(result.model, result.val_dataset)
        else:
            value = result.val_metrics.get(obj.metric, float("nan"))
        if not math.isfinite(value):
            raise ImgtransError(f"objective {obj.metric} was not produced or is not finite ({value})")
        values.append(value)
    return values


def record_failure(trial: optuna.Trial, tracker, exc: BaseException) -> None:
    """The reason in one line (trial attribute), the traceback as the run's `error/traceback.txt`."""
    trial.set_user_attr("fail_reason", one_line(exc))
    tracker.log_text("".join(traceback.format_exception(exc)), "error/traceback.txt")
    tracker.set_tags({"optuna.state": "FAIL"})


def make_objective(spec: StudySpec, study_name: str, max_steps: int, experiment: str):
    from imgtrans.tracking import tracked_run

    budget = dict(spec.budget)
    if max_steps:
        budget["max_steps"] = max_steps

    def objective(trial: optuna.Trial):
        params = sample(trial, spec.search_space)
        first = spec.objectives[0].metric

        def report(epoch: int, metrics: dict[str, float]) -> None:
            if spec.multi_objective or first not in metrics:
                return
            trial.report(metrics[first], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{first}={metrics[first]:.4g} at epoch {epoch}")

        with tracked_run(experiment, run_name=f"trial-{trial.number}", nested=True,
                         stops=(optuna.TrialPruned,)) as tracker:
            tracker.set_tags({"optuna.study": study_name, "optuna.trial": trial.number})
            trial.set_user_attr("worker", worker_id())
            tracker.log_params({f"trial.{k}": v for k, v in params.items()})
            try:
                cfg = trial_config(spec, params, budget, experiment)
                result = RUNS[spec.model].create(cfg, tracker, progress=False, on_validation=report).fit()
                values = objective_values(spec, result)
            except optuna.TrialPruned as exc:
                tracker.set_tags({"optuna.state": "PRUNED", "optuna.pruned": str(exc)})
                raise
            except Exception as exc:
                record_failure(trial, tracker, exc)
                raise
            tracker.log_metrics({f"optuna/objective_{i}": v for i, v in enumerate(values)}, step=trial.number)
            tracker.set_tags({"optuna.state": "COMPLETE"})
        return values[0] if len(values) == 1 else values

    return objective


@dataclass
class WorkerTrials:
    """An Optuna callback: keeps this worker's finished trials and reports each failure in one line."""

    finished: list[FrozenTrial] = field(default_factory=list)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.finished.append(trial)
        if trial.state == TrialState.FAIL:
            report_failure(trial.number, self.reason(trial))

    @staticmethod
    def reason(trial: FrozenTrial) -> str:
        return trial.user_attrs.get("fail_reason", "no reason recorded")

    def check_not_all_failed(self) -> None:
        failed = [t for t in self.finished if t.state == TrialState.FAIL]
        if failed and len(failed) == len(self.finished):
            raise ImgtransError(f"all {len(failed)} trials failed; first reason: {self.reason(failed[0])}")


def save_plots(study: optuna.Study, spec: StudySpec, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    plots = {"parallel_coordinate": vis.plot_parallel_coordinate}
    if spec.multi_objective:
        plots["pareto_front"] = vis.plot_pareto_front
    else:
        plots["optimization_history"] = vis.plot_optimization_history
        plots["param_importances"] = vis.plot_param_importances
    saved = []
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():  # the matplotlib plots are marked experimental
                warnings.simplefilter("ignore")
                ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances need two finished trials with varied parameters
        figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        path = folder / f"{name}.png"
        figure.savefig(path, bbox_inches="tight", dpi=100)
        plt.close(figure)
        saved.append(path)
    return saved


def summary(study: optuna.Study) -> dict[str, Any]:
    states = [t.state.name for t in study.trials]
    info: dict[str, Any] = {name.lower(): states.count(name) for name in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        return info
    if len(study.directions) == 1:
        best = study.best_trial
        info.update(best_trial=best.number, best_value=best.value, best_params=best.params)
    else:
        info["pareto_front"] = [{"trial": t.number, "values": t.values, "params": t.params}
                                for t in study.best_trials]
    return info


def as_yaml(info: dict[str, Any]) -> str:
    return yaml.safe_dump(json.loads(json.dumps(info, default=str)), sort_keys=False)


# --- commands --------------------------------------------------------------------------------------------


def study_command(cfg: config_mod.StudyConfig, explicit: dict, progress: bool) -> int:
    """`imgtrans study` (add trials) and `imgtrans study best`."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials: our one line, not Optuna's traceback
    return best_command(cfg) if cfg.action == "best" else run_command(cfg, progress)


def best_command(cfg: config_mod.StudyConfig) -> int:
    if not cfg.study_name:
        raise ImgtransError("give the study with --study (and its --storage)")
    try:
        study = optuna.load_study(study_name=cfg.study_name, storage=resolve_storage(cfg.storage, cfg.study_name))
    except KeyError:
        raise ImgtransError(f"no study named '{cfg.study_name}' in the storage; check --storage") from None
    info = summary(study)
    if "best_params" not in info and "pareto_front" not in info:
        raise ImgtransError(f"study '{cfg.study_name}' has no completed trial yet")
    attrs = study.user_attrs
    if "best_params" in info and "model" in attrs:
        info["config"] = {"model": attrs["model"], "dataset": attrs.get("dataset"), **attrs.get("fixed", {}),
                          **info["best_params"]}
    print(as_yaml(info), end="")
    return 0


def run_command(cfg: config_mod.StudyConfig, progress: bool) -> int:
    """One worker: join (or create) the study, add `n_trials` trials, log the summary, optionally retrain."""
    from imgtrans.tracking import store_uri, tracked_run

    if not cfg.spec:
        raise ImgtransError("spec is required, e.g. spec=studies/pix2pix.yaml")
    spec = load_spec(cfg.spec)
    if cfg.retrain and not RUNS[spec.model].trains_generator:
        raise ImgtransError(f"retrain registers a trained generator; {spec.model} "
                            f"{RUNS[spec.model].instead_of_a_generator} and has none — rerun `imgtrans {spec.model}` "
                            "with the best config from `imgtrans study best`")
    name = cfg.study_name or Path(cfg.spec).stem
    location = resolve_storage(cfg.storage, name)
    with ExitStack() as stack:  # the parent run outlives the locks
        with locked(filter(None, map(sqlite_file, (location, store_uri())))):
            study, seed = open_study(spec, name, location)
            parent = stack.enter_context(tracked_run(cfg.experiment, run_name=f"study-{name}"))
        study.set_user_attr("model", spec.model)
        study.set_user_attr("dataset", spec.dataset)
        study.set_user_attr("fixed", spec.fixed)
        parent.set_tags({"optuna.study": name, "optuna.worker": worker_id(), "imgtrans.model": f"study:{spec.model}"})
        parent.log_params({"spec": cfg.spec, "n_trials": cfg.n_trials, "study_name": name, "model": spec.model,
                           "sampler": spec.sampler, "sampler_seed": seed, "pruner": spec.pruner["type"],
                           "objectives": ",".join(f"{o.metric}:{o.direction}" for o in spec.objectives)})
        trials = WorkerTrials()
        study.optimize(make_objective(spec, name, cfg.max_steps, cfg.experiment), n_trials=cfg.n_trials,
                       catch=(Exception,), callbacks=[trials])
        trials.check_not_all_failed()
        info = summary(study)
        log_summary(parent, study, spec, info)
        if cfg.retrain:
            retrain_best(spec, info, name, cfg, parent, progress)
    print(as_yaml(info), end="")
    print(f"imgtrans: study '{name}': {len(study.trials)} trials in total; parent run {parent.run_id}")
    return 0


def log_summary(parent, study: optuna.Study, spec: StudySpec, info: dict[str, Any]) -> None:
    parent.log_metrics({f"study/{k}": v for k, v in info.items() if isinstance(v, (int, float))}, step=0)
    if "best_params" in info:
        parent.log_params({f"best.{k}": v for k, v in info["best_params"].items()})
    parent.log_text(as_yaml(info), "study/best.yaml")
    with scratch_dir("study-plots") as folder:
        for path in save_plots(study, spec, folder):
            parent.log_artifact(path, "study")


def retrain_best(spec: StudySpec, info: dict[str, Any], name: str, cfg: config_mod.StudyConfig, parent,
                 progress: bool) -> None:
    """Train the best configuration with the full budget and register it as `<name>@champion`."""
    from imgtrans.tracking import register_champion, tracked_run

    if "best_params" not in info:
        raise ImgtransError("retrain needs a single-objective study with a completed trial")
    retrain_cfg = trial_config(spec, info["best_params"], spec.full_budget, cfg.experiment)
    with tracked_run(cfg.experiment, run_name=f"retrain-{name}", nested=True) as child:
        result = RUNS[spec.model].create(retrain_cfg, child, progress=progress).fit()
    version = register_champion(result.run_id, cfg.register_as or name)
    parent.set_tags({"optuna.champion": f"models:/{cfg.register_as or name}@champion (v{version})"})
