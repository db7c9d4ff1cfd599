"""An exported generator behind ONNX Runtime, on the best execution provider available."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from imgtrans.errors import ImgtransError
from imgtrans.export.sidecar import Sidecar, sidecar_path
from imgtrans.files import file_digest

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


def provider_options(name: str, model_path: Path, device_id: int, cuda_graph: bool,
                     fp16: bool = False) -> dict[str, str]:
    """A GPU provider's options: its device; TensorRT's engines cached beside the model (built once, minutes),
    in fp16 where the model is; the CUDA provider's graph capture when asked. TensorRT names its engines after the
    file's name and the graph's nodes, not the weights: a model exported again to the same file gets a folder of
    its own, by its digest."""
    options = {"device_id": str(device_id)}
    if name == PROVIDERS["tensorrt"]:
        cache = model_path.with_suffix(".trt") / file_digest(model_path)
        options.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(cache), trt_fp16_enable=str(fp16))
    elif cuda_graph:
        options["enable_cuda_graph"] = "1"
    return options


class OnnxGenerator:
    """An exported generator's session; `run_bound` translates network-space float32 (N, C_in, h, w) →
    (N, C_out, h, w) tensors in the memory of the session's device."""

    def __init__(self, model_path: Path, provider: str = "auto", device_id: int = 0, threads: int = 0,
                 cuda_graph: bool = False):
        """`device_id`: the GPU of the CUDA/TensorRT providers; `threads`: the CPU provider's intra-op threads
        (0 = one per core); `cuda_graph`: the CUDA provider replays the model as one captured CUDA graph — only
        for calls of one shape through `run_bound` (ORT captures on the first run)."""
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ImgtransError(f"ONNX model not found: {model_path}; export one with `imgtrans export`")
        self.sidecar = Sidecar.load(sidecar_path(model_path))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        fp16 = self.sidecar.precision == "fp16"
        providers = [(name, provider_options(name, model_path, device_id, cuda_graph, fp16))
                     if name in GPU_PROVIDERS else name for name in choose_providers(provider)]
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

    @property
    def device(self) -> torch.device:
        """Where `run_bound` takes and gives its tensors."""
        return torch.device("cuda", self.device_id) if self.on_gpu else torch.device("cpu")

    def run_bound(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """`x` (N, C_in, h, w), float32, on the session's device (the GPU, or the host for the CPU provider) →
        the output in `out` (allocated there when None): ONNX Runtime reads and writes the tensors' memory
        directly (IO binding), with no copy through the host. Multimodal generators get the mean code."""
        kind = self.device.type
        x = x.contiguous()
        if out is None:
            out = torch.empty((x.shape[0], self.sidecar.output_channels, *x.shape[2:]), dtype=torch.float32,
                              device=x.device)
        if x.dtype != torch.float32 or out.dtype != torch.float32 or x.device != self.device or out.device != x.device:
            raise ImgtransError(f"run_bound needs float32 tensors on {self.device}, got {x.dtype} on {x.device}")
        z = torch.zeros((x.shape[0], self.sidecar.z_dim), device=x.device) if self.sidecar.z_dim else None
        if self.on_gpu:  # ONNX Runtime computes on its own stream: what torch queued for `x` and `z` must be done
            torch.cuda.current_stream(x.device).synchronize()
        binding = self.session.io_binding()
        binding.bind_input("input", kind, self.device_id if self.on_gpu else 0, np.float32, tuple(x.shape),
                           x.data_ptr())
        if z is not None:
            binding.bind_input("z", kind, self.device_id if self.on_gpu else 0, np.float32, tuple(z.shape),
                               z.data_ptr())
        binding.bind_output("output", kind, self.device_id if self.on_gpu else 0, np.float32, tuple(out.shape),
                            out.data_ptr())
        self.session.run_with_iobinding(binding)
        return out
