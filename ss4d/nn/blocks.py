"""Transformer blocks shared by the dense (sparse-structure flow) and sparse (latent flow, VAE) networks.

The same block accepts a dense token tensor `[B*T, L, C]` or a `SparseTensor`; the attention module picks
the partition (frame windows, all frames of a sample, cross-frame swin windows) from its configuration.
"""
from __future__ import annotations

import torch
from torch import nn

from ..sparse.tensor import SparseTensor
from .attention import FeedForward, MultiHeadAttention
from .norm import LayerNorm32


def _feats(x):
    return x.feats if isinstance(x, SparseTensor) else x


def _with(x, feats):
    return x.replace(feats) if isinstance(x, SparseTensor) else feats


def _per_entry(x, v: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-entry vector [B, C] to the rows of x."""
    if isinstance(x, SparseTensor):
        return v[x.batch_index]
    return v.unsqueeze(1)


def modulate(x, shift: torch.Tensor, scale: torch.Tensor):
    f = _feats(x)
    return _with(x, f * (1 + _per_entry(x, scale)) + _per_entry(x, shift))


class ModulatedTransformerCrossBlock(nn.Module):
    """adaLN DiT block: gated self-attention, un-modulated cross-attention (affine `norm2`), gated MLP.

    Official `ModulatedTransformerCross(4D)Block` and `ModulatedSparseTransformerCross(4D)Block`: identical keys.
    `expand_self_attn` widens self-attention across the frames of a sample (type "temporal")."""

    def __init__(self, channels: int, ctx_channels: int, num_heads: int, mlp_ratio: float = 4.0,
                 attn_mode: str = "full", window_size: int | None = None, shift_window: int = 0,
                 use_rope_t: bool = False, rope_base: float = 10000.0, qk_rms_norm: bool = False,
                 qk_rms_norm_cross: bool = False, qkv_bias: bool = True, share_mod: bool = False,
                 expand_self_attn: bool = False):
        super().__init__()
        self.share_mod = share_mod
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.self_attn = MultiHeadAttention(
            channels, num_heads, type="temporal" if expand_self_attn else "self", attn_mode=attn_mode,
            window_size=window_size, shift_window=shift_window, qkv_bias=qkv_bias, use_rope_t=use_rope_t,
            rope_base=rope_base, qk_rms_norm=qk_rms_norm)
        self.cross_attn = MultiHeadAttention(channels, num_heads, ctx_channels=ctx_channels, type="cross",
                                             qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm_cross)
        self.mlp = FeedForward(channels, mlp_ratio)
        if not share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 6 * channels))

    def forward(self, x, mod: torch.Tensor, context: torch.Tensor, num_frames: int | None = None):
        if self.share_mod:
            chunks = mod.chunk(6, dim=1)
        else:
            chunks = self.adaLN_modulation(mod).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = chunks
        h = _with(x, self.norm1(_feats(x)))
        h = modulate(h, shift_msa, scale_msa)
        h = self.self_attn(h, num_frames=num_frames)
        x = _with(x, _feats(x) + _feats(h) * _per_entry(x, gate_msa))
        h = _with(x, self.norm2(_feats(x)))
        h = self.cross_attn(h, context)
        x = _with(x, _feats(x) + _feats(h))
        h = _with(x, self.norm3(_feats(x)))
        h = modulate(h, shift_mlp, scale_mlp)
        h = self.mlp(h)
        return _with(x, _feats(x) + _feats(h) * _per_entry(x, gate_mlp))


class TransformerBlock(nn.Module):
    """Pre-LN block without modulation (structured-latent VAE): x += attn(norm1(x)); x += mlp(norm2(x))."""

    def __init__(self, channels: int, num_heads: int, mlp_ratio: float = 4.0, attn_mode: str = "full",
                 window_size: int | None = None, shift_window: int = 0, use_rope_t: bool = False,
                 rope_base: float = 10000.0, qk_rms_norm: bool = False, qkv_bias: bool = True,
                 expand_self_attn: bool = False):
        super().__init__()
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.attn = MultiHeadAttention(channels, num_heads, type="temporal" if expand_self_attn else "self",
                                       attn_mode=attn_mode, window_size=window_size, shift_window=shift_window,
                                       qkv_bias=qkv_bias, use_rope_t=use_rope_t, rope_base=rope_base,
                                       qk_rms_norm=qk_rms_norm)
        self.mlp = FeedForward(channels, mlp_ratio)

    def forward(self, x, num_frames: int | None = None):
        h = self.attn(_with(x, self.norm1(_feats(x))), num_frames=num_frames)
        x = _with(x, _feats(x) + _feats(h))
        h = self.mlp(_with(x, self.norm2(_feats(x))))
        return _with(x, _feats(x) + _feats(h))
