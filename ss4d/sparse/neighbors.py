"""Neighbour maps for submanifold convolutions over (frame, x, y, z), cached per coordinate set.

A map is an int64 tensor `[N, K]`: row p, kernel offset k -> the input row at `p + d_k` (same batch entry for
spatial kernels; same sample and adjacent frame for temporal kernels), or N when that site is inactive.
Kernel offsets are enumerated in C order of the weight layout `[Cout, *kernel, Cin]`, so the map is symmetric:
`nbr[q, K-1-k] = p` whenever `nbr[p, k] = q`.
"""
from __future__ import annotations

import itertools

import torch

from .tensor import SparseTensor, pack_keys


def kernel_offsets(kernel: tuple[int, ...]) -> torch.Tensor:
    """Offsets [K, 4] over (t, x, y, z); a 3-tuple kernel is spatial only (t offset 0)."""
    if len(kernel) == 3:
        kernel = (1, *kernel)
    if len(kernel) != 4 or any(k % 2 == 0 for k in kernel):
        raise ValueError(f"kernel must be 3 or 4 odd sizes (t, x, y, z), got {kernel}")
    ranges = [range(-(k // 2), k // 2 + 1) for k in kernel]
    return torch.tensor(list(itertools.product(*ranges)), dtype=torch.int64)


def neighbor_map(x: SparseTensor, kernel: tuple[int, ...], num_frames: int | None = None) -> torch.Tensor:
    """[N, K] neighbour rows (N = missing) for `kernel` over (t, x, y, z). Temporal offsets move between
    adjacent frames of one sample (`b // num_frames` equal); never across samples, no wrap-around."""
    kernel = tuple(int(k) for k in kernel)
    offs = kernel_offsets(kernel)
    temporal = bool((offs[:, 0] != 0).any())
    if temporal and not num_frames:
        raise ValueError("a temporal sparse convolution needs num_frames")
    key = ("nbr", kernel, int(num_frames) if temporal else None)
    if key in x.cache:
        return x.cache[key]
    coords = x.coords.to(torch.int64)
    n = coords.shape[0]
    keys = x.cache.get("keys")
    if keys is None:
        keys = pack_keys(coords)
        x.cache["keys"] = keys
    sorted_keys, order = torch.sort(keys)
    offs = offs.to(coords.device)
    out = torch.empty(n, offs.shape[0], dtype=torch.int64, device=coords.device)
    b = coords[:, 0]
    for k, d in enumerate(offs):
        if not bool(d.any()):
            out[:, k] = torch.arange(n, device=coords.device)
            continue
        nc = coords + d.view(1, 4)
        valid = (nc[:, 1:] >= 0).all(1) & (nc[:, 1:] < (1 << 15)).all(1)
        if d[0] != 0:
            nb = nc[:, 0]
            valid &= (nb >= 0) & (nb // num_frames == b // num_frames) & (nb < x.batch_size)
        nk = pack_keys(nc.clamp_min(0))
        pos = torch.searchsorted(sorted_keys, nk).clamp_max(n - 1)
        found = valid & (sorted_keys[pos] == nk)
        out[:, k] = torch.where(found, order[pos], torch.full_like(pos, n))
    x.cache[key] = out
    return out
