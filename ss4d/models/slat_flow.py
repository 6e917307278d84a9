"""Structured-latent flow: one class for TRELLIS's 3D `SLatFlowModel` and SS4D's `SLatFlow4DModel`.

U-Net around a sparse DiT (spec §2.9): per-frame sparse ResBlocks down to 32^3, (4D) temporal ResBlocks that
halve the number of frames, full spatio-temporal attention over all voxels of the compressed frames with 1D RoPE
on the compressed frame index, paired-frame conditioning context (cond[2k] ++ cond[2k+1]) and pair-averaged
timestep embedding, then the mirrored up path with skip concatenation. `conv_type`:
"3D" (TRELLIS, no temporal stage), "3D_1D" (released SS4D: factorized 3D + 1D convs), "3D_4D" (3^4 temporal stage),
"4D" (3^4 convs with spatio-temporal resampling in the io blocks).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.blocks import ModulatedTransformerCrossBlock
from ..nn.embed import TimestepEmbedder, absolute_position_embedding
from ..nn.resblock import SparseResBlock
from ..sparse.tensor import SparseTensor

CONV_TYPES = ("3D", "3D_1D", "3D_4D", "4D")


class SLatFlowModel(nn.Module):
    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: int | None = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, num_io_res_blocks: int = 2,
                 io_block_channels: list[int] | None = None, pe_mode: str = "ape", rope_base: float = 10000.0,
                 use_fp16: bool = False, use_checkpoint: bool = False, use_skip_connection: bool = True,
                 share_mod: bool = False, qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False,
                 expand_self_attn: bool = False, conv_type: str = "3D", num_io_res4d_blocks: int = 2,
                 io_block_channels_t: list[int] | None = None, window_size: int | None = None):
        """`window_size` (an ss4d extension, not in the official config; None = official full attention over all
        of a sample's frames): self-attention within windows of that many transformer-level frames, shifted by half
        a window on odd blocks, like the SS flow; the same weights, a cost linear in the clip length."""
        super().__init__()
        if conv_type not in CONV_TYPES:
            raise ValueError(f"conv_type must be one of {CONV_TYPES}, got {conv_type!r}")
        if pe_mode not in ("ape", "rope_t"):
            raise ValueError(f"pe_mode {pe_mode!r} is not supported (use 'ape' or 'rope_t')")
        io_block_channels = list(io_block_channels or [])
        if not io_block_channels:
            raise ValueError("io_block_channels must list at least one level")
        if patch_size != 2 ** len(io_block_channels):
            raise ValueError("patch_size must equal 2 ** len(io_block_channels)")
        self.temporal = conv_type != "3D"
        if self.temporal and not expand_self_attn:
            raise ValueError(f"conv_type {conv_type} compresses time and needs expand_self_attn=True")
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.model_channels, self.pe_mode, self.conv_type = model_channels, pe_mode, conv_type
        self.use_skip_connection, self.share_mod, self.use_checkpoint = use_skip_connection, share_mod, use_checkpoint
        self.num_heads = num_heads or model_channels // num_head_channels
        C = model_channels
        sk = 2 if use_skip_connection else 1
        self.t_embedder = TimestepEmbedder(C)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        self.input_layer = nn.Linear(in_channels, io_block_channels[0])

        io_kernel = "4d" if conv_type == "4D" else "3d"
        io_resample = ("space", "time") if conv_type == "4D" else ("space",)
        self.input_blocks = nn.ModuleList()
        for chs, nxt in zip(io_block_channels, io_block_channels[1:] + [C]):
            self.input_blocks.extend([SparseResBlock(chs, C, chs, io_kernel) for _ in range(num_io_res_blocks - 1)])
            self.input_blocks.append(SparseResBlock(chs, C, nxt, io_kernel, downsample=io_resample))
        self.out_blocks = nn.ModuleList()
        for chs, prev in zip(reversed(io_block_channels), [C] + list(reversed(io_block_channels[1:]))):
            self.out_blocks.append(SparseResBlock(prev * sk, C, chs, io_kernel, upsample=io_resample))
            self.out_blocks.extend([SparseResBlock(chs * sk, C, chs, io_kernel)
                                    for _ in range(num_io_res_blocks - 1)])

        if conv_type in ("3D_1D", "3D_4D"):
            tk = "1d" if conv_type == "3D_1D" else "4d"
            io_t = list(io_block_channels_t or [C])
            if io_t[0] != C:
                raise ValueError("io_block_channels_t[0] must equal model_channels")
            self.input_blocks_t = nn.ModuleList()
            for chs, nxt in zip(io_t, io_t[1:] + [C]):
                self.input_blocks_t.extend([SparseResBlock(chs, C, chs, tk) for _ in range(num_io_res_blocks - 1)])
                self.input_blocks_t.append(SparseResBlock(chs, C, nxt, tk, downsample=("time",)))
            self.out_blocks_t = nn.ModuleList()
            for chs, prev in zip(reversed(io_t), [C] + list(reversed(io_t[1:]))):
                self.out_blocks_t.append(SparseResBlock(prev * sk, C, chs, tk, upsample=("time",)))
                self.out_blocks_t.extend([SparseResBlock(chs * sk, C, chs, tk)
                                          for _ in range(num_io_res4d_blocks - 1)])
        if window_size and not expand_self_attn:
            raise ValueError("window_size requires expand_self_attn=True")
        self.window_size = window_size
        self.blocks = nn.ModuleList([
            ModulatedTransformerCrossBlock(
                C, cond_channels, self.num_heads, mlp_ratio, attn_mode="windowed" if window_size else "full",
                window_size=window_size, shift_window=(window_size // 2) * (i % 2) if window_size else 0,
                use_rope_t=pe_mode == "rope_t", rope_base=rope_base, qk_rms_norm=qk_rms_norm,
                qk_rms_norm_cross=qk_rms_norm_cross, share_mod=share_mod, expand_self_attn=expand_self_attn)
            for i in range(num_blocks)])
        self.out_layer = nn.Linear(io_block_channels[0], out_channels)

    @property
    def time_factor(self) -> int:
        return 2 if self.temporal else 1

    def forward(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor, num_frames: int | None = None,
                **_unused) -> SparseTensor:
        if not isinstance(x, SparseTensor):
            raise ValueError("SLatFlowModel expects a SparseTensor")
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.feats.shape[1]}")
        T = num_frames or 1
        if self.temporal:
            if T % 2:
                raise ValueError(f"the 4D latent flow needs an even number of frames, got num_frames={T}")
            if x.batch_size % T:
                raise ValueError(f"batch of {x.batch_size} entries is not a multiple of num_frames={T}")
        if cond.shape[0] != x.batch_size or t.shape[0] != x.batch_size:
            raise ValueError(f"t and cond need one entry per frame ({x.batch_size}), got {t.shape[0]}/{cond.shape[0]}")
        h = x.replace(self.input_layer(x.feats))
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        # `frames` = frames per sample at the current level; a block halves/doubles it when it resamples time
        frames = T
        skips = []
        for block in self.input_blocks:
            h, frames = block(h, t_emb, frames), frames // (2 if "time" in block.downsample else 1)
            skips.append(h.feats)
        skips_t = []
        for block in getattr(self, "input_blocks_t", []):
            h, frames = block(h, t_emb, frames), frames // (2 if "time" in block.downsample else 1)
            skips_t.append(h.feats)
        if self.pe_mode in ("ape", "rope_t"):
            h = h.replace(h.feats + absolute_position_embedding(h.coords[:, 1:], self.model_channels).to(h.dtype))
        f = self.time_factor
        t_emb_blk = t_emb.view(-1, f, t_emb.shape[-1]).mean(1) if f > 1 else t_emb
        cond_blk = cond.reshape(cond.shape[0] // f, f * cond.shape[1], cond.shape[2]) if f > 1 else cond
        t_blk = frames
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(block, h, t_emb_blk, cond_blk, t_blk, use_reentrant=False)
            else:
                h = block(h, t_emb_blk, cond_blk, t_blk)
        for block, skip in [*zip(getattr(self, "out_blocks_t", []), reversed(skips_t)),
                            *zip(self.out_blocks, reversed(skips))]:
            if self.use_skip_connection:
                h = h.replace(torch.cat([h.feats, skip], dim=1))
            h, frames = block(h, t_emb, frames), frames * (2 if "time" in block.upsample else 1)
        out = self.out_layer(F.layer_norm(h.feats.float(), h.feats.shape[-1:]).to(self.out_layer.weight.dtype))
        return h.replace(out.float())
