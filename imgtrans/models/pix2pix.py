"""pix2pix (Isola et al. 2017): conditional GAN with an L1 term, U-Net G, PatchGAN D."""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from imgtrans.models.gan import GANModel
from imgtrans.models.options import Pix2PixConfig
from imgtrans.nets.colour_classes import ClassColourGenerator

# Training images the colour classes' prior is counted on (a few hundred give it its shape).
PRIOR_IMAGES = 512


class Pix2Pix(GANModel):
    """Also the base of the plain conditional GAN: D sees (input, output) pairs."""

    config_class = Pix2PixConfig
    capturable_step = True

    def build_nets(self) -> None:
        codec = self.codec
        self.netG = self.build_G(codec.input_nc, codec.output_nc, colour_classes=self.cfg.colorization_loss != "l1")
        self.netD = self.build_D(codec.input_nc + codec.output_nc)

    def fit_to_data(self, train: Dataset) -> None:
        if isinstance(self.netG, ClassColourGenerator):  # the colour classes' prior, for the rebalancing weights
            self.netG.classes.fit_prior(train[i]["B"][None] for i in range(min(len(train), PRIOR_IMAGES)))

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.adam(self.netG), "D": self.adam(self.netD)}

    def generator(self):
        return self.netG

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        real_a, real_b = self.to_device(batch["A"]), self.to_device(batch["B"])
        classifier = self.netG if isinstance(self.netG, ClassColourGenerator) else None
        with self.autocast():
            if classifier is None:
                fake_b = self.netG(real_a)
            else:
                logits = classifier.logits(real_a)
                fake_b = classifier.decode(real_a, logits)

        self.set_requires_grad(self.netD, True)
        with self.autocast():
            loss_d, losses = self.discriminator_loss(self.netD, torch.cat([real_a, real_b], 1),
                                                     torch.cat([real_a, fake_b], 1))
        self.update(self.optimizers["D"], loss_d)

        self.set_requires_grad(self.netD, False)
        with self.autocast():
            losses["G_GAN"] = self.adversarial_loss(self.netD, torch.cat([real_a, fake_b], 1))
            if self.cfg.lambda_L1 > 0 and (classifier is None or self.cfg.colorization_loss == "both"):
                losses["G_L1"] = F.l1_loss(fake_b.float(), real_b.float()) * self.cfg.lambda_L1
            if classifier is not None:
                losses["G_class"] = classifier.classes.loss(logits, real_b) * self.cfg.lambda_class
            loss_g = sum(losses[k] for k in ("G_GAN", "G_L1", "G_class") if k in losses)
        self.update(self.optimizers["G"], loss_g)
        return losses
