"""The options of the `benchmark` command (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imgtrans.config import EXPERIMENT_HELP, opt

BACKENDS = ("eager", "compile", "ort-cpu", "ort-cuda", "ort-cuda-graph", "ort-tensorrt")


@dataclass
class BenchmarkConfig:
    generators: str = opt("unet,resnet_9blocks",
                          "comma-separated generators to time; unet = as deep as the tile allows")
    tile: int = opt(256, "tile size in pixels", ge=1)
    batch_sizes: str = opt("auto", "comma-separated batch sizes; auto = 1,8,16,32,64 on a GPU, 1,4 on a CPU")
    backends: str = opt("auto", "comma-separated: eager, compile, ort-cpu, ort-cuda, ort-cuda-graph (ORT replaying "
                                "a captured CUDA graph), ort-tensorrt; auto = all that apply to this machine")
    precisions: str = opt("auto", "comma-separated: fp32, fp16, bf16; auto = all three on a GPU, fp32 on a CPU")
    repeats: int = opt(0, "timed calls per figure; 0 = 20 on a GPU, 5 on a CPU", ge=0)
    train: bool = opt(False, "also time training steps, plain vs fast path")
    train_models: str = opt("pix2pix,cyclegan", "comma-separated models for the training benchmark")
    train_batch_sizes: str = opt("1,16", "batch sizes for the training benchmark")
    train_steps: int = opt(0, "timed training steps; 0 = 30 on a GPU, 3 on a CPU", ge=0)
    train_width: int = opt(0, "filters in the first layer (ngf, ndf) of the trained models; 0 = their defaults",
                           ge=0)
    sampling: bool = opt(False, "also time conditional diffusion sampling (DDIM and DPM-Solver++(2M), EMA net) per "
                                "image")
    sampling_sizes: str = opt("64,256", "comma-separated image sizes for the sampling benchmark")
    sampling_steps: int = opt(50, "DDIM steps per sample", ge=1)
    fast_sampling_steps: int = opt(15, "DPM-Solver++(2M) steps per sample, timed beside DDIM", ge=1)
    sampling_channels: int = opt(64, "U-Net width for the sampling benchmark (64 with mults 1,2,4,4: 25 M "
                                     "parameters, about the size of the speed targets)", ge=1)
    sampling_batch: int = opt(0, "images per sampling call; 0 = 16 on a GPU, 1 on a CPU", ge=0)
    dip: bool = opt(False, "also time Deep Image Prior iterations (default skip net, width 128)")
    dip_size: int = opt(512, "image size for the DIP benchmark", ge=1)
    dip_iterations: int = opt(0, "timed DIP iterations; 0 = 50 on a GPU, 3 on a CPU", ge=0)
    e2e: bool = opt(False, "also train each of train_models × train_batch_sizes for a few epochs through the real "
                           "loop (loader, validation, checkpoints, MLflow) and compare it with the bare step")
    e2e_epochs: int = opt(0, "epochs per end-to-end run; 0 = 3 on a GPU, 2 on a CPU", ge=0)
    e2e_images: int = opt(0, "training images per end-to-end run; 0 = all 256 of synthetic-facades on a GPU, 8 "
                             "on a CPU", ge=0)
    e2e_tile: int = opt(0, "crop size of the end-to-end runs; 0 = tile on a GPU, 64 on a CPU", ge=0)
    translate: bool = opt(False, "also translate a generated archive of scans through `translate`'s engine with the "
                                 "first of generators, on 1, 2, 4 … every GPU: images/s overall and per GPU, "
                                 "and the scaling")
    translate_images: int = opt(0, "scans in the translate benchmark; 0 = 64 on a GPU, 4 on a CPU", ge=0)
    translate_size: int = opt(0, "side of each scan in pixels; 0 = 2048 on a GPU, 256 on a CPU", ge=0)
    all: bool = opt(False, "every table: inference, training, sampling, DIP, end to end, translate")
    quick: bool = opt(False, "the smallest sizes and fewest repeats everywhere: the same code path in about a minute "
                             "on a CPU (a rehearsal of a GPU session's script)")
    budget_s: float = opt(0.0, "stop starting tables once this many seconds have passed; the report lists those "
                               "left out; 0 = no limit", ge=0)
    output: str = opt("", "also write benchmark.md and benchmark.json into this folder (e.g. $OUT on a lent GPU)")
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "auto picks the GPU when present")
    experiment: str = opt("", EXPERIMENT_HELP)
