"""An exported generator behind ONNX Runtime, on the best execution provider available."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from imgtrans.errors import ImgtransError
from imgtrans.export.sidecar import Sidecar, sidecar_path

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
GPU_PROVIDERS = {PROVIDERS["tensorrt"], PROVIDERS["cuda"]}


def _gpu_present() -> bool:
    return torch.cuda.is_available()


def usable_providers() -> list[str]:
    """Our provider names, best first, that this onnxruntime build offers (GPU ones only with a GPU)."""
    available = ort.get_available_providers()
    names = list(PROVIDERS) if _gpu_present() else ["cpu"]
    return [name for name in names if PROVIDERS[name] in available]


def choose_providers(choice: str) -> list[str]:
    """`auto`: TensorRT → CUDA → CPU, whichever are usable. A named provider must be usable: a GPU one
    that is not is an error, never a silent fallback to the CPU. The providers after the first are
    onnxruntime's fallback for single operators the first does not implement."""
    usable = usable_providers()
    if choice != "auto" and choice not in PROVIDERS:
        raise ImgtransError(f"invalid provider '{choice}'; valid values: auto, {', '.join(PROVIDERS)}")
    if choice != "auto" and choice not in usable:
        raise ImgtransError(f"provider {choice} is not available on this machine (available: {', '.join(usable)}); "
                            "use --provider cpu or auto")
    first = 0 if choice == "auto" else usable.index(choice)
    return [PROVIDERS[name] for name in usable[first:]]


class OnnxGenerator:
    """Callable: network-space float32 (N, C_in, h, w) → (N, C_out, h, w)."""

    def __init__(self, model_path: Path, provider: str = "auto", device_id: int = 0, threads: int = 0):
        """`device_id`: the GPU of the CUDA/TensorRT providers; `threads`: the CPU provider's intra-op threads
        (0 = one per core)."""
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ImgtransError(f"ONNX model not found: {model_path}; export one with `imgtrans export`")
        self.sidecar = Sidecar.load(sidecar_path(model_path))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        providers = [(name, {"device_id": str(device_id)}) if name in GPU_PROVIDERS else name
                     for name in choose_providers(provider)]
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ImgtransError(f"cannot load ONNX model {model_path}: {exc}") from None
        self.provider = self.session.get_providers()[0]
        if provider != "auto" and self.provider != PROVIDERS[provider]:
            raise ImgtransError(f"provider {provider} could not be started for {model_path} (onnxruntime fell back "
                                f"to {self.provider}); use --provider cpu or auto")
        self.on_gpu = self.provider in GPU_PROVIDERS
        self.device_id = device_id

    def __call__(self, x: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
        """`z`: the latent code of multimodal generators; by default the mean code, zeros."""
        feeds = {"input": np.ascontiguousarray(x, dtype=np.float32)}
        if self.sidecar.z_dim:
            feeds["z"] = np.zeros((x.shape[0], self.sidecar.z_dim), np.float32) if z is None else \
                np.ascontiguousarray(z, dtype=np.float32)
        if not self.on_gpu:
            return self.session.run(None, feeds)[0]
        # IO binding: the output stays on the device until copied once, no intermediate host copies.
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        binding.bind_output("output", "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
