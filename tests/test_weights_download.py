"""Pretrained weights downloaded into the torch hub cache on first use, from a local HTTP server: checksum,
mirror, offline, and the one line a metric gets when the file cannot be had. Nothing here reaches the internet."""

import functools
import hashlib
import os
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from imgtrans.cli import main
from imgtrans.dip.options import DIPConfig
from imgtrans.dip.runner import DIPRunner
from imgtrans.weights import ALEXNET, WeightsFile, resolve_weights

CONTENT = b"stand-in weights"
PREFIX = hashlib.sha256(CONTENT).hexdigest()[:8]
NAME = f"standin-{PREFIX}.pth"


class RecordingHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args, requests: list[str], **kwargs):
        self.requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A base URL serving `NAME`, and the paths requested from it."""
    served = tmp_path / "served"
    served.mkdir()
    (served / NAME).write_bytes(CONTENT)
    requests: list[str] = []
    handler = functools.partial(RecordingHandler, requests=requests, directory=str(served))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def checkpoints(tmp_path, monkeypatch):
    """The torch hub cache's checkpoints folder, online (tests run offline otherwise)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("IMGTRANS_OFFLINE", raising=False)
    monkeypatch.delenv("IMGTRANS_WEIGHTS_MIRROR", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_lands_in_the_hub_cache_once(server, checkpoints, capsys):
    base, requests = server
    weights = WeightsFile(NAME, f"{base}/{NAME}", PREFIX)
    path, message = resolve_weights(weights, "", "LPIPS", "lpips_weights")
    assert path == checkpoints / NAME and message == ""
    assert path.read_bytes() == CONTENT and os.listdir(checkpoints) == [NAME]
    assert f"downloading {base}/{NAME}" in capsys.readouterr().err
    assert resolve_weights(weights, "", "LPIPS", "lpips_weights") == (path, "")
    assert requests == [f"/{NAME}"]  # the second time from the cache


def test_a_checksum_mismatch_leaves_nothing_behind(server, checkpoints):
    base, _ = server
    path, message = resolve_weights(WeightsFile(NAME, f"{base}/{NAME}", "00000000"), "", "LPIPS", "lpips_weights")
    assert path is None and "\n" not in message
    assert message.startswith(f"LPIPS unavailable: could not download {base}/{NAME} (invalid hash value")
    assert str(checkpoints / NAME) in message and "lpips_weights=<path>" in message
    assert os.listdir(checkpoints) == []  # no temporary file either


@pytest.mark.parametrize("where", ["closed port", "missing file"])
def test_an_unreachable_file_is_one_line(server, checkpoints, where):
    base, _ = server
    url = f"http://127.0.0.1:{closed_port()}/{NAME}" if where == "closed port" else f"{base}/other-{NAME}"
    path, message = resolve_weights(WeightsFile(NAME, url, PREFIX), "", "FID/KID/IS", "inception_weights")
    assert path is None and "\n" not in message
    assert message.startswith(f"FID/KID/IS unavailable: could not download {url} (")
    assert ("Connection refused" if where == "closed port" else "HTTP Error 404") in message
    assert not checkpoints.exists() or os.listdir(checkpoints) == []


def test_the_mirror_replaces_the_folder(server, checkpoints, monkeypatch):
    base, requests = server
    monkeypatch.setenv("IMGTRANS_WEIGHTS_MIRROR", f"{base}/")
    weights = WeightsFile(NAME, f"https://example.invalid/models/{NAME}", PREFIX)
    assert resolve_weights(weights, "", "LPIPS", "lpips_weights") == (checkpoints / NAME, "")
    assert requests == [f"/{NAME}"]


def test_offline_makes_no_request(server, checkpoints, monkeypatch):
    base, requests = server
    monkeypatch.setenv("IMGTRANS_WEIGHTS_MIRROR", base)
    monkeypatch.setenv("IMGTRANS_OFFLINE", "1")
    path, message = resolve_weights(ALEXNET, "", "LPIPS", "lpips_weights")  # as evaluate asks for LPIPS
    assert path is None and requests == [] and not checkpoints.exists()
    assert message == (f"LPIPS unavailable: weights file {checkpoints / ALEXNET.filename} not found and offline "
                       f"(IMGTRANS_OFFLINE or --offline); download "
                       f"{base}/{ALEXNET.filename} there on a machine with network access, or pass "
                       "lpips_weights=<path>")


def test_an_explicit_path_is_never_downloaded_to(server, checkpoints, tmp_path):
    base, requests = server
    given = str(tmp_path / "mine.pth")
    path, message = resolve_weights(WeightsFile(NAME, f"{base}/{NAME}", PREFIX), given, "LPIPS", "lpips_weights")
    assert path is None and given in message and requests == []


def test_the_offline_flag_reaches_the_environment(checkpoints):
    assert main(["--offline", "evaluate", "--kid-subset-size", "many"]) == 2  # fails after the flag took effect
    assert os.environ["IMGTRANS_OFFLINE"] == "1"


def test_dip_trains_on_without_its_perceptual_weights(checkpoints, monkeypatch, capsys):
    monkeypatch.setenv("IMGTRANS_WEIGHTS_MIRROR", f"http://127.0.0.1:{closed_port()}")
    runner = DIPRunner(DIPConfig(lambda_perceptual=0.1), tracker=None)
    assert runner._perceptual() is None and runner.cfg.lambda_perceptual == 0
    assert "perceptual loss unavailable: could not download" in runner.notes[0]
    assert "training with lambda_perceptual=0" in capsys.readouterr().err
