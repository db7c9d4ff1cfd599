"""Conditional VAE of the project report “A Comparison of Generative Models for Image Translation”
(NPTU, 2023): encode (input, target) to a Gaussian code, decode it with the input."""

from __future__ import annotations

import torch

from imgtrans.data.codec import Codec
from imgtrans.errors import ImgtransError
from imgtrans.models.base import TranslationModel
from imgtrans.models.options import CVAEConfig
from imgtrans.nets.encoders import ConvEncoder, kl_divergence, reparameterize
from imgtrans.nets.naive import CodeDecoder

WIDTHS = (32, 64, 128, 128)


class CVAE(TranslationModel):
    config_class = CVAEConfig

    def __init__(self, cfg: CVAEConfig, codec: Codec):
        super().__init__(cfg, codec)
        if cfg.crop_size % 2 ** len(WIDTHS):
            raise ImgtransError(f"cvae needs crop_size to be a multiple of {2 ** len(WIDTHS)}, got {cfg.crop_size}")
        cells = cfg.crop_size // 2 ** len(WIDTHS)
        self.encoder = ConvEncoder(codec.input_nc + codec.output_nc, cfg.latent_dim, WIDTHS, kernel=3,
                                   flat_size=cells, hidden=cfg.hidden)
        self.decoder = CodeDecoder(codec.input_nc, codec.output_nc, cfg.latent_dim, cfg.crop_size, WIDTHS)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.adam(self.encoder, self.decoder)}

    def generator(self):
        return self.decoder

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        x, y = self.to_device(batch["A"]), self.to_device(batch["B"])
        with self.autocast():
            mu, logvar = self.encoder(torch.cat([x, y], 1))
            out = self.decoder(x, reparameterize(mu.float(), logvar.float()))
        diff = out.float() - y.float()
        per_image = diff.abs() if cfg.recon == "l1" else diff.pow(2)
        losses = {"recon": per_image.flatten(1).sum(1).mean(),
                  "KL": kl_divergence(mu.float(), logvar.float()) * cfg.kl_weight}
        self.update(self.optimizers["G"], losses["recon"] + losses["KL"])
        return losses
