"""`benchmark --e2e`: the real Trainer — loader, validation, checkpoints, MLflow — against its bare step.

Each (model, batch size) trains for a few epochs on the built-in synthetic facades as a nested MLflow run;
its loop throughput is compared with the throughput of the same model's training step alone on
device-resident data (`benchmark.train_row`), so the ratio says how much of the step the loop keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imgtrans.benchmarks.tables import markdown_table, row_metrics
from imgtrans.benchmarks.training import train_row, width_options
from imgtrans.models.registry import model_class
from imgtrans.tracking.tracker import tracked_run
from imgtrans.training.trainer import Trainer

DATASET = "synthetic-facades"


@dataclass
class E2ERow:
    model: str
    batch: int
    loop_images_per_s: float
    step_images_per_s: float
    data_wait_ms_per_step: float
    epoch_boundary_s: float  # mean per epoch: checkpoint hand-over, validation, sample grid
    checkpoint_mb: float
    checkpoint_blocked_s: float  # mean time the loop waited per checkpoint

    @property
    def ratio(self) -> float:
        return self.loop_images_per_s / self.step_images_per_s

    def key(self) -> str:
        return f"bench_e2e/{self.model}/b{self.batch}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def e2e_row(model_name: str, batch: int, crop: int, epochs: int, images: int, device: torch.device,
            parent_run_id: str, step_repeats: int, width: int = 0) -> E2ERow:
    cls = model_class(model_name)
    cfg = cls.config_class(
        dataset=DATASET, crop_size=crop, batch_size=batch, epochs=epochs, max_dataset_size=images,
        device=device.type, val_images=min(16, images or 16), sample_images=4, **width_options(cls, width))
    with tracked_run("", f"e2e-{model_name}-b{batch}", model_name, "train", parent_run_id=parent_run_id) as tracker:
        result = Trainer(cfg, tracker, progress=False).fit()
    trained_images = result.step * batch
    step = train_row(model_name, batch, step_repeats, crop, device, width)
    return E2ERow(model_name, batch, trained_images / result.loop_seconds, step.best_images_per_s,
                  1000 * _mean(result.timings["data_wait_s"]), _mean(result.timings["epoch_boundary_s"]),
                  result.checkpoint_bytes / 2 ** 20, _mean(result.timings["checkpoint_s"]))


def format_e2e(rows: list[E2ERow]) -> str:
    return markdown_table(
        ["end to end", "batch", "loop img/s", "bare step img/s", "loop / step", "data wait ms/step",
         "epoch boundary s", "checkpoint MB", "checkpoint blocked s"],
        [[r.model, str(r.batch), f"{r.loop_images_per_s:.2f}", f"{r.step_images_per_s:.2f}", f"{r.ratio:.0%}",
          f"{r.data_wait_ms_per_step:.1f}", f"{r.epoch_boundary_s:.2f}", f"{r.checkpoint_mb:.1f}",
          f"{r.checkpoint_blocked_s:.3f}"] for r in rows])


def e2e_metrics(rows: list[E2ERow]) -> dict[str, float]:
    return row_metrics(rows, ("loop_images_per_s", "step_images_per_s", "ratio", "data_wait_ms_per_step",
                              "epoch_boundary_s", "checkpoint_mb", "checkpoint_blocked_s"))
