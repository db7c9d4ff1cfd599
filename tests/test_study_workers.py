"""Study workers as real processes (started at once, one killed), failed trials in one line, malformed specs."""

import getpass
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from test_studies import REPO, all_runs, study, write_spec

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # real processes and servers

HEARTBEAT = {"interval": 1, "grace_period": 5}


def start_worker(spec, storage, n_trials: int, tmp: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "imgtrans", "study", "--spec", str(spec), "--storage", str(storage),
           "--study-name", "s", "--n-trials", str(n_trials), "--no-progress"]
    return subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)}, cwd=spec.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ok(*workers: subprocess.Popen) -> None:
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-3000:]


def url_of(storage, read_only: bool = False) -> str:
    """A database URL as it is, or a SQLite file's (read-only: the workers may still be creating it)."""
    if "://" in str(storage):
        return str(storage)
    return f"sqlite:///file:{storage}?mode=ro&uri=true" if read_only else f"sqlite:///{storage}"


def running_trial_of(storage, worker: subprocess.Popen) -> int | None:
    """The trial `worker` runs now (with its MLflow run started), read-only."""
    engine = sqlalchemy.create_engine(url_of(storage, read_only=True), poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as db:
            row = db.execute(sqlalchemy.text(
                "SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                "WHERE t.state = 'RUNNING' AND a.key = 'worker' AND a.value_json LIKE :worker"),
                {"worker": f'"% {worker.pid} %"'}).fetchone()
    except sqlalchemy.exc.OperationalError:  # no database or no tables yet
        return None
    finally:
        engine.dispose()
    return row[0] if row else None


def test_workers_started_at_once_on_fresh_sqlite_stores(facades, tmp_path):
    """Fresh study and MLflow files, two workers at once: the stores are created once, under their locks.
    (Three workers, one killed mid-trial: test_team_server, on PostgreSQL, with the same heartbeat.)"""
    spec, storage = write_spec(tmp_path, facades, seed=7, heartbeat=HEARTBEAT), tmp_path / "s.db"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    wait_ok(*[start_worker(spec, storage, 1, tmp) for _ in range(2)])
    assert [p.name for p in tmp.iterdir()] in ([], [f"torchinductor_{getpass.getuser()}"])
    trials = optuna.load_study(study_name="s", storage=url_of(storage)).trials
    assert len(trials) == 2 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert len({t.params["lr"] for t in trials}) == 2
    runs = all_runs()
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    assert len([r for r in runs if r.info.run_name == "study-s"]) == 1  # one parent, whoever created the study
    seeds = [r.data.tags["optuna.sampler_seed"] for r in runs if "optuna.trial" in r.data.tags]
    assert len(set(seeds)) == 2 and seeds.count("7") == 1  # only the study's creator uses the spec's seed


def check_three_workers_one_killed(facades, tmp_path, storage) -> None:
    """Three workers started at once on `storage` (a SQLite file or a database URL), one killed with -9 mid-trial:
    its trial is failed by the heartbeat and retried, nothing is left RUNNING, parameters do not repeat."""
    spec = write_spec(tmp_path, facades, seed=7, heartbeat=HEARTBEAT)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    victim, *others = [start_worker(spec, storage, 1, tmp) for _ in range(3)]
    deadline = time.monotonic() + 90
    while (killed := running_trial_of(storage, victim)) is None:
        assert victim.poll() is None and time.monotonic() < deadline, victim.communicate()[1][-3000:]
        time.sleep(0.1)
    victim.kill()
    victim.wait()
    time.sleep(HEARTBEAT["grace_period"] + 1)
    # Its trial starts after the grace period, so it reclaims the stale one.
    others.append(start_worker(spec, storage, 1, tmp))
    wait_ok(*others)
    # Nothing of ours is left, the killed worker's scratch folder included (the last worker swept it); torch's
    # fused Adam creates its kernel cache folder once, shared by every later process and not growing per trial.
    assert [p.name for p in tmp.iterdir()] in ([], [f"torchinductor_{getpass.getuser()}"])

    trials = optuna.load_study(study_name="s", storage=url_of(storage)).trials
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[killed].params
    originals = [t for t in trials if "failed_trial" not in t.system_attrs]
    assert len(originals) == 3 and len({t.params["lr"] for t in originals}) == 3
    runs = all_runs()
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    seeds = [r.data.tags["optuna.sampler_seed"] for r in runs if "optuna.trial" in r.data.tags]
    assert len(set(seeds)) == 4 and seeds.count("7") == 1  # only the study's creator uses the spec's seed
    dead = [r for r in runs if r.data.tags.get("optuna.trial") == str(killed) and r.info.status != "FINISHED"]
    assert len(dead) == 1 and dead[0].info.status in ("FAILED", "KILLED")  # by the heartbeat or the next start
    (parent,) = [r for r in runs if r.info.run_name == "study-s"]
    assert parent.info.status == "FINISHED" and dead[0].data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_failed_trials_are_one_line_each_and_a_study_of_only_failures_fails(facades, tmp_path, capfd):
    # unet_256 cannot be built at a 64 px crop: every trial crashes inside the objective.
    spec = write_spec(tmp_path, facades, search_space={"netG": {"type": "categorical", "choices": ["unet_256"]}})
    assert study(spec, tmp_path / "s.db", "--n-trials", "2") == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert [line.split(":")[1] for line in lines[:2]] == [" trial 0 failed", " trial 1 failed"]
    assert lines[-1].startswith("imgtrans: error: all 2 trials failed; first reason: ") and "crop" in lines[-1]
    client = MlflowClient()
    trials = [r for r in all_runs() if r.info.run_name.startswith("s-trial-")]
    assert len(trials) == 2 and all(r.info.status == "FAILED" for r in trials)
    traceback_file = client.download_artifacts(trials[0].info.run_id, "error/traceback.txt", str(tmp_path))
    assert "Traceback" in Path(traceback_file).read_text()
    parent = next(r for r in all_runs() if r.info.run_name == "study-s")
    assert parent.info.status == "FAILED" and parent.data.tags["error"].startswith("all 2 trials failed")

