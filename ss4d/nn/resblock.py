"""Time-conditioned sparse ResBlock with an optional x2 down/up-sampling over space and/or time.

One class for the official `SparseResBlock3d` (kernel 3^3, spatial resampling), `SparseResBlock1d` (kernel
(3,1,1,1), temporal resampling) and `SparseResBlock4d` (kernel 3^4). Body (spec §2.7):
`x = updown(x); h = conv1(SiLU(norm1(x))); h = SiLU(norm2(h)*(1+scale)+shift); h = conv2(h); out = h + skip(x)`,
with `scale, shift = chunk(emb_layers(emb), 2)` (scale first). When resampling changed the number of batch
entries, `emb` is averaged over consecutive groups.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..sparse.conv import SparseConv
from ..sparse.spatial import sparse_downsample, sparse_upsample
from ..sparse.tensor import SparseTensor
from .norm import LayerNorm32

KERNELS = {"3d": (3, 3, 3), "1d": (3, 1, 1, 1), "4d": (3, 3, 3, 3)}


class SparseResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None, kernel: str = "3d",
                 downsample: tuple[str, ...] = (), upsample: tuple[str, ...] = ()):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {list(KERNELS)}")
        if downsample and upsample:
            raise ValueError("a ResBlock cannot both down- and up-sample")
        out_channels = out_channels or channels
        self.channels, self.out_channels, self.kernel = channels, out_channels, kernel
        self.downsample, self.upsample = tuple(downsample), tuple(upsample)
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = LayerNorm32(out_channels, elementwise_affine=False, eps=1e-6)
        self.conv1 = SparseConv(channels, out_channels, KERNELS[kernel])
        self.conv2 = SparseConv(out_channels, out_channels, KERNELS[kernel])
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.skip_connection = nn.Linear(channels, out_channels) if channels != out_channels else nn.Identity()

    def _updown(self, x: SparseTensor, num_frames: int | None):
        for axis in self.downsample:
            x = sparse_downsample(x, 2, axis)[0]
            if axis == "time" and num_frames:
                num_frames //= 2
        for axis in reversed(self.upsample):
            x = sparse_upsample(x, 2, axis)
            if axis == "time" and num_frames:
                num_frames *= 2
        return x, num_frames

    def forward(self, x: SparseTensor, emb: torch.Tensor, num_frames: int | None = None) -> SparseTensor:
        x, num_frames = self._updown(x, num_frames)
        if emb.shape[0] != x.batch_size:
            if emb.shape[0] % x.batch_size:
                raise ValueError(f"emb has {emb.shape[0]} entries, tensor has {x.batch_size}")
            emb = emb.view(x.batch_size, -1, emb.shape[-1]).mean(1)
        scale, shift = self.emb_layers(emb).to(x.dtype).chunk(2, dim=1)
        h = x.replace(F.silu(self.norm1(x.feats)))
        h = self.conv1(h, num_frames)
        h = h.replace(self.norm2(h.feats)) * (1 + scale) + shift
        h = h.replace(F.silu(h.feats))
        h = self.conv2(h, num_frames)
        skip = self.skip_connection(x.feats)
        return h.replace(h.feats + skip)
