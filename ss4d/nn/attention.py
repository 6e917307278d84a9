"""Multi-head attention for dense token grids and sparse voxels, with the time axis as a parameter.

One module covers the official dense `MultiHeadAttention` and sparse `SparseMultiHeadAttention(4D)`:
`type` self / cross / temporal; `attn_mode` full / windowed (dense: frame windows `(f+s)//w`) / swin (sparse:
cross-frame 4D windows when temporal, 3D windows otherwise). Temporal self-attention applies 1D RoPE on the frame
index to q and k *before* the QK RMS-norm (spec §2.2, §2.8). Keys: `to_qkv` ([q|k|v], head-major), `to_q`,
`to_kv`, `to_out`, `q_rms_norm.gamma`, `k_rms_norm.gamma`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..sparse import attention as sattn
from ..sparse.tensor import SparseTensor
from .embed import apply_rope, rope_1d_phases
from .norm import MultiHeadRMSNorm

TYPES = ("self", "cross", "temporal")
MODES = ("full", "windowed", "swin")


def frame_windows(num_frames: int, window: int | None, shift: int) -> list[tuple[int, int]]:
    """Maximal runs of frames with equal window id (f + shift) // window; one run when window is None."""
    if not window:
        return [(0, num_frames)]
    ids = [(f + shift) // window for f in range(num_frames)]
    runs, start = [], 0
    for f in range(1, num_frames + 1):
        if f == num_frames or ids[f] != ids[start]:
            runs.append((start, f))
            start = f
    return runs


class MultiHeadAttention(nn.Module):
    def __init__(self, channels: int, num_heads: int, ctx_channels: int | None = None, type: str = "self",
                 attn_mode: str = "full", window_size: int | None = None, shift_window: int = 0,
                 qkv_bias: bool = True, use_rope_t: bool = False, rope_base: float = 10000.0,
                 qk_rms_norm: bool = False):
        super().__init__()
        if type not in TYPES:
            raise ValueError(f"attention type must be one of {TYPES}, got {type!r}")
        if attn_mode not in MODES:
            raise ValueError(f"attn_mode must be one of {MODES}, got {attn_mode!r}")
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        if attn_mode != "full" and type == "cross":
            raise ValueError("cross-attention only supports attn_mode='full'")
        self.channels, self.num_heads, self.head_dim = channels, num_heads, channels // num_heads
        self.ctx_channels = ctx_channels if ctx_channels is not None else channels
        self.type, self.attn_mode = type, attn_mode
        self.window_size, self.shift_window = window_size, shift_window
        self.use_rope_t, self.rope_base = use_rope_t, rope_base
        self.qk_rms_norm = qk_rms_norm
        if type == "cross":
            self.to_q = nn.Linear(channels, channels, bias=qkv_bias)
            self.to_kv = nn.Linear(self.ctx_channels, channels * 2, bias=qkv_bias)
        else:
            self.to_qkv = nn.Linear(channels, channels * 3, bias=qkv_bias)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
            self.k_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
        self.to_out = nn.Linear(channels, channels)

    # ----- helpers -----
    def _norm_qk(self, q, k):
        if self.qk_rms_norm:
            q, k = self.q_rms_norm(q), self.k_rms_norm(k)
        return q, k

    def _rope(self, q, k, pos, shape_prefix):
        phases = rope_1d_phases(pos, self.head_dim, self.rope_base).view(*shape_prefix, 1, self.head_dim // 2)
        return apply_rope(q, phases), apply_rope(k, phases)

    def forward(self, x, context: torch.Tensor | None = None, num_frames: int | None = None):
        if isinstance(x, SparseTensor):
            return x.replace(self._forward_sparse(x, context, num_frames))
        return self._forward_dense(x, context, num_frames)

    # ----- dense tokens [B*T, L, C] -----
    def _forward_dense(self, x: torch.Tensor, context, num_frames):
        bt, seq, _ = x.shape
        h, d = self.num_heads, self.head_dim
        if self.type == "cross":
            if context is None:
                raise ValueError("cross-attention needs a context")
            q = self.to_q(x).view(bt, seq, h, d)
            kv = self.to_kv(context).view(bt, context.shape[1], 2, h, d)
            k, v = kv.unbind(2)
            q, k = self._norm_qk(q, k)
            out = sattn._sdpa(q, k, v)
        else:
            qkv = self.to_qkv(x).view(bt, seq, 3, h, d)
            q, k, v = qkv.unbind(2)
            if self.type == "self":
                q, k = self._norm_qk(q, k)
                out = sattn._sdpa(q, k, v)
            else:
                t = num_frames or bt
                if bt % t:
                    raise ValueError(f"batch {bt} is not a multiple of num_frames={t}")
                b = bt // t
                if self.use_rope_t:
                    pos = torch.arange(t, device=x.device).repeat(b)
                    q, k = self._rope(q, k, pos, (bt, 1))
                q, k = self._norm_qk(q, k)
                q, k, v = (z.reshape(b, t, seq, h, -1) for z in (q, k, v))
                win = self.window_size if self.attn_mode == "windowed" else None
                outs = []
                for f0, f1 in frame_windows(t, win, self.shift_window):
                    n = (f1 - f0) * seq
                    outs.append(sattn._sdpa(q[:, f0:f1].reshape(b, n, h, d), k[:, f0:f1].reshape(b, n, h, d),
                                            v[:, f0:f1].reshape(b, n, h, d)).view(b, f1 - f0, seq, h, d))
                out = torch.cat(outs, 1)
        return self.to_out(out.reshape(bt, seq, -1))

    # ----- sparse voxels feats [N, C] -----
    def _forward_sparse(self, x: SparseTensor, context, num_frames):
        n = x.feats.shape[0]
        h, d = self.num_heads, self.head_dim
        if self.type == "cross":
            if context is None:
                raise ValueError("cross-attention needs a context")
            q = self.to_q(x.feats).view(n, h, d)
            kv = self.to_kv(context).view(context.shape[0], context.shape[1], 2, h, d)
            k, v = kv.unbind(2)
            q, k = self._norm_qk(q, k)
            out = sattn.sparse_cross_attention(q, x, k, v)
            return self.to_out(out.reshape(n, -1))
        q, k, v = self.to_qkv(x.feats).view(n, 3, h, d).unbind(1)
        temporal = self.type == "temporal"
        t = num_frames or 1
        if temporal and self.use_rope_t:
            q, k = self._rope(q, k, x.batch_index % t, (n,))
        q, k = self._norm_qk(q, k)
        if self.attn_mode == "swin":
            s = self.shift_window
            keys = (sattn.cross_frame_window_keys(x, t, self.window_size, s) if temporal
                    else sattn.spatial_window_keys(x, self.window_size, s))
            out = sattn.windowed_attention(q, k, v, keys)
        elif temporal and self.attn_mode == "windowed" and self.window_size:
            out = sattn.varlen_attention(q, k, v, sattn.frame_window_lens(x, t, self.window_size, self.shift_window))
        elif temporal:
            out = sattn.varlen_attention(q, k, v, sattn.sample_lens(x, t))
        else:
            out = sattn.varlen_attention(q, k, v, x.batch_counts)
        return self.to_out(out.reshape(n, -1))


class FeedForward(nn.Module):
    """Linear(C, M) -> GELU(tanh) -> Linear(M, C); keys `mlp.0`, `mlp.2`."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, channels))

    def forward(self, x):
        if isinstance(x, SparseTensor):
            return x.replace(self.mlp(x.feats))
        return self.mlp(x)


__all__ = ["MultiHeadAttention", "FeedForward", "frame_windows"]
