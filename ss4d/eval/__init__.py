"""Evaluation metrics of the ss4d protocol (``shared/spec/evaluation.md``).

* :mod:`.metrics` - PSNR, SSIM, mask IoU, voxel IoU / Chamfer, temporal flicker (no weights needed), and
  :class:`MetricResult` (a value, or ``None`` + the reason it was not computed).
* :mod:`.lpips` - LPIPS (VGG16 / AlexNet trunk): torchvision trunk file + lpips heads file.
* :mod:`.clip_vit` - CLIP ViT-B/32 image tower (OpenAI layout) and CLIP image similarity.
* :mod:`.i3d`, :mod:`.fvd` - I3D (piergiaj pytorch-i3d layout) and FVD per clip / pooled.

Network metrics need the user's local public weight files (nothing is downloaded); without them they report
"not computed". :data:`WEIGHT_FILE_NAMES` lists the usual file names, :func:`find_weight_files` looks them up in a
folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from .metrics import (
    MetricResult,
    composite_white,
    frame_metrics,
    mask_iou,
    psnr,
    ssim,
    temporal_change,
    temporal_flicker,
    voxel_chamfer,
    voxel_iou,
)

__all__ = [
    "MetricResult",
    "composite_white",
    "frame_metrics",
    "mask_iou",
    "psnr",
    "ssim",
    "temporal_change",
    "temporal_flicker",
    "voxel_chamfer",
    "voxel_iou",
    "WEIGHT_FILE_NAMES",
    "find_weight_files",
]

# usual public file names (first match wins); TorchScript archives (OpenAI ViT-B-32.pt) are not listed: convert them
WEIGHT_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "lpips_vgg_trunk": ("vgg16-397923af.pth", "vgg16.pth", "vgg16.safetensors"),
    "lpips_vgg_lin": ("vgg.pth", "lpips_vgg.pth"),
    "lpips_alex_trunk": ("alexnet-owt-7be5be79.pth", "alexnet-owt-4df8aa71.pth", "alexnet.pth"),
    "lpips_alex_lin": ("alex.pth", "lpips_alex.pth"),
    "clip_vit_b32": ("clip_vit_b32_visual.pth", "clip_vit_b32.pth", "ViT-B-32.pth", "ViT-B-32.safetensors"),
    "i3d": ("i3d_pretrained_400.pt", "rgb_imagenet.pt", "i3d.pt"),
}


def find_weight_files(folder: str | os.PathLike | None) -> dict[str, Path | None]:
    """``{role: path or None}`` for the names of :data:`WEIGHT_FILE_NAMES` found directly in ``folder``."""
    out: dict[str, Path | None] = {k: None for k in WEIGHT_FILE_NAMES}
    if folder is None or not Path(folder).is_dir():
        return out
    for role, names in WEIGHT_FILE_NAMES.items():
        for n in names:
            p = Path(folder) / n
            if p.is_file():
                out[role] = p
                break
    return out
