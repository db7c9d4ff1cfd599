"""The small protocol every model implements.

A model owns its networks, optimizers and losses. The Trainer calls
`training_step(batch)` (which performs the model's own optimizer updates and
returns named losses), `translate(x)` for inference and `visuals(batch)` for
sample grids. Models never touch MLflow, argument parsing or the file system.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from imgtrans.compute import distributed
from imgtrans.compute.runtime import Runtime
from imgtrans.config import TrainConfig
from imgtrans.data.codec import Codec
from imgtrans.nets.layers import Generator, pad_to_multiple


class TranslationModel(nn.Module):
    """Base class: subclasses set `config_class`, build nets and optimizers, and define the step."""

    config_class: ClassVar[type[TrainConfig]] = TrainConfig
    # Whether the model learns from paired (input, target) data or two unpaired domains.
    unpaired: ClassVar[bool] = False
    # Whether validation also reports val/kid, with the Inception weights at `inception_weights`.
    validation_kid: ClassVar[bool] = False
    # Whether one input has many outputs, drawn with `samples` (evaluation then scores their diversity).
    multimodal: ClassVar[bool] = False
    # What to try when a loss becomes NaN/inf.
    divergence_hint: ClassVar[str] = "lower lr"
    # Whether `training_step` makes no decision on the host, so that it can be replayed as a CUDA graph.
    capturable_step: ClassVar[bool] = False

    def __init__(self, cfg: TrainConfig, codec: Codec):
        super().__init__()
        self.cfg = cfg
        self.codec = codec
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        # Fixed networks a loss measures with (`load_loss_networks`): a plain dict, so that they stay out of the
        # state dict and of train() / eval().
        self.loss_networks: dict[str, nn.Module] = {}
        self._updating = False
        self.runtime = Runtime(torch.device("cpu"))
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)

    # --- runtime -----------------------------------------------------------
    def setup(self, runtime: Runtime) -> None:
        """Move to the device and apply the fast-path switches; call before building optimizers' state."""
        self.runtime = runtime
        self.to(runtime.device, memory_format=runtime.memory_format)
        for net in self.loss_networks.values():
            net.to(runtime.device, memory_format=runtime.memory_format)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.autocast_dtype == torch.float16)
        if runtime.compile:
            for net in self.children():
                net.compile()

    def autocast(self):
        return self.runtime.autocast()

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return self.runtime.to_device(x)

    def adam(self, *nets: nn.Module) -> torch.optim.Adam:
        # Fused Adam is several times faster than the per-tensor loop, on CPU too.
        return torch.optim.Adam(self.param_groups(nets), lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2),
                                fused=self.runtime.fused_optimizers or None)

    def param_groups(self, nets: tuple[nn.Module, ...]) -> list[dict]:
        """The parameter groups of an optimizer of `nets`: the first at `lr` (train/lr reports it), any other at
        the lr it names."""
        return [{"params": [p for net in nets for p in net.parameters()]}]

    def update(self, optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer], loss: torch.Tensor) -> None:
        """One optimisation step of `loss` for the optimizer(s); under torchrun the gradients are first averaged
        over the processes, so every process takes the same step (data parallelism, as DDP does it)."""
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        distributed.average_gradients(p for o in optimizers for group in o.param_groups for p in group["params"])
        self._updating = True
        try:
            for optimizer in optimizers:
                self.scaler.step(optimizer)
        finally:
            self._updating = False

    @staticmethod
    def set_requires_grad(nets: nn.Module | list[nn.Module], flag: bool) -> None:
        for net in nets if isinstance(nets, list) else [nets]:
            for p in net.parameters():
                p.requires_grad_(flag)

    # --- protocol ----------------------------------------------------------
    @classmethod
    def is_conditional(cls, cfg: TrainConfig) -> bool:
        """Whether outputs follow an input image; if not, the data is targets alone (any folder of images)."""
        return True

    def graph_capture_obstacle(self) -> str | None:
        """None when this model's step, as configured, can be captured as a CUDA graph; otherwise why not."""
        return None if self.capturable_step else f"the {self.cfg.model_name} step is not capturable"

    @property
    def inception_weights(self) -> str:
        """The Inception weights file given for val/kid; "" = look in the torch hub cache."""
        return ""

    def fit_to_data(self, train: Dataset) -> None:
        """Statistics the model takes from its training split before the first step, kept in its state (a
        resumed run has them from its checkpoint)."""

    def load_loss_networks(self) -> list[str]:
        """Fill `loss_networks` for training (a fresh start or a resumed one; inference needs none); one note for
        each, saying where its weights came from."""
        return []

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The model's optimizers by name (made after `setup`, on the device's parameters)."""
        raise NotImplementedError

    def configure_optimizers(self) -> None:
        """`self.optimizers` from `build_optimizers`, each guarded: an optimizer stepped anywhere but in `update`
        — where a torchrun job averages the gradients over its processes — raises instead of letting the
        processes' weights drift apart."""
        self.optimizers = self.build_optimizers()
        for name, optimizer in self.optimizers.items():
            optimizer.register_step_pre_hook(functools.partial(self._only_in_update, name))

    def _only_in_update(self, name: str, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        if not self._updating:
            raise RuntimeError(f"optimizer {name} of {type(self).__name__} was stepped outside `update`: its "
                               "gradients would not be averaged over a torchrun job's processes")

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def generator(self) -> Generator:
        """The network inference runs (and export writes, unless `export_obstacle` says why not)."""
        raise NotImplementedError

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (inference pads to it and crops back)."""
        return self.generator().size_multiple

    @property
    def z_dim(self) -> int:
        """The length of the latent code the generator takes as its second input; 0 = none."""
        return self.generator().z_dim

    def export_obstacle(self) -> str | None:
        """None when `generator()` alone translates an image, so that ONNX can hold it; otherwise why not."""
        return None

    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> torch.Tensor:
        """Input tensor in network space (any H, W) → output in network space, same H, W."""
        net = self.generator()
        padded, (h, w) = pad_to_multiple(self.to_device(x), net.size_multiple)
        with self.autocast():
            y = net(padded)
        return y[..., :h, :w].float()

    def translate_for_validation(self, x: torch.Tensor) -> torch.Tensor:
        """`translate` as used for per-epoch validation (samplers may take fewer steps there)."""
        return self.translate(x)

    def samples(self, x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, N, C, H, W): n outputs per input, for multimodal models."""
        raise NotImplementedError

    def local_state(self) -> dict[str, torch.Tensor]:
        """Entries of the state dict that differ between the processes of a torchrun job (the rest is kept
        equal by the averaged updates); checkpoints hold every process's."""
        return {}

    def validation_metrics(self, batch: dict) -> dict[str, float]:
        """Model-specific `val/<name>` scores on a validation batch, beside val/psnr and val/ssim."""
        return {}

    @torch.no_grad()
    def visuals(self, batch: dict) -> dict[str, torch.Tensor]:
        """Labelled columns of the sample grid as rgb [0, 1]: input | output | target (a colorizer's gray input
        is also its trivial baseline, the grayscale copy)."""
        x = batch["A"]
        y = self.translate_for_validation(x).cpu()
        source = "gray input = baseline" if self.codec.colorization else "input"
        return {source: self.codec.decode_input(x), "output": self.codec.decode_output(x, y),
                "target": self.codec.decode_output(x, batch["B"])}
