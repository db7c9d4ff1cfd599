"""The `export` command: a run's (or a registered model's) generator to ONNX, logged to an export run."""

from __future__ import annotations

from pathlib import Path

from imgtrans.errors import ImgtransError
from imgtrans.export.onnx import export_model
from imgtrans.export.options import ExportConfig
from imgtrans.files import scratch_dir
from imgtrans.tracking import generator_checkpoint, tracked_run
from imgtrans.training.checkpoint import load_model


def export_command(cfg: ExportConfig, explicit: dict, progress: bool) -> int:
    """`imgtrans export`: a run's (or registered model's) generator to ONNX, logged to an export run."""
    if bool(cfg.run_id) == bool(cfg.model_uri):
        raise ImgtransError("give exactly one of run_id or model_uri")
    source = cfg.model_uri or f"runs:/{cfg.run_id}/model"
    with tracked_run(cfg.experiment, run_name="export") as tracker, scratch_dir("export") as tmp:
        model = load_model(generator_checkpoint(source, tmp))
        name = cfg.output or f"export/{model.cfg.model_name}-{cfg.run_id or 'model'}"
        if cfg.precision == "fp16" and not cfg.output:
            name += "-fp16"
        path, sidecar = export_model(model, Path(name), precision=cfg.precision, source=source)
        tracker.log_params({"source": source, "precision": cfg.precision, "opset": sidecar.opset,
                            "onnx_path": str(path)})
        tracker.log_metrics({"export/parity_max_abs_error": sidecar.parity_max_abs_error}, step=0)
        tracker.log_onnx(path)
    print(f"imgtrans: exported {source} to {path} (parity max abs error {sidecar.parity_max_abs_error:.2e}, "
          f"{sidecar.precision}, opset {sidecar.opset})")
    return 0
