"""The base of the adversarial models: their nets from a `GANConfig`, the GAN objective and its two sides."""

from __future__ import annotations

import torch
from torch import nn

from imgtrans.config import TrainConfig
from imgtrans.data.codec import Codec
from imgtrans.models.base import TranslationModel
from imgtrans.nets.discriminators import build_discriminator, check_patch_size
from imgtrans.nets.generators import build_generator, pretrained_encoders
from imgtrans.nets.layers import init_weights
from imgtrans.nets.losses import GANLoss, gradient_penalty


class GANModel(TranslationModel):
    """Subclasses build their nets in `build_nets()`; the config gives `gan_mode` and `lambda_gp`."""

    divergence_hint = "lower lr or change gan_mode"

    def __init__(self, cfg: TrainConfig, codec: Codec):
        super().__init__(cfg, codec)
        self.build_nets()
        self.gan_loss = GANLoss(cfg.gan_mode)

    def build_nets(self) -> None:
        """Create the model's networks (and any state they keep) from `self.cfg` and `self.codec`."""
        raise NotImplementedError

    def graph_capture_obstacle(self) -> str | None:
        if self.cfg.gan_mode == "wgangp":
            return "gan_mode=wgangp: its gradient penalty is not captured"
        return super().graph_capture_obstacle()

    def param_groups(self, nets: tuple[nn.Module, ...]) -> list[dict]:
        """Pretrained encoders learn at `encoder_lr_factor` × `lr` (one group when that is 1, as the optimizer
        states saved before the option have it)."""
        (group,) = super().param_groups(nets)
        encoders = {id(p) for net in nets for unet in pretrained_encoders(net) for p in unet.encoder.parameters()}
        if not encoders or self.cfg.encoder_lr_factor == 1:
            return [group]
        return [{"params": [p for p in group["params"] if id(p) not in encoders]},
                {"params": [p for p in group["params"] if id(p) in encoders],
                 "lr": self.cfg.lr * self.cfg.encoder_lr_factor}]

    def build_G(self, input_nc: int, output_nc: int, **overrides) -> nn.Module:
        cfg = self.cfg
        lab_colorizer = self.codec.colorization and self.codec.color_space == "lab" and output_nc == 2
        kwargs = dict(ngf=cfg.ngf, norm=cfg.norm, dropout=cfg.dropout, crop_size=cfg.crop_size,
                      upsample=cfg.upsample, gamut=cfg.gamut_bound and lab_colorizer,
                      chroma_blur=cfg.chroma_blur if lab_colorizer else 0.0,
                      chroma_filter=cfg.chroma_filter, encoder_weights=cfg.encoder_weights,
                      encoder_norm=cfg.encoder_norm, full_size_block=cfg.full_size_block) | overrides
        for head in ("colour_classes", "neutral_gate"):  # the heads only a Lab colorizer has
            kwargs[head] = kwargs.get(head, False) and lab_colorizer
        return init_weights(build_generator(kwargs.pop("netG", cfg.netG), input_nc, output_nc, **kwargs),
                            cfg.init_type, cfg.init_gain)

    def build_D(self, input_nc: int, **overrides) -> nn.Module:
        cfg = self.cfg
        kwargs = dict(ndf=cfg.ndf, n_layers=cfg.n_layers_D, norm=cfg.norm, num_D=cfg.num_D) | overrides
        name = kwargs.pop("netD", cfg.netD)
        check_patch_size(cfg.crop_size, name, kwargs["n_layers"], kwargs["num_D"])  # it sees crops of that size
        return init_weights(build_discriminator(name, input_nc, **kwargs), cfg.init_type, cfg.init_gain)

    def discriminator_loss(self, net: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                           prefix: str = "D") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(D(real) vs 1 + D(fake) vs 0) / 2, plus the WGAN-GP penalty when gan_mode=wgangp."""
        fake = fake.detach()
        parts = {f"{prefix}_real": self.gan_loss(net(real), True), f"{prefix}_fake": self.gan_loss(net(fake), False)}
        total = (parts[f"{prefix}_real"] + parts[f"{prefix}_fake"]) * 0.5
        if self.cfg.gan_mode == "wgangp":
            parts[f"{prefix}_gp"] = gradient_penalty(net, real, fake, self.cfg.lambda_gp)
            total = total + parts[f"{prefix}_gp"]
        return total, parts

    def adversarial_loss(self, net: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        """The generator's term: make `net` call `fake` real."""
        return self.gan_loss(net(fake), True, for_discriminator=False)
