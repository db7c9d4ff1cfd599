"""Export a trained generator to ONNX, check it against PyTorch, and describe it in a sidecar.

Inference semantics are explicit: the generator is exported in eval mode, so
batch norm uses its running statistics (folded into the convolutions) and
dropout is off. The reference pix2pix code tests in train mode; that is
random and batch-dependent, which an archive colorizer must not be.

The sidecar JSON next to the `.onnx` (`export.sidecar`) holds everything `translate` needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from imgtrans.config import to_dict
from imgtrans.data.codec import Codec
from imgtrans.errors import ImgtransError
from imgtrans.export.sidecar import Sidecar, sidecar_path
from imgtrans.files import atomic_write_bytes
from imgtrans.nets.layers import Generator, round_up

OPSET = 17
TOLERANCE = {"fp32": 1e-3, "fp16": 3e-2}
# Layers kept in fp32 inside an fp16 graph: their reductions lose too much in half precision.
FP32_OPS = ["InstanceNormalization", "BatchNormalization", "LayerNormalization", "GroupNormalization",
            "ReduceMean", "Softmax"]


def parity_shapes(input_nc: int, multiple: int) -> list[tuple[int, ...]]:
    base = max(multiple, 64)
    return [(1, input_nc, base, base), (2, input_nc, base * 2, base), (1, input_nc, base, base * 3)]


def to_onnx_bytes(net: torch.nn.Module, input_nc: int, multiple: int, z_dim: int = 0) -> bytes:
    example = torch.randn(1, input_nc, max(multiple, 64), max(multiple, 64))
    args = (example, torch.randn(1, z_dim)) if z_dim else (example,)
    names = ["input", "z"] if z_dim else ["input"]
    axes = {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}}
    if z_dim:
        axes["z"] = {0: "batch"}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The tracer's notes (constant Python branches, Slice folding) are about code we checked with parity.
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(net, args, str(path), dynamo=False, opset_version=OPSET, input_names=names,
                          output_names=["output"], external_data=False, dynamic_axes=axes)
        return path.read_bytes()


def probe_inputs(net: torch.nn.Module, input_nc: int, size: int, z_dim: int, batch: int = 1) -> tuple:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, input_nc, size, size, generator=g) * 2 - 1
    return (x, torch.randn(batch, z_dim, generator=g)) if z_dim else (x,)


def receptive_radius(net: torch.nn.Module, input_nc: int, multiple: int, z_dim: int = 0) -> int:
    """How far an output pixel reaches into the input: the gradient of the centre output pixel, over two
    random inputs, is non-zero that far. 0 when it reaches the probe's border (U-Nets, instance norm): then
    no margin makes tiles equal a whole-image pass."""
    size = round_up(256, multiple)
    x, *z = probe_inputs(net, input_nc, size, z_dim, batch=2)
    x.requires_grad_(True)
    # A self-ensemble's mirror images reach as far as one view does, plus the pixel by which mirroring moves the
    # centre of an even side: one view is probed, at a fraction of the cost.
    mirrored = isinstance(net, Generator) and net.views > 1
    with net.single_view() if mirrored else contextlib.nullcontext():
        net(x, *z)[:, :, size // 2, size // 2].sum().backward()
    rows = torch.nonzero(x.grad.abs().sum((0, 1)).sum(1)).flatten()
    cols = torch.nonzero(x.grad.abs().sum((0, 1)).sum(0)).flatten()
    # Strided layers leave gaps in the gradient: reaching within 2 px of the border counts as reaching it.
    if not len(rows) or min(rows[0], cols[0]) <= 2 or max(rows[-1], cols[-1]) >= size - 3:
        return 0
    return int(max(size // 2 - rows[0], rows[-1] - size // 2, size // 2 - cols[0], cols[-1] - size // 2)) + mirrored


def activation_bytes_per_pixel(net: torch.nn.Module, input_nc: int, multiple: int, z_dim: int = 0) -> float:
    """The float32 outputs of every layer per input pixel: what inference may hold at once, at most."""
    size = round_up(64, multiple)
    total = 0

    def count(module, inputs, output):
        nonlocal total
        total += sum(t.numel() for t in (output if isinstance(output, (list, tuple)) else [output])
                     if torch.is_tensor(t)) * 4

    handles = [m.register_forward_hook(count) for m in net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            net(*probe_inputs(net, input_nc, size, z_dim))
    finally:
        for handle in handles:
            handle.remove()
    return total / size ** 2


def to_fp16(model_bytes: bytes) -> bytes:
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load_from_string(model_bytes)
    half = OnnxModel(convert_float_to_float16(model, keep_io_types=True, op_block_list=FP32_OPS))
    half.topological_sort()  # the converter appends its I/O casts at the end of the node list
    return half.model.SerializeToString()


def check_parity(net: torch.nn.Module, model_bytes: bytes, shapes: list[tuple[int, ...]], seed: int = 0,
                 z_dim: int = 0) -> float:
    """Largest |ONNX Runtime − PyTorch| over random inputs (and codes) of several shapes (CPU provider)."""
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for shape in shapes:
        x = torch.rand(shape, generator=g) * 2 - 1
        feeds = {"input": x}
        if z_dim:
            feeds["z"] = torch.randn(shape[0], z_dim, generator=g)
        with torch.no_grad():
            expected = net(*feeds.values()).numpy()
        got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0].astype(np.float32)
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export_model(model, out_path: Path, *, precision: str = "fp32", source: str = "") -> tuple[Path, Sidecar]:
    """Write `<out>.onnx` and `<out>.json`; raise if ONNX and PyTorch disagree beyond tolerance."""
    if precision not in TOLERANCE:
        raise ImgtransError(f"invalid precision '{precision}'; valid values: {', '.join(TOLERANCE)}")
    obstacle = model.export_obstacle()
    if obstacle:
        raise ImgtransError(f"{model.cfg.model_name} cannot be exported to ONNX: {obstacle}")
    net = model.generator().float().cpu().eval()
    codec: Codec = model.codec
    multiple, z_dim = model.size_multiple, model.z_dim
    model_bytes = to_onnx_bytes(net, codec.input_nc, multiple, z_dim)
    if precision == "fp16":
        model_bytes = to_fp16(model_bytes)
    onnx.checker.check_model(onnx.load_from_string(model_bytes))
    shapes = parity_shapes(codec.input_nc, multiple)
    error = check_parity(net, model_bytes, shapes, z_dim=z_dim)
    if error > TOLERANCE[precision]:
        raise ImgtransError(f"ONNX export does not match PyTorch: max abs error {error:.2e} > "
                            f"{TOLERANCE[precision]:.0e} ({precision}); the model was not written")
    sidecar = Sidecar(
        model=model.cfg.model_name, codec=dataclasses.asdict(codec), input_channels=codec.input_nc,
        output_channels=codec.output_nc, size_multiple=multiple,
        tile_size=max(multiple, 256 if multiple <= 256 else multiple), precision=precision, opset=OPSET,
        source=source, parity_max_abs_error=error, parity_shapes=[list(s) for s in shapes],
        config=to_dict(model.cfg), z_dim=z_dim,
        receptive_radius=receptive_radius(net, codec.input_nc, multiple, z_dim),
        bytes_per_pixel=activation_bytes_per_pixel(net, codec.input_nc, multiple, z_dim))
    # Named "model.v2" or "…-T0.25", the file is that name plus ".onnx" (with_suffix would cut the ".2", ".25").
    out_path = out_path if out_path.suffix == ".onnx" else out_path.with_name(f"{out_path.name}.onnx")
    atomic_write_bytes(out_path, model_bytes)
    sidecar.save(sidecar_path(out_path))
    return out_path, sidecar
