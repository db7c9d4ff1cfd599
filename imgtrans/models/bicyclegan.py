"""BicycleGAN (Zhu et al. 2017): multimodal translation from cVAE-GAN + cLR-GAN.

G(A, z) with z either encoded from the target (cVAE-GAN: reconstruct B) or
drawn from N(0, I) (cLR-GAN: the encoder must recover z from G's output).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from imgtrans.models.gan import GANModel
from imgtrans.models.options import BicycleGANConfig
from imgtrans.nets.encoders import build_encoder, kl_divergence, reparameterize
from imgtrans.nets.generators import with_code
from imgtrans.nets.layers import Generator, init_weights


class ZeroCodeGenerator(Generator):
    """G with the mean code z = 0 by default: the deterministic generator used for export and translate."""

    def __init__(self, model: "BicycleGAN"):
        super().__init__()
        self.model = model.netG
        self.z_dim, self.where_add = model.cfg.nz, model.cfg.where_add
        self.size_multiple = self.model.size_multiple

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = torch.zeros(x.shape[0], self.z_dim, device=x.device, dtype=x.dtype)
        if self.where_add == "all":
            return self.model(x, z)
        return self.model(with_code(x, z))


class BicycleGAN(GANModel):
    config_class = BicycleGANConfig
    multimodal = True

    def build_nets(self) -> None:
        cfg, codec = self.cfg, self.codec
        if cfg.where_add == "all":
            self.netG = self.build_G(codec.input_nc, codec.output_nc, nz=cfg.nz)
        else:
            self.netG = self.build_G(codec.input_nc + cfg.nz, codec.output_nc)
        self.netD = self.build_D(codec.output_nc)
        self.netD2 = None if cfg.shared_D else self.build_D(codec.output_nc)
        self.netE = init_weights(build_encoder(cfg.netE, codec.output_nc, cfg.nz, nef=cfg.nef, norm=cfg.norm),
                                 cfg.init_type, cfg.init_gain)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        discriminators = [self.netD] + ([self.netD2] if self.netD2 is not None else [])
        return {"G": self.adam(self.netG), "E": self.adam(self.netE), "D": self.adam(*discriminators)}

    def generator(self):
        return ZeroCodeGenerator(self)

    def generate(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return ZeroCodeGenerator(self)(x, z)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        real_a, real_b = self.to_device(batch["A"]), self.to_device(batch["B"])
        d_random = self.netD2 if self.netD2 is not None else self.netD
        z_random = torch.randn(real_a.shape[0], cfg.nz, device=real_a.device)
        with self.autocast():
            mu, logvar = self.netE(real_b)
            z_encoded = reparameterize(mu.float(), logvar.float())
            fake_encoded = self.generate(real_a, z_encoded)
            fake_random = self.generate(real_a, z_random)

        discriminators = [self.netD] + ([self.netD2] if self.netD2 is not None else [])
        self.set_requires_grad(discriminators, True)
        with self.autocast():
            loss_d, losses = self.discriminator_loss(self.netD, real_b, fake_encoded, "D")
            loss_d2, parts = self.discriminator_loss(d_random, real_b, fake_random, "D2")
            losses.update(parts)
        self.update(self.optimizers["D"], loss_d + loss_d2)

        self.set_requires_grad(discriminators, False)
        with self.autocast():
            losses["G_GAN"] = self.adversarial_loss(self.netD, fake_encoded)
            losses["G_GAN2"] = self.adversarial_loss(d_random, fake_random)
            losses["G_L1"] = F.l1_loss(fake_encoded.float(), real_b.float()) * cfg.lambda_L1
            losses["kl"] = kl_divergence(mu.float(), logvar.float()) * cfg.lambda_kl
            # Latent regression trains G only: E is frozen while it reads G's output.
            self.set_requires_grad(self.netE, False)
            mu_random, _ = self.netE(fake_random)
            self.set_requires_grad(self.netE, True)
            losses["z_L1"] = F.l1_loss(mu_random.float(), z_random) * cfg.lambda_z
        self.update([self.optimizers["G"], self.optimizers["E"]],
                    sum(losses[k] for k in ("G_GAN", "G_GAN2", "G_L1", "kl", "z_L1")))
        return losses

    @torch.no_grad()
    def samples(self, x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, N, C, H, W): n outputs per input, each from a random z."""
        x = self.to_device(x)
        outs = []
        for _ in range(n):
            z = torch.randn(x.shape[0], self.cfg.nz, generator=generator).to(x.device)
            with self.autocast():
                outs.append(self.generate(x, z).float())
        return torch.stack(outs)

    @torch.no_grad()
    def validation_metrics(self, batch: dict) -> dict[str, float]:
        """Mean pairwise L1 distance between outputs for different z (rgb, [0, 1])."""
        x = batch["A"]
        outs = self.samples(x, max(self.cfg.n_samples, 2), torch.Generator().manual_seed(0)).cpu()
        rgb = torch.stack([self.codec.decode_output(x, o) for o in outs])
        n = rgb.shape[0]
        distances = [(rgb[i] - rgb[j]).abs().mean() for i in range(n) for j in range(i + 1, n)]
        return {"val/diversity_l1": float(torch.stack(distances).mean())}

    @torch.no_grad()
    def visuals(self, batch: dict) -> dict[str, torch.Tensor]:
        """input | outputs for 3 random z | output for z encoded from the target | target."""
        x = batch["A"]
        outs = self.samples(x, 3, torch.Generator().manual_seed(0)).cpu()
        with self.autocast():
            mu, _ = self.netE(self.to_device(batch["B"]))
            encoded = self.generate(self.to_device(x), mu).float().cpu()
        decode = self.codec.decode_output
        return {"input": self.codec.decode_input(x), **{f"random z {i + 1}": decode(x, o) for i, o in enumerate(outs)},
                "z of the target": decode(x, encoded), "target": decode(x, batch["B"])}
