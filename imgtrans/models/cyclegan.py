"""CycleGAN (Zhu et al. 2017): two generators and two discriminators, cycle-consistent on unpaired data."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from imgtrans.errors import ImgtransError
from imgtrans.models.gan import GANModel
from imgtrans.models.options import CycleGANConfig
from imgtrans.nets.image_pool import ImagePool


class CycleGAN(GANModel):
    config_class = CycleGANConfig
    unpaired = True
    capturable_step = True

    def build_nets(self) -> None:
        cfg, codec = self.cfg, self.codec
        if codec.input_nc != codec.output_nc:
            raise ImgtransError("cyclegan needs the same channel count on both sides; use color_space=rgb")
        nc = codec.input_nc
        self.netG_A, self.netG_B = self.build_G(nc, nc), self.build_G(nc, nc)  # A→B, B→A
        self.netD_A, self.netD_B = self.build_D(nc), self.build_D(nc)  # judge B, judge A
        shape = (nc, cfg.crop_size, cfg.crop_size)
        self.pool_A, self.pool_B = ImagePool(cfg.pool_size, shape), ImagePool(cfg.pool_size, shape)  # fake A, fake B

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.adam(self.netG_A, self.netG_B), "D": self.adam(self.netD_A, self.netD_B)}

    def generator(self):
        return self.netG_A

    def local_state(self) -> dict[str, torch.Tensor]:
        """The image pools hold this process's own generated images."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("pool_A.", "pool_B."))}

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        real_a, real_b = self.to_device(batch["A"]), self.to_device(batch["B"])
        self.set_requires_grad([self.netD_A, self.netD_B], False)
        with self.autocast():
            fake_b, fake_a = self.netG_A(real_a), self.netG_B(real_b)
            rec_a, rec_b = self.netG_B(fake_b), self.netG_A(fake_a)
            losses = {"G_A": self.adversarial_loss(self.netD_A, fake_b),
                      "G_B": self.adversarial_loss(self.netD_B, fake_a),
                      "cycle_A": F.l1_loss(rec_a.float(), real_a.float()) * cfg.lambda_A,
                      "cycle_B": F.l1_loss(rec_b.float(), real_b.float()) * cfg.lambda_B}
            if cfg.lambda_identity > 0:
                losses["idt_A"] = F.l1_loss(self.netG_A(real_b).float(), real_b.float()) * cfg.lambda_B * \
                    cfg.lambda_identity
                losses["idt_B"] = F.l1_loss(self.netG_B(real_a).float(), real_a.float()) * cfg.lambda_A * \
                    cfg.lambda_identity
        self.update(self.optimizers["G"], sum(losses.values()))

        self.set_requires_grad([self.netD_A, self.netD_B], True)
        with self.autocast():
            loss_d_a, parts_a = self.discriminator_loss(self.netD_A, real_b, self.pool_B.query(fake_b), "D_A")
            loss_d_b, parts_b = self.discriminator_loss(self.netD_B, real_a, self.pool_A.query(fake_a), "D_B")
        self.update(self.optimizers["D"], loss_d_a + loss_d_b)
        losses.update(D_A=loss_d_a, D_B=loss_d_b)
        return losses

    @torch.no_grad()
    def visuals(self, batch: dict) -> dict[str, torch.Tensor]:
        """A → B → A and B → A → B."""
        real_a, real_b = self.to_device(batch["A"]), self.to_device(batch["B"])
        with self.autocast():
            fake_b, fake_a = self.netG_A(real_a), self.netG_B(real_b)
            rec_a, rec_b = self.netG_B(fake_b), self.netG_A(fake_a)
        decode = self.codec.decode_input
        return {label: decode(t.float().cpu()) for label, t in (("A", real_a), ("A→B", fake_b), ("A→B→A", rec_a),
                                                                 ("B", real_b), ("B→A", fake_a), ("B→A→B", rec_b))}
