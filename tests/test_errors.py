"""What the machine says no to — a full disk, a file where a folder belongs, a path that does not exist —
is one line naming the path and what to do, exit status 2, and loses nothing."""

from __future__ import annotations

import errno
import os

import mlflow
from conftest import FAST, make_scans, one_line_error, run_translate, tree_digest

from imgtrans.cli import main
from imgtrans.errors import one_line


def test_os_errors_read_as_one_line_with_the_path_and_what_to_do():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/x.png")
    assert one_line(full) == "no space left on the device: /data/out/x.png; free some space or choose a folder on " \
                             "another disk"
    moved = OSError(errno.EXDEV, os.strerror(errno.EXDEV), "/a", None, "/b")
    assert one_line(moved) == f"{os.strerror(errno.EXDEV)}: /a → /b; check the path"


def test_a_full_disk_under_the_manifest_is_one_line_and_a_rerun_completes(exported, tmp_path, capsys, monkeypatch):
    from imgtrans.infer import manifest

    scans = make_scans(tmp_path / "scans")
    before = tree_digest(scans)
    real = manifest.atomic_write_bytes

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(manifest, "atomic_write_bytes", full_disk)
    assert run_translate(exported, scans, tmp_path / "out") == 2
    line = one_line_error(capsys)
    assert "no space left on the device" in line and "manifest.csv" in line
    monkeypatch.setattr(manifest, "atomic_write_bytes", real)
    assert run_translate(exported, scans, tmp_path / "out") == 0
    assert tree_digest(scans) == before  # the input folder is never written to
    assert not list((tmp_path / "out").rglob("*.part"))


def test_a_full_disk_while_checkpointing_fails_the_run_in_one_line(facades, capsys, monkeypatch):
    from imgtrans.training import checkpoint

    def full_disk(payload, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpoint, "atomic_save", full_disk)
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "2"]) == 2
    line = one_line_error(capsys)
    assert "no space left on the device" in line and "last.pt" in line
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FAILED" and run.data.tags["error"] == line.removeprefix("imgtrans: error: ")


def test_a_server_folder_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "team").write_text("not a folder")
    assert main(["server", "--data-dir", str(tmp_path / "team")]) == 2
    assert str(tmp_path / "team") in one_line_error(capsys)


def test_reading_a_study_from_a_mistyped_storage_creates_nothing(tmp_path, capsys):
    assert main(["study", "best", "--study", "s", "--storage", str(tmp_path / "typo.db")]) == 2
    assert "no study storage at" in one_line_error(capsys)
    assert not (tmp_path / "typo.db").exists()


def test_a_tracking_store_mlflow_refuses_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())  # a file store
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert main(["pix2pix", *FAST, "--max-steps", "1"]) == 2
    line = one_line_error(capsys)
    assert f"MLflow cannot use the tracking store {(tmp_path / 'mlruns').as_uri()}" in line
    assert "MLFLOW_ALLOW_FILE_STORE" in line  # MLflow's own way out
