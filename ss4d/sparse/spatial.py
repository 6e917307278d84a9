"""Sparse x2 down-sampling over space or time and the matching up-sampling.

Down-sampling (official `SparseDownsample` / `SparseDownsample_t`): parent = (b, x//2, y//2, z//2) in space, or
(b//2, x, y, z) in time (frames 2k and 2k+1 of a sample merged, union of voxel sets); output rows sorted by the
parent key; value = sum(children) / (n + 1) — the official `scatter_reduce('mean', include_self=True)` on zeros,
which pretrained weights depend on. Up-sampling copies each parent's row back onto the exact
pre-down-sampling rows, using the inverse index returned by (and stored on) the down-sampled tensor.
"""
from __future__ import annotations

import torch
from torch import nn

from .tensor import SparseTensor, pack_keys

AXES = ("space", "time")


def sparse_downsample(x: SparseTensor, factor: int = 2, axis: str = "space"):
    """Returns (y, inverse) with `inverse [N]` mapping each input row to its parent row in y."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    if factor != 2:
        raise ValueError("only factor 2 is supported")
    c = x.coords.long()
    if axis == "space":
        pc = torch.cat([c[:, :1], c[:, 1:] // factor], 1)
        out_bs = x.batch_size
    else:
        if x.batch_size % factor:
            raise ValueError(f"temporal down-sampling needs an even number of frames, got {x.batch_size}")
        pc = torch.cat([c[:, :1] // factor, c[:, 1:]], 1)
        out_bs = x.batch_size // factor
    keys = pack_keys(pc)
    ukeys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    m = ukeys.shape[0]
    coords = torch.stack([(ukeys >> 48) & 0xFFFF, (ukeys >> 32) & 0xFFFF, (ukeys >> 16) & 0xFFFF, ukeys & 0xFFFF],
                         1).int()
    counts = torch.bincount(inverse, minlength=m).to(x.feats.dtype)
    feats = x.feats.new_zeros(m, *x.feats.shape[1:]).index_add(0, inverse, x.feats)
    feats = feats / (counts + 1).view(-1, *([1] * (x.feats.dim() - 1)))
    y = SparseTensor(feats, coords, out_bs, check=False)
    y.cache[("upsample", axis, factor)] = (x.coords, x.batch_size, inverse, x.cache)
    return y, inverse


def sparse_upsample(x: SparseTensor, factor: int = 2, axis: str = "space",
                    target: SparseTensor | None = None, inverse: torch.Tensor | None = None) -> SparseTensor:
    """Copy parent rows back to the pre-down-sampling sites (from `target` + `inverse`, or from the info the
    down-sampling stored on this coordinate set)."""
    if target is not None and inverse is not None:
        return SparseTensor(x.feats[inverse], target.coords, target.batch_size, check=False, cache=target.cache)
    info = x.cache.get(("upsample", axis, factor))
    if info is None:
        raise ValueError(f"sparse_upsample({axis}): this tensor was not produced by a {axis} down-sampling; "
                         "pass target= and inverse=")
    coords, bs, inv, cache = info
    return SparseTensor(x.feats[inv], coords, bs, check=False, cache=cache)


class SparseDownsample(nn.Module):
    """x2 down-sampling over space (official `SparseDownsample`) or time (`axis="time"`, `SparseDownsample_t`)."""

    def __init__(self, factor: int = 2, axis: str = "space"):
        super().__init__()
        if axis not in AXES:
            raise ValueError(f"axis must be one of {AXES}")
        self.factor, self.axis = factor, axis

    def forward(self, x: SparseTensor) -> SparseTensor:
        return sparse_downsample(x, self.factor, self.axis)[0]


class SparseUpsample(nn.Module):
    """Inverse of `SparseDownsample` with the same axis."""

    def __init__(self, factor: int = 2, axis: str = "space"):
        super().__init__()
        if axis not in AXES:
            raise ValueError(f"axis must be one of {AXES}")
        self.factor, self.axis = factor, axis

    def forward(self, x: SparseTensor) -> SparseTensor:
        return sparse_upsample(x, self.factor, self.axis)


def SparseDownsample_t(factor: int = 2) -> SparseDownsample:  # noqa: N802 - official name
    return SparseDownsample(factor, "time")


def SparseUpsample_t(factor: int = 2) -> SparseUpsample:  # noqa: N802 - official name
    return SparseUpsample(factor, "time")
