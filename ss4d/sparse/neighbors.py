"""Neighbour maps for submanifold convolutions over (frame, x, y, z), cached per coordinate set.

A map is an int64 tensor `[N, K]`: row p, kernel offset k -> the input row at `p + d_k` (same batch entry for
spatial kernels; same sample and adjacent frame for temporal kernels), or N when that site is inactive.
Kernel offsets are enumerated in C order of the weight layout `[Cout, *kernel, Cin]`, so the map is symmetric:
`nbr[q, K-1-k] = p` whenever `nbr[p, k] = q`.

Build: every site gets a linear index on a zero-padded grid (sample, frame, x, y, z), where the padding is the
kernel radius on every axis and frames are padded per sample, so `index + offset` never wraps into another row,
frame or sample. When that grid is small compared with N (the usual 64^3-per-frame case) the lookup is one dense
int32 table gather for all N*K queries; otherwise one sorted-key `searchsorted` over all queries.
"""
from __future__ import annotations

import itertools

import torch

from .tensor import SparseTensor

DENSE_TABLE_PER_ROW = 64          # dense lookup table allowed up to this many entries per active site ...
DENSE_TABLE_MIN = 1 << 21         # ... or this many entries, whichever is larger
QUERY_CHUNK = 1 << 22             # (row, tap) lookups per step


def kernel_offsets(kernel: tuple[int, ...]) -> torch.Tensor:
    """Offsets [K, 4] over (t, x, y, z); a 3-tuple kernel is spatial only (t offset 0)."""
    if len(kernel) == 3:
        kernel = (1, *kernel)
    if len(kernel) != 4 or any(k % 2 == 0 or k < 1 for k in kernel):
        raise ValueError(f"kernel must be 3 or 4 odd sizes (t, x, y, z), got {kernel}")
    ranges = [range(-(k // 2), k // 2 + 1) for k in kernel]
    return torch.tensor(list(itertools.product(*ranges)), dtype=torch.int64)


def _linear_index(x: SparseTensor, radius: list[int], num_frames: int | None):
    """(lin [N] int64, strides [4] over (t, x, y, z), grid size) on the padded grid."""
    c = x.coords.to(torch.int64)
    b = c[:, 0]
    if num_frames:  # (sample, frame) with frames padded per sample
        sample, frame, frames = b // num_frames, b % num_frames, int(num_frames)
    else:
        sample, frame, frames = b, torch.zeros_like(b), 1
    xyz = c[:, 1:]
    lo = xyz.amin(0)
    ext = (xyz.amax(0) - lo + 1).tolist()
    dims = [frames + 2 * radius[0]] + [e + 2 * r for e, r in zip(ext, radius[1:])]
    n_samples = int(sample.max()) + 1
    strides = [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1]
    size = n_samples * dims[0] * strides[0]
    pos = xyz - lo + torch.tensor(radius[1:], dtype=torch.int64, device=c.device)
    lin = (sample * dims[0] + frame + radius[0]) * strides[0] + pos[:, 0] * strides[1] + pos[:, 1] * strides[2] \
        + pos[:, 2]
    return lin, torch.tensor(strides, dtype=torch.int64, device=c.device), size


def neighbor_map(x: SparseTensor, kernel: tuple[int, ...], num_frames: int | None = None) -> torch.Tensor:
    """[N, K] neighbour rows (N = missing) for `kernel` over (t, x, y, z). Temporal offsets move between
    adjacent frames of one sample (`b // num_frames` equal); never across samples, no wrap-around."""
    kernel = tuple(int(k) for k in kernel)
    offs = kernel_offsets(kernel)
    temporal = bool((offs[:, 0] != 0).any())
    if temporal and not num_frames:
        raise ValueError("a temporal sparse convolution needs num_frames")
    if temporal and int(num_frames) < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    key = ("nbr", kernel, int(num_frames) if temporal else None)
    if key in x.cache:
        return x.cache[key]
    n = x.coords.shape[0]
    device = x.coords.device
    if n == 0:
        out = torch.empty(0, offs.shape[0], dtype=torch.int64, device=device)
        x.cache[key] = out
        return out
    radius = [int(v) for v in offs.abs().amax(0).tolist()]
    lin, strides, size = _linear_index(x, radius, int(num_frames) if temporal else None)
    delta = (offs.to(device) * strides).sum(1)  # [K] linear offset of each kernel tap
    out = torch.empty(n, offs.shape[0], dtype=torch.int64, device=device)
    rows = max(1, QUERY_CHUNK // offs.shape[0])  # bounds the [rows, K] query temporaries
    if size <= max(DENSE_TABLE_MIN, DENSE_TABLE_PER_ROW * n) and n < (1 << 31) - 1:
        table = torch.full((size,), n, dtype=torch.int32, device=device)
        table[lin] = torch.arange(n, dtype=torch.int32, device=device)
        for s in range(0, n, rows):
            out[s:s + rows] = table[lin[s:s + rows, None] + delta[None]]
    else:
        if size >= (1 << 62):  # unreachable for validated coords (b, x, y, z < 2^15)
            raise ValueError("sparse coordinates span too large a grid for a neighbour map")
        sorted_lin, order = torch.sort(lin)
        for s in range(0, n, rows):  # queries in sorted row order: each column ascending
            q = sorted_lin[s:s + rows, None] + delta[None]
            pos = torch.searchsorted(sorted_lin, q).clamp_max_(n - 1)
            out[order[s:s + rows]] = torch.where(sorted_lin[pos] == q, order[pos], n)
    x.cache[key] = out
    return out

