"""The `export` command: a run's (or a registered model's) generator to ONNX, logged to an export run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from imgtrans.errors import ImgtransError
from imgtrans.export.onnx import export_model
from imgtrans.export.options import ExportConfig
from imgtrans.export.sidecar import sidecar_path
from imgtrans.files import scratch_dir
from imgtrans.models.options import INFERENCE_OPTIONS, describe_inference, inference_options
from imgtrans.tracking import models
from imgtrans.tracking.models import generator_checkpoint, generator_of_run
from imgtrans.tracking.tracker import SOURCE_RUNS_TAG, tracked_run
from imgtrans.training.checkpoint import load_model


def export_command(cfg: ExportConfig, explicit: dict, progress: bool) -> int:
    """`imgtrans export`: a run's (or registered model's) generator to ONNX, logged as the model of an export run
    that links to where it came from."""
    if bool(cfg.run_id) == bool(cfg.model_uri):
        raise ImgtransError("give exactly one of run_id or model_uri")
    source_uri = cfg.model_uri or generator_of_run(cfg.run_id)
    origin = models.origin(source_uri)
    label = cfg.run_id or origin.label
    with scratch_dir("export") as tmp:
        options = inference_options(cfg)
        model = load_model(generator_checkpoint(source_uri, tmp), **options)
        at, phrase = describe_inference(options)  # `at` in the file's and the run's names
        decoded = f", decoded with {phrase}" if options else ""
        suffix = "".join(f"-{part}" for part in (at, "fp16" if cfg.precision == "fp16" else "") if part)
        default = f"{model.cfg.model_name}-{label}{suffix}"
        name = Path(cfg.output or f"export/{default}")
        if cfg.output.endswith(("/", os.sep)) or name.is_dir():  # a folder: the default name inside it
            name = name / default
        # Named, as evaluation runs are, by what a user reads in the run list: the source run's name.
        shown = (origin.run_name or label) if cfg.run_id else label
        with tracked_run(cfg.experiment, "-".join(part for part in ("export", at, shown) if part), "export", "export",
                         tags={SOURCE_RUNS_TAG: origin.run_id} if origin.run_id else None) as tracker:
            path, sidecar = export_model(model, name, precision=cfg.precision, source=source_uri)
            tracker.log_params({"source": source_uri, "precision": cfg.precision, "opset": sidecar.opset,
                                **dict.fromkeys(INFERENCE_OPTIONS), **options,
                                "onnx_path": str(path), "parity_max_abs_error": f"{sidecar.parity_max_abs_error:.2e}"})
            example = np.random.default_rng(0).uniform(-1, 1, (1, sidecar.input_channels, sidecar.tile_size,
                                                                sidecar.tile_size)).astype(np.float32)
            tracker.log_onnx(path, example,
                             f"ONNX export of {origin.markdown} ({cfg.precision}, opset {sidecar.opset}{decoded}, "
                             f"parity max abs error {sidecar.parity_max_abs_error:.2e})")
            tracker.log_artifact(sidecar_path(path), "export")
            tracker.describe(f"Export of {origin.markdown} to `{path}` ({cfg.precision}, opset {sidecar.opset}"
                             f"{decoded}); ONNX Runtime matches PyTorch within {sidecar.parity_max_abs_error:.2e}.")
    print(f"imgtrans: exported {source_uri} to {path} (parity max abs error {sidecar.parity_max_abs_error:.2e}, "
          f"{sidecar.precision}, opset {sidecar.opset}{decoded})")
    return 0
