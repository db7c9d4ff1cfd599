"""pix2pix (Isola et al. 2017): conditional GAN with an L1 term, U-Net G, PatchGAN D."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch.nn import functional as F

from imgtrans.config import TrainConfig, opt
from imgtrans.data.codec import Codec
from imgtrans.losses import GANLoss, gradient_penalty
from imgtrans.models.base import TranslationModel
from imgtrans.nets.discriminators import build_discriminator
from imgtrans.nets.generators import build_generator
from imgtrans.nets.layers import init_weights


@dataclass
class Pix2PixConfig(TrainConfig):
    model_name: ClassVar[str] = "pix2pix"

    netG: Literal["unet", "unet_256", "unet_128", "resnet_9blocks", "resnet_6blocks"] = opt(
        "unet", "generator; unet = U-Net as deep as the crop allows (unet_256 at 256 px, unet_128 at 128 px)")
    netD: Literal["basic", "n_layers", "pixel"] = opt("basic", "discriminator: basic = 70×70 PatchGAN")
    n_layers_D: int = opt(3, "PatchGAN layers when netD=n_layers")
    ngf: int = opt(64, "generator filters in the first layer")
    ndf: int = opt(64, "discriminator filters in the first layer")
    norm: Literal["batch", "instance", "none"] = opt("batch", "normalisation layers")
    gan_mode: Literal["vanilla", "lsgan", "wgangp", "hinge"] = opt("vanilla", "adversarial objective")
    lambda_L1: float = opt(100.0, "weight of the L1 term")
    lambda_gp: float = opt(10.0, "gradient-penalty weight when gan_mode=wgangp")
    dropout: bool = opt(True, "dropout in the generator (the pix2pix noise source)")
    init_type: Literal["normal", "xavier", "kaiming", "orthogonal"] = opt("normal", "weight initialisation")
    init_gain: float = opt(0.02, "scale of the initialisation")


class Pix2Pix(TranslationModel):
    config_class = Pix2PixConfig

    def __init__(self, cfg: Pix2PixConfig, codec: Codec):
        super().__init__(cfg, codec)
        self.netG = init_weights(
            build_generator(cfg.netG, codec.input_nc, codec.output_nc, ngf=cfg.ngf, norm=cfg.norm,
                            dropout=cfg.dropout, crop_size=cfg.crop_size), cfg.init_type, cfg.init_gain)
        self.netD = init_weights(
            build_discriminator(cfg.netD, codec.input_nc + codec.output_nc, ndf=cfg.ndf, n_layers=cfg.n_layers_D,
                                norm=cfg.norm), cfg.init_type, cfg.init_gain)
        self.gan_loss = GANLoss(cfg.gan_mode)

    def configure_optimizers(self) -> None:
        self.optimizers = {"G": self.adam(self.netG), "D": self.adam(self.netD)}

    def generator(self):
        return self.netG

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        real_a, real_b = self.to_device(batch["A"]), self.to_device(batch["B"])
        with self.autocast():
            fake_b = self.netG(real_a)

        self.set_requires_grad(self.netD, True)
        with self.autocast():
            fake_pair = torch.cat([real_a, fake_b.detach()], 1)
            real_pair = torch.cat([real_a, real_b], 1)
            loss_d_fake = self.gan_loss(self.netD(fake_pair), False)
            loss_d_real = self.gan_loss(self.netD(real_pair), True)
            losses = {"D_real": loss_d_real, "D_fake": loss_d_fake}
            loss_d = (loss_d_fake + loss_d_real) * 0.5
            if cfg.gan_mode == "wgangp":
                losses["D_gp"] = gradient_penalty(self.netD, real_pair, fake_pair, cfg.lambda_gp)
                loss_d = loss_d + losses["D_gp"]
        self.update(self.optimizers["D"], loss_d)

        self.set_requires_grad(self.netD, False)
        with self.autocast():
            loss_g_gan = self.gan_loss(self.netD(torch.cat([real_a, fake_b], 1)), True, for_discriminator=False)
            loss_g_l1 = F.l1_loss(fake_b.float(), real_b.float()) * cfg.lambda_L1
        self.update(self.optimizers["G"], loss_g_gan + loss_g_l1)
        losses.update(G_GAN=loss_g_gan, G_L1=loss_g_l1)
        return losses
