"""Normalisation choice and weight initialisation shared by every network."""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn

from imgtrans.errors import ImgtransError

NORMS = ("batch", "instance", "none")


class Generator(nn.Module):
    """What a generator declares to whoever runs or exports it: the sides of its input must be multiples of
    `size_multiple`; with `z_dim` > 0 it takes a latent code (N, z_dim) as its second input; in eval mode it
    averages `views` passes per input (a self-ensemble)."""

    size_multiple: int = 1
    z_dim: int = 0
    views: int = 1

    @contextlib.contextmanager
    def single_view(self):
        """One pass per input inside, whatever `views` is: what batch-norm recalibration must measure, the
        network as it computed in training."""
        views, self.views = self.views, 1
        try:
            yield
        finally:
            self.views = views


INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")


def norm_layer(kind: str):
    """A constructor taking the channel count, plus whether convs before it need a bias."""
    if kind == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True), False
    if kind == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False), True
    if kind == "none":
        return (lambda channels: nn.Identity()), True
    raise ImgtransError(f"invalid norm '{kind}'; valid values: {', '.join(NORMS)}")


class FrozenStatisticsBatchNorm(nn.Module):
    """A batch norm that normalises by its stored statistics in training as in eval mode; its scale and shift
    still learn. Its state dict is `nn.BatchNorm2d`'s, so pretrained files and checkpoints load into it either way;
    it is not a `_BatchNorm`, so neither batch-norm recalibration nor SyncBatchNorm conversion touches it."""

    def __init__(self, norm: nn.BatchNorm2d):
        super().__init__()
        self.eps, self.weight, self.bias = norm.eps, norm.weight, norm.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, getattr(norm, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Files saved before batch norms counted their batches lack the counter; `nn.BatchNorm2d` takes them too.
        state_dict.setdefault(f"{prefix}num_batches_tracked", torch.zeros((), dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def freeze_batch_norm_statistics(net: nn.Module) -> None:
    """Every `nn.BatchNorm2d` in `net` replaced, in place, by a `FrozenStatisticsBatchNorm` holding its tensors."""
    for name, child in net.named_children():
        if isinstance(child, nn.BatchNorm2d) and child.track_running_stats:
            setattr(net, name, FrozenStatisticsBatchNorm(child))
        else:
            freeze_batch_norm_statistics(child)


def init_weights(net: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights as in the pix2pix reference (normal(0, 0.02) by default)."""

    def init(m: nn.Module) -> None:
        name = type(m).__name__
        if hasattr(m, "weight") and ("Conv" in name or "Linear" in name):
            if init_type == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                nn.init.orthogonal_(m.weight, gain=gain)
            else:
                raise ImgtransError(f"invalid init_type '{init_type}'; valid values: {', '.join(INIT_TYPES)}")
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif "BatchNorm2d" in name:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    net.apply(init)
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad H and W up to a multiple; returns the padded tensor and the original size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)
