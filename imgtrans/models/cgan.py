"""The plain conditional GAN of seed 000: no L1 term, no U-Net skips — the weak reference baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from imgtrans.config import TrainConfig, opt
from imgtrans.data.codec import Codec
from imgtrans.errors import ImgtransError
from imgtrans.losses import GANLoss
from imgtrans.models.pix2pix import Pix2Pix
from imgtrans.models.base import TranslationModel
from imgtrans.nets.naive import CodeDecoder, NaiveDiscriminator


@dataclass
class CGANConfig(TrainConfig):
    model_name: ClassVar[str] = "cgan"

    beta1: float = opt(0.9, "Adam beta1")
    ngf: int = opt(32, "generator filters in the first layer")
    ndf: int = opt(32, "discriminator filters in the first layer")
    nz: int = opt(100, "noise dimensions fed to the dense layer of the generator")
    dropout_D: float = opt(0.3, "dropout after each discriminator conv")
    gan_mode: Literal["vanilla", "lsgan", "wgangp", "hinge"] = opt("vanilla", "adversarial objective (BCE)")
    lambda_gp: float = opt(10.0, "gradient-penalty weight when gan_mode=wgangp")
    lambda_L1: float = opt(0.0, "weight of an L1 term (0 in the baseline)")


class CGAN(Pix2Pix):
    """pix2pix's training step with seed 000's skip-free dense/upsampling generator."""

    config_class = CGANConfig

    def __init__(self, cfg: CGANConfig, codec: Codec):
        TranslationModel.__init__(self, cfg, codec)
        widths = tuple(cfg.ngf * m for m in (1, 2, 4, 4))
        if cfg.crop_size % 16:
            raise ImgtransError(f"cgan needs crop_size to be a multiple of 16, got {cfg.crop_size}")
        # PyTorch's default (Kaiming-uniform) init: these nets have no normalisation, and pix2pix's
        # N(0, 0.02) init makes their activations vanish, so G starts (and stays) near a constant image.
        self.netG = CodeDecoder(codec.input_nc, codec.output_nc, cfg.nz, cfg.crop_size, widths, noise_in_training=True)
        self.netD = NaiveDiscriminator(codec.input_nc + codec.output_nc, cfg.ndf, cfg.dropout_D)
        self.gan_loss = GANLoss(cfg.gan_mode)
