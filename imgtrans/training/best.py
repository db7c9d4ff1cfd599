"""The model a run keeps: the generator at the validation with the best score of `keep_best`, not merely the last
(a short GAN run's validation score often peaks before its end). Kept as plain data, so that it goes into the
training checkpoint and a resumed run keeps comparing against it."""

from __future__ import annotations

from typing import Any

import torch

# The validation metrics where lower is better; every other one is maximised.
LOWER_IS_BETTER = frozenset({"val/kid", "val/chroma_error"})


def improves(metric: str, metrics: dict[str, float], best: dict[str, Any] | None) -> bool:
    """Whether this validation's `metric` beats the best so far (a first value always does)."""
    if metric not in metrics:
        return False
    if best is None:
        return True
    value = metrics[metric]
    return value < best["value"] if metric in LOWER_IS_BETTER else value > best["value"]


def snapshot(metric: str, metrics: dict[str, float], step: int, model: torch.nn.Module) -> dict[str, Any]:
    """The best so far: the score, the step, every validation metric there, and the weights (on the host)."""
    nets = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
    return {"metric": metric, "value": metrics[metric], "step": step, "metrics": dict(metrics), "nets": nets}


def for_checkpoint(best: dict[str, Any], step: int) -> dict[str, Any]:
    """What a checkpoint at `step` holds of the best: without the weights when they are its own (the best is the
    latest validation), which keeps a finished run's checkpoint from holding its model twice."""
    return {**best, "nets": None} if best["step"] == step else best


def restored(best: dict[str, Any] | None, model: torch.nn.Module, metric: str) -> dict[str, Any] | None:
    """The best so far from a checkpoint, its weights taken from the restored model where it left them out; none
    when the resumed run keeps the best by another `metric` (or the last: `keep_best=last`)."""
    if best is None or best["metric"] != metric:
        return None
    if best["nets"] is not None:
        return best
    return snapshot(best["metric"], best["metrics"], best["step"], model)
