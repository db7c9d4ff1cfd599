"""The model a run keeps: the generator at the validation with the best score of `keep_best`, not merely the last
(a short GAN run's validation score often peaks before its end). Where the scores are per image (PSNR, SSIM) a
later generator whose score falls short of the best by no more than the validation images' own noise is kept
instead: on a few dozen images a difference of a few hundredths of a dB picks by chance, and the later generator has
trained longer (the one-standard-error rule of "The Elements of Statistical Learning", 7.10, with the longer-trained
generator as the one preferred). Kept as plain data, so that it goes into the training checkpoint and a resumed run
keeps comparing against it: the kept generator's step, metrics and weights, and the best score seen (`value`, at
`value_step`, with its per-image `scores`)."""

from __future__ import annotations

import math
from typing import Any

import torch

# The validation metrics where lower is better; every other one is maximised.
LOWER_IS_BETTER = frozenset({"val/kid", "val/chroma_error"})


def _better(metric: str, value: float, than: float) -> bool:
    return value < than if metric in LOWER_IS_BETTER else value > than


def within_noise(reference: torch.Tensor, scores: torch.Tensor, standard_errors: float) -> bool:
    """Whether `scores` (higher is better, per image) fall short of `reference`'s, on the same images, by no more
    than `standard_errors` standard errors of their paired difference."""
    if standard_errors <= 0 or len(scores) < 2 or len(scores) != len(reference):
        return False
    shortfall = reference.double() - scores.double()
    return shortfall.mean().item() <= standard_errors * shortfall.std().item() / math.sqrt(len(scores))


def updated(best: dict[str, Any] | None, metric: str, metrics: dict[str, float], scores: torch.Tensor | None,
            step: int, model: torch.nn.Module, within: float) -> dict[str, Any] | None:
    """The best after a validation at `step` with these `metrics` and the kept metric's per-image `scores` (None
    where it has none): this generator where its score is the best so far, or within `within` standard errors of
    it (measured against the best score, so that a slow decline cannot carry the kept generator down step by
    step); otherwise `best` unchanged."""
    if metric not in metrics:
        return best
    value = metrics[metric]
    if best is None or _better(metric, value, best["value"]):
        return {**_snapshot(metrics, step, model), "metric": metric, "value": value, "value_step": step,
                "scores": scores}
    if best["scores"] is not None and scores is not None and within_noise(best["scores"], scores, within):
        return {**best, **_snapshot(metrics, step, model)}
    return best


def _snapshot(metrics: dict[str, float], step: int, model: torch.nn.Module) -> dict[str, Any]:
    """The kept generator: its step, every validation metric there, and its weights (on the host)."""
    nets = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
    return {"step": step, "metrics": dict(metrics), "nets": nets}


def for_checkpoint(best: dict[str, Any], step: int) -> dict[str, Any]:
    """What a checkpoint at `step` holds of the best: without the weights when they are its own (the kept
    generator is the latest validation's), which keeps a finished run's checkpoint from holding its model twice."""
    return {**best, "nets": None} if best["step"] == step else best


def restored(best: dict[str, Any] | None, model: torch.nn.Module, metric: str) -> dict[str, Any] | None:
    """The best so far from a checkpoint, its weights taken from the restored model where it left them out; none
    when the resumed run keeps the best by another `metric` (or the last: `keep_best=last`). A checkpoint from
    before per-image scores were kept compares by the score alone."""
    if best is None or best["metric"] != metric:
        return None
    best = {"value_step": best["step"], "scores": None, **best}
    return best if best["nets"] is not None else {**best, **_snapshot(best["metrics"], best["step"], model)}
