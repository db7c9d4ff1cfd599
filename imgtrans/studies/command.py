"""The `study` command: a worker that joins (or creates) a study and adds trials, the parent run with the
summary and plots, `study best`, and the retrain that registers the champion."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import optuna
import optuna.visualization.matplotlib as vis
import yaml
from matplotlib.ticker import MaxNLocator
from optuna.trial import TrialState

from imgtrans import interrupts
from imgtrans.commands import RUNS
from imgtrans.errors import ImgtransError, one_line
from imgtrans.files import scratch_dir
from imgtrans.studies.objective import WorkerTrials, make_objective, trial_config
from imgtrans.studies.options import StudyConfig
from imgtrans.studies.spec import StudySpec, load_spec
from imgtrans.studies.storage import (
    PARENT_RUN_ATTR,
    RUN_ID_ATTR,
    locked,
    make_storage,
    open_study,
    resolve_storage,
    sqlite_file,
    worker_id,
)
from imgtrans.tracking import models, store
from imgtrans.tracking.tracker import MlflowTracker, open_run, reopen_run, tracked_run
from imgtrans.training.runs import filter_tags


def save_plots(study: optuna.Study, spec: StudySpec, folder: Path) -> list[Path]:
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
        if name == "optimization_history":  # trial numbers are whole
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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


def study_name(cfg: StudyConfig) -> str:
    """--study, else the spec file's name (empty when neither is given)."""
    return cfg.study_name or (Path(cfg.spec).stem if cfg.spec else "")


def best_command(cfg: StudyConfig) -> int:
    name = study_name(cfg)
    if not name:
        raise ImgtransError("give the study with --study or --spec (and its --storage)")
    storage = make_storage(resolve_storage(cfg.storage, name, create=False))
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ImgtransError(f"no study named '{name}' in the storage; check --storage") from None
    info = summary(study)
    if "best_params" not in info and "pareto_front" not in info:
        raise ImgtransError(f"study '{name}' has no completed trial yet")
    attrs = study.user_attrs
    if "best_params" in info and "model" in attrs:
        info["config"] = {"model": attrs["model"], "dataset": attrs.get("dataset"), **attrs.get("fixed", {}),
                          **attrs.get("full_budget", {}),
                          **info["best_params"]}
    print(as_yaml(info), end="")
    return 0


def run_command(cfg: StudyConfig, progress: bool) -> int:
    """One worker: join (or create) the study and its parent run, add `n_trials` trials, log the summary,
    optionally retrain."""
    if not cfg.spec:
        raise ImgtransError("spec is required, e.g. spec=studies/pix2pix.yaml")
    spec = load_spec(cfg.spec)
    if cfg.retrain and not RUNS[spec.model].trains_generator:
        raise ImgtransError(f"retrain registers a trained generator; {spec.model} "
                            f"{RUNS[spec.model].instead_of_a_generator} and has none — rerun `imgtrans {spec.model}` "
                            "with the best config from `imgtrans study best`")
    if cfg.retrain and spec.multi_objective:
        raise ImgtransError(f"retrain needs one best configuration; {cfg.spec} has {len(spec.objectives)} objectives "
                            "(a Pareto front): pick one with `imgtrans study best` and train it, or give one objective")
    if cfg.max_steps and "max_steps" in spec.search_space:
        raise ImgtransError(f"max_steps is searched by {cfg.spec}'s search_space; drop --max-steps (or the search)")
    name = study_name(cfg)
    location = resolve_storage(cfg.storage, name)
    with locked(filter(None, map(sqlite_file, (location, store.store_uri())))):
        study, seed, created = open_study(spec, name, location)
        try:
            parent, worker = study_runs(cfg, spec, study, created)
        except BaseException:
            if created:  # a study without its parent run would keep every later worker waiting for one
                optuna.delete_study(study_name=name, storage=location)
            raise
    study.set_user_attr("dataset", spec.dataset)  # the model and objectives are recorded as it is created
    study.set_user_attr("fixed", spec.fixed)
    study.set_user_attr("full_budget", spec.full_budget)  # the length `study best` gives the config it prints
    trials = WorkerTrials()
    try:
        study.optimize(make_objective(spec, name, cfg.max_steps, cfg.experiment, parent.run_id, seed),
                       n_trials=cfg.n_trials, catch=(Exception,), callbacks=[trials])
        info = summary(study)
        log_summary(parent, study, spec, info)
        trials.check_not_all_failed()
        if cfg.retrain:
            retrain_best(spec, info, name, cfg, parent, progress)
    except BaseException as exc:
        end_worker(study, parent, worker, trials, exc)
        raise
    end_worker(study, parent, worker, trials)
    print(as_yaml(info), end="")
    print(f"imgtrans: study '{name}': {len(study.trials)} trials in total; parent run {parent.run_id}")
    return 0


def study_runs(cfg: StudyConfig, spec: StudySpec, study: optuna.Study,
               created: bool) -> tuple[MlflowTracker, MlflowTracker | None]:
    """The study's one parent run — made by the worker that created the study, its id kept in the study for
    every other worker to continue — and, for a worker that `mlflow run` started on an existing study, the run
    MLflow Projects made for it, nested under the parent as this worker's record."""
    name = study.study_name
    if created:
        parent = open_run(cfg.experiment, f"study-{name}", "study", "study",
                          tags={"optuna.study": name, "model": spec.model})
        study.set_user_attr(PARENT_RUN_ATTR, parent.run_id)
        parent.log_params({"spec": cfg.spec, "study_name": name, "model": spec.model, "dataset": spec.dataset,
                           "sampler": spec.sampler, "pruner": spec.pruner.type,
                           "objectives": ",".join(f"{o.metric}:{o.direction}" for o in spec.objectives),
                           **{f"search.{k}": v.describe() for k, v in spec.search_space.items()}})
        parent.describe(study_description(spec, name))
        return parent, None
    parent = reopen_run(parent_run_of(study))
    worker = open_run("", f"study-{name}-worker", "study", "study-worker", parent_run_id=parent.run_id,
                      tags={"optuna.study": name}) if os.environ.get("MLFLOW_RUN_ID") else None
    return parent, worker


def parent_run_of(study: optuna.Study, timeout_s: float = 60) -> str:
    """The parent run's id; a worker that joins a study just created waits for its creator to record it."""
    deadline = time.monotonic() + timeout_s
    while PARENT_RUN_ATTR not in study.user_attrs:
        if time.monotonic() > deadline:
            raise ImgtransError(f"study '{study.study_name}' has no MLflow parent run recorded (its first worker "
                                "died before making one); start the study again under another --study-name")
        time.sleep(0.5)
    return study.user_attrs[PARENT_RUN_ATTR]


def end_worker(study: optuna.Study, parent: MlflowTracker, worker: MlflowTracker | None, trials: "WorkerTrials",
               error: BaseException | None = None) -> None:
    """This worker's own run ends with it; the parent ends only with the last worker — while others still run
    trials, it is handed to one of them (so that its death closes it)."""
    status, reason = ("FINISHED", None) if error is None else (
        ("KILLED", interrupts.reason(error)) if isinstance(error, KeyboardInterrupt) else ("FAILED", one_line(error)))
    if worker is not None:
        worker.append_description("Trials added by this worker: " + (", ".join(
            f"{t.number} ({t.state.name.lower()})" for t in trials.finished) or "none"))
        worker.finish(status, reason)
    others = [t.user_attrs.get("worker") for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
              if t.user_attrs.get("worker") != worker_id()]
    if others:
        parent.set_tags({store.OWNER_TAG: others[0]})
    else:
        parent.finish(status, reason)


def study_description(spec: StudySpec, name: str) -> str:
    space = ", ".join(f"`{k}` `{v.describe()}`" for k, v in spec.search_space.items())  # [a, b] (log): no link
    objectives = ", ".join(f"{o.direction} `{o.metric}`" for o in spec.objectives)
    return (f"Optuna study **{name}** of `{spec.model}` on `{spec.dataset}`: {objectives}. "
            f"{spec.sampler} sampler, {spec.pruner.type} pruner. Search space: {space}."
            + (f"\n\n{spec.description}" if spec.description else ""))


def log_summary(parent: MlflowTracker, study: optuna.Study, spec: StudySpec, info: dict[str, Any]) -> None:
    """The study so far on its parent run: counts, the best trial (linked to its run) and the plots."""
    counts = ", ".join(f"{info[k]} {k}" for k in ("complete", "pruned", "fail", "running") if info.get(k))
    lines = [study_description(spec, study.study_name), "", f"**{len(study.trials)} trials**: {counts}."]
    if "best_params" in info:
        best = study.best_trial
        run_id = best.user_attrs.get(RUN_ID_ATTR, "")
        parent.set_tags({"optuna.best_trial": best.number, "optuna.best_trial_run": run_id,
                         "optuna.best_value": f"{best.value:.6g}"})
        # A column of the run list, and over the trials a chart of the best so far.
        parent.log_metrics({f"best/{spec.objectives[0].metric}": best.value}, step=len(study.trials))
        link = f"[trial {best.number}]({store.ui_path(parent.experiment_id, run_id)})" if run_id else \
            f"trial {best.number}"
        params = ", ".join(f"`{k}={v:.4g}`" if isinstance(v, float) else f"`{k}={v}`" for k, v in best.params.items())
        lines.append(f"**Best**: {link} with {spec.objectives[0].metric} = {best.value:.4g}: {params}.")
    elif "pareto_front" in info:
        lines.append("**Pareto front**: trials " + ", ".join(str(t["trial"]) for t in info["pareto_front"]) + ".")
    parent.describe("\n".join(lines))
    parent.log_text(as_yaml(info), "study/best.yaml")
    with scratch_dir("study-plots") as folder:
        for path in save_plots(study, spec, folder):
            parent.log_artifact(path, "study")


def retrain_best(spec: StudySpec, info: dict[str, Any], name: str, cfg: StudyConfig, parent: MlflowTracker,
                 progress: bool) -> None:
    """Train the best configuration with the full budget and register it as `<name>@champion`."""
    if "best_params" not in info:
        raise ImgtransError("retrain needs a single-objective study with a completed trial")
    retrain_cfg = trial_config(spec, info["best_params"], spec.full_budget, cfg.experiment, keep_checkpoints="last")
    with tracked_run(cfg.experiment, f"{name}-retrain", spec.model, "train", parent_run_id=parent.run_id,
                     tags=filter_tags(retrain_cfg), system_metrics=True) as child:
        result = RUNS[spec.model].create(retrain_cfg, child, progress=progress).fit()
    registered = cfg.register_as or name
    scores = ", ".join(f"{k} {v:.4g}" for k, v in result.val_metrics.items())
    version = models.register(result.model_id, registered, "champion",
                              f"Retrain of the best trial ({info['best_trial']}) of study `{name}` on "
                              f"`{spec.dataset}`, run "
                              f"[{child.run_id}]({store.ui_path(child.experiment_id, child.run_id)}): "
                              f"{scores}.", {"study": name, "dataset": spec.dataset, "model": spec.model,
                                            "run_id": child.run_id})
    parent.set_tags({"optuna.champion": f"models:/{registered}@champion (v{version})"})
    parent.append_description(f"**Champion**: `models:/{registered}@champion` (version {version}), retrained in "
                              f"run [{name}-retrain]({store.ui_path(child.experiment_id, child.run_id)}).")
