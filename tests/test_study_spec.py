"""Study specs: the shipped ones load; every malformed value, key, number and file is one line."""

import pytest
from test_studies import REPO, study, write_spec

from imgtrans.errors import ImgtransError
from imgtrans.studies.spec import load_spec


@pytest.mark.parametrize("name", ["pix2pix", "cyclegan", "cut", "bicyclegan", "pix2pix-speed", "diffusion",
                                  "dip"])
def test_shipped_specs_are_valid(name):
    assert load_spec(REPO / "studies" / f"{name}.yaml").search_space


@pytest.mark.parametrize("change,message", [
    ({"search_space": {"learning_rate": {"type": "float", "low": 0.1, "high": 1}}},
     "unknown parameter 'learning_rate'"),
    ({"search_space": {"lr": {"type": "float", "low": 1.0, "high": 0.1}}}, "low < high"),
    ({"search_space": {"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}}, "log scale needs low > 0"),
    ({"search_space": {"gan_mode": {"type": "categorical", "choices": ["bce"]}}}, "valid values: vanilla"),
    ({"model": "gan9000"}, "unknown model 'gan9000'"),
    ({"pruner": "median", "objectives": [{"metric": "val/psnr", "direction": "maximize"},
                                         {"metric": "infer/ms_per_image", "direction": "minimize"}]},
     "pruning is off for multi-objective"),
    ({"objectives": [{"metric": "val/psnr", "direction": "up"}]}, "'maximize' or 'minimize', got 'up'"),
    ({"trials": 3}, "unknown key 'trials'"),
])
def test_spec_validation(tmp_path, change, message):
    with pytest.raises(ImgtransError, match=message):
        load_spec(write_spec(tmp_path, "synthetic-facades", **change))


@pytest.mark.parametrize("change,message", [
    ({"search_space": {"lr": 0.001}}, "search_space.lr: expected a mapping, got 0.001"),
    ({"search_space": {"lr": [1e-4, 1e-3]}}, "search_space.lr: expected a mapping"),
    ({"search_space": {"lr": {"type": "float", "low": 1e-5, "high": 1e-3, "lgo": True}}},
     "search_space.lr: unknown key 'lgo'"),
    ({"search_space": {"ngf": {"type": "int", "low": 4.5, "high": 8}}}, "needs integers"),
    ({"search_space": {"lr": {"type": "float", "low": "1e-5x", "high": 1e-3}}},
     "search_space.lr.low: expected a number, got '1e-5x'"),
    ({"search_space": {"gan_mode": {"type": "categorical", "choices": []}}}, "non-empty list of choices"),
    ({"objectives": "val/psnr"}, "objectives: expected a list"),
    ({"objectives": ["val/psnr"]}, "objectives[0]: expected a mapping"),
    ({"objectives": [{"direction": "maximize"}]}, "objectives[0].metric: required"),
    ({"objectives": [{"metric": 3, "direction": "maximize"}]}, "objectives[0].metric: expected text"),
    ({"objectives": [{"metric": "psnr", "direction": "maximize"}]}, "objectives[0].metric: needs a metric"),
    ({"model": ["pix2pix"]}, "unknown model"),
    ({"seed": "abc"}, "seed: expected an integer"),
    ({"pruner": {"type": "threshold", "lower": "x"}}, "pruner.lower: expected a number"),
    ({"pruner": {"type": "median", "n_startup_trials": -1}}, "pruner.n_startup_trials: must be >= 0"),
    ({"heartbeat": 5}, "heartbeat: expected a mapping"),
    ({"heartbeat": {"interval": 0}}, "heartbeat.interval: must be >= 1"),
    ({"heartbeat": {"interval": 10, "grace_period": 5}}, "grace_period must be longer than"),
    ({"fixed": {"crop_size": -64}}, "fixed: invalid value -64 for crop_size; it must be >= 1"),
    ({"fixed": {"lambda_L1": "fast"}}, "fixed: invalid value 'fast' for lambda_L1; expected a number"),
    ({"search_space": {"lr": {"type": "float", "low": -1.0, "high": 1.0}}}, "search_space.lr: invalid value -1.0"),
    ({"search_space": {"n_layers_D": {"type": "float", "low": 2, "high": 4}}},
     "search_space.n_layers_D: n_layers_D takes whole numbers"),
    ({"objectives": [{"metric": "val/psnrr", "direction": "maximize"}]},
     "objective 'val/psnrr' is not a validation metric of pix2pix; valid values: val/psnr, val/ssim"),
    ({"fixed": {"dataset": "/my/data"}}, "fixed.dataset: set the data with the spec's own `dataset:`"),
    ({"budget": {"n_epochs": 1}, "search_space": {"n_epochs": {"type": "int", "low": 1, "high": 4}}},
     "'n_epochs' is set in both search_space and budget"),
    ({"fixed": {"lr": 0.001}}, "'lr' is set in both fixed and search_space"),
])
def test_malformed_specs_are_one_line_errors(tmp_path, capsys, change, message):
    spec = write_spec(tmp_path, "synthetic-facades", **change)
    assert study(spec, tmp_path / "s.db") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imgtrans: error: {spec}: ") and message in err and len(err.strip().splitlines()) == 1


def test_spec_numbers_are_read_as_numbers_everywhere(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-3 as a string and 0100 as 64; a spec reads them as the numbers JSON and YAML
    1.2 mean, and what is no number in those (.e5, 1:04) as text, refused in one line where a number belongs."""
    path = tmp_path / "spec.yaml"
    path.write_text("model: pix2pix\nfixed: {lr: 2e-4, ngf: 0100}\nsearch_space:\n"
                    "  lambda_L1: {type: float, low: 1e-3, high: 1.0e2, log: true}\n"
                    "  beta1: {type: categorical, choices: [5e-1, 9E-1]}\n")
    spec = load_spec(path)
    assert spec.fixed == {"lr": 2e-4, "ngf": 100}
    assert (spec.search_space["lambda_L1"].low, spec.search_space["lambda_L1"].high) == (1e-3, 100.0)
    assert spec.search_space["beta1"].choices == [0.5, 0.9]
    for text in (".e5", "1:04"):
        path.write_text(f"model: pix2pix\nsearch_space:\n  lr: {{type: float, low: {text}, high: 1e-3}}\n")
        with pytest.raises(ImgtransError, match=f"search_space.lr.low: expected a number, got '{text}'"):
            load_spec(path)


@pytest.mark.parametrize("text,message", [
    ("model: pix2pix\nsearch_space:\n  lr: {type: float, low: 1e-5, high: 1e-3}\n"
     "  lr: {type: float, low: 1e-4, high: 1e-2}\n", "line 4 (key 'lr' is given twice)"),
    ("model: pix2pix\nmodel: cut\nsearch_space: {lr: {type: float, low: 1e-5, high: 1e-3}}\n",
     "key 'model' is given twice"),
    ("model: [pix2pix\n", "not valid YAML at line 2"),
])
def test_duplicated_keys_and_broken_yaml_are_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    assert study(path, tmp_path / "s.db") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imgtrans: error: {path}: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_spec_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_bytes("model: pix2pix\ndescription: caf\u00e9\n".encode("latin-1"))
    assert study(path, tmp_path / "s.db") == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_max_steps_on_the_command_line_cannot_override_a_searched_one(tmp_path, capsys):
    spec = write_spec(tmp_path, "synthetic-facades", budget={},
                      search_space={"max_steps": {"type": "int", "low": 2, "high": 4}})
    assert study(spec, tmp_path / "s.db", "--max-steps", "3") == 2
    assert "max_steps is searched by" in capsys.readouterr().err and not (tmp_path / "s.db").exists()


def test_retrain_of_a_study_with_two_objectives_is_refused_before_any_trial(tmp_path, capsys):
    spec = write_spec(tmp_path, "synthetic-facades", sampler="nsga2", objectives=[
        {"metric": "val/psnr", "direction": "maximize"}, {"metric": "val/ssim", "direction": "maximize"}])
    assert study(spec, tmp_path / "s.db", "--retrain") == 2
    assert "retrain needs one best configuration" in capsys.readouterr().err and not (tmp_path / "s.db").exists()


def test_a_storage_that_is_no_optuna_database_is_refused_and_left_alone(tmp_path, capsys):
    import sqlite3
    from contextlib import closing

    mlflow_db = tmp_path / "runs.db"
    with closing(sqlite3.connect(mlflow_db)) as db:
        db.execute("CREATE TABLE experiments (id INTEGER)")
    spec = write_spec(tmp_path, "synthetic-facades")
    for storage, message in ((mlflow_db, "is not an Optuna study storage"), (spec, "not an SQLite database")):
        before = storage.read_bytes()
        assert study(spec, storage) == 2
        assert message in capsys.readouterr().err and storage.read_bytes() == before
