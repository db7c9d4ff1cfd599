"""The plain conditional GAN of the project report “A Comparison of Generative Models for Image
Translation” (NPTU, 2023): no L1 term, no U-Net skips — the weak reference baseline."""

from __future__ import annotations

from imgtrans.models.options import CGANConfig
from imgtrans.models.pix2pix import Pix2Pix
from imgtrans.nets.naive import NaiveDiscriminator, PixelwiseGenerator


class CGAN(Pix2Pix):
    """pix2pix's training step with that report's skip-free dense/upsampling generator."""

    config_class = CGANConfig

    def build_nets(self) -> None:
        cfg, codec = self.cfg, self.codec
        widths = (cfg.ngf, cfg.ngf, -(-2 * cfg.ngf // 3), -(-cfg.ngf // 3))
        self.netG = PixelwiseGenerator(codec.input_nc, codec.output_nc, widths, cfg.dropout_G)
        self.netD = NaiveDiscriminator(codec.input_nc + codec.output_nc, cfg.ndf, cfg.dropout_D)
