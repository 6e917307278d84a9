"""Pixel-aligned conditioning of the latent flow (an ss4d option for small models; the official models have none).

Besides the image tokens it cross-attends to, each voxel of the 4D latent flow receives what the input video shows
where its centre projects in its own frame: the straight colour there (pixels outside the mask take the nearest
masked pixel's colour), the mask value, and whether the voxel is the one the camera sees (1) or hidden behind
others (0). A flow whose `in_channels` exceed its `out_channels` by :data:`PIXEL_CHANNELS` takes them concatenated
to its noisy latent (:class:`PixelAlignedFlow`). The camera is the input view: known in training (the rendered
input camera, cropped like the pipeline), estimated from silhouettes at inference
(:func:`ss4d.render.input_view.estimate_input_view` on the sampled structure).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..render.camera import Camera, as_camera, project_points
from ..render.visibility import visible_points
from ..sparse.tensor import SparseTensor
from .colorize import fill_outside_mask

__all__ = ["PIXEL_CHANNELS", "PixelAlignedFlow", "pixel_aligned_features", "wants_pixel_features"]

PIXEL_CHANNELS = 5  # straight r, g, b at the projected pixel, mask value there, visible-from-the-camera flag


def wants_pixel_features(flow: nn.Module) -> bool:
    """True for a latent flow built to take pixel-aligned features (in = out + PIXEL_CHANNELS channels)."""
    cin, cout = int(getattr(flow, "in_channels", 0)), int(getattr(flow, "out_channels", 0))
    if cin == cout:
        return False
    if cin != cout + PIXEL_CHANNELS:
        raise ValueError(f"a latent flow with {cin} input and {cout} output channels: pixel-aligned conditioning "
                         f"needs in = out + {PIXEL_CHANNELS}")
    return True


def pixel_aligned_features(coords: torch.Tensor, resolution: int, frames: torch.Tensor, alpha: torch.Tensor,
                           cameras: Sequence[Camera], num_frames: int | None = None) -> torch.Tensor:
    """``float32 [N, 5]`` for the voxels ``coords [N, 4]`` (``b, x, y, z``; frame ``b % num_frames`` of clip
    ``b // num_frames`` uses image ``b``): ``frames [B, 3, H, W]`` premultiplied colour in [0, 1], ``alpha [B, H, W]``
    in [0, 1], ``cameras`` one per image (its image = the frame). Voxel index ``i`` <-> world ``(i + 0.5)/R - 0.5``."""
    frames, alpha = frames.detach().float().cpu(), alpha.detach().float().cpu()
    if frames.dim() != 4 or frames.shape[1] != 3 or alpha.shape != (frames.shape[0], *frames.shape[2:]):
        raise ValueError(f"frames [B,3,H,W] and alpha [B,H,W] expected, got {tuple(frames.shape)} and "
                         f"{tuple(alpha.shape)}")
    if len(cameras) != frames.shape[0]:
        raise ValueError(f"{len(cameras)} cameras for {frames.shape[0]} frames")
    c = coords.detach().long().cpu()
    out = torch.zeros(c.shape[0], PIXEL_CHANNELS)
    for b in torch.unique(c[:, 0]).tolist():
        rows = (c[:, 0] == b).nonzero().flatten()
        cam = as_camera(cameras[b])
        pts = (c[rows, 1:].float() + 0.5) / resolution - 0.5
        a = alpha[b]
        img = frames[b].permute(1, 2, 0).numpy()
        if bool((a > 0.5).any()):
            straight = torch.from_numpy(fill_outside_mask((img * 255).round().astype(np.uint8), a.numpy()))
        else:
            straight = torch.zeros(*a.shape, 3)
        uv, _ = project_points(pts, cam.extrinsics, cam.intrinsics)
        grid = (uv * 2 - 1)[None, None].float()
        maps = torch.cat([straight.permute(2, 0, 1), a[None]], 0)[None]
        s = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T
        out[rows, :4] = s
        out[rows, 4] = visible_points(pts, cam, 1.0 / resolution).float()
    return out


class PixelAlignedFlow(nn.Module):
    """A latent flow called with its pixel-aligned features concatenated to the noisy latent (same rows)."""

    def __init__(self, flow: nn.Module, pixel_features: torch.Tensor):
        super().__init__()
        self.flow, self.pixel_features = flow, pixel_features

    def forward(self, x: SparseTensor, t, cond, **kw):
        if x.feats.shape[0] != self.pixel_features.shape[0]:
            raise ValueError(f"{x.feats.shape[0]} latent rows but {self.pixel_features.shape[0]} pixel-feature rows")
        feats = torch.cat([x.feats, self.pixel_features.to(x.feats)], 1)
        return self.flow(x.replace(feats), t, cond, **kw)
