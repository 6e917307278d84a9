"""Structured-latent VAE: sparse transformer encoder and Gaussian decoder, 3D (TRELLIS) or 4D (SS4D).

Trunk (spec §2.10): `input_layer` -> + 3D APE of the voxel coords -> pre-LN transformer blocks whose attention runs
in shifted windows (`attn_mode="swin"`); with `expand_self_attn` the windows span `window_size` frames as well
(cross-frame 4D windows, shifted by half a window in t, x, y, z on odd blocks) and q/k get 1D temporal RoPE.
The decoder maps each voxel to `num_gaussians` Gaussians with the official activations.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..gaussians import Gaussians, hammersley_offsets
from ..nn.blocks import TransformerBlock
from ..nn.embed import absolute_position_embedding
from ..sparse.tensor import SparseTensor

DEFAULT_REP = {
    "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
    "perturb_offset": True, "voxel_size": 1.5, "num_gaussians": 32, "2d_filter_kernel_size": 0.1,
    "3d_filter_kernel_size": 9e-4, "scaling_bias": 4e-3, "opacity_bias": 0.1, "scaling_activation": "softplus",
}


class SparseTransformerBase(nn.Module):
    """input_layer -> APE -> blocks. `forward(x, num_frames)` returns the trunk output (SparseTensor)."""

    def __init__(self, in_channels: int, model_channels: int, num_blocks: int, num_heads: int | None = None,
                 num_head_channels: int = 64, mlp_ratio: float = 4.0, attn_mode: str = "swin",
                 window_size: int | None = 8, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, qk_rms_norm: bool = False, expand_self_attn: bool = False):
        super().__init__()
        if pe_mode not in ("ape", "rope_t"):
            raise ValueError(f"pe_mode {pe_mode!r} is not supported (use 'ape' or 'rope_t')")
        if expand_self_attn and pe_mode != "rope_t":
            raise ValueError("expand_self_attn=True needs pe_mode='rope_t' (temporal RoPE), as the official code")
        if attn_mode not in ("swin", "full"):
            raise ValueError(f"attn_mode {attn_mode!r} is not supported (use 'swin' or 'full')")
        self.model_channels, self.pe_mode, self.use_checkpoint = model_channels, pe_mode, use_checkpoint
        self.expand_self_attn = expand_self_attn
        self.num_heads = num_heads or model_channels // num_head_channels
        self.input_layer = nn.Linear(in_channels, model_channels)
        self.blocks = nn.ModuleList([
            TransformerBlock(model_channels, self.num_heads, mlp_ratio, attn_mode=attn_mode, window_size=window_size,
                             shift_window=(window_size // 2) * (i % 2) if attn_mode == "swin" else 0,
                             use_rope_t=pe_mode == "rope_t", rope_base=10000.0, qk_rms_norm=qk_rms_norm,
                             expand_self_attn=expand_self_attn)
            for i in range(num_blocks)])

    def trunk(self, x: SparseTensor, num_frames: int | None = None) -> SparseTensor:
        if not isinstance(x, SparseTensor):
            raise ValueError("expected a SparseTensor")
        if self.expand_self_attn and num_frames and x.batch_size % num_frames:
            raise ValueError(f"batch of {x.batch_size} entries is not a multiple of num_frames={num_frames}")
        t = num_frames or 1
        h = x.replace(self.input_layer(x.feats.to(self.input_layer.weight.dtype)))
        h = h.replace(h.feats + absolute_position_embedding(x.coords[:, 1:], self.model_channels).to(h.dtype))
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                h = h.replace(torch.utils.checkpoint.checkpoint(
                    lambda f, b=block, base=h: b(base.replace(f), t).feats, h.feats, use_reentrant=False))
            else:
                h = block(h, t)
        return h


class SLatEncoder(SparseTransformerBase):
    """Voxel features (e.g. DINOv2, 1024-d) -> latent mean / logvar per voxel."""

    def __init__(self, resolution: int, in_channels: int, model_channels: int, latent_channels: int,
                 num_blocks: int, **kw):
        super().__init__(in_channels, model_channels, num_blocks, **kw)
        self.resolution, self.latent_channels = resolution, latent_channels
        self.out_layer = nn.Linear(model_channels, 2 * latent_channels)

    def forward(self, x: SparseTensor, num_frames: int | None = None, sample_posterior: bool = True,
                return_raw: bool = False, generator: torch.Generator | None = None):
        h = self.trunk(x, num_frames)
        h = self.out_layer(F.layer_norm(h.feats.float(), h.feats.shape[-1:]).to(self.out_layer.weight.dtype)).float()
        mean, logvar = h.chunk(2, dim=-1)
        if sample_posterior:
            std = torch.exp(0.5 * logvar)
            z = mean + std * torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        else:
            z = mean
        z = x.replace(z)
        return (z, mean, logvar) if return_raw else z


class LatentReadout(nn.Module):
    """A per-voxel linear map from structured latents to voxel features (ss4d training aid, not in SS4D): trained
    with the SLat encoder so that its latents must carry the voxel colours a linear probe can read back."""

    def __init__(self, latent_channels: int = 8, out_channels: int = 4):
        super().__init__()
        self.latent_channels, self.out_channels = latent_channels, out_channels
        self.linear = nn.Linear(latent_channels, out_channels)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.linear(latents)


class SLatGaussianDecoder(SparseTransformerBase):
    """Latent voxels -> per-frame `Gaussians` (`num_gaussians` per voxel, voxel-major)."""

    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int,
                 representation_config: dict | None = None, pe_mode: str = "rope_t", expand_self_attn: bool = True,
                 **kw):
        super().__init__(latent_channels, model_channels, num_blocks, pe_mode=pe_mode,
                         expand_self_attn=expand_self_attn, **kw)
        rep = {**DEFAULT_REP, **(representation_config or {})}
        rep["lr"] = {**DEFAULT_REP["lr"], **rep.get("lr", {})}
        if rep["scaling_activation"] != "softplus":
            raise ValueError("only scaling_activation='softplus' is supported")
        self.resolution, self.latent_channels, self.rep_config = resolution, latent_channels, rep
        g = rep["num_gaussians"]
        self.layout = {"_xyz": (g, 3), "_features_dc": (g, 1, 3), "_scaling": (g, 3), "_rotation": (g, 4),
                       "_opacity": (g, 1)}
        self.ranges, start = {}, 0
        for k, shape in self.layout.items():
            n = math.prod(shape)
            self.ranges[k] = (start, start + n)
            start += n
        self.out_channels = start
        self.out_layer = nn.Linear(model_channels, self.out_channels)
        if rep["perturb_offset"]:
            self.register_buffer("offset_perturbation", hammersley_offsets(g, rep["voxel_size"]))

    def decode_raw(self, x: SparseTensor, num_frames: int | None = None) -> SparseTensor:
        h = self.trunk(x, num_frames)
        out = self.out_layer(F.layer_norm(h.feats.float(), h.feats.shape[-1:]).to(self.out_layer.weight.dtype))
        return h.replace(out.float())

    def to_representation(self, x: SparseTensor) -> list[Gaussians]:
        rep, res = self.rep_config, self.resolution
        out = []
        for sl in x.layout:
            feats, coords = x.feats[sl], x.coords[sl]
            g = {}
            xyz = (coords[:, 1:].float() + 0.5) / res
            for k, shape in self.layout.items():
                a, b = self.ranges[k]
                v = feats[:, a:b].reshape(-1, *shape) * rep["lr"][k]
                if k == "_xyz":
                    if rep["perturb_offset"]:
                        v = v + self.offset_perturbation
                    v = torch.tanh(v) / res * 0.5 * rep["voxel_size"]
                    v = xyz.unsqueeze(1) + v
                g[k] = v.flatten(0, 1)
            out.append(Gaussians(g["_xyz"], g["_features_dc"], g["_scaling"], g["_rotation"], g["_opacity"],
                                 scaling_bias=rep["scaling_bias"], opacity_bias=rep["opacity_bias"],
                                 mininum_kernel_size=rep["3d_filter_kernel_size"]))
        return out

    def forward(self, x: SparseTensor, num_frames: int | None = None) -> list[Gaussians]:
        return self.to_representation(self.decode_raw(x, num_frames))
