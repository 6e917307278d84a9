"""Variable-length attention over row groups on `scaled_dot_product_attention` (pure PyTorch).

Groups are contiguous row ranges (after an optional permutation). Large groups run one at a time through SDPA
(memory-bounded fused kernels, no mask); small groups are padded into batches with a key-padding mask so that
thousands of swin windows cost a handful of calls. Scale 1/sqrt(D), no dropout, no causal mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .tensor import SparseTensor

LARGE_GROUP = 1024          # groups at least this long run alone, without a mask
PAD_BUDGET = 1 << 22        # max B * H * Lmax * Lmax score entries per padded batch
QUERY_CHUNK = 8192          # query rows per call for single groups with an explicit mask path


def _sdpa(q, k, v, mask=None):
    """q [B, Lq, H, D], k/v [B, Lk, H, D] -> [B, Lq, H, D]."""
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return o.transpose(1, 2)


def _lens_list(lens) -> list[int]:
    return [int(x) for x in (lens.tolist() if isinstance(lens, torch.Tensor) else lens)]


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_lens, kv_lens=None) -> torch.Tensor:
    """Block-diagonal attention. q [Nq, H, D], k/v [Nk, H, D]; group g = q rows [sum q_lens[:g], +q_lens[g])
    attending to kv rows of the same group (kv_lens defaults to q_lens, i.e. self-attention)."""
    q_lens = _lens_list(q_lens)
    kv_lens = q_lens if kv_lens is None else _lens_list(kv_lens)
    if len(q_lens) != len(kv_lens):
        raise ValueError("varlen_attention: q_lens and kv_lens differ in length")
    if sum(q_lens) != q.shape[0] or sum(kv_lens) != k.shape[0]:
        raise ValueError("varlen_attention: group lengths do not sum to the number of rows")
    h, d = q.shape[1], q.shape[2]
    out = q.new_empty(q.shape[0], h, v.shape[2])
    q_off = [0]
    k_off = [0]
    for a, b in zip(q_lens, kv_lens):
        q_off.append(q_off[-1] + a)
        k_off.append(k_off[-1] + b)
    # uniform groups: one batched call
    if len(set(q_lens)) == 1 and len(set(kv_lens)) == 1 and q_lens[0] > 0:
        g, lq, lk = len(q_lens), q_lens[0], kv_lens[0]
        if g == 1 or g * h * lq * lk <= PAD_BUDGET or min(lq, lk) >= LARGE_GROUP:
            return _sdpa(q.view(g, lq, h, d), k.view(g, lk, h, d), v.view(g, lk, h, -1)).reshape(-1, h, v.shape[2])
    small = []
    for i, (a, b) in enumerate(zip(q_lens, kv_lens)):
        if a == 0:
            continue
        if b == 0:  # nothing to attend to: zeros (softmax over an empty set is undefined)
            out[q_off[i]:q_off[i + 1]] = 0
        elif max(a, b) >= LARGE_GROUP:
            out[q_off[i]:q_off[i + 1]] = _sdpa(q[None, q_off[i]:q_off[i + 1]], k[None, k_off[i]:k_off[i + 1]],
                                               v[None, k_off[i]:k_off[i + 1]])[0]
        else:
            small.append(i)
    if small:
        _padded_groups(q, k, v, out, small, q_lens, kv_lens, q_off, k_off)
    return out


def _padded_groups(q, k, v, out, small, q_lens, kv_lens, q_off, k_off) -> None:
    """Small groups, sorted by length, padded into batches of similar lengths (<= PAD_BUDGET score entries per
    batch) with a key-padding mask; index tensors built vectorised, so thousands of windows cost a few calls.
    Padding slots gather row 0: padded keys are masked out and padded query rows are never written back."""
    h = q.shape[1]
    small.sort(key=lambda i: (kv_lens[i], q_lens[i]))
    batches, start, lq_max = [], 0, 0
    for j, i in enumerate(small):
        lq = max(lq_max, q_lens[i])
        if j > start and (j + 1 - start) * h * lq * kv_lens[i] > PAD_BUDGET:
            batches.append((start, j))
            start, lq = j, q_lens[i]
        lq_max = lq
    batches.append((start, len(small)))
    dev = q.device
    idx = torch.tensor(small, dtype=torch.long)
    ql_all = torch.tensor([q_lens[i] for i in small], dtype=torch.long)
    kl_all = torch.tensor([kv_lens[i] for i in small], dtype=torch.long)
    qo_all = torch.tensor(q_off[:-1], dtype=torch.long)[idx]
    ko_all = torch.tensor(k_off[:-1], dtype=torch.long)[idx]
    for a, b in batches:
        ql, kl, qo, ko = ql_all[a:b], kl_all[a:b], qo_all[a:b], ko_all[a:b]
        lq, lk = int(ql.max()), int(kl.max())
        ar_q, ar_k = torch.arange(lq), torch.arange(lk)
        q_valid = ar_q[None] < ql[:, None]
        k_valid = ar_k[None] < kl[:, None]
        qi = torch.where(q_valid, qo[:, None] + ar_q[None], 0).to(dev)
        ki = torch.where(k_valid, ko[:, None] + ar_k[None], 0).to(dev)
        q_valid, k_valid = q_valid.to(dev), k_valid.to(dev)
        mask = None if bool(k_valid.all()) else k_valid[:, None, None, :]
        o = _sdpa(q[qi], k[ki], v[ki], mask)
        out[qi[q_valid]] = o[q_valid]


def group_by_keys(keys: torch.Tensor):
    """Stable partition of rows by an integer key [N] (or [N, k]): returns (perm, lens) such that rows
    `perm[sum(lens[:g]) : sum(lens[:g+1])]` form group g (groups ordered by key, rows by original order)."""
    if keys.dim() == 2:
        k = keys.long()
        k = k - k.min(0).values
        span = k.max(0).values + 1
        if float(torch.prod(span.double())) < 2.0**62:  # pack columns into one int64 (much faster than dim=0)
            packed = torch.zeros_like(k[:, 0])
            for i in range(k.shape[1]):
                packed = packed * span[i] + k[:, i]
            uniq, inv = torch.unique(packed, return_inverse=True)
        else:
            uniq, inv = torch.unique(keys, dim=0, return_inverse=True)
    else:
        uniq, inv = torch.unique(keys, return_inverse=True)
    perm = torch.sort(inv, stable=True).indices
    lens = torch.bincount(inv, minlength=uniq.shape[0])
    return perm, lens


def cross_frame_window_keys(x: SparseTensor, num_frames: int, window: int, shift: int) -> torch.Tensor:
    """Official cross-frame swin key per voxel: ((b+s)//w + b//T, (x+s)//w, (y+s)//w, (z+s)//w)."""
    c = x.coords.long()
    b = c[:, 0]
    kt = (b + shift) // window + b // num_frames
    return torch.stack([kt, *[(c[:, i] + shift) // window for i in (1, 2, 3)]], 1)


def spatial_window_keys(x: SparseTensor, window: int, shift: int) -> torch.Tensor:
    """3D (per batch entry) swin key: (b, (x+s)//w, (y+s)//w, (z+s)//w)."""
    c = x.coords.long()
    return torch.stack([c[:, 0], *[(c[:, i] + shift) // window for i in (1, 2, 3)]], 1)


def windowed_attention(q, k, v, keys: torch.Tensor) -> torch.Tensor:
    """Self-attention within groups of equal window key. q/k/v [N, H, D]."""
    perm, lens = group_by_keys(keys)
    o = varlen_attention(q[perm], k[perm], v[perm], lens)
    out = torch.empty_like(o)
    out[perm] = o
    return out


def sample_lens(x: SparseTensor, num_frames: int) -> torch.Tensor:
    """Rows per sample (num_frames consecutive batch entries)."""
    if x.batch_size % num_frames:
        raise ValueError(f"batch of {x.batch_size} entries is not a multiple of num_frames={num_frames}")
    return x.batch_counts.view(-1, num_frames).sum(1)


def frame_window_lens(x: SparseTensor, num_frames: int, window: int, shift: int = 0) -> torch.Tensor:
    """Rows per (sample, frame window): frames ``f`` of a sample grouped by ``(f + shift) // window`` (the dense
    `windowed` temporal partition applied to voxels; rows are ordered by batch entry, so each group is one run)."""
    counts = x.batch_counts.view(-1, num_frames)
    ids = (torch.arange(num_frames) + int(shift)) // int(window)
    _, inverse = torch.unique_consecutive(ids, return_inverse=True)
    groups = int(inverse.max()) + 1
    out = torch.zeros(counts.shape[0], groups, dtype=counts.dtype, device=counts.device)
    out.index_add_(1, inverse.to(counts.device), counts)
    return out.flatten()


def sparse_cross_attention(q: torch.Tensor, x: SparseTensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Sparse queries q [N, H, D] of batch entry b attend to dense context k/v [B, Lc, H, D] of entry b."""
    bsz, lc = k.shape[0], k.shape[1]
    if bsz != x.batch_size:
        raise ValueError(f"context has {bsz} entries, sparse tensor has {x.batch_size}")
    return varlen_attention(q, k.reshape(-1, *k.shape[2:]), v.reshape(-1, *v.shape[2:]), x.batch_counts,
                            [lc] * bsz)
