"""`translate` on several sessions and on a Ray cluster (issue #14): the same outputs, tags and manifest as one
session; a lost worker's files retried and none written twice; one-line errors for what cannot work."""

import csv
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tifffile
from conftest import make_scans, run_translate, tree_digest
from PIL import Image

from imgtrans.infer.archive import plan_archive, run_archive
from imgtrans.infer.engines import LocalEngine
from imgtrans.infer.manifest import MANIFEST
from imgtrans.infer.worker import FileTranslator, TranslateSettings, Work
from imgtrans.team.network import free_port

RAY_START_S = 60


def manifest_records(out: Path) -> dict[str, dict[str, str]]:
    """Each output's record without its timing."""
    with open(out / MANIFEST, newline="") as fh:
        return {row["output"]: {k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)}


def outputs(out: Path) -> dict[str, str]:
    digest = tree_digest(out)
    digest.pop(MANIFEST)
    return digest


def mixed_archive(root: Path) -> Path:
    """Odd sizes in three formats, a 16-bit GeoTIFF and a corrupt file."""
    make_scans(root)
    geo = [(33550, "d", 3, (0.5, 0.5, 0.0), False),
           (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32611), False)]
    tifffile.imwrite(root / "sub" / "ortho.tif",
                     (np.random.default_rng(1).random((61, 77)) * 65535).astype(np.uint16), extratags=geo)
    (root / "bad.png").write_bytes(b"\x89PNG broken")
    return root


def settings(model: Path) -> TranslateSettings:
    return TranslateSettings(str(model), "cpu", recipe="test")


def test_two_sessions_in_threads_give_the_outputs_of_one(tmp_path, exported):
    scans = mixed_archive(tmp_path / "scans")
    results = {}
    for name, devices in (("one", [0]), ("two", [0, 0])):  # on the CPU the device index is not used
        out = tmp_path / name
        engine = LocalEngine(settings(exported), devices)
        outcomes = run_archive(plan_archive(scans, out), out, lambda: engine, "test", progress=False)
        assert sorted(o.status for o in outcomes) == ["done"] * 4 + ["failed"]
        results[name] = outputs(out), manifest_records(out)
    assert results["one"] == results["two"]


def test_an_output_this_run_already_put_in_place_is_not_written_again(tmp_path, exported):
    image = tmp_path / "in" / "scan.png"
    image.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(image)
    target = tmp_path / "out" / "scan.png"
    work = Work(str(image), str(target), "scan.png", image.stat().st_size, image.stat().st_mtime_ns)
    translate = FileTranslator(settings(exported))
    assert translate(work).outcome.status == "done"
    inode = target.stat().st_ino
    # The run started before the output was committed: its worker was lost before reporting it.
    retried = translate(work, run_started_ns=target.stat().st_mtime_ns)
    assert retried.outcome.status == "done" and target.stat().st_ino == inode
    # An output from before the run is the earlier run's: translated again.
    assert translate(work, run_started_ns=target.stat().st_mtime_ns + 1).outcome.status == "done"
    assert target.stat().st_ino != inode


def test_devices_without_a_gpu_and_ray_without_ray_are_one_line_errors(tmp_path, exported, capsys, monkeypatch):
    scans = make_scans(tmp_path / "scans")
    assert run_translate(exported, scans, tmp_path / "out", "--devices", "0,1") == 2
    assert "--devices 0,1 names GPUs" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert run_translate(exported, scans, tmp_path / "out", "--engine", "ray") == 2
    err = capsys.readouterr().err.strip()
    assert err == 'imgtrans: error: --engine ray: the Ray engine needs Ray: pip install "imgtrans[ray]"'
    assert not (tmp_path / "out").exists()


# --- on Ray ------------------------------------------------------------------------------------

def test_a_ray_address_nobody_listens_on_is_one_line_at_once(tmp_path, exported, capsys):
    pytest.importorskip("ray")
    scans = make_scans(tmp_path / "scans")
    address = f"127.0.0.1:{free_port()}"
    assert run_translate(exported, scans, tmp_path / "out", "--engine", "ray", "--ray-address", address) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"imgtrans: error: cannot reach the Ray cluster at {address} (") and "\n" not in err
    assert not (tmp_path / "out").exists()
    assert run_translate(exported, scans, tmp_path / "out", "--engine", "ray", "--ray-address", "no-port") == 2
    assert "invalid Ray address 'no-port'" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def ray_env():
    """The environment of Ray's processes: token authentication as Ray enables it, with a token of the module's
    own (none written to ~/.ray), and Ray's session folders in a folder removed afterwards (short: Ray's socket
    paths must fit 107 bytes)."""
    pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    try:
        yield os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_TMPDIR": temp}
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def translate_on_ray(model: Path, source: Path, out: Path) -> list[str]:
    """The command line of a Ray translation, as a user runs it."""
    return [sys.executable, "-m", "imgtrans", "translate", str(source), str(out), "--model", str(model),
            "--engine", "ray", "--no-progress"]


@pytest.fixture(scope="module")
def ray_cluster(ray_env):
    """A real Ray head on loopback with 2 CPUs (`ray start --head --block`), stopped and removed after the module's
    tests (starting one takes seconds)."""
    port = free_port()
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus", "2",
         "--num-gpus", "0", "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "false",
         "--disable-usage-stats", "--temp-dir", ray_env["RAY_TMPDIR"]],
        env=ray_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + RAY_START_S
    while not any("raylet" in " ".join(p.cmdline()) for p in psutil.Process(head.pid).children(recursive=True)):
        assert head.poll() is None and time.monotonic() < deadline, "ray start did not come up"
        time.sleep(0.2)
    try:
        yield ray_env | {"RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        processes = [psutil.Process(head.pid), *psutil.Process(head.pid).children(recursive=True)]
        for process in processes:
            process.kill()
        psutil.wait_procs(processes, timeout=RAY_START_S)


def writes_watched(out: Path, stop: threading.Event) -> dict[str, set[int]]:
    """Every inode each output had while the run went on: a file written twice shows two."""
    seen: dict[str, set[int]] = {}

    def watch():
        while not stop.is_set():
            for path in out.glob("*.png"):
                try:
                    seen.setdefault(path.name, set()).add(path.stat().st_ino)
                except FileNotFoundError:
                    pass
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    return seen


@pytest.mark.slow
@pytest.mark.integration
def test_ray_with_a_killed_actor_gives_the_outputs_tags_and_manifest_of_one_process(tmp_path, exported,
                                                                                  ray_cluster, ray_env):
    scans = mixed_archive(tmp_path / "scans")
    rng = np.random.default_rng(0)
    for i in range(16):  # enough work for the kill to come mid-run
        Image.fromarray((rng.random((160, 160 + i)) * 255).astype(np.uint8)).save(scans / f"scan{i:02d}.png")
    assert run_translate(exported, scans, tmp_path / "single") == 2  # 2: the corrupt file in the mixed archive
    out = tmp_path / "ray"
    stop = threading.Event()
    seen = writes_watched(out, stop)
    run = subprocess.Popen(translate_on_ray(exported, scans, out), env=ray_cluster, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + RAY_START_S
        while not seen:  # the actors are at work
            assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()
            time.sleep(0.01)
        actors = [p for p in psutil.process_iter(["cmdline"])
                  if "RayFileTranslator" in " ".join(p.info["cmdline"] or [])]
        actors[0].kill()
        done_at_kill = len(list(out.glob("*.png")))
        assert run.wait(RAY_START_S) == 2, run.stderr.read()  # 2: the corrupt file
        err = run.stderr.read()
        assert "constructor arguments in the object store" not in err, err  # actors Ray can restart
    finally:
        stop.set()
        if run.poll() is None:
            run.kill()
    assert done_at_kill < 16
    assert outputs(out) == outputs(tmp_path / "single")  # bytes: pixels, GeoTIFF tags and all
    assert manifest_records(out) == manifest_records(tmp_path / "single")  # every file once, bad.png failed
    assert all(len(inodes) == 1 for inodes in seen.values()), seen  # none written twice
    assert not list(out.rglob("*.part"))
    with tifffile.TiffFile(out / "sub" / "ortho.tif") as tif:
        assert tif.pages[0].dtype == np.uint16 and tif.pages[0].tags[33550].value == (0.5, 0.5, 0.0)
    # A rerun skips what is done, as the single-process engine does, without starting any Ray.
    (scans / "bad.png").unlink()
    rerun = subprocess.run(translate_on_ray(exported, scans, out), env=ray_env, capture_output=True, text=True,
                           timeout=2 * RAY_START_S)
    assert rerun.returncode == 0 and "0 translated, 20 already done, 0 failed" in rerun.stdout, rerun.stderr
    assert "Ray at" not in rerun.stderr
    # With no address, on a local cluster whose session files go with it.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (scans / "new.png").write_bytes((scans / "scan00.png").read_bytes())
    local = subprocess.run(translate_on_ray(exported, scans, out), env=ray_env | {"TMPDIR": str(tmp)},
                           capture_output=True, text=True, timeout=2 * RAY_START_S)
    assert local.returncode == 0 and "1 translated, 20 already done" in local.stdout, local.stderr
    assert "A local Ray cluster: 2 actors, one per CPU" in local.stderr
    # Nothing of Ray's or ours is left (`.ses` is ONNX Runtime's telemetry marker, written on import).
    assert [p.name for p in tmp.iterdir()] in ([], [".ses"])


@pytest.mark.slow
@pytest.mark.integration
def test_ray_actors_that_cannot_start_fail_their_files_in_one_line_each(tmp_path, ray_cluster):
    """No endless retries and no traceback of ours: each file is reported failed, saying why (Ray itself prints
    what its workers raised)."""
    script = ("import sys\n"
              "from imgtrans.infer.ray_engine import RayEngine\n"
              "from imgtrans.infer.worker import TranslateSettings, Work\n"
              "engine = RayEngine(TranslateSettings(model=sys.argv[1]), '', 1)\n"
              "try:\n"
              "    for t in engine([Work(f'/in/{n}.png', f'/out/{n}.png', f'{n}.png', 1, 1) for n in 'ab'], 0):\n"
              "        print(t.outcome.output, t.outcome.status, t.outcome.error)\n"
              "finally:\n"
              "    engine.close()\n")
    gone = tmp_path / "gone.onnx"  # removed after the driver checked it, say
    result = subprocess.run([sys.executable, "-c", script, str(gone)], env=ray_cluster, capture_output=True, text=True,
                            timeout=2 * RAY_START_S)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = sorted(line for line in result.stdout.splitlines() if line.startswith(("a.png", "b.png")))  # not Ray's
    assert lines == [f"{n}.png failed its Ray actor could not start: ONNX model not found: {gone}; export one with "
                     "`imgtrans export`" for n in "ab"], result.stdout
