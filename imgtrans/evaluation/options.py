"""The options of the `evaluate` and `compare` commands (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imgtrans.config import SelfEnsemble, opt
from imgtrans.models.options import (
    class_temperature_override,
    inference_scale_override,
    neutral_blur_override,
    neutral_odds_override,
    self_ensemble_override,
)


@dataclass
class EvaluateConfig:
    run_id: str = opt("", "the training run to evaluate; test/<metric> results are logged to it")
    split: Literal["test", "val"] = opt("test", "which split of the run's dataset to translate")
    dataset: str = opt("", "evaluate on this dataset (a folder of pairs) instead of the run's own")
    max_images: int = opt(0, "evaluate at most this many images; 0 = all", ge=0)
    crop: bool = opt(False, "score the training preprocessing's centre crops instead of each image at its stored "
                            "size (padded to the model's size multiple, scored at its own size)")
    batch_size: int = opt(8, "images per inference batch (with crop=true; stored sizes go one at a time)", ge=1)
    grid_images: int = opt(8, "inputs kept as images (grid, and the side-by-side page of `compare`)", ge=0)
    class_temperature: float = class_temperature_override(
        "scores at another temperature are logged to the evaluation run only, not to the run and its model")
    self_ensemble: Literal["own", SelfEnsemble] = self_ensemble_override(
        "scores with another are logged to the evaluation run only")
    neutral_odds: float = neutral_odds_override("scores at other odds are logged to the evaluation run only")
    neutral_blur: int = neutral_blur_override("scores with another are logged to the evaluation run only")
    inference_scale: float = inference_scale_override("scores at another scale are logged to the evaluation run only")
    inception_weights: str = opt("", "path of weights-inception-2015-12-05-6726825d.pth (FID, KID, IS); "
                                     "default: the torch hub cache")
    lpips_weights: str = opt("", "path of alexnet-owt-7be5be79.pth (LPIPS); default: the torch hub cache")
    kid_subset_size: int = opt(50, "KID subset size (capped at the number of images)", ge=2)
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "auto picks the GPU when present")


@dataclass
class CompareConfig:
    experiment: str = opt("", "compare the evaluated runs of this experiment (name); empty = the current experiment "
                                   "unless run_ids are given")
    run_ids: str = opt("", "comma-separated run ids to compare (alone, or to narrow the experiment)")
    split: Literal["test", "val"] = opt("test", "whose evaluation to compare (as given to `evaluate`)")
    output: str = opt("", "also write report.md, report.csv and report.html into this folder")
    report_experiment: str = opt("", "experiment of the compare run itself; empty = the current experiment")
