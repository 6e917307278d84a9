"""Norms computed in float32 and cast back (official LayerNorm32 / GroupNorm32 / MultiHeadRMSNorm)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm32(nn.LayerNorm):
    """LayerNorm over the last dim, evaluated in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class ChannelLayerNorm32(LayerNorm32):
    """LayerNorm over the channel dim of [B, C, ...] tensors (dense 3D conv VAE)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.dim()
        x = x.permute(0, *range(2, d), 1)
        x = super().forward(x)
        return x.permute(0, d - 1, *range(1, d - 1)).contiguous()


class MultiHeadRMSNorm(nn.Module):
    """y = normalize(x) * gamma[H, D] * sqrt(D), in float32; x is [..., H, D]."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(heads, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x.float(), dim=-1) * self.gamma.float() * self.scale).to(x.dtype)
