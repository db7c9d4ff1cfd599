"""Conditional VAE of the project report “A Comparison of Generative Models for Image Translation”
(NPTU, 2023): encode (input, target) to a Gaussian code, decode it with the input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from imgtrans.config import TrainConfig, opt
from imgtrans.data.codec import Codec
from imgtrans.errors import ImgtransError
from imgtrans.models.base import TranslationModel
from imgtrans.nets.encoders import ConvEncoder, kl_divergence, reparameterize
from imgtrans.nets.naive import CodeDecoder

WIDTHS = (32, 64, 128, 128)


@dataclass
class CVAEConfig(TrainConfig):
    model_name: ClassVar[str] = "cvae"

    batch_size: int = opt(16, "images per step (the “Comparison of Generative Models” report: 64)")
    lr: float = opt(5e-4, "Adam learning rate (the “Comparison of Generative Models” report: 1e-4 in its table, "
                          "2e-3 in its text)")
    beta1: float = opt(0.9, "Adam beta1")
    lr_policy: Literal["linear", "step", "cosine", "constant"] = opt("constant", "learning-rate schedule")
    n_epochs: int = opt(10, "epochs at the initial learning rate (the “Comparison of Generative Models” report: "
                            "10k steps of batch 64)")
    n_epochs_decay: int = opt(0, "epochs of linear decay to zero (linear policy)")
    latent_dim: int = opt(1024, "size of the Gaussian code", ge=1)
    hidden: int = opt(2048, "width of the encoder's fully connected layer", ge=1)
    kl_weight: float = opt(1.0, "weight of the KL term", ge=0)
    recon: Literal["l1", "l2"] = opt("l2", "reconstruction loss, summed over pixels (l2 = sum of squares)")


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

    def configure_optimizers(self) -> None:
        self.optimizers = {"G": self.adam(self.encoder, self.decoder)}

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
