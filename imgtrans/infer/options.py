"""The options of the `translate` command (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from imgtrans.config import opt


@dataclass
class TranslateConfig:
    input: str = field(default="", metadata={"help": "a folder (searched recursively), a list file or one image",
                                               "positional": True})
    output: str = field(default="", metadata={"help": "output folder (must not be inside the input folder)",
                                                "positional": True})
    model: str = opt("", "an exported .onnx model, with its .json sidecar beside it")
    tile: int = opt(0, "tile size in pixels; 0 = per image, decided by the model and the image, never the device: "
                       "the whole image when it fits the model's largest tile (2 GiB of activations, measured at "
                       "export), else tiles of that size", ge=0)
    margin: int = opt(-1, "context each tile computes and discards on sides with a neighbour; -1 = the model's "
                          "receptive radius when finite and at most tile/4 (tiles then equal one whole-image pass), "
                          "else tile/8", ge=-1)
    overlap: int = opt(-1, "px over which neighbouring tiles cross-fade (raised cosine); -1 = tile/8 (in whole "
                           "size multiples where the margin covers the receptive radius)", ge=-1)
    batch_size: int = opt(8, "tiles per inference call (fewer when that many would not fit)", ge=1)
    verbose: bool = opt(False, "print each image's tiling and its seam energy (gradients across tile seams vs "
                               "elsewhere; 1.0 = no visible grid)")
    provider: Literal["auto", "tensorrt", "cuda", "cpu"] = opt(
        "auto", "ONNX Runtime execution provider; auto = TensorRT → CUDA → CPU as available")
    output_bits: Literal["auto", "8", "16"] = opt(
        "auto", "bits per channel of the results; auto = 16 for 16-bit or float inputs, 8 otherwise (JPEG: always 8)")
    devices: str = opt("all", "GPUs to translate on, one session each: all, or indices such as 0,2 (local engine)")
    engine: Literal["local", "ray"] = opt("local", "local = this machine; ray = a Ray cluster, one actor per GPU or "
                                                   "CPU slot (needs the extra: pip install imgtrans[ray])")
    ray_address: str = opt("", "the Ray cluster for --engine ray; empty = RAY_ADDRESS, else a local cluster started "
                               "for the run")
    cpus_per_worker: int = opt(1, "CPUs per actor (its ONNX Runtime threads) when the Ray cluster has no GPU", ge=1)
