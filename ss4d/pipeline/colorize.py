"""Colour transfer from the input video onto the generated Gaussians (an ss4d option, off in the official setting).

A small latent model may get the shape of an object roughly right but not its colours. Since the input view is
known up to a pose that :func:`ss4d.render.input_view.estimate_input_view` recovers from silhouettes, each Gaussian
can take the colour of the input pixel it projects to in its own frame (seen through the object: the back takes
the colour of the front at the same pixel; pixels outside the input mask take the nearest opaque pixel's colour).
Enabled per model folder by ``"color_from_input": true`` in ``pipeline.json`` (a strength in (0, 1] blends with
the decoded colours) or per call (``VideoTo4DPipeline(...)(frames, color_from_input=...)``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from scipy import ndimage

from ..gaussians import SH_C0, Gaussians
from ..render.camera import project_points

__all__ = ["fill_outside_mask", "transfer_input_colors"]


def fill_outside_mask(rgb: np.ndarray, alpha: np.ndarray, premultiplied: bool = True, thr: float = 0.5) -> np.ndarray:
    """Straight colours ``float32 [H,W,3]`` in [0,1] of an image whose pixels with ``alpha <= thr`` take the colour
    of the nearest pixel above it. ``rgb`` uint8 ``[H,W,3]`` (premultiplied by ``alpha`` unless told otherwise),
    ``alpha`` ``[H,W]`` uint8 or float in [0,1]. An image without an opaque pixel raises ``ValueError``."""
    a = np.asarray(alpha, np.float32)
    if np.asarray(alpha).dtype == np.uint8:
        a = a / 255.0
    c = np.asarray(rgb, np.float32) / 255.0
    if c.shape[:2] != a.shape:
        raise ValueError(f"image {c.shape[:2]} and mask {a.shape} differ in size")
    opaque = a > thr
    if not opaque.any():
        raise ValueError("the input mask has no opaque pixel to take colours from")
    if premultiplied:
        c = np.where(opaque[..., None], c / np.maximum(a, 1e-6)[..., None], 0.0)
    _, (iy, ix) = ndimage.distance_transform_edt(~opaque, return_indices=True)
    return np.clip(c[iy, ix], 0.0, 1.0).astype(np.float32)


def _with_colors(g: Gaussians, colors: torch.Tensor, strength: float) -> Gaussians:
    dc = ((colors - 0.5) / SH_C0).to(g._features_dc)[:, None, :]
    return replace(g, _features_dc=g._features_dc + float(strength) * (dc - g._features_dc), meta=dict(g.meta))


def transfer_input_colors(gaussians_list: Sequence[Gaussians], frames: np.ndarray, alpha: np.ndarray, camera,
                          strength: float = 1.0) -> list[Gaussians]:
    """Recolour each frame's Gaussians from the matching input frame seen through ``camera`` (a
    :class:`ss4d.render.Camera` whose image is the input frame, e.g. :func:`ss4d.render.input_view.input_view_camera`).

    ``frames`` uint8 ``[T,H,W,3]`` premultiplied (the preprocessing output), ``alpha`` ``[T,H,W]``; ``strength``
    in [0, 1]: 1 replaces the decoded colours, 0 keeps them. Returns new Gaussians (the inputs are not changed);
    every other attribute is kept bit for bit."""
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    frames, alpha = np.asarray(frames), np.asarray(alpha)
    if len(frames) != len(gaussians_list) or len(alpha) != len(gaussians_list):
        raise ValueError(f"{len(frames)} frames / {len(alpha)} masks for {len(gaussians_list)} Gaussian sets")
    out = []
    for g, f, a in zip(gaussians_list, frames, alpha):
        if len(g) == 0:
            out.append(g)
            continue
        img = torch.from_numpy(fill_outside_mask(f, a))
        H, W = img.shape[:2]
        uv, _ = project_points(g.get_xyz.float(), camera.extrinsics, camera.intrinsics)
        x = (uv[:, 0] * W).floor().clamp(0, W - 1).long()
        y = (uv[:, 1] * H).floor().clamp(0, H - 1).long()
        out.append(_with_colors(g, img[y, x], strength))
    return out
