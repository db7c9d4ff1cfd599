"""One trial: its sampled options, the run it trains (a nested MLflow run), the values it returns to Optuna,
and how each trial's end — complete, pruned, failed — is recorded."""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch.utils.data import Subset

from imgtrans import config as config_mod
from imgtrans.commands import RUNS
from imgtrans.data.datasets import make_loader
from imgtrans.errors import ImgtransError, one_line
from imgtrans.studies.spec import (
    INFERENCE_METRIC,
    Distribution,
    StudySpec,
)
from imgtrans.studies.storage import RUN_ID_ATTR, report_failure, worker_id
from imgtrans.tracking.tracker import tracked_run
from imgtrans.training.runs import filter_tags


def sample(trial: optuna.Trial, space: dict[str, Distribution]) -> dict[str, Any]:
    params = {}
    for name, dist in space.items():
        if dist.type == "categorical":
            params[name] = trial.suggest_categorical(name, dist.choices)
        elif dist.type == "int":
            params[name] = trial.suggest_int(name, int(dist.low), int(dist.high), log=dist.log)
        else:
            params[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return params


def trial_config(spec: StudySpec, params: dict[str, Any], budget: dict[str, Any], experiment: str,
                 keep_checkpoints: str = "none"):
    """A trial's config; a finished trial keeps only its model unless the spec says otherwise (a study of
    many trials would otherwise keep a training checkpoint of each)."""
    config_class = RUNS[spec.model].config_class
    # Trials report to the pruner at each validation: every epoch unless the spec says otherwise, so that trials
    # of different batch sizes are compared at the same epochs (the automatic val_every would differ).
    every_epoch = {"val_every": 1} if "val_every" in {f.name for f in config_mod.fields(config_class)} else {}
    values = {"keep_checkpoints": keep_checkpoints, **every_epoch, **spec.fixed, **params, **budget,
              "dataset": spec.dataset, "experiment": experiment}
    cfg = config_mod.from_dict(config_class, values)
    cfg.validate()
    return cfg


@torch.no_grad()
def inference_ms_per_image(model, data, images: int = 8) -> float:
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


def make_objective(spec: StudySpec, study_name: str, max_steps: int, experiment: str, parent_run_id: str,
                   sampler_seed: int):
    """Optuna's objective: each trial trains in a run nested under the study's parent run (tagged with the
    sampler seed of the worker that ran it)."""
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

        try:
            cfg = trial_config(spec, params, budget, experiment)
        except ImgtransError as exc:  # e.g. sampled options that do not go together
            trial.set_user_attr("fail_reason", one_line(exc))
            raise
        tags = {"optuna.study": study_name, "optuna.trial": trial.number, "optuna.sampler_seed": sampler_seed,
                **filter_tags(cfg)}
        with tracked_run(experiment, f"{study_name}-trial-{trial.number}", cfg.model_name, "trial",
                         parent_run_id=parent_run_id, tags=tags, stops=(optuna.TrialPruned,)) as tracker:
            trial.set_user_attr("worker", worker_id())
            trial.set_user_attr(RUN_ID_ATTR, tracker.run_id)
            try:
                result = RUNS[spec.model].create(cfg, tracker, progress=False, on_validation=report).fit()
                values = objective_values(spec, result)
            except optuna.TrialPruned as exc:
                tracker.set_tags({"optuna.state": "PRUNED", "optuna.pruned": str(exc)})
                raise
            except Exception as exc:
                record_failure(trial, tracker, exc)
                raise
            measured = {o.metric: v for o, v in zip(spec.objectives, values) if o.metric not in result.val_metrics}
            if measured:  # objectives that are not already the run's validation metrics
                tracker.log_metrics(measured, step=0)
            tracker.set_tags({"optuna.state": "COMPLETE"})
            tracker.append_description(f"Trial {trial.number} of study `{study_name}`: " + ", ".join(
                f"{o.metric} {v:.4g}" for o, v in zip(spec.objectives, values)))
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
