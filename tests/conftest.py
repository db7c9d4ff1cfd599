"""Shared fixtures: an isolated MLflow store and data cache per test, tiny datasets, a tiny exported model."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from imgtrans.data import synthetic
from imgtrans.data.codec import Codec
from imgtrans.tracking.tracker import Tracker

TINY_COUNTS = {"train": 6, "val": 2, "test": 2}
# Flags that make a training run take a second or two on a CPU.
FAST = ["--ngf", "4", "--ndf", "4", "--crop-size", "64", "--batch-size", "2", "--log-every", "1",
        "--val-images", "2", "--sample-images", "2", "--no-progress"]


@pytest.fixture
def tmp_path(request, tmp_path_factory) -> Path:
    """pytest's `tmp_path`, without deleting it when the test passes: the whole session's folder goes at its end
    if every test passed (`tmp_path_retention_policy = "failed"`). Deleted mid-session, a folder's name would come
    back for a later test (pytest cuts names to 30 characters), and MLflow's in-process store for that
    `sqlite:///` path would still point at the deleted file."""
    return tmp_path_factory.mktemp(re.sub(r"\W", "_", request.node.name)[:30])


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables created: creating them takes seconds, copying the file does not."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:  # MLflow's lock for creating the tables: beside the store
        patch.setattr(tempfile, "tempdir", str(path.parent))
        MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path, tmp_path_factory, monkeypatch, empty_store):
    """Each test gets its own working directory, MLflow store and data cache."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    store = tmp_path / "mlflow.db"
    shutil.copyfile(empty_store, store)
    with closing(sqlite3.connect(store)) as db, db:  # the Default experiment's artifacts go where MLflow puts them
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                   (str(tmp_path / "mlruns" / "0"),))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID; never let one test's id reach the next.
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("IMGTRANS_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGTRANS_OFFLINE", "1")  # pretrained weights are never downloaded by tests
    # What the libraries leave in the temp directory (torchrun's logs, MLflow's downloads and project folders)
    # goes with the test's temporary folders, here and in the processes it starts.
    temp = tmp_path_factory.mktemp("tmp")
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    # Under pytest-xdist (-n 2) each worker computes on one core; alone, on both. The processes tests start
    # use as many (results depend on the thread count: an exact resume compares runs of both).
    threads = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
    torch.set_num_threads(threads)
    monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
    yield
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def facades(tmp_path_factory) -> Path:
    """A tiny synthetic-facades dataset in the paired layout (A/ labels, B/ photos)."""
    root = tmp_path_factory.mktemp("facades")
    synthetic.generate("synthetic-facades", root, counts=TINY_COUNTS)
    return root


@pytest.fixture(scope="session")
def aerial(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aerial")
    synthetic.generate("synthetic-aerial", root, counts=TINY_COUNTS)
    return root


class FolderTracker(Tracker):
    """A tracker that keeps a run's artifacts in a folder and nothing else: the loop tested without MLflow."""

    def __init__(self, folder: Path):
        self.folder, self.run_id = folder, folder.name

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        target = self.folder / (artifact_path or "")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / Path(path).name)


def train_in_folder(cfg, folder: Path, resume_payload: dict | None = None):
    """A Trainer run of `cfg` whose checkpoints land in `folder`/checkpoints."""
    from imgtrans.training.trainer import Trainer

    return Trainer(cfg, FolderTracker(folder), resume_payload=resume_payload, progress=False).fit()


def generator_uri(run_id: str) -> str:
    """The `models:/<id>` URI of the generator a training run logged."""
    from imgtrans.tracking.models import generator_of_run

    return generator_of_run(run_id)


def trained_lab_colorizer(aerial: Path, tmp_path: Path, monkeypatch, *options: str, steps: int = 1):
    """The run of a Lab colorizer trained `steps` steps on synthetic-aerial with `options`, the only run in the store;
    the metric weights are not in its (empty) torch hub cache."""
    import mlflow

    from imgtrans.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    assert main(["pix2pix", "--dataset", str(aerial), *FAST, "--max-steps", str(steps), "--color-space", "lab",
                 *options]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return run


def evaluated_otherwise(run, capsys, short: str, *options: str):
    """`evaluate` of training run `run` with inference `options` other than its model's own: the scores go to an
    evaluation run of their own, `evaluate-<short>-<run name>`, which is returned; the training run's are untouched."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from imgtrans.cli import main

    run_id = run.info.run_id
    own = MlflowClient().get_run(run_id).data.metrics
    assert main(["evaluate", "--run-id", run_id, *options]) == 0
    assert f"run {run_id} keeps its model's own scores" in capsys.readouterr().out
    assert MlflowClient().get_run(run_id).data.metrics == own
    name = f"evaluate-{short}-{run.info.run_name}"
    (evaluation,) = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                     if r.info.run_name == name]
    return evaluation


def exported_otherwise(run, short: str, *options: str) -> dict:
    """`export` of training run `run` with inference `options`: the file `export/pix2pix-<run id>-<short>.onnx`
    matches PyTorch, and so says its export run, whose params record the options asked for as its sidecar holds
    them; returns the sidecar's config."""
    import json

    import mlflow

    from imgtrans.cli import main

    assert main(["export", "--run-id", run.info.run_id, *options]) == 0
    config = json.loads((Path("export") / f"pix2pix-{run.info.run_id}-{short}.json").read_text())["config"]
    (export_run,) = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                     if r.info.run_name == f"export-{short}-{run.info.run_name}"]
    assert float(export_run.data.params["parity_max_abs_error"]) < 1e-4
    asked = [option[2:].replace("-", "_") for option in options if option.startswith("--")]
    assert {name: export_run.data.params.get(name) for name in asked} == {name: str(config[name]) for name in asked}
    return config


def figures(run_id: str) -> dict[str, float]:
    """A run's one-off figures (its `figures.json` table)."""
    import json

    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        table = json.loads(Path(MlflowClient().download_artifacts(run_id, "figures.json", tmp)).read_text())
    return {row[0]: row[1] for row in table["data"]}


def evaluation_summary(run_id: str, split: str = "test") -> dict:
    """What `evaluate` recorded of a run: every statistic, its settings and the unavailable metrics."""
    import json

    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(MlflowClient().download_artifacts(run_id, f"evaluation/{split}/summary.json",
                                                                 tmp)).read_text())


def one_line_error(capsys) -> str:
    """The single `imgtrans: error: …` line a failed command printed (and nothing after it, no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("imgtrans: error: ")]
    assert len(lines) == 1 and err.strip().endswith(lines[0]), err
    return lines[0]


def write_image(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def random_inception_file(path: Path) -> Path:
    """A file laid out like torch-fidelity's FID Inception weights, from a randomly initialised network."""
    import pytest as _pytest
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity

    empty = path.parent / "empty.pth"
    torch.save({}, empty)
    with _pytest.MonkeyPatch.context() as patch:  # build one random Inception to save its weights
        patch.setattr(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        net = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                   feature_extractor_weights_path=str(empty))
    torch.save(net.state_dict(), path)
    return path


# --- a tiny exported model and archives of scans for `translate` ------------------------

def tiny_model(netG="unet", norm="batch", codec=Codec(True, "lab")):
    from imgtrans.models.options import Pix2PixConfig
    from imgtrans.models.pix2pix import Pix2Pix

    torch.manual_seed(0)
    model = Pix2Pix(Pix2PixConfig(netG=netG, ngf=4, ndf=4, crop_size=64, norm=norm), codec)
    # Non-trivial running statistics, so eval-mode batch norm is really exercised.
    model.train()
    with torch.no_grad():
        model.netG(torch.randn(4, codec.input_nc, 64, 64))
    return model.eval()


def assert_exports_with_parity(model, folder: Path, x: torch.Tensor) -> None:
    """`model` exported to ONNX computes what its generator computes, on `x` too (another size than the export's)."""
    from imgtrans.export.onnx import export_model
    from imgtrans.infer.session import OnnxGenerator

    path, sidecar = export_model(model.eval(), folder / "g")
    assert sidecar.parity_max_abs_error < 1e-4
    with torch.no_grad():
        expected = model.generator()(x).numpy()
    assert np.abs(OnnxGenerator(path, "cpu").run_bound(x).numpy() - expected).max() < 1e-4


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Path:
    """A tiny Lab colorizer exported to ONNX, with its sidecar."""
    from imgtrans.export.onnx import export_model

    path, _ = export_model(tiny_model(), tmp_path_factory.mktemp("export") / "lab")
    return path


def make_scans(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    tifffile.imwrite(root / "big.tif", (rng.random((300, 200)) * 255).astype(np.uint8))
    Image.fromarray((rng.random((70, 50)) * 255).astype(np.uint8)).save(root / "sub" / "small.png")
    Image.fromarray((rng.random((40, 90, 3)) * 255).astype(np.uint8)).save(root / "color.jpg")
    return root


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_translate(model: Path, source: Path, out: Path, *extra: str) -> int:
    from imgtrans.cli import main

    return main(["translate", str(source), str(out), "--model", str(model), "--no-progress", *extra])


def interrupt_translation(monkeypatch, on_call: int, check=lambda: None) -> None:
    """Ctrl-C when the `on_call`-th scan starts; `check()` runs as each one starts."""
    from imgtrans.infer import worker

    real, calls = worker.translate_scan, {"n": 0}

    def translate_scan(*args, **kwargs):
        calls["n"] += 1
        check()
        if calls["n"] == on_call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "translate_scan", translate_scan)
