"""Run under torchrun by test_distributed: every Trainer model trained on each process for 4 steps, then 2
steps and a resume from that checkpoint to 4; each process saves its weights for the test to compare.

    torchrun --standalone --nproc_per_node 2 tests/zoo_job.py DATASET OUT
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from conftest import FolderTracker
from test_model_zoo import ZOO, zoo_config

from imgtrans.compute import distributed
from imgtrans.tracking.tracker import Tracker
from imgtrans.training.runs import resolve_resume
from imgtrans.training.trainer import Trainer

QUICK = {"val_images": 0, "sample_images": 0, "recalibrate_bn": 0, "batch_size": 1, "data_cache": "off"}


def train(cfg, folder: Path, payload=None):
    world = distributed.WORLD
    tracker = FolderTracker(folder) if world.is_main else Tracker()
    result = Trainer(cfg, tracker, resume_payload=payload, progress=False).fit()
    torch.save(result.model.state_dict(), folder / f"rank{world.rank}.pt")
    dist.barrier()  # the checkpoint rank 0 copied is there for everyone


def main(dataset: str, out: str) -> None:
    world = distributed.start("cpu")
    try:
        for model in ["pix2pix", *ZOO]:
            root = Path(out) / model
            for name in ("straight", "half", "resumed"):
                (root / name).mkdir(parents=True, exist_ok=True)
            train(zoo_config(model, dataset, max_steps=4, **QUICK), root / "straight")
            train(zoo_config(model, dataset, max_steps=2, **QUICK), root / "half")
            cfg = zoo_config(model, dataset, max_steps=4, resume=str(root / "half" / "checkpoints" / "last.pt"),
                             **QUICK)
            cfg, payload = resolve_resume(cfg, {"max_steps": 4})
            train(cfg, root / "resumed", payload)
            if world.is_main:
                print(f"zoo_job: {model} done", flush=True)
    finally:
        distributed.stop()


if __name__ == "__main__":
    main(*sys.argv[1:])
