"""Position and time embeddings with the official TRELLIS/SS4D conventions (spec §2.1)."""
from __future__ import annotations

import math

import torch
from torch import nn


def timestep_sinusoid(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[cos(t f_i), sin(t f_i)] (cos first), f_i = exp(-ln(max_period) i / (dim/2)); t is already 1000*t."""
    half = dim // 2
    # exponent in float32 as the official code, exp correctly rounded (the reference CPU's float32 exp is)
    expo = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    freqs = torch.exp(expo.double()).float()
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Sinusoid of the model time followed by Linear-SiLU-Linear (keys `mlp.0`, `mlp.2`)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_sinusoid(t, self.frequency_embedding_size)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


def absolute_position_embedding(coords: torch.Tensor, channels: int) -> torch.Tensor:
    """3D sin-cos APE: per axis [sin(p g), cos(p g)] (sin first), g_i = 1e4^(-i/fd), fd = C//3//2;
    axes concatenated, zero-padded to C. coords: [N, 3] integer positions."""
    n, d = coords.shape
    fd = channels // d // 2
    freqs = torch.arange(fd, dtype=torch.float32, device=coords.device) / fd
    freqs = 1.0 / (10000 ** freqs)
    out = torch.outer(coords.reshape(-1).float(), freqs)
    out = torch.cat([torch.sin(out), torch.cos(out)], dim=-1).reshape(n, -1)
    if out.shape[1] < channels:
        out = torch.cat([out, out.new_zeros(n, channels - out.shape[1])], dim=-1)
    return out


class AbsolutePositionEmbedder(nn.Module):
    """Module form of the 3D sin-cos APE (no parameters)."""

    def __init__(self, channels: int, in_channels: int = 3):
        super().__init__()
        self.channels, self.in_channels = channels, in_channels

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return absolute_position_embedding(coords, self.channels)


def rope_1d_phases(pos: torch.Tensor, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Complex phases [len(pos), head_dim/2]: exp(i pos theta_j), theta_j = base^(-j/(D/2))."""
    fd = head_dim // 2
    freqs = torch.arange(fd, dtype=torch.float32, device=pos.device) / fd
    freqs = 1.0 / (base ** freqs)
    ang = torch.outer(pos.float(), freqs)
    return torch.polar(torch.ones_like(ang), ang)


def apply_rope(x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (2j, 2j+1) of the last dim of `x [..., D]` by `phases`, which must
    broadcast against `x[..., D/2]`. Computed in float32, cast back."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * phases).reshape(x.shape).to(x.dtype)


class RotaryPositionEmbedder1D(nn.Module):
    """1D temporal RoPE over the full head dim (adjacent pairs), position = frame index."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        self.head_dim, self.base = head_dim, base

    def phases(self, pos: torch.Tensor) -> torch.Tensor:
        return rope_1d_phases(pos, self.head_dim, self.base)
