"""Where a study lives and how workers share it: the storage (database, journal or SQLite file), the locks
that let workers create SQLite stores at once, heartbeats that fail and retry a dead worker's trial, and
each worker's sampler seed."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from imgtrans.errors import ImgtransError, one_line, without_password
from imgtrans.studies.options import STUDY_STORAGE_VARIABLE
from imgtrans.studies.spec import Heartbeat, StudySpec
from imgtrans.tracking import store

WORKER_DIED = "worker died (heartbeat lost)"
RUN_ID_ATTR = "mlflow_run_id"  # a trial's user attribute: the MLflow run it trains in
PARENT_RUN_ATTR = "mlflow_parent_run"  # the study's user attribute: its MLflow parent run


def resolve_storage(storage: str, study_name: str, create: bool = True):
    """SQLAlchemy URL, journal file, or a file path for SQLite; default: IMGTRANS_STUDY_STORAGE (what
    `imgtrans server` prints), else studies/<study_name>.db. Without `create`, a file must exist already
    (reading a study never leaves an empty database behind a mistyped path)."""
    storage = storage or os.environ.get(STUDY_STORAGE_VARIABLE, "") or f"studies/{study_name}.db"
    if "://" in storage:
        if (path := sqlite_file(storage)) is not None:
            if not create and not path.is_file():
                raise ImgtransError(f"no study storage at {path}; check --storage")
            check_study_database(path)
        return storage
    path = Path(storage).expanduser().resolve()
    if not create and not path.is_file():
        raise ImgtransError(f"no study storage at {path}; check --storage")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".log", ".journal"):
        return JournalStorage(JournalFileBackend(str(path)))
    check_study_database(path)
    return f"sqlite:///{path}"


def check_study_database(path: Path) -> None:
    """An SQLite file that is not Optuna's (another program's database, or no database at all) is refused before
    Optuna writes its tables into it."""
    if not path.is_file() or not path.stat().st_size:
        return
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:
        raise ImgtransError(f"{path} is not a study storage (not an SQLite database); check --storage") from None
    if tables and "studies" not in tables:
        raise ImgtransError(f"{path} is not an Optuna study storage (its tables are another program's, e.g. "
                            "MLflow's); give another --storage")


def sqlite_file(location: Any) -> Path | None:
    """The database file of a SQLite URL; None for anything else (other databases, journals, servers)."""
    if not isinstance(location, str) or not location.startswith("sqlite:"):
        return None

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
    """This process (host, pid, start time), as recorded in the user attribute `worker` of its trials."""
    return store.owner_tag()


def report_failure(number: int, reason: str) -> None:
    print(f"imgtrans: trial {number} failed: {reason}", file=sys.stderr)


def on_stale_trial(max_retry: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """What a worker does with a trial that Optuna failed because its worker stopped beating."""
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def fail_and_retry(study: optuna.Study, trial: FrozenTrial) -> None:
        report_failure(trial.number, WORKER_DIED)
        retry(study, trial)
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        problem = run_id and store.end_run_if_running(run_id, "FAILED", WORKER_DIED, {"optuna.state": "FAIL"})
        if problem:  # the study goes on; only the dead trial's run status is left behind
            print(f"imgtrans: warning: trial {trial.number}'s MLflow run is left RUNNING: {problem}", file=sys.stderr)

    return fail_and_retry


def make_storage(location, heartbeat: Heartbeat | None = None):
    """A journal as it is (Optuna has no heartbeat for it); a database URL with the spec's heartbeat (none to
    read a study)."""
    if not isinstance(location, str):
        return location
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            beats = {} if heartbeat is None else {
                "heartbeat_interval": heartbeat.interval, "grace_period": heartbeat.grace_period,
                "heartbeat_stale_trial_callback": on_stale_trial(heartbeat.max_retry)}
            return optuna.storages.RDBStorage(location, **beats)
    except (SQLAlchemyError, ImportError, ValueError) as exc:  # no server there, refused, no driver, a bad port
        raise ImgtransError(f"cannot open the study storage {without_password(location)}: "
                            f"{one_line(exc).rstrip('.')}; check --storage "
                            "(is the database server running and its driver installed?)") from exc


def make_sampler(spec: StudySpec, seed: int):
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: StudySpec):
    pruner = spec.pruner
    if pruner.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.n_startup_trials)
    if pruner.type == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if pruner.type == "threshold":
        return optuna.pruners.ThresholdPruner(lower=pruner.lower, upper=pruner.upper)
    return optuna.pruners.NopPruner()


def open_study(spec: StudySpec, study_name: str, location) -> tuple[optuna.Study, int, bool]:
    """Create the study, or join it; returns it with this worker's sampler seed, and whether it created it.

    The worker that creates the study samples with the spec's seed, so that one worker on a fresh study is
    reproducible; every other worker, and every continuation, with a seed derived from the spec's seed, this
    worker (host, pid) and the trials already in the study, so that workers do not propose each other's points."""
    storage = make_storage(location, spec.heartbeat)
    try:
        study = optuna.create_study(study_name=study_name, storage=storage, sampler=make_sampler(spec, spec.seed),
                                    pruner=make_pruner(spec), directions=[o.direction for o in spec.objectives])
        for key, value in question(spec).items():  # at once, for the workers that join next
            study.set_user_attr(key, value)
        return study, spec.seed, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=make_pruner(spec))
        check_same_question(study, spec)
        key = f"{spec.seed}:{worker_id()}:{len(study.trials)}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "little")
        study.sampler = make_sampler(spec, seed)
        return study, seed, False


def question(spec: StudySpec) -> dict[str, Any]:
    """What a study's trials answer, kept in its user attributes: every worker must ask the same (the dataset
    too, but workers on other machines may name it by other paths)."""
    return {"model": spec.model, "objectives": [f"{o.metric}:{o.direction}" for o in spec.objectives]}


def check_same_question(study: optuna.Study, spec: StudySpec) -> None:
    """A spec that asks another question of an existing study (its values would be mixed with the study's) is
    refused; so are other directions, for studies that predate the recorded objectives."""
    recorded = {**{key: study.user_attrs.get(key) for key in question(spec)},
                "directions": [d.name.lower() for d in study.directions]}
    for key, value in {**question(spec), "directions": [o.direction for o in spec.objectives]}.items():
        if recorded[key] is not None and recorded[key] != value:
            raise ImgtransError(f"study '{study.study_name}' has {key} {recorded[key]}, the spec asks for {value}: "
                                "its trials answer another question; give another --study-name, or the spec the "
                                "study was made with")
