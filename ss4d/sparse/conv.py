"""Submanifold sparse convolutions (pure PyTorch): spatial 3x3x3, temporal (3,1,1,1) and full 3^4.

Output sites = input sites in the same order; cross-correlation `out[p] = b + sum_d W[:, d, :] @ in[p + d]`
with missing neighbours = 0; weights in the official spconv layout `[Cout, *kernel, Cin]`.
The autograd function recomputes gathered columns chunk by chunk in backward, so memory stays O(N*C), not
O(N*K*C).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .neighbors import neighbor_map
from .tensor import SparseTensor

CHUNK_ROWS = 8192


def _gather_cols(x_pad: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """[n, K, Cin] gathered neighbour features (x_pad has a zero row at index N)."""
    return x_pad[nbr]


def _chunked_conv(x: torch.Tensor, nbr: torch.Tensor, w2: torch.Tensor, chunk: int) -> torch.Tensor:
    """out[p] = sum_k x[nbr[p,k]] @ w2[k*Cin:(k+1)*Cin]; w2 is [K*Cin, Cout]."""
    n = nbr.shape[0]
    x_pad = torch.cat([x, x.new_zeros(1, x.shape[1])], 0)
    out = x.new_empty(n, w2.shape[1])
    for s in range(0, n, chunk):
        cols = _gather_cols(x_pad, nbr[s:s + chunk]).flatten(1)
        torch.mm(cols, w2, out=out[s:s + chunk])
    return out


class SubmanifoldConvFunction(torch.autograd.Function):
    """y = conv(x) with weight [Cout, K, Cin]; backward recomputes the gathered columns in chunks."""

    @staticmethod
    def forward(ctx, x, weight, bias, nbr, chunk):
        cout, k, cin = weight.shape
        w2 = weight.permute(1, 2, 0).reshape(k * cin, cout)
        y = _chunked_conv(x, nbr, w2, chunk)
        if bias is not None:
            y += bias
        ctx.save_for_backward(x, weight, nbr)
        ctx.has_bias = bias is not None
        ctx.chunk = chunk
        return y

    @staticmethod
    def backward(ctx, gy):
        x, weight, nbr = ctx.saved_tensors
        cout, k, cin = weight.shape
        gx = gw = gb = None
        gy = gy.contiguous()
        if ctx.needs_input_grad[0]:
            # The neighbour relation is symmetric (offset k <-> K-1-k), so the input gradient is the same
            # convolution of gy with the flipped, transposed kernel: no scatter needed.
            wt = weight.flip(1).permute(1, 0, 2).reshape(k * cout, cin)
            gx = _chunked_conv(gy, nbr, wt, ctx.chunk)
        if ctx.needs_input_grad[1]:
            n = nbr.shape[0]
            x_pad = torch.cat([x, x.new_zeros(1, cin)], 0)
            gw2 = x.new_zeros(cout, k * cin)
            for s in range(0, n, ctx.chunk):
                cols = _gather_cols(x_pad, nbr[s:s + ctx.chunk]).flatten(1)
                gw2.addmm_(gy[s:s + ctx.chunk].t(), cols)
            gw = gw2.view(cout, k, cin)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum(0)
        return gx, gw, gb, None, None


def submanifold_conv(x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     num_frames: int | None = None) -> SparseTensor:
    """Functional form: weight `[Cout, *kernel, Cin]` (kernel of 3 spatial or 4 (t, x, y, z) sizes)."""
    kernel = tuple(weight.shape[1:-1])
    if x.feats.dim() != 2:
        raise ValueError(f"sparse conv expects feats [N, C], got {tuple(x.feats.shape)}")
    if x.feats.shape[1] != weight.shape[-1]:
        raise ValueError(f"sparse conv expects {weight.shape[-1]} input channels, got {x.feats.shape[1]}")
    nbr = neighbor_map(x, kernel, num_frames)
    w = weight.reshape(weight.shape[0], -1, weight.shape[-1]).to(x.feats.dtype)
    b = bias.to(x.feats.dtype) if bias is not None else None
    feats = x.feats.contiguous()
    if feats.shape[0] == 0:
        return x.replace(feats.new_zeros(0, weight.shape[0]))
    y = SubmanifoldConvFunction.apply(feats, w, b, nbr, CHUNK_ROWS)
    return x.replace(y)


class _ConvParams(nn.Module):
    """Holds `weight [Cout, *kernel, Cin]` and `bias [Cout]` (the official `.conv` child)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, ...], bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, *kernel, cin))
        self.bias = nn.Parameter(torch.empty(cout)) if bias else None
        fan_in = cin * math.prod(kernel)
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)


class SparseConv(nn.Module):
    """Submanifold convolution with a kernel over (x, y, z) (3 sizes) or (t, x, y, z) (4 sizes).

    Keys `conv.weight` / `conv.bias` as in the official checkpoints."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, ...] = (3, 3, 3), bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel = in_channels, out_channels, tuple(kernel)
        self.conv = _ConvParams(in_channels, out_channels, self.kernel, bias)

    @property
    def temporal(self) -> bool:
        return len(self.kernel) == 4 and self.kernel[0] > 1

    def forward(self, x: SparseTensor, num_frames: int | None = None) -> SparseTensor:
        return submanifold_conv(x, self.conv.weight, self.conv.bias, num_frames if self.temporal else None)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}"


def SparseConv3d(in_channels: int, out_channels: int, kernel_size: int = 3, **kw) -> SparseConv:
    """Per-frame 3x3x3 submanifold conv (official `SparseConv3d`)."""
    return SparseConv(in_channels, out_channels, (kernel_size,) * 3, **kw)


def SparseConv1d(in_channels: int, out_channels: int, kernel_size: int = 3, **kw) -> SparseConv:
    """Temporal conv across adjacent frames at identical (x, y, z) (official `SparseConv1d`, (3,1,1,1))."""
    return SparseConv(in_channels, out_channels, (kernel_size, 1, 1, 1), **kw)


def SparseConv4d(in_channels: int, out_channels: int, kernel_size: int = 3, **kw) -> SparseConv:
    """Full spatio-temporal 3^4 submanifold conv (official `SparseConv4d`)."""
    return SparseConv(in_channels, out_channels, (kernel_size,) * 4, **kw)
