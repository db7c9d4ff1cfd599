"""History of generated images for discriminator updates (Shrivastava et al. 2017), as in CycleGAN.

Until the pool is full each image is stored and returned; then each is, with probability ½, swapped for a
stored one drawn uniformly (the stored one is returned, the new one takes its place), or returned itself.
The pool is a tensor on the model's device and draws with the device's random generator, so a step that
queries it decides nothing on the host and can be captured as a CUDA graph; within one batch the images
are drawn together (the paper's pool takes them one by one: the same for batch 1, as CycleGAN trains). Its
contents are buffers, so checkpoints hold them.
"""

from __future__ import annotations

import torch
from torch import nn


class ImagePool(nn.Module):
    def __init__(self, size: int, shape: tuple[int, ...]):
        super().__init__()
        self.size = size
        # One more row than the pool holds: where images that go nowhere are written (no branch on the host).
        self.register_buffer("images", torch.zeros(size + 1, *shape) if size else torch.zeros(0))
        self.register_buffer("stored", torch.zeros((), dtype=torch.long))

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        images = images.detach()
        n = images.shape[0]
        position = self.stored + torch.arange(n, device=images.device)
        filling = position < self.size
        swap = ~filling & (torch.rand(n, device=images.device) < 0.5)
        drawn = torch.randint(0, self.size, (n,), device=images.device)
        out = torch.where(swap.view(-1, 1, 1, 1), self.images[drawn].to(images.dtype), images)
        target = torch.where(filling, position.clamp(max=self.size), torch.where(swap, drawn, self.size))
        self.images.index_copy_(0, target, images.to(self.images.dtype))
        self.stored.copy_(torch.clamp(self.stored + n, max=self.size))
        return out
