"""The denoiser: a U-Net with sinusoidal time embedding, residual blocks and attention at low resolution."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from imgtrans.nets.layers import Generator


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer (or continuous) timesteps, as in the Transformer and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], 1)


def _norm(channels: int) -> nn.GroupNorm:
    """Up to 32 groups of at least 4 channels; any width works (the group count must divide it)."""
    return nn.GroupNorm(math.gcd(min(32, channels // 4) or 1, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(temb, cout))
        self.out_layers = nn.Sequential(_norm(cout), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.time(temb)[:, :, None, None].to(x.dtype)
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.heads = heads if channels % heads == 0 else 1
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (n, heads, hw, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class DiffusionUNet(Generator):
    def __init__(self, in_channels: int, out_channels: int, base: int = 64, mults: tuple[int, ...] = (1, 2, 4),
                 num_res_blocks: int = 2, attention_levels: tuple[int, ...] = (2,), dropout: float = 0.0):
        super().__init__()
        temb = base * 4
        self.base = base
        self.size_multiple = 2 ** (len(mults) - 1)
        self.time_mlp = nn.Sequential(nn.Linear(base, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [base], base
        for level, mult in enumerate(mults):
            for _ in range(num_res_blocks):
                block = nn.ModuleList([ResBlock(ch, base * mult, temb, dropout)])
                ch = base * mult
                if level in attention_levels:
                    block.append(Attention(ch))
                self.down.append(block)
                skips.append(ch)
            if level < len(mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, temb, dropout), Attention(ch), ResBlock(ch, ch, temb, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for i in range(num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(ch + skips.pop(), base * mult, temb, dropout)])
                ch = base * mult
                if level in attention_levels:
                    block.append(Attention(ch))
                if level > 0 and i == num_res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(ch, ch, 3, padding=1))
                self.up.append(block)
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    @staticmethod
    def _run(block: nn.ModuleList, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for layer in block:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.base))
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, temb)
            hs.append(h)
        h = self._run(self.mid, h, temb)
        for block in self.up:
            h = self._run(block, torch.cat([h, hs.pop()], 1), temb)
        return self.out(h)
