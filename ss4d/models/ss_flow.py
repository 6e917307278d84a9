"""Sparse-structure flow transformer: one class for TRELLIS (3D) and SS4D (4D).

Dense DiT over the `(R/P)^3` latent grid of every frame: adaLN blocks, per-frame cross-attention to the image
tokens, and (4D) self-attention widened across the frames of a sample in windows of `window_size` frames, shifted
by half a window on odd blocks, with hybrid positions: 3D sin-cos APE added once + 1D temporal RoPE (spec §2.4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.blocks import ModulatedTransformerCrossBlock
from ..nn.embed import TimestepEmbedder, absolute_position_embedding


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, R, R, R] -> [B, C*p^3, R/p, R/p, R/p] (channel-major, then within-patch offsets)."""
    if p == 1:
        return x
    b, c, *r = x.shape
    x = x.reshape(b, c, r[0] // p, p, r[1] // p, p, r[2] // p, p)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * p**3, r[0] // p, r[1] // p, r[2] // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    if p == 1:
        return x
    b, cp, *r = x.shape
    c = cp // p**3
    x = x.reshape(b, c, p, p, p, *r)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, r[0] * p, r[1] * p, r[2] * p)


class SparseStructureFlowModel(nn.Module):
    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: int | None = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, pe_mode: str = "ape", rope_base: float = 10000.0,
                 window_size: int | None = None, use_fp16: bool = False, use_checkpoint: bool = False,
                 share_mod: bool = False, qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False,
                 expand_self_attn: bool = False, insert_temporal: bool = False):
        super().__init__()
        if pe_mode not in ("ape", "rope_t"):
            raise ValueError(f"pe_mode {pe_mode!r} is not supported (use 'ape' or 'rope_t')")
        if insert_temporal:
            raise ValueError("insert_temporal=True is not used by any released checkpoint and is not supported")
        if window_size and not expand_self_attn:
            raise ValueError("window_size requires expand_self_attn=True")
        if resolution % patch_size:
            raise ValueError("resolution must be divisible by patch_size")
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.model_channels, self.patch_size, self.pe_mode = model_channels, patch_size, pe_mode
        self.num_heads = num_heads or model_channels // num_head_channels
        self.window_size, self.expand_self_attn = window_size, expand_self_attn
        self.use_checkpoint, self.share_mod = use_checkpoint, share_mod
        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 6 * model_channels))
        g = resolution // patch_size
        grid = torch.stack(torch.meshgrid(*[torch.arange(g)] * 3, indexing="ij"), -1).reshape(-1, 3)
        self.register_buffer("pos_emb", absolute_position_embedding(grid, model_channels), persistent=True)
        self.input_layer = nn.Linear(in_channels * patch_size**3, model_channels)
        self.blocks = nn.ModuleList([
            ModulatedTransformerCrossBlock(
                model_channels, cond_channels, self.num_heads, mlp_ratio,
                attn_mode="windowed" if window_size else "full", window_size=window_size,
                shift_window=(window_size // 2) * (i % 2) if window_size else 0,
                use_rope_t=pe_mode == "rope_t", rope_base=rope_base, qk_rms_norm=qk_rms_norm,
                qk_rms_norm_cross=qk_rms_norm_cross, share_mod=share_mod, expand_self_attn=expand_self_attn)
            for i in range(num_blocks)])
        self.out_layer = nn.Linear(model_channels, out_channels * patch_size**3)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, num_frames: int | None = None,
                **_unused) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels or any(s != self.resolution for s in x.shape[2:]):
            raise ValueError(f"expected x of shape [B*T, {self.in_channels}, {self.resolution}^3], "
                             f"got {tuple(x.shape)}")
        if num_frames is not None and x.shape[0] % num_frames:
            raise ValueError(f"batch {x.shape[0]} is not a multiple of num_frames={num_frames}")
        dt = self.out_layer.weight.dtype
        h = patchify(x, self.patch_size)
        h = h.reshape(*h.shape[:2], -1).permute(0, 2, 1).contiguous()
        h = self.input_layer(h.to(self.input_layer.weight.dtype))
        h = h + self.pos_emb[None].to(h.dtype)
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        h, t_emb, cond = h.to(dt), t_emb.to(dt), cond.to(dt)
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(block, h, t_emb, cond, num_frames, use_reentrant=False)
            else:
                h = block(h, t_emb, cond, num_frames)
        h = F.layer_norm(h.float(), h.shape[-1:])
        h = self.out_layer(h.to(self.out_layer.weight.dtype)).float()
        g = self.resolution // self.patch_size
        h = h.permute(0, 2, 1).reshape(h.shape[0], -1, g, g, g)
        return unpatchify(h, self.patch_size)

