"""Sparse spacetime engine: SparseTensor, submanifold convs, resampling, variable-length attention (pure PyTorch)."""
from .conv import SparseConv, SparseConv1d, SparseConv3d, SparseConv4d, submanifold_conv
from .neighbors import kernel_offsets, neighbor_map
from .spatial import (
    SparseDownsample,
    SparseDownsample_t,
    SparseUpsample,
    SparseUpsample_t,
    sparse_downsample,
    sparse_upsample,
)
from .tensor import SparseTensor, pack_keys, sort_coords, sparse_cat


def build_sparse_conv(name: str, in_channels: int, out_channels: int, kernel_size: int = 3, **kw) -> SparseConv:
    """Official conv class name -> ss4d conv."""
    table = {"SparseConv3d": SparseConv3d, "SparseConv1d": SparseConv1d, "SparseConv4d": SparseConv4d}
    if name not in table:
        raise ValueError(f"unknown sparse conv {name!r}")
    return table[name](in_channels, out_channels, kernel_size, **kw)


__all__ = ["SparseTensor", "sort_coords", "sparse_cat", "pack_keys", "SparseConv", "SparseConv1d", "SparseConv3d",
           "SparseConv4d", "submanifold_conv", "kernel_offsets", "neighbor_map", "SparseDownsample",
           "SparseUpsample", "SparseDownsample_t", "SparseUpsample_t", "sparse_downsample", "sparse_upsample",
           "build_sparse_conv"]
