"""The options of the `export` command (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imgtrans.config import EXPERIMENT_HELP, SelfEnsemble, opt
from imgtrans.models.options import (
    class_temperature_override,
    inference_scale_override,
    neutral_blur_override,
    neutral_odds_override,
    self_ensemble_override,
)


@dataclass
class ExportConfig:
    run_id: str = opt("", "MLflow run whose generator to export")
    model_uri: str = opt("", "or a model URI instead of run_id, e.g. models:/aerial-colorizer@champion")
    output: str = opt("", "the .onnx file to write (a folder: that name inside it); default "
                          "export/<model>-<run id>.onnx")
    precision: Literal["fp32", "fp16"] = opt("fp32", "fp16 keeps normalisation layers in fp32")
    class_temperature: float = class_temperature_override("the ONNX graph decodes at it")
    self_ensemble: Literal["own", SelfEnsemble] = self_ensemble_override(
        "the ONNX graph holds every pass")
    neutral_odds: float = neutral_odds_override("the ONNX graph decides at them")
    neutral_blur: int = neutral_blur_override("the ONNX graph decides with it")
    inference_scale: float = inference_scale_override("the ONNX graph enlarges by it")
    experiment: str = opt("", EXPERIMENT_HELP)
