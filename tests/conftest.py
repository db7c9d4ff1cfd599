"""Shared fixtures: an isolated MLflow store and data cache per test, and tiny datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgtrans.data import synthetic

TINY_COUNTS = {"train": 6, "val": 2, "test": 2}
# Flags that make a training run take a second or two on a CPU.
FAST = ["--ngf", "4", "--ndf", "4", "--crop-size", "64", "--batch-size", "2", "--log-every", "1",
        "--val-images", "2", "--sample-images", "2", "--no-progress"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test gets its own working directory, MLflow store and data cache."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID; never let one test's id reach the next.
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("IMGTRANS_DATA_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(2)
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
