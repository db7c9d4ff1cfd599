"""CUT and FastCUT (Park et al. 2020): one-sided unpaired translation with a patchwise contrastive loss.

Works with ResNet and U-Net generators: the generators expose their encoder
activations through `features(x, layers)`, so no hooks into fixed layer
indices are needed.
"""

from __future__ import annotations

import torch

from imgtrans.errors import ImgtransError
from imgtrans.models.gan import GANModel
from imgtrans.models.options import CUTConfig, FastCUTConfig
from imgtrans.nets.layers import init_weights
from imgtrans.nets.losses import patch_nce_loss
from imgtrans.nets.patch_sampler import PatchSampler


class CUT(GANModel):
    config_class = CUTConfig
    unpaired = True
    capturable_step = True

    def build_nets(self) -> None:
        cfg, codec = self.cfg, self.codec
        if codec.input_nc != codec.output_nc:
            raise ImgtransError(f"{cfg.model_name} needs the same channel count on both sides; use color_space=rgb")
        self.netG = self.build_G(codec.input_nc, codec.output_nc)
        self.netD = self.build_D(codec.output_nc)
        spec = cfg.nce_layers or self.netG.default_nce_layers
        try:
            self.layers = sorted({int(v) for v in spec.split(",") if v.strip()})
        except ValueError:
            self.layers = []
        if not self.layers:
            raise ImgtransError(f"invalid nce_layers '{spec}'; expected comma-separated integers")
        with torch.no_grad():
            probe = self.netG.features(torch.zeros(1, codec.input_nc, cfg.crop_size, cfg.crop_size), self.layers)
        if len(probe) != len(self.layers):
            raise ImgtransError(f"nce_layers {spec} do not all exist in netG={cfg.netG}")
        self.netF = init_weights(PatchSampler([f.shape[1] for f in probe], cfg.netF_nc), cfg.init_type, cfg.init_gain)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.adam(self.netG), "D": self.adam(self.netD), "F": self.adam(self.netF)}

    def generator(self):
        return self.netG

    def nce(self, source: torch.Tensor, target: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
        """PatchNCE between the encodings of the source image and of its translation; `flip`: the translation was
        made from the source mirrored, and its encodings are mirrored back to be compared (flip equivariance)."""
        cfg = self.cfg
        feat_q = [mirrored(f, flip) for f in self.netG.features(target, self.layers)]
        feat_k = self.netG.features(source, self.layers)
        keys, ids = self.netF(feat_k, cfg.num_patches)
        queries, _ = self.netF(feat_q, cfg.num_patches, ids)
        return sum(patch_nce_loss(q, k, source.shape[0], cfg.nce_T) for q, k in zip(queries, keys)) / len(keys)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        real_a, real_b = self.to_device(batch["A"]), self.to_device(batch["B"])
        # Flip equivariance (FastCUT): the generator translates its inputs mirrored or not, by a coin drawn on the
        # device (read by no host code), and PatchNCE compares the mirrored-back encodings with the originals'.
        flip = torch.rand((), device=real_a.device) < 0.5 if cfg.flip_equivariance else None
        with self.autocast():
            both = torch.cat([real_a, real_b]) if cfg.nce_idt else real_a
            out = self.netG(mirrored(both, flip))
            fake_b = out[:real_a.shape[0]]
            idt_b = out[real_a.shape[0]:] if cfg.nce_idt else None

        self.set_requires_grad(self.netD, True)
        with self.autocast():
            loss_d, losses = self.discriminator_loss(self.netD, real_b, fake_b)
        self.update(self.optimizers["D"], loss_d)

        self.set_requires_grad(self.netD, False)
        with self.autocast():
            losses["G_GAN"] = self.adversarial_loss(self.netD, fake_b) * cfg.lambda_GAN
            loss_g = losses["G_GAN"]
            if cfg.lambda_NCE > 0:
                losses["NCE"] = self.nce(real_a, fake_b, flip) * cfg.lambda_NCE
                nce_total = losses["NCE"]
                if cfg.nce_idt:
                    losses["NCE_Y"] = self.nce(real_b, idt_b, flip) * cfg.lambda_NCE
                    nce_total = (nce_total + losses["NCE_Y"]) * 0.5
                loss_g = loss_g + nce_total
        self.update([self.optimizers["G"], self.optimizers["F"]], loss_g)
        return losses


def mirrored(x: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
    """`x` mirrored left to right where `flip` (a boolean on the device) is true."""
    return x if flip is None else torch.where(flip, x.flip(-1), x)


class FastCUT(CUT):
    config_class = FastCUTConfig
