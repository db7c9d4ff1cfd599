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
    seed: 0
    search_space:
      lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      ngf: {type: categorical, choices: [32, 64]}

Workers: every process started with the same spec and storage adds `n_trials`
trials to the same study; Optuna's storage hands out trial numbers, so none
is lost or run twice.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from imgtrans import config as config_mod
from imgtrans.errors import ImgtransError, one_line

TOP_LEVEL = {"model", "dataset", "fixed", "budget", "full_budget", "objectives", "sampler", "pruner", "seed",
             "search_space", "description"}
SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "threshold", "none")
INFERENCE_METRIC = "infer/ms_per_image"


@dataclass
class Objective:
    metric: str
    direction: str


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

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


def _fail(path: Path, message: str):
    raise ImgtransError(f"{path}: {message}")


def config_classes() -> dict[str, type]:
    """Every model a study can tune: the Trainer's models, and DIP (restoration of one image)."""
    from imgtrans.models import MODELS
    from imgtrans.models.dip import DIPConfig

    return {**{name: cls.config_class for name, cls in MODELS.items()}, DIPConfig.model_name: DIPConfig}


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise ImgtransError(f"study spec not found: {path}; see studies/*.yaml for examples")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        _fail(path, f"not valid YAML ({str(exc).splitlines()[0]})")
    if not isinstance(data, dict):
        _fail(path, "expected a mapping at the top level")
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        _fail(path, f"unknown key '{unknown[0]}'; valid keys: {', '.join(sorted(TOP_LEVEL))}")
    model = data.get("model")
    classes = config_classes()
    if model not in classes:
        _fail(path, f"unknown model '{model}'; valid values: {', '.join(classes)}")
    cfg_cls = classes[model]
    types = config_mod.field_types(cfg_cls)
    options = {f.name for f in config_mod.fields(cfg_cls)}

    def check_options(section: str, values: dict) -> dict:
        if not isinstance(values, dict):
            _fail(path, f"'{section}' must be a mapping of option: value")
        for name, value in values.items():
            if name not in options:
                _fail(path, f"unknown parameter '{name}' in {section} for model {model} "
                            f"(see `imgtrans {model} --help`)")
            try:
                config_mod.parse_value(name, types[name], value)
            except ImgtransError as exc:
                _fail(path, f"{section}: {exc}")
        return values

    fixed = check_options("fixed", data.get("fixed") or {})
    budget = check_options("budget", data.get("budget") or {})
    full_budget = check_options("full_budget", data.get("full_budget") or {})
    space = data.get("search_space") or {}
    if not isinstance(space, dict) or not space:
        _fail(path, "search_space must map at least one parameter to a distribution")
    for name, dist in space.items():
        if name not in options:
            _fail(path, f"unknown parameter '{name}' in search_space for model {model} "
                        f"(see `imgtrans {model} --help`)")
        kind = (dist or {}).get("type")
        if kind in ("float", "int"):
            low, high = dist.get("low"), dist.get("high")
            if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or low >= high:
                _fail(path, f"search_space.{name}: needs numbers low < high, got low={low}, high={high}")
            if dist.get("log") and low <= 0:
                _fail(path, f"search_space.{name}: a log scale needs low > 0, got {low}")
        elif kind == "categorical":
            choices = dist.get("choices")
            if not isinstance(choices, list) or not choices:
                _fail(path, f"search_space.{name}: categorical needs a non-empty list of choices")
            for choice in choices:
                try:
                    config_mod.parse_value(name, types[name], choice)
                except ImgtransError as exc:
                    _fail(path, f"search_space.{name}: {exc}")
        else:
            _fail(path, f"search_space.{name}: type must be float, int or categorical, got {kind!r}")
    objectives = []
    for obj in data.get("objectives") or [{"metric": "val/psnr", "direction": "maximize"}]:
        metric, direction = obj.get("metric", ""), obj.get("direction", "")
        if not (metric.startswith("val/") or metric == INFERENCE_METRIC):
            _fail(path, f"objective metric '{metric}' must be a val/<metric> or {INFERENCE_METRIC}")
        if direction not in ("maximize", "minimize"):
            _fail(path, f"objective direction must be maximize or minimize, got {direction!r}")
        if metric == INFERENCE_METRIC and model == "dip":
            _fail(path, f"{INFERENCE_METRIC} does not apply to dip, which restores one image and has no generator")
        objectives.append(Objective(metric, direction))
    sampler = data.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        _fail(path, f"invalid sampler '{sampler}'; valid values: {', '.join(SAMPLERS)}")
    pruner = data.get("pruner", "median")
    pruner = pruner if isinstance(pruner, dict) else {"type": pruner}
    if pruner.get("type") not in PRUNERS:
        _fail(path, f"invalid pruner '{pruner.get('type')}'; valid values: {', '.join(PRUNERS)}")
    if len(objectives) > 1 and pruner["type"] != "none":
        _fail(path, "pruning is off for multi-objective studies (Optuna cannot prune them); set pruner: none")
    return StudySpec(path, model, data.get("dataset", "synthetic-facades"), space, objectives, fixed, budget,
                     full_budget, sampler, pruner, int(data.get("seed", 0)))


def resolve_storage(storage: str, study_name: str):
    """SQLAlchemy URL, journal file, or a file path for SQLite (default studies/<study_name>.db)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

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


def make_sampler(spec: StudySpec):
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed)


def make_pruner(spec: StudySpec):
    kind = spec.pruner["type"]
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner.get("n_startup_trials", 3))
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if kind == "threshold":
        return optuna.pruners.ThresholdPruner(lower=spec.pruner.get("lower"), upper=spec.pruner.get("upper"))
    return optuna.pruners.NopPruner()


def open_study(spec: StudySpec, study_name: str, storage: str):
    return optuna.create_study(
        study_name=study_name, storage=resolve_storage(storage, study_name), load_if_exists=True,
        sampler=make_sampler(spec), pruner=make_pruner(spec),
        directions=[o.direction for o in spec.objectives])


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
    cfg = config_mod.from_dict(config_classes()[spec.model], values)
    cfg.validate()
    return cfg


def fit(cfg, tracker, on_validation):
    """Train (or, for DIP, restore) with `cfg`; the result carries `val_metrics`."""
    if cfg.model_name == "dip":
        from imgtrans.restoration import DIPRunner

        return DIPRunner(cfg, tracker, progress=False, on_validation=on_validation).fit()
    from imgtrans.train import Trainer

    return Trainer(cfg, tracker, progress=False, on_validation=on_validation).fit()


@torch.no_grad()
def inference_ms_per_image(model, data, images: int = 8) -> float:
    from imgtrans.data.datasets import make_loader
    from torch.utils.data import Subset

    batch = next(iter(make_loader(Subset(data, range(min(images, len(data)))), batch_size=images)))
    model.eval()
    model.translate(batch["A"])  # warm-up
    start = time.perf_counter()
    model.translate(batch["A"])
    if model.runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / batch["A"].shape[0]


def make_objective(spec: StudySpec, study_name: str, max_steps: int, experiment: str):
    from imgtrans.tracking import Tracker

    budget = dict(spec.budget)
    if max_steps:
        budget["max_steps"] = max_steps

    def objective(trial: optuna.Trial):
        params = sample(trial, spec.search_space)
        cfg = trial_config(spec, params, budget, experiment)
        tracker = Tracker(experiment, run_name=f"trial-{trial.number}", nested=True)
        tracker.set_tags({"optuna.study": study_name, "optuna.trial": trial.number})
        tracker.log_params({f"trial.{k}": v for k, v in params.items()})
        first = spec.objectives[0].metric

        def report(epoch: int, metrics: dict[str, float]) -> None:
            if spec.multi_objective or first not in metrics:
                return
            trial.report(metrics[first], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{first}={metrics[first]:.4g} at epoch {epoch}")

        try:
            result = fit(cfg, tracker, report)
            values = []
            for obj in spec.objectives:
                if obj.metric == INFERENCE_METRIC:
                    value = inference_ms_per_image(result.model, result.val_dataset)
                else:
                    value = result.val_metrics.get(obj.metric, float("nan"))
                if not math.isfinite(value):
                    raise ImgtransError(f"objective {obj.metric} was not produced or is not finite ({value})")
                values.append(value)
        except optuna.TrialPruned as exc:
            tracker.set_tags({"optuna.state": "PRUNED", "optuna.pruned": str(exc)})
            tracker.finish("KILLED")
            raise
        except Exception as exc:
            reason = one_line(exc)
            trial.set_user_attr("fail_reason", reason)
            tracker.set_tags({"optuna.state": "FAIL"})
            tracker.finish("FAILED", error=reason)
            raise
        tracker.log_metrics({f"optuna/objective_{i}": v for i, v in enumerate(values)}, step=trial.number)
        tracker.set_tags({"optuna.state": "COMPLETE"})
        tracker.finish()
        return values[0] if len(values) == 1 else values

    return objective


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
