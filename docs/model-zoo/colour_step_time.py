"""CPU seconds per training step of a Lab pix2pix (batch 1, 128 px) for each way of learning colour, timed in
turns in one process so that the machine's drift falls on all of them alike.

    python docs/model-zoo/colour_step_time.py
"""

import statistics
import time

import torch

from imgtrans.data.codec import Codec
from imgtrans.models.options import Pix2PixConfig
from imgtrans.models.pix2pix import Pix2Pix

VARIANTS = {
    "l1": {"colorization_loss": "l1", "neutral_gate": False},
    "l1 + gate": {"colorization_loss": "l1"},
    "both + gate, classes at every pixel": {"class_resolution": "full"},
    "both + gate, classes at a quarter (the default)": {},
}
ROUNDS, STEPS = 6, 4  # the first round warms up


def main() -> None:
    models = {}
    for name, options in VARIANTS.items():
        torch.manual_seed(0)
        # The U-Net the published step times were taken with, before the perceptual term (a Lab pix2pix's netG=auto
        # picks another now, and lambda_perceptual is 0.3).
        model = Pix2Pix(Pix2PixConfig(crop_size=128, color_space="lab", layout="colorization", netG="unet",
                                      lambda_perceptual=0.0, **options),
                        Codec(True, "lab"))
        model.configure_optimizers()
        models[name] = model
    batch = {"A": torch.rand(1, 1, 128, 128) * 2 - 1, "B": (torch.rand(1, 2, 128, 128) - 0.5) * 0.4}
    seconds = {name: [] for name in models}
    for turn in range(ROUNDS):
        for name, model in models.items():
            for _ in range(STEPS):
                start = time.perf_counter()
                model.training_step(batch)
                if turn:
                    seconds[name].append(time.perf_counter() - start)
    for name, values in seconds.items():
        print(f"{name:<50} {statistics.median(values):.3f} s/step")


if __name__ == "__main__":
    main()
