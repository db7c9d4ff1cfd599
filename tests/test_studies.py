"""Optuna studies: spec validation, nested runs, pruning, failures, workers, continuation, retrain."""

from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from imgtrans.cli import main
from imgtrans.errors import ImgtransError
from imgtrans.studies.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
FAST = {"crop_size": 64, "ngf": 4, "ndf": 4, "batch_size": 2, "val_images": 2, "sample_images": 1,
        "log_every": 1}


def write_spec(tmp_path, dataset, **overrides) -> Path:
    spec = {"model": "pix2pix", "dataset": str(dataset), "fixed": dict(FAST), "budget": {"max_steps": 2},
            "objectives": [{"metric": "val/psnr", "direction": "maximize"}], "sampler": "random",
            "pruner": "none", "search_space": {"lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
                                               "gan_mode": {"type": "categorical", "choices": ["vanilla", "lsgan"]}}}
    spec.update(overrides)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def study(spec, storage, *extra):
    return main(["study", "--spec", str(spec), "--storage", str(storage), "--study-name", "s", "--no-progress", *extra])


def all_runs():
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def load(storage):
    return optuna.load_study(study_name="s", storage=f"sqlite:///{storage}")


@pytest.mark.slow
def test_three_trials_are_nested_runs_of_one_parent(facades, tmp_path, capsys):
    storage = tmp_path / "s.db"
    assert study(write_spec(tmp_path, facades, full_budget={"n_epochs": 3}), storage, "--n-trials", "3") == 0
    runs = all_runs()
    parents = [r for r in runs if r.info.run_name == "study-s"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 3
    assert sorted(r.data.tags["optuna.trial"] for r in children) == ["0", "1", "2"]
    assert all("lr" in r.data.params and "val/psnr" in r.data.metrics for r in children)
    # trials validate every epoch, so that the pruner compares them at the same epochs
    assert all(r.data.params["val_every"] == "1" for r in children)
    # a finished trial keeps its model, not a training checkpoint
    assert all("checkpoints" not in {a.path for a in MlflowClient().list_artifacts(r.info.run_id)} for r in children)
    parent = parents[0]
    assert parent.data.tags["optuna.best_trial"] in ("0", "1", "2")
    assert "**3 trials**: 3 complete" in parent.data.tags["mlflow.note.content"]
    best_value = max(r.data.metrics["val/psnr"] for r in children)
    assert parent.data.metrics["best/val/psnr"] == pytest.approx(best_value)
    assert [m.step for m in MlflowClient().get_metric_history(parent.info.run_id, "best/val/psnr")] == [3]
    artifacts = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "study")}
    assert {"study/best.yaml", "study/optimization_history.png", "study/parallel_coordinate.png"} <= artifacts
    capsys.readouterr()
    assert main(["study", "best", "--study", "s", "--storage", str(storage)]) == 0
    best = yaml.safe_load(capsys.readouterr().out)
    assert best["best_trial"] in (0, 1, 2) and best["config"]["model"] == "pix2pix" and "lr" in best["config"]
    assert best["config"]["n_epochs"] == 3  # the full budget: the config to train, as retrain would
    spec = write_spec(tmp_path, facades, full_budget={"n_epochs": 3}).rename(tmp_path / "s.yaml")  # its name
    assert main(["study", "best", "--spec", str(spec), "--storage", str(storage)]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == best


@pytest.mark.slow
def test_continuing_a_study_adds_trials(facades, tmp_path):
    storage = tmp_path / "s.db"
    spec = write_spec(tmp_path, facades)
    assert study(spec, storage, "--n-trials", "1") == 0
    assert study(spec, storage, "--n-trials", "2") == 0
    trials = load(storage).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert len({t.params["lr"] for t in trials}) == 3  # the continuation samples with a seed of its own


def test_pruned_trials_are_recorded(facades, tmp_path):
    spec = write_spec(tmp_path, facades, pruner={"type": "threshold", "lower": 1000.0})
    assert study(spec, tmp_path / "s.db", "--n-trials", "2") == 0
    assert {t.state for t in load(tmp_path / "s.db").trials} == {optuna.trial.TrialState.PRUNED}
    children = [r for r in all_runs() if r.info.run_name.startswith("s-trial-")]
    assert {r.data.tags["optuna.state"] for r in children} == {"PRUNED"}
    assert {r.info.status for r in children} == {"KILLED"}


@pytest.mark.slow
def test_a_failing_trial_does_not_stop_the_study(facades, tmp_path):
    # unet_256 cannot be built at a 64 px crop: those trials crash inside the objective, the rest finish.
    space = {"netG": {"type": "categorical", "choices": ["unet_256", "unet"]}}
    spec = write_spec(tmp_path, facades, search_space=space, sampler="random", seed=1)
    assert study(spec, tmp_path / "s.db", "--n-trials", "4") == 0
    trials = load(tmp_path / "s.db").trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(trials) == 4 and failed and any(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert "crop_size" in failed[0].user_attrs["fail_reason"]
    assert any(r.info.status == "FAILED" for r in all_runs() if r.info.run_name.startswith("s-trial-"))


def test_multi_objective_pareto_front(facades, tmp_path, capsys):
    objectives = [{"metric": "val/psnr", "direction": "maximize"},
                  {"metric": "infer/ms_per_image", "direction": "minimize"}]
    spec = write_spec(tmp_path, facades, objectives=objectives, sampler="nsga2")
    assert study(spec, tmp_path / "s.db", "--n-trials", "2") == 0
    assert "pareto_front" in capsys.readouterr().out
    assert len(load(tmp_path / "s.db").directions) == 2


@pytest.mark.slow
def test_retrain_registers_the_champion(facades, tmp_path):
    spec = write_spec(tmp_path, facades, full_budget={"max_steps": 3})
    assert study(spec, tmp_path / "s.db", "--n-trials", "1", "--retrain", "--register-as", "facade-model") == 0
    version = MlflowClient().get_model_version_by_alias("facade-model", "champion")
    assert mlflow.pyfunc.load_model("models:/facade-model@champion") is not None
    retrain = [r for r in all_runs() if r.info.run_name == "s-retrain"]
    assert retrain and version.run_id == retrain[0].info.run_id
    assert "Retrain of the best trial" in version.description and version.tags["study"] == "s"


def test_a_dip_study_tunes_restoration(aerial, tmp_path):
    spec = write_spec(tmp_path, aerial, model="dip",
                      fixed={"crop_size": 32, "width": 8, "depth": 3, "input_depth": 8, "epochs": 2},
                      search_space={"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                                    "mode": {"type": "categorical", "choices": ["classic", "progressive"]}})
    assert study(spec, tmp_path / "s.db", "--n-trials", "2", "--max-steps", "4") == 0
    children = [r for r in all_runs() if "optuna.trial" in r.data.tags]
    assert len(children) == 2 and all(r.data.tags["model"] == "dip" for r in children)
    assert all("val/psnr" in r.data.metrics for r in children)
    assert len([t for t in load(tmp_path / "s.db").trials if t.state.name == "COMPLETE"]) == 2


def test_dip_studies_have_no_generator_to_time_or_register(aerial, tmp_path, capsys):
    spec = write_spec(tmp_path, aerial, model="dip", fixed={}, search_space={
        "lr": {"type": "float", "low": 1e-3, "high": 3e-2}})
    assert study(spec, tmp_path / "s.db", "--retrain") == 2
    assert "dip restores one image" in capsys.readouterr().err
    with pytest.raises(ImgtransError, match="does not apply to dip"):
        load_spec(write_spec(tmp_path, aerial, model="dip", fixed={}, pruner="none", search_space={
            "lr": {"type": "float", "low": 1e-3, "high": 3e-2}}, objectives=[
            {"metric": "val/psnr", "direction": "maximize"},
            {"metric": "infer/ms_per_image", "direction": "minimize"}]))


def test_a_spec_that_asks_another_question_of_a_study_is_refused(tmp_path, capsys):
    storage = tmp_path / "s.db"
    spec = write_spec(tmp_path, "synthetic-facades")  # val/psnr, maximize
    other = optuna.create_study(study_name="s", storage=f"sqlite:///{storage}", direction="maximize")
    other.set_user_attr("objectives", ["val/ssim:maximize"])
    assert study(spec, storage) == 2
    assert "study 's' has objectives ['val/ssim:maximize'], the spec asks for ['val/psnr:maximize']" in \
        capsys.readouterr().err
    optuna.delete_study(study_name="s", storage=f"sqlite:///{storage}")
    optuna.create_study(study_name="s", storage=f"sqlite:///{storage}", direction="minimize")  # recorded nothing
    assert study(spec, storage) == 2
    assert "has directions ['minimize'], the spec asks for ['maximize']" in capsys.readouterr().err
    assert not load(storage).trials


def test_a_study_whose_parent_run_cannot_be_made_is_not_left_behind(tmp_path, capsys, monkeypatch):
    storage = tmp_path / "s.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())  # a file store MLflow refuses
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert study(write_spec(tmp_path, "synthetic-facades"), storage) == 2
    assert "MLflow cannot use the tracking store" in capsys.readouterr().err
    # the next worker creates the study afresh instead of waiting for a parent run that will never be recorded
    assert optuna.get_all_study_names(f"sqlite:///{storage}") == []


@pytest.mark.parametrize("storage", ["postgresql://imgtrans:secret@127.0.0.1:1/optuna", "notadialect://x/y",
                                     "postgresql://imgtrans:se/cret@127.0.0.1:abc/optuna"])  # not a port
def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path, capsys, storage):
    spec = write_spec(tmp_path, "synthetic-facades")
    for command in (["study", "--spec", str(spec)], ["study", "best", "--study", "s"]):
        assert main([*command, "--storage", storage]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "imgtrans: error: cannot open the study storage" in err
        assert "cret" not in err


def test_a_study_whose_trials_all_fail_still_reports_them_on_its_parent(facades, tmp_path, capsys):
    space = {"netG": {"type": "categorical", "choices": ["unet_256"]}}  # cannot be built at a 64 px crop
    assert study(write_spec(tmp_path, facades, search_space=space), tmp_path / "s.db", "--n-trials", "1") == 2
    assert "all 1 trials failed" in capsys.readouterr().err
    (parent,) = [r for r in all_runs() if r.info.run_name == "study-s"]
    assert parent.info.status == "FAILED" and "**1 trials**: 1 fail" in parent.data.tags["mlflow.note.content"]
    assert "study/best.yaml" in {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "study")}
