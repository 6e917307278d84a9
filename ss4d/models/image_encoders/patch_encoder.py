"""A small ViT-style image encoder trained from scratch: the conditioning model of ss4d's tiny default model.

Patchify conv -> learned position embedding -> pre-LN transformer blocks -> LayerNorm without affine (the same
normalisation SS4D applies to DINOv2 tokens). Input `[T, 3, H, W]` in [0, 1]; output tokens `[T, L, C]`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.blocks import TransformerBlock

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PatchImageEncoder(nn.Module):
    def __init__(self, image_size: int = 128, patch_size: int = 16, channels: int = 128, num_blocks: int = 2,
                 num_heads: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError("image_size must be divisible by patch_size")
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        n = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, channels, patch_size, patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, n, channels) * 0.02)
        self.blocks = nn.ModuleList([TransformerBlock(channels, num_heads, mlp_ratio) for _ in range(num_blocks)])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [T, 3, H, W], got {tuple(images.shape)}")
        x = images.to(self.patch_embed.weight.dtype)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        for b in self.blocks:
            x = b(x)
        return F.layer_norm(x.float(), x.shape[-1:])
