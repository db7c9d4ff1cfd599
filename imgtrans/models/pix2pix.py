"""pix2pix (Isola et al. 2017): conditional GAN with an L1 term, U-Net G, PatchGAN D."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from imgtrans.models.gan import GANModel
from imgtrans.models.options import Pix2PixConfig


class Pix2Pix(GANModel):
    """Also the base of the plain conditional GAN: D sees (input, output) pairs."""

    config_class = Pix2PixConfig
    capturable_step = True

    def build_nets(self) -> None:
        codec = self.codec
        self.netG = self.build_G(codec.input_nc, codec.output_nc)
        self.netD = self.build_D(codec.input_nc + codec.output_nc)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.adam(self.netG), "D": self.adam(self.netD)}

    def generator(self):
        return self.netG

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        real_a, real_b = self.to_device(batch["A"]), self.to_device(batch["B"])
        with self.autocast():
            fake_b = self.netG(real_a)

        self.set_requires_grad(self.netD, True)
        with self.autocast():
            loss_d, losses = self.discriminator_loss(self.netD, torch.cat([real_a, real_b], 1),
                                                     torch.cat([real_a, fake_b], 1))
        self.update(self.optimizers["D"], loss_d)

        self.set_requires_grad(self.netD, False)
        with self.autocast():
            losses["G_GAN"] = self.adversarial_loss(self.netD, torch.cat([real_a, fake_b], 1))
            loss_g = losses["G_GAN"]
            if self.cfg.lambda_L1 > 0:
                losses["G_L1"] = F.l1_loss(fake_b.float(), real_b.float()) * self.cfg.lambda_L1
                loss_g = loss_g + losses["G_L1"]
        self.update(self.optimizers["G"], loss_g)
        return losses
