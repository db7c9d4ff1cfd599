"""CUT's projection head F: samples the same spatial locations from several feature maps and projects
each patch feature with a small MLP onto the unit sphere."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PatchSampler(nn.Module):
    def __init__(self, channels: list[int], nc: int = 256):
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, nc), nn.ReLU(), nn.Linear(nc, nc)) for c in channels)

    def forward(self, features: list[torch.Tensor], num_patches: int,
                patch_ids: list[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Returns per layer (N·num_patches, nc) normalised patch embeddings, and the ids used, so the
        same locations can be sampled from the other image."""
        out, ids = [], []
        for i, (feat, mlp) in enumerate(zip(features, self.mlps)):
            flat = feat.flatten(2).transpose(1, 2)  # (N, H·W, C)
            if patch_ids is not None:
                chosen = patch_ids[i]
            else:
                # The first patches of a random order, drawn on the feature's device (a CUDA graph can replay it).
                order = torch.rand(flat.shape[1], device=feat.device).argsort()
                chosen = order[:min(num_patches, flat.shape[1])]
            sampled = flat[:, chosen, :].flatten(0, 1)
            out.append(F.normalize(mlp(sampled.float()), dim=1))
            ids.append(chosen)
        return out, ids
