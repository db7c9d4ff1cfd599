"""The `study` command: a worker that joins (or creates) a study and adds trials, the parent run with the
summary and plots, `study best`, and the retrain that registers the champion."""

from __future__ import annotations

import json
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import optuna
import yaml

from imgtrans.commands import RUNS
from imgtrans.errors import ImgtransError
from imgtrans.files import scratch_dir
from imgtrans.studies.objective import WorkerTrials, make_objective, trial_config
from imgtrans.studies.options import StudyConfig
from imgtrans.studies.spec import StudySpec, load_spec
from imgtrans.studies.storage import (
    locked,
    open_study,
    resolve_storage,
    sqlite_file,
    worker_id,
)
from imgtrans.tracking import register_champion, store_uri, tracked_run


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


def study_command(cfg: StudyConfig, explicit: dict, progress: bool) -> int:
    """`imgtrans study` (add trials) and `imgtrans study best`."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials: our one line, not Optuna's traceback
    return best_command(cfg) if cfg.action == "best" else run_command(cfg, progress)


def best_command(cfg: StudyConfig) -> int:
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


def run_command(cfg: StudyConfig, progress: bool) -> int:
    """One worker: join (or create) the study, add `n_trials` trials, log the summary, optionally retrain."""
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
                           "sampler": spec.sampler, "sampler_seed": seed, "pruner": spec.pruner.type,
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


def retrain_best(spec: StudySpec, info: dict[str, Any], name: str, cfg: StudyConfig, parent,
                 progress: bool) -> None:
    """Train the best configuration with the full budget and register it as `<name>@champion`."""
    if "best_params" not in info:
        raise ImgtransError("retrain needs a single-objective study with a completed trial")
    retrain_cfg = trial_config(spec, info["best_params"], spec.full_budget, cfg.experiment)
    with tracked_run(cfg.experiment, run_name=f"retrain-{name}", nested=True) as child:
        result = RUNS[spec.model].create(retrain_cfg, child, progress=progress).fit()
    version = register_champion(result.run_id, cfg.register_as or name)
    parent.set_tags({"optuna.champion": f"models:/{cfg.register_as or name}@champion (v{version})"})
