"""The sidecar JSON beside every exported `.onnx`: everything `translate` needs to run the model — channels,
value range, colour space, size multiple, precision, parity — as a typed schema that one line refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imgtrans.data.codec import Codec
from imgtrans.errors import ImgtransError, validation_message
from imgtrans.files import atomic_write_bytes

SIDECAR_FORMAT = "imgtrans-onnx/1"
REDO = "re-export the model with `imgtrans export`"


class CodecSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    colorization: bool
    color_space: Literal["rgb", "lab"] = "rgb"


class Sidecar(BaseModel):
    # Fields a newer imgtrans adds are ignored by this one.
    model_config = ConfigDict(extra="ignore")

    model: str
    codec: CodecSpec
    input_channels: int = Field(ge=1)
    output_channels: int = Field(ge=1)
    size_multiple: int = Field(ge=1)
    tile_size: int = Field(ge=1)
    precision: Literal["fp32", "fp16"]
    opset: int = Field(ge=1)
    source: str
    parity_max_abs_error: float = Field(ge=0)
    parity_shapes: list[list[int]]
    config: dict[str, Any]
    z_dim: int = Field(0, ge=0)  # > 0: a second input "z" (N, z_dim), the latent code of multimodal generators
    receptive_radius: int = Field(0, ge=0)  # px an output pixel reaches into the input; 0 = whole input/unknown
    bytes_per_pixel: float = Field(0.0, ge=0)  # float32 activations per input pixel (an upper bound); 0 = unknown
    value_range: tuple[float, float] = (-1.0, 1.0)
    eval_semantics: str = "eval mode: batch norm uses running statistics, dropout off"
    format: Literal["imgtrans-onnx/1"] = SIDECAR_FORMAT

    @property
    def codec_obj(self) -> Codec:
        return Codec(**self.codec.model_dump())

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, self.model_dump_json(indent=2).encode())

    @classmethod
    def load(cls, path: Path) -> "Sidecar":
        if not path.is_file():
            raise ImgtransError(f"sidecar {path} not found next to the ONNX model; {REDO}")
        try:
            text = path.read_text()
            data = json.loads(text)
        except ValueError as exc:  # invalid JSON or not UTF-8
            raise ImgtransError(f"sidecar {path} is corrupt ({exc}); {REDO}") from None
        if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
            raise ImgtransError(f"{path} is not an imgtrans sidecar ({SIDECAR_FORMAT}); {REDO}")
        try:
            return cls.model_validate_json(text, strict=True)
        except ValidationError as exc:
            raise ImgtransError(f"sidecar {path}: {validation_message(exc)}; {REDO}") from None


def sidecar_path(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")
