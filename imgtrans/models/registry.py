"""Model registry: entry-point name → model class (its config class hangs off it)."""

from __future__ import annotations

from imgtrans.errors import ImgtransError
from imgtrans.models.base import TranslationModel
from imgtrans.models.bicyclegan import BicycleGAN
from imgtrans.models.cgan import CGAN
from imgtrans.models.cut import CUT, FastCUT
from imgtrans.models.cvae import CVAE
from imgtrans.models.cyclegan import CycleGAN
from imgtrans.models.diffusion import Diffusion
from imgtrans.models.pix2pix import Pix2Pix

MODELS: dict[str, type[TranslationModel]] = {cls.config_class.model_name: cls for cls in (
    Pix2Pix, CycleGAN, CUT, FastCUT, BicycleGAN, CVAE, CGAN, Diffusion)}


def model_class(name: str) -> type[TranslationModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise ImgtransError(f"unknown model '{name}'; valid values: {', '.join(MODELS)}") from None
