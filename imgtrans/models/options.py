"""Every model's options: one config dataclass per entry point, importable without torch.

The first line of a config's docstring is its entry point's help; the fields are its flags and MLproject
parameters (see `imgtrans.config`). The model that trains with a config names it as its `config_class`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from imgtrans.config import (
    LAB,
    NETG_HELP,
    RANDOM_SCALE_HELP,
    WGANGP,
    GANConfig,
    InitType,
    InstanceNormGANConfig,
    LatentNetG,
    NetG,
    Preprocess,
    SelfEnsemble,
    TrainConfig,
    UnpairedGANConfig,
    opt,
)
from imgtrans.errors import ImgtransError

BETA_SCHEDULES = {"schedule": ("linear", "scaled_linear", "sigmoid")}
SIGNAL_COSINE = {"schedule": ("signal_cosine",)}
NCE = {"lambda_NCE": lambda weight: weight > 0}
COLOUR_CLASSES = {"colorization_loss": ("classification", "both")}
NEUTRAL_GATE = {"neutral_gate": (True,)}
MAX_NEUTRAL_BLUR = 16
MAX_INFERENCE_SCALE = 2.0


# What `evaluate` and `export` may decode a trained Lab colorizer with instead of its own settings, and the value
# that asks for its own.
INFERENCE_OPTIONS = {"class_temperature": 0.0, "self_ensemble": "own", "neutral_odds": 0.0, "neutral_blur": -1,
                     "inference_scale": 0.0}
# What each needs of the model, in the one line that refuses it to a model without.
_CLASSES_NEEDED = "colour classes (colorization_loss=classification or both)"
_GATE_NEEDED = "a neutral gate (neutral_gate=true)"
INFERENCE_NEEDS = {"class_temperature": _CLASSES_NEEDED, "self_ensemble": _CLASSES_NEEDED,
                   "neutral_odds": _GATE_NEEDED, "neutral_blur": _GATE_NEEDED, "inference_scale": _CLASSES_NEEDED}
# How each shows in a run's or file's name: evaluate-T0.25-…, export-ens-hflip-…, evaluate-odds1.5-…, …-nblur0-…,
# …-x1.25-…
INFERENCE_NAMES = {"class_temperature": "T{:g}", "self_ensemble": "ens-{}", "neutral_odds": "odds{:g}",
                   "neutral_blur": "nblur{}", "inference_scale": "x{:g}"}


def class_temperature_override(effect: str):
    return opt(0.0, "decode the model's colour classes at this temperature instead of its own class_temperature "
                    f"(lower: more saturated, and wrong more boldly); 0 = its own; {effect}", ge=0, le=1)


def self_ensemble_override(effect: str):
    return opt("own", "average the model's colour-class and gate scores over these mirror images instead of its own "
                      "self_ensemble (none: 1 pass, hflip: 2, flips: 4, dihedral: 8; fewer is faster); own = its "
                      f"own; {effect}")


def neutral_odds_override(effect: str):
    return opt(0.0, "divide the gate's odds that a pixel is gray by this instead of the model's own neutral_odds "
                    f"(above 1: fewer pixels lose their colour, and the cast rises); 0 = its own; {effect}", ge=0)


def neutral_blur_override(effect: str):
    return opt(-1, "average the gate's logit over a box of this radius (px) instead of the model's own neutral_blur "
                   f"(0: each pixel decides alone); -1 = its own; {effect}", ge=-1, le=MAX_NEUTRAL_BLUR)


def inference_scale_override(effect: str):
    return opt(0.0, "compute the colour and gate heads on the input enlarged by this instead of the model's own "
                    f"inference_scale (1: the input as it is); 0 = its own; {effect}", ge=0, le=MAX_INFERENCE_SCALE)


def inference_options(cfg) -> dict:
    """The inference options an `evaluate` or `export` config sets to other than the model's own."""
    return {name: getattr(cfg, name) for name, own in INFERENCE_OPTIONS.items() if getattr(cfg, name) != own}


def describe_inference(options: dict) -> tuple[str, str]:
    """(a part of a run's or file's name, e.g. "T0.25-ens-hflip"; a phrase, e.g. "class_temperature 0.25,
    self_ensemble hflip") for the inference options set; empty strings for none."""
    short = "-".join(INFERENCE_NAMES[name].format(value) for name, value in options.items())
    return short, ", ".join(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
                            for name, value in options.items())


@dataclass
class Pix2PixConfig(GANConfig):
    """pix2pix (Isola et al. 2017): conditional GAN with an L1 term, U-Net G, PatchGAN D."""

    model_name: ClassVar[str] = "pix2pix"

    netG: Literal["auto", NetG] = opt(
        "auto", "generator; auto = efficientnet_lite0_unet for Lab colorization (color_space=lab: the Lab colorizer "
                f"measured best, docs/MODEL_ZOO.md), unet otherwise; {NETG_HELP}")
    colorization_loss: Literal["l1", "classification", "both"] = opt(
        "both", "lab: how the colours are learned: L1 on a,b (regresses to the mean colour), the class-rebalanced "
                "cross-entropy over quantised a,b decoded by the annealed mean (Zhang et al., “Colorful Image "
                "Colorization”), or both", when=LAB, saved_before="l1")
    lambda_L1: float = opt(100.0, "weight of the L1 term", when={"colorization_loss": ("l1", "both")}, ge=0)
    lambda_class: float = opt(1.0, "weight of the colour-class cross-entropy", when=LAB | COLOUR_CLASSES, ge=0)
    class_resolution: Literal["full", "quarter"] = opt(
        "quarter", "where the colour classes are scored: at every pixel, or, as Zhang et al. do, at a quarter of "
                   "the resolution, upsampled (a fraction of the cost)", when=LAB | COLOUR_CLASSES,
        saved_before="full")
    class_temperature: float = opt(
        0.3, "the annealed mean's temperature at inference (validation, evaluate, export; training decodes at the "
             "paper's 0.38): lower is nearer the most likely colour — more saturated, and wrong more boldly; the gate "
             "decides at it too (neutral_annealing); 0.3 with inference_scale 1.25 and neutral_odds 0.35 met the "
             "most colour targets on photographs and synthetic-aerial (docs/MODEL_ZOO.md)",
        when=LAB | COLOUR_CLASSES, gt=0, le=1)
    neutral_gate: bool = opt(
        True, "lab: a per-pixel gate that learns where the target is gray (chroma below 5) and takes the colour "
              "off those pixels — thin gray roads and roofs the colour around them would otherwise tint",
        when=LAB, saved_before=False)
    lambda_neutral: float = opt(10.0, "weight of the neutral gate's cross-entropy", when=LAB | NEUTRAL_GATE, ge=0)
    neutral_gray_weight: float = opt(
        10.0, "how many times a gray target pixel counts against a coloured one in the gate's cross-entropy: gray "
              "pixels are few (7.5% of synthetic-aerial's training pixels), and counted once each the gate stays "
              "unsure of them",
        when=LAB | NEUTRAL_GATE, gt=0, saved_before=1.0)
    self_ensemble: SelfEnsemble = opt(
        "flips", "inference (validation, evaluate, export): average the colour classes' and the gate's scores over the "
                 "input and its mirror images, each mirrored back (the geometric self-ensemble of EDSR): hflip adds "
                 "the left-right mirror (2 passes), flips also upside down and both (4), dihedral also those "
                 "transposed (8); none = one pass; evaluate and export can choose another",
        when=LAB | COLOUR_CLASSES, saved_before="none")
    neutral_annealing: bool = opt(
        True, "decode the gate's gray-or-colour decision by the annealed mean as the colour classes are, at their "
              "temperature (p = sigmoid(logit / T)): an unsure gate otherwise takes part of the colour off every pixel",
        when=LAB | COLOUR_CLASSES | NEUTRAL_GATE, saved_before=False)
    neutral_odds: float = opt(
        0.35, "inference (validation, evaluate, export): the gate's odds that a pixel is gray divided by this — "
              "above 1, fewer pixels lose their colour, muted ones keep more, and the cast rises; below 1, the "
              "reverse (training decides at 1): 0.35, with inference_scale 1.25 and class_temperature 0.3, met the "
              "most colour targets on photographs and synthetic-aerial (docs/MODEL_ZOO.md); evaluate and export can "
              "choose another",
        when=LAB | NEUTRAL_GATE, gt=0, saved_before=1.0)
    neutral_blur: int = opt(
        2, "inference (validation, evaluate, export): radius (px) of the box the gate's logit is averaged over before "
           "it decides: a pixel called gray alone inside a coloured region keeps the region's colour, a gray band "
           "wider than the box stays gray (training decides per pixel): on photographs 2 gains SSIM, on "
           "synthetic-aerial thin gray roads take their fields' colour; 0 = off; evaluate and export can choose "
           "another", when=LAB | NEUTRAL_GATE, ge=0, le=MAX_NEUTRAL_BLUR, saved_before=0)
    inference_scale: float = opt(
        1.25, "inference (validation, evaluate, export): the heads computed on the input enlarged by this factor "
              "(bilinearly, the sides rounded to multiples of the generator's, in steps of 0.001), their scores "
              "brought back to the input's size before they are decoded — on photographs 1.25 paints more of their "
              "colour — at up to the square of its cost (training colours at 1); evaluate and export can choose "
              "another", when=LAB | COLOUR_CLASSES, ge=1, le=MAX_INFERENCE_SCALE, saved_before=1.0)
    lambda_perceptual: float = opt(
        0.3, "lab: weight of a perceptual term, the mean squared distance between the ImageNet activations "
             "(EfficientNet-Lite0's, at 1/2, 1/4 and 1/8 of the size) of the output and the target: their L is the "
             "input's, so it weighs colour as a classifier of photographs sees it; 0 = off",
        when=LAB, ge=0, saved_before=0.0)
    lambda_chroma: float = opt(
        50.0, "lab: weight of a chroma-distribution term, the 1-D Wasserstein distance between the output's and the "
               "target's chroma over each image's pixels: blind to hue and place, it penalises a washed-out output "
               "without saying which colour goes where; 0 = off",
        when=LAB, ge=0, saved_before=0.0)

    # Batch norm at batch 1 normalises each tile by its own statistics: a tile of one colour (a night sky, a wall, a
    # red saucer) reaches the decoder as its deviations from its own mean, and the decoder cannot tell the
    # photographs' skies and saucers apart; without it the Lab colorizer fits them (docs/MODEL_ZOO.md).
    norm: Literal["auto", "batch", "instance", "none"] = opt(
        "auto", "normalisation layers of the generator (an encoder U-Net's decoder) and the discriminator; auto = "
                "none for Lab colorization (color_space=lab), batch otherwise")

    # Lab colorization: trained at scales down to the one it colours at (evaluate and translate do not resize), its
    # gate told gray from colour better on photographs it had not seen (docs/MODEL_ZOO.md).
    preprocess: Literal["auto", Preprocess] = opt(
        "auto", "training-time resizing and cropping; auto = random_scale_and_crop for Lab colorization "
                f"(color_space=lab), the reference code's resize_and_crop otherwise; {RANDOM_SCALE_HELP}")

    # Lab colorization: its pretrained encoder adapts slowly (encoder_lr_factor), and at twice the quickstart's
    # length it met more of the photographs' targets (docs/MODEL_ZOO.md).
    n_epochs: int = opt(-1, "epochs at the initial learning rate (linear policy); -1 = auto: 2 for Lab colorization "
                            "(color_space=lab), 1 otherwise", ge=-1)
    n_epochs_decay: int = opt(-1, "epochs of linear decay to zero (linear policy); -1 = auto: 2 for Lab colorization, "
                                  "1 otherwise", ge=-1)

    def __post_init__(self) -> None:
        # Resolved at once: params, run names and checkpoints hold the generator and the length themselves.
        lab = self.color_space == "lab"
        if self.netG == "auto":
            self.netG = "efficientnet_lite0_unet" if lab else "unet"
        if self.norm == "auto":
            self.norm = "none" if lab else "batch"
        if self.preprocess == "auto":
            self.preprocess = "random_scale_and_crop" if lab else "resize_and_crop"
        if self.n_epochs < 0:
            self.n_epochs = 2 if lab else 1
        if self.n_epochs_decay < 0:
            self.n_epochs_decay = 2 if lab else 1

    def validate(self) -> None:
        super().validate()
        if self.colorization_loss == "classification" and self.color_space != "lab":  # rgb learns by L1 alone
            raise ImgtransError("colorization_loss=classification needs color_space=lab (and a colorization "
                                "dataset); use colorization_loss=l1 for rgb")


@dataclass
class CycleGANConfig(UnpairedGANConfig):
    """CycleGAN (Zhu et al. 2017): two generators and two discriminators, cycle-consistent on unpaired data."""

    model_name: ClassVar[str] = "cyclegan"

    lambda_A: float = opt(10.0, "weight of the cycle loss A → B → A", ge=0)
    lambda_B: float = opt(10.0, "weight of the cycle loss B → A → B", ge=0)
    lambda_identity: float = opt(0.5, "identity loss weight, relative to lambda_A/B; 0 disables it", ge=0)
    pool_size: int = opt(50, "generated images kept for discriminator updates; 0 = none", ge=0)


@dataclass
class CUTConfig(UnpairedGANConfig):
    """CUT (Park et al. 2020): one-sided unpaired translation with a patchwise contrastive loss."""

    model_name: ClassVar[str] = "cut"

    init_type: InitType = opt("xavier", "weight initialisation")
    lambda_GAN: float = opt(1.0, "weight of the adversarial loss", ge=0)
    lambda_NCE: float = opt(1.0, "weight of the PatchNCE loss", ge=0)
    nce_idt: bool = opt(True, "also apply PatchNCE to G(B) vs B (identity)", when=NCE)
    nce_layers: str = opt("", "comma-separated generator layers for PatchNCE; empty = the generator's default",
                          when=NCE)
    nce_T: float = opt(0.07, "PatchNCE temperature", when=NCE, gt=0)
    num_patches: int = opt(256, "patches sampled per layer and image", when=NCE, ge=1)
    netF_nc: int = opt(256, "width of the projection MLP", when=NCE, ge=1)
    flip_equivariance: bool = opt(False, "randomly flip inputs to enforce flip equivariance (FastCUT)")


@dataclass
class FastCUTConfig(CUTConfig):
    """FastCUT (Park et al. 2020): CUT with λ_NCE 10, no NCE identity, flip equivariance."""

    model_name: ClassVar[str] = "fastcut"

    lambda_NCE: float = opt(10.0, "weight of the PatchNCE loss")
    nce_idt: bool = opt(False, "also apply PatchNCE to G(B) vs B (identity)", when=NCE)
    flip_equivariance: bool = opt(True, "randomly flip inputs to enforce flip equivariance")


@dataclass
class BicycleGANConfig(InstanceNormGANConfig):
    """BicycleGAN (Zhu et al. 2017): multimodal translation from cVAE-GAN + cLR-GAN."""

    model_name: ClassVar[str] = "bicyclegan"
    validation_metrics: ClassVar[tuple[str, ...]] = (*InstanceNormGANConfig.validation_metrics, "val/diversity_l1")

    batch_size: int = opt(2, "images per step")
    # Not the encoder U-Nets: their ImageNet encoder takes the image alone, not the image and its latent code.
    netG: LatentNetG = opt("unet", "generator; unet = U-Net as deep as the crop allows (unet_256 at 256 px, "
                                   "unet_128 at 128 px)")
    init_type: InitType = opt("xavier", "weight initialisation")
    num_D: int = opt(2, "discriminators at successively halved scales")
    nz: int = opt(8, "latent code size", ge=1)
    netE: Literal["resnet", "conv"] = opt("resnet", "encoder of B into z")
    nef: int = opt(64, "encoder filters in the first layer", ge=1)
    where_add: Literal["input", "all"] = opt("input", "where z enters G: its input only, or every encoder level")
    shared_D: bool = opt(False, "one discriminator for both cycles instead of two")
    lambda_L1: float = opt(10.0, "weight of the L1 reconstruction of B", ge=0)
    lambda_kl: float = opt(0.01, "weight of the KL term on the encoded z", ge=0)
    lambda_z: float = opt(0.5, "weight of the latent regression |E(G(A, z)) − z|", ge=0)
    n_samples: int = opt(5, "outputs drawn per input at validation, for the diversity score and grids", ge=1)


@dataclass
class CVAEConfig(TrainConfig):
    """conditional VAE of the report “A Comparison of Generative Models for Image Translation”."""

    model_name: ClassVar[str] = "cvae"
    distinguishing: ClassVar[tuple[str, ...]] = ("recon",)

    batch_size: int = opt(16, "images per step (the “Comparison of Generative Models” report: 64)")
    lr: float = opt(5e-4, "Adam learning rate (the “Comparison of Generative Models” report: 1e-4 in its table, "
                          "2e-3 in its text)")
    beta1: float = opt(0.9, "Adam beta1")
    lr_policy: Literal["linear", "step", "cosine", "constant"] = opt("constant", "learning-rate schedule")
    n_epochs: int = opt(10, "epochs at the initial learning rate (the “Comparison of Generative Models” report: "
                            "10k steps of batch 64)")
    n_epochs_decay: int = opt(0, "epochs of linear decay to zero (linear policy)")
    latent_dim: int = opt(1024, "size of the Gaussian code", ge=1)
    hidden: int = opt(2048, "width of the encoder's fully connected layer", ge=1)
    kl_weight: float = opt(1.0, "weight of the KL term", ge=0)
    recon: Literal["l1", "l2"] = opt("l2", "reconstruction loss, summed over pixels (l2 = sum of squares)")


@dataclass
class CGANConfig(TrainConfig):
    """the plain conditional GAN baseline of the report “A Comparison of Generative Models for Image Translation”."""

    model_name: ClassVar[str] = "cgan"
    distinguishing: ClassVar[tuple[str, ...]] = ("gan_mode",)

    beta1: float = opt(0.9, "Adam beta1")
    ngf: int = opt(3, "generator filters in the first layer (the “Comparison of Generative Models” report: 3, "
                      "then 3, 2, 1)", ge=1)
    ndf: int = opt(32, "discriminator filters in the first layer", ge=1)
    dropout_G: float = opt(0.45, "dropout after the generator's dense layer (its only noise)", ge=0, lt=1)
    dropout_D: float = opt(0.3, "dropout after each discriminator conv", ge=0, lt=1)
    gan_mode: Literal["vanilla", "lsgan", "wgangp", "hinge"] = opt(
        "vanilla", "adversarial objective; vanilla (BCE) is the report's baseline")
    lambda_gp: float = opt(10.0, "gradient-penalty weight when gan_mode=wgangp", when=WGANGP, ge=0)
    lambda_L1: float = opt(0.0, "weight of an L1 term (0 in the baseline)", ge=0)


@dataclass
class DiffusionConfig(TrainConfig):
    """denoising diffusion (DDPM training, DDIM or DDPM sampling), conditional or unconditional."""

    model_name: ClassVar[str] = "diffusion"
    distinguishing: ClassVar[tuple[str, ...]] = ("schedule", "prediction")

    crop_size: int = opt(64, "training crop size in pixels")
    batch_size: int = opt(8, "images per step")
    lr: float = opt(2e-4, "AdamW learning rate")
    beta1: float = opt(0.9, "AdamW beta1")
    weight_decay: float = opt(5e-5, "AdamW weight decay", ge=0)
    lr_policy: Literal["linear", "step", "cosine", "constant"] = opt("constant", "learning-rate schedule")
    n_epochs: int = opt(15, "epochs at the initial learning rate")
    n_epochs_decay: int = opt(0, "epochs of linear decay to zero (linear policy)")
    conditional: bool = opt(True, "condition on the source image (false: generate from noise)")
    schedule: Literal["linear", "scaled_linear", "cosine", "sigmoid", "signal_cosine"] = opt(
        "cosine", "noise schedule")
    timesteps: int = opt(1000, "diffusion steps T", ge=2)
    beta_start: float = opt(1e-4, "first β (linear, scaled_linear, sigmoid)", when=BETA_SCHEDULES, gt=0, lt=1)
    beta_end: float = opt(0.02, "last β (linear, scaled_linear, sigmoid)", when=BETA_SCHEDULES, gt=0, lt=1)
    min_signal_rate: float = opt(0.02, "signal_cosine: √ᾱ at the noisiest step", when=SIGNAL_COSINE, gt=0, lt=1)
    max_signal_rate: float = opt(0.95, "signal_cosine: √ᾱ at the cleanest step", when=SIGNAL_COSINE, gt=0, lt=1)
    prediction: Literal["eps", "v"] = opt("v", "what the network predicts (v converges faster than eps here)")
    sampler: Literal["ddim", "ddpm", "dpmpp_2m"] = opt(
        "ddim", "reverse process used for samples; dpmpp_2m = DPM-Solver++(2M), deterministic, for 10–20 steps")
    sample_steps: int = opt(50, "denoising steps when sampling", ge=1)
    val_sample_steps: int = opt(20, "denoising steps for the validation samples", ge=1)
    eta: float = opt(0.0, "DDIM stochasticity (0 = deterministic)", when={"sampler": ("ddim",)}, ge=0, le=1)
    clip_sample: bool = opt(True, "clip each sampling step's predicted clean image to [-1, 1]")
    base_channels: int = opt(32, "U-Net width at full resolution", ge=1)
    channel_mults: str = opt("1,2,4", "width multipliers per resolution level")
    num_res_blocks: int = opt(2, "residual blocks per level", ge=1)
    attention_levels: str = opt("2", "levels (0 = full resolution) with self-attention")
    dropout_rate: float = opt(0.0, "dropout in the residual blocks", ge=0, lt=1)
    ema_decay: float = opt(0.999, "EMA decay of the sampling weights, warmed up as min(decay, (1+n)/(10+n)) "
                                  "after n steps", ge=0, le=1)
    val_images: int = opt(16, "validation images for val/psnr, val/ssim and val/kid each epoch, each fully sampled")
    inception_weights: str = opt("", "path of weights-inception-2015-12-05-6726825d.pth for val/kid; default: the "
                                     "torch hub cache (val/kid is skipped, with a warning, when absent)")
