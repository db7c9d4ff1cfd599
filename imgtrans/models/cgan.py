"""The plain conditional GAN of the project report “A Comparison of Generative Models for Image
Translation” (NPTU, 2023): no L1 term, no U-Net skips — the weak reference baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from imgtrans.config import TrainConfig, opt
from imgtrans.models.pix2pix import Pix2Pix
from imgtrans.nets.naive import NaiveDiscriminator, PixelwiseGenerator


@dataclass
class CGANConfig(TrainConfig):
    model_name: ClassVar[str] = "cgan"

    beta1: float = opt(0.9, "Adam beta1")
    ngf: int = opt(3, "generator filters in the first layer (the “Comparison of Generative Models” report: 3, "
                      "then 3, 2, 1)", ge=1)
    ndf: int = opt(32, "discriminator filters in the first layer", ge=1)
    dropout_G: float = opt(0.45, "dropout after the generator's dense layer (its only noise)", ge=0, lt=1)
    dropout_D: float = opt(0.3, "dropout after each discriminator conv", ge=0, lt=1)
    gan_mode: Literal["vanilla", "lsgan", "wgangp", "hinge"] = opt("vanilla", "adversarial objective (BCE)")
    lambda_gp: float = opt(10.0, "gradient-penalty weight when gan_mode=wgangp", ge=0)
    lambda_L1: float = opt(0.0, "weight of an L1 term (0 in the baseline)", ge=0)


class CGAN(Pix2Pix):
    """pix2pix's training step with that report's skip-free dense/upsampling generator."""

    config_class = CGANConfig

    def build_nets(self) -> None:
        cfg, codec = self.cfg, self.codec
        widths = (cfg.ngf, cfg.ngf, -(-2 * cfg.ngf // 3), -(-cfg.ngf // 3))
        self.netG = PixelwiseGenerator(codec.input_nc, codec.output_nc, widths, cfg.dropout_G)
        self.netD = NaiveDiscriminator(codec.input_nc + codec.output_nc, cfg.ndf, cfg.dropout_D)
