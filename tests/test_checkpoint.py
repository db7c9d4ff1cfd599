"""The checkpoint file: data only (never code), checked byte for byte, every RNG state restored exactly."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from imgtrans.errors import ImgtransError
from imgtrans.training import checkpoint


class _TouchWhenUnpickled:
    """What a hostile checkpoint carries: unpickling it would run `Path.touch(marker)`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


class _ShellWhenUnpickled(_TouchWhenUnpickled):
    """Unpickling it would run `touch marker` in a shell (torch words this refusal another way)."""

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _with_valid_header(payload: dict, path: Path) -> Path:
    """A file that passes the checksum: the header's digest is that of its own (hostile) bytes."""
    body = io.BytesIO()
    torch.save(payload, body)
    digest = hashlib.sha256(body.getvalue()).hexdigest()
    path.write_bytes(checkpoint.MAGIC + f" {checkpoint.FORMAT} sha256:{digest}\n".encode() + body.getvalue())
    return path


def test_payload_and_rng_states_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # numpy caches the second Gaussian: that is state too
    state = checkpoint.rng_state()
    expected = (random.random(), np.random.randn(), torch.rand(2))
    path = checkpoint.atomic_save({"nets": {"w": torch.arange(4.0)}, "rng": state, "position": {"step": 7}},
                                  tmp_path / "last.pt")
    assert path.read_bytes().startswith(checkpoint.MAGIC)
    payload = checkpoint.read(path)
    assert payload["format"] == checkpoint.FORMAT and payload["position"] == {"step": 7}
    assert torch.equal(payload["nets"]["w"], torch.arange(4.0))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    checkpoint.set_rng_state(payload["rng"])
    assert (random.random(), np.random.randn()) == expected[:2] and torch.equal(torch.rand(2), expected[2])


@pytest.mark.parametrize("with_header", [True, False], ids=["current-format", "headerless"])
@pytest.mark.parametrize("hostile, code", [(_TouchWhenUnpickled, r"[\w.]+"), (_ShellWhenUnpickled, r"posix\.system")],
                         ids=["function", "shell"])
def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path, with_header, hostile, code):
    marker = tmp_path / "code-ran"
    payload = {"format": checkpoint.FORMAT, "nets": {"w": hostile(marker)}}
    path = tmp_path / "hostile.pt"
    if with_header:
        _with_valid_header(payload, path)
    else:
        torch.save(payload, path)
    with pytest.raises(ImgtransError, match=rf"holds code \({code}\), not only .*refused without running it") as error:
        checkpoint.read(path)
    assert "\n" not in str(error.value)
    assert not marker.exists()


def test_a_flipped_bit_is_refused_before_anything_is_loaded(tmp_path):
    path = checkpoint.atomic_save({"nets": {"w": torch.ones(1000)}}, tmp_path / "last.pt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ImgtransError, match="is damaged"):
        checkpoint.read(path)


def test_a_foreign_header_or_file_is_one_line(tmp_path):
    other = tmp_path / "other.pt"
    other.write_bytes(checkpoint.MAGIC + b" 99 sha256:" + b"0" * 64 + b"\n")
    with pytest.raises(ImgtransError, match="another version of imgtrans"):
        checkpoint.read(other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ImgtransError, match="cannot read checkpoint"):
        checkpoint.read(junk)


@pytest.mark.parametrize("fmt", [1, 2])
def test_checkpoints_of_earlier_formats_are_still_read(tmp_path, fmt):
    """Formats 1 and 2 (no header; numpy's RNG state as an array; 2 with a checksum of its values)."""
    payload = {"format": fmt, "nets": {"w": torch.ones(3)},
               "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}}
    if fmt == 2:
        payload["sha256"] = checkpoint.legacy_checksum(payload)
    torch.save(payload, tmp_path / "old.pt")
    loaded = checkpoint.read(tmp_path / "old.pt")
    assert torch.equal(loaded["nets"]["w"], torch.ones(3))
    checkpoint.set_rng_state(loaded["rng"])
    if fmt == 2:
        payload["nets"]["w"] = torch.zeros(3)
        torch.save(payload, tmp_path / "old.pt")
        with pytest.raises(ImgtransError, match="is damaged"):
            checkpoint.read(tmp_path / "old.pt")
