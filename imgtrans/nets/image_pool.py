"""History of generated images for discriminator updates (Shrivastava et al. 2017), as in CycleGAN.

The pool is part of the model's state_dict (via extra state), so a resumed run
continues with the same history.
"""

from __future__ import annotations

import torch
from torch import nn


class ImagePool(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Until full, return the new images and store them; then, per image, with probability ½
        return a stored one (replacing it with the new image), otherwise the new image."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()).item() < 0.5:
                index = int(torch.randint(0, self.size, ()).item())
                out.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def get_extra_state(self):
        return [image.cpu() for image in self.images]

    def set_extra_state(self, state) -> None:
        device = next(iter(self.images), torch.empty(0)).device
        self.images = [image.to(device) for image in state]
