"""The options of the `dip` and `dip_diffusion` entry points (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from imgtrans.config import RunConfig, opt
from imgtrans.errors import ImgtransError
from imgtrans.files import unwritable_reason

PROGRESSIVE = {"mode": ("progressive",)}
NO_IMAGE = {"image": lambda image: not image}  # a test image of `dataset`


@dataclass
class DIPConfig(RunConfig):
    """Options of the `dip` entry point (the common ones keep their shared names)."""

    model_name: ClassVar[str] = "dip"
    fixed_on_resume: ClassVar[dict[str, str]] = {**RunConfig.fixed_on_resume, **dict.fromkeys(
        ("image", "dataset", "image_index", "noise_std", "clean", "mask", "crop_size"),
        "the checkpoint holds the images the run restores")}
    validation_metrics: ClassVar[tuple[str, ...]] = ("val/psnr", "val/ssim")  # against the clean reference
    distinguishing: ClassVar[tuple[str, ...]] = ("mode", "net")

    # the image
    image: str = opt("", "the image to restore; empty = test image `image_index` of `dataset`")
    dataset: str = opt("synthetic-aerial", "where the image comes from when `image` is empty (its target side)",
                       when=NO_IMAGE)
    image_index: int = opt(0, "which test image of `dataset` to restore", when=NO_IMAGE, ge=0)
    noise_std: float = opt(0.1, "std of the Gaussian noise added to the image (0–1 scale); 0 = the image is "
                                "already degraded", ge=0)
    clean: str = opt("", "a clean reference for an already-degraded image (for dip/psnr_clean)")
    mask: str = opt("", "inpainting mask: an image, white where pixels are known; the loss ignores the rest")
    crop_size: int = opt(0, "centre-crop the image to this size; 0 = the whole image", ge=0)
    output: str = opt("", "also write the restored image to this PNG file (the run keeps it as dip/restored.png)")
    # the network and its input
    net: Literal["skip", "unet", "resnet", "dncnn"] = opt("skip", "the network fitted to the image")
    width: int = opt(128, "channels per layer", ge=1)
    depth: int = opt(5, "levels (skip ≥ 1, unet ≥ 5), residual blocks (resnet) or layers (dncnn)", ge=1)
    input_depth: int = opt(32, "channels of the fixed noise input", ge=1)
    reg_noise_std: float = opt(1 / 30, "std of the noise added to the input at every iteration", ge=0)
    # the optimisation
    mode: Literal["classic", "progressive"] = opt("classic", "classic: fit the degraded image; progressive: "
                                                            "fit its forward-diffusion noisings, strong to weak")
    num_iter: int = opt(3000, "iterations in classic mode", when={"mode": ("classic",)}, ge=1)
    lr: float = opt(0.01, "Adam learning rate", gt=0)
    lambda_perceptual: float = opt(0.0, "weight of the VGG16 perceptual loss added to the MSE", ge=0)
    vgg_weights: str = opt("", "path of vgg16-397923af.pth; default: the torch hub cache")
    schedule: Literal["linear", "scaled_linear", "sigmoid"] = opt("linear", "progressive: β schedule of the stages",
                                                                  when=PROGRESSIVE)
    beta_min: float = opt(0.001, "progressive: β of the weakest-noise stage", when=PROGRESSIVE, gt=0, lt=1)
    beta_max: float = opt(0.01, "progressive: β of the strongest-noise stage", when=PROGRESSIVE, gt=0, lt=1)
    stages: int = opt(10, "progressive: number of targets, from strong to weak noise", when=PROGRESSIVE, ge=2)
    e_max: int = opt(600, "progressive: E_max in E(i) = E_max·(1 − α·exp(−k·β_i))", when=PROGRESSIVE, ge=1)
    e_alpha: float = opt(0.3, "progressive: α in E(i)", when=PROGRESSIVE)
    e_k: float = opt(-100.0, "progressive: k in E(i); negative gives fewer iterations to noisier stages",
                     when=PROGRESSIVE)
    # the common options (seed, device, resume, precision, … come from RunConfig)
    epochs: int = opt(10, "snapshots over the run: sample grid, val/psnr, val/ssim and a checkpoint at each", ge=1)
    max_steps: int = opt(0, "stop after this many iterations; 0 = the mode's full schedule", ge=0)
    batch_size: int = opt(1, "noise-perturbed copies of the input per iteration (their losses are averaged)", ge=1)
    log_every: int = opt(50, "flush the per-iteration metrics to MLflow every this many iterations",
                         bookkeeping=True, ge=1)

    # Without `image` or `dataset` there is nothing to restore (dip_diffusion has its diffusion run's dataset).
    needs_image_source: ClassVar[bool] = True

    def data_label(self) -> str:
        """The image's file name, else the dataset's name and the test image's index."""
        if self.image:
            return Path(self.image).stem
        return f"{Path(self.dataset).expanduser().name or self.dataset}-{self.image_index}" if self.dataset else ""

    def validate(self) -> None:
        super().validate()
        if self.needs_image_source and not self.image and not self.dataset:
            raise ImgtransError("nothing to restore: give image=<file> or dataset=<folder or built-in name>")
        if self.clean and self.noise_std > 0:
            raise ImgtransError("clean is the reference of an image that is already degraded: give noise_std=0 with "
                                "it (with noise_std > 0 the image itself is the clean reference)")
        if self.mode == "progressive" and self.beta_min >= self.beta_max:
            raise ImgtransError(f"beta_min ({self.beta_min:g}) must be below beta_max ({self.beta_max:g})")
        if self.net == "unet" and self.depth < 5:
            raise ImgtransError(f"net=unet needs depth of at least 5, got {self.depth}")
        if self.output:
            out = Path(self.output).expanduser().resolve()
            if out.suffix.lower() != ".png":
                raise ImgtransError(f"output must be a .png file, got {self.output}")
            if any(p and Path(p).expanduser().resolve() == out for p in (self.image, self.clean, self.mask)):
                raise ImgtransError(f"output {self.output} would overwrite an input file; choose another path")
            reason = unwritable_reason(out)
            if reason:
                raise ImgtransError(f"output {self.output} cannot be written ({reason}); choose another path")


@dataclass
class DIPDiffusionConfig(DIPConfig):
    """Options of the `dip_diffusion` entry point: DIP's estimate handed to a trained diffusion model."""

    model_name: ClassVar[str] = "dip_diffusion"

    diffusion_run: str = opt("", "MLflow run id of a trained `diffusion` model")
    dataset: str = opt("", "where the image (and its condition) come from; empty = the diffusion run's dataset")
    condition: str = opt("", "with `image` and a conditional model: the source image it is conditioned on")
    num_iter: int = opt(500, "DIP iterations before handing over to the diffusion model")
    t_start: int = opt(250, "diffusion step the DIP output is noised to (0 … timesteps − 1)", ge=0)
    sample_steps: int = opt(0, "denoising steps from pure noise; 0 = the diffusion model's own; the DIP start "
                               "takes the same spacing over its shorter range", ge=0)

    needs_image_source: ClassVar[bool] = False

    def validate(self) -> None:
        super().validate()
        if not self.diffusion_run:
            raise ImgtransError("diffusion_run is required: the run id of a model trained with "
                                "`mlflow run . -e diffusion`")
