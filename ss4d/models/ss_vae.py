"""Sparse-structure VAE: dense 3D-conv encoder / decoder of the TRELLIS occupancy latent.

Weight-compatible with TRELLIS ``trellis/models/sparse_structure_vae.py`` (``SparseStructureEncoder`` /
``SparseStructureDecoder``): same constructor arguments, same sub-module names (``input_layer``, ``blocks``,
``middle_block``, ``out_layer``) and therefore the same ``state_dict`` keys and shapes.

Layout is NCDHW with the three spatial axes in the order (x, y, z) of the sparse coordinates.

* ResBlock: ``LN -> SiLU -> conv3 -> LN -> SiLU -> conv3`` plus a skip (1x1x1 conv when channels change).
* Channel LayerNorm: LayerNorm over C for every voxel, affine, eps 1e-5, computed in float32.
* Down-sampling: ``Conv3d(k=2, s=2)``; up-sampling: ``Conv3d(C -> 8*C', 3, pad 1)`` followed by a 3D pixel-shuffle where
  channel ``c*8 + 4i + 2j + k`` becomes sub-voxel ``(i, j, k)`` of output channel ``c``.

``use_fp16`` is accepted for signature compatibility and ignored: parameters stay float32 and every op runs in the
dtype of its input (use ``model.to(dtype)`` or ``torch.autocast`` for reduced precision; the norms always compute in
float32 and cast back).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ChannelLayerNorm32",
    "GroupNorm32",
    "ResBlock3d",
    "DownsampleBlock3d",
    "UpsampleBlock3d",
    "SparseStructureEncoder",
    "SparseStructureDecoder",
    "pixel_shuffle_3d",
]


class ChannelLayerNorm32(nn.LayerNorm):
    """LayerNorm over the channel axis (dim 1) of an ``[N, C, *spatial]`` tensor, computed in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = x.dim()
        h = x.permute(0, *range(2, nd), 1).contiguous().float()
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        h = F.layer_norm(h, self.normalized_shape, w, b, self.eps)
        return h.permute(0, nd - 1, *range(1, nd - 1)).to(x.dtype)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def _norm(norm_type: str, channels: int) -> nn.Module:
    if norm_type == "layer":
        return ChannelLayerNorm32(channels, eps=1e-5)
    if norm_type == "group":
        return GroupNorm32(32, channels, eps=1e-5)
    raise ValueError(f"unknown norm_type {norm_type!r} (expected 'layer' or 'group')")


def pixel_shuffle_3d(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``[B, C*s^3, X, Y, Z] -> [B, C, X*s, Y*s, Z*s]``; channel ``c*s^3 + (i*s + j)*s + k`` -> sub-voxel (i, j, k)."""
    b, c, dx, dy, dz = x.shape
    co = c // scale**3
    x = x.reshape(b, co, scale, scale, scale, dx, dy, dz)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, co, dx * scale, dy * scale, dz * scale)


class ResBlock3d(nn.Module):
    def __init__(self, channels: int, out_channels: int | None = None, norm_type: str = "layer"):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        # registration order = official state_dict order: norm1, norm2, conv1, conv2, skip_connection
        self.norm1 = _norm(norm_type, channels)
        self.norm2 = _norm(norm_type, self.out_channels)
        self.conv1 = nn.Conv3d(channels, self.out_channels, 3, padding=1)
        self.conv2 = nn.Conv3d(self.out_channels, self.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        if channels != self.out_channels:
            self.skip_connection = nn.Conv3d(channels, self.out_channels, 1)
        else:
            self.skip_connection = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip_connection(x)


class DownsampleBlock3d(nn.Module):
    """Halve the resolution: ``Conv3d(k=2, s=2)`` (mode 'conv') or 2x2x2 average pooling (mode 'avgpool')."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "conv"):
        super().__init__()
        if mode not in ("conv", "avgpool"):
            raise ValueError(f"unknown down-sampling mode {mode!r}")
        self.mode = mode
        if mode == "conv":
            self.conv = nn.Conv3d(in_channels, out_channels, 2, stride=2)
        elif in_channels != out_channels:
            raise ValueError("avgpool down-sampling needs in_channels == out_channels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "conv":
            return self.conv(x)
        return F.avg_pool3d(x, 2, stride=2)


class UpsampleBlock3d(nn.Module):
    """Double the resolution: ``Conv3d(C -> 8*C', 3, pad 1)`` + 3D pixel-shuffle (mode 'conv') or nearest."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "conv"):
        super().__init__()
        if mode not in ("conv", "nearest"):
            raise ValueError(f"unknown up-sampling mode {mode!r}")
        self.mode = mode
        if mode == "conv":
            self.conv = nn.Conv3d(in_channels, out_channels * 8, 3, padding=1)
        elif in_channels != out_channels:
            raise ValueError("nearest up-sampling needs in_channels == out_channels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "conv":
            return pixel_shuffle_3d(self.conv(x), 2)
        return F.interpolate(x, scale_factor=2, mode="nearest")


class SparseStructureEncoder(nn.Module):
    """Occupancy grid ``[B, in_channels, R, R, R]`` -> latent ``[B, latent_channels, R/2^(L-1), ...]``."""

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        num_res_blocks: int,
        channels: Sequence[int],
        num_res_blocks_middle: int = 2,
        norm_type: str = "layer",
        use_fp16: bool = False,
    ):
        super().__init__()
        channels = list(channels)
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.num_res_blocks = num_res_blocks
        self.channels = channels
        self.num_res_blocks_middle = num_res_blocks_middle
        self.norm_type = norm_type
        self.use_fp16 = use_fp16  # accepted for compatibility; computation follows the input dtype

        self.input_layer = nn.Conv3d(in_channels, channels[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for i, ch in enumerate(channels):
            blocks += [ResBlock3d(ch, ch, norm_type) for _ in range(num_res_blocks)]
            if i < len(channels) - 1:
                blocks.append(DownsampleBlock3d(ch, channels[i + 1]))
        self.blocks = nn.ModuleList(blocks)
        self.middle_block = nn.Sequential(
            *[ResBlock3d(channels[-1], channels[-1], norm_type) for _ in range(num_res_blocks_middle)]
        )
        self.out_layer = nn.Sequential(
            _norm(norm_type, channels[-1]),
            nn.SiLU(),
            nn.Conv3d(channels[-1], latent_channels * 2, 3, padding=1),
        )

    def forward(
        self,
        x: torch.Tensor,
        sample_posterior: bool = False,
        return_raw: bool = False,
        generator: torch.Generator | None = None,
    ):
        """Returns ``z`` or, with ``return_raw``, ``(z, mean, logvar)``.

        ``z = mean`` unless ``sample_posterior`` (then ``mean + exp(logvar/2) * eps``, ``eps`` drawn with
        ``generator`` on the input's device)."""
        h = self.input_layer(x)
        for block in self.blocks:
            h = block(h)
        h = self.middle_block(h)
        h = self.out_layer(h)
        mean, logvar = h.chunk(2, dim=1)
        if sample_posterior:
            std = torch.exp(0.5 * logvar)
            eps = torch.randn(std.shape, generator=generator, device=std.device, dtype=std.dtype)
            z = mean + std * eps
        else:
            z = mean
        if return_raw:
            return z, mean, logvar
        return z


class SparseStructureDecoder(nn.Module):
    """Latent ``[B, latent_channels, r, r, r]`` -> occupancy logits ``[B, out_channels, r*2^(L-1), ...]``."""

    def __init__(
        self,
        out_channels: int,
        latent_channels: int,
        num_res_blocks: int,
        channels: Sequence[int],
        num_res_blocks_middle: int = 2,
        norm_type: str = "layer",
        use_fp16: bool = False,
    ):
        super().__init__()
        channels = list(channels)
        self.out_channels = out_channels
        self.latent_channels = latent_channels
        self.num_res_blocks = num_res_blocks
        self.channels = channels
        self.num_res_blocks_middle = num_res_blocks_middle
        self.norm_type = norm_type
        self.use_fp16 = use_fp16  # accepted for compatibility; computation follows the input dtype

        self.input_layer = nn.Conv3d(latent_channels, channels[0], 3, padding=1)
        self.middle_block = nn.Sequential(
            *[ResBlock3d(channels[0], channels[0], norm_type) for _ in range(num_res_blocks_middle)]
        )
        blocks: list[nn.Module] = []
        for i, ch in enumerate(channels):
            blocks += [ResBlock3d(ch, ch, norm_type) for _ in range(num_res_blocks)]
            if i < len(channels) - 1:
                blocks.append(UpsampleBlock3d(ch, channels[i + 1]))
        self.blocks = nn.ModuleList(blocks)
        self.out_layer = nn.Sequential(
            _norm(norm_type, channels[-1]),
            nn.SiLU(),
            nn.Conv3d(channels[-1], out_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layer(x)
        h = self.middle_block(h)
        for block in self.blocks:
            h = block(h)
        return self.out_layer(h)
