"""Official SS4D input preprocessing (crop / resize / premultiply) and model-input tensors.

:func:`preprocess_frames` reproduces the reference ``preprocess_images`` of SS4D exactly:

1. all frames RGBA;
2. ONE crop for the whole clip: ``bbox = (x0, y0, x1, y1)`` = min/max pixel index over all pixels with
   ``alpha > 0`` in ANY frame (``x1``/``y1`` are the max indices, inclusive);
3. ``center = ((x0 + x1) / 2, (y0 + y1) / 2)``, ``hsize = max(x1 - x0, y1 - y0) / 2`` (no ``+1``),
   ``aug = 1.2 * hsize``, crop box ``(int(cx - aug), int(cy - aug), int(cx + aug), int(cy + aug))`` (Python
   ``int`` truncates toward zero) applied with PIL ``Image.crop`` semantics: parts outside the image are
   transparent zeros;
4. resize to ``size x size`` (518) with LANCZOS on the RGBA image (Pillow resamples RGBA with premultiplied alpha);
5. premultiply: float32 ``rgb/255 * a/255``, back to uint8 with ``(x * 255).astype(uint8)`` - i.e. *truncation*,
   in float32, exactly like the reference (this can be 1 level below ``round(rgb * a / 255)``).

The model then sees the premultiplied RGB (object over black) as float in [0, 1] (:func:`to_model_input`),
normalised with the ImageNet statistics (:func:`imagenet_normalize`) for the DINOv2 image encoder.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ss4d.errors import InputError
from ss4d.media.masks import mask_from_premultiplied

__all__ = [
    "AUG_SIZE_RATIO",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_SIZE",
    "alpha_bbox",
    "crop_box_from_bbox",
    "imagenet_normalize",
    "mask_from_premultiplied",
    "preprocess_frames",
    "to_model_input",
]

MODEL_SIZE = 518
AUG_SIZE_RATIO = 1.2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _as_rgba_list(rgba_frames) -> list[np.ndarray]:
    if isinstance(rgba_frames, np.ndarray) and rgba_frames.ndim == 4:
        frames = list(rgba_frames)
    else:
        frames = [np.asarray(f.convert("RGBA")) if isinstance(f, Image.Image) else np.asarray(f) for f in rgba_frames]
    if not frames:
        raise InputError("no frames to preprocess")
    for f in frames:
        if f.ndim != 3 or f.shape[2] != 4:
            raise InputError(f"preprocessing needs RGBA frames (HxWx4), got shape {f.shape}; matte the clip first")
        if f.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {f.dtype}")
    if any(f.shape != frames[0].shape for f in frames):
        raise InputError("all frames of a clip must have the same size")
    return frames


def alpha_bbox(rgba_frames) -> tuple[int, int, int, int]:
    """Union bbox ``(x0, y0, x1, y1)`` (inclusive max indices) of ``alpha > 0`` over all frames.

    Raises :class:`InputError` if every frame is fully transparent."""
    frames = _as_rgba_list(rgba_frames)
    h, w = frames[0].shape[:2]
    cols = np.zeros(w, bool)
    rows = np.zeros(h, bool)
    for f in frames:
        a = f[..., 3] > 0
        cols |= a.any(axis=0)
        rows |= a.any(axis=1)
    if not cols.any():
        raise InputError(f"all {len(frames)} frames are fully transparent (alpha = 0 everywhere): nothing to "
                         f"reconstruct")
    xs, ys = np.flatnonzero(cols), np.flatnonzero(rows)
    return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])


def crop_box_from_bbox(bbox: Sequence[int], aug_ratio: float = AUG_SIZE_RATIO) -> tuple[int, int, int, int]:
    """Square crop box (PIL ``(left, upper, right, lower)``) around ``bbox`` exactly as the reference computes it."""
    x0, y0, x1, y1 = (int(v) for v in bbox)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hsize = max(x1 - x0, y1 - y0) / 2
    aug = hsize * aug_ratio
    return int(cx - aug), int(cy - aug), int(cx + aug), int(cy + aug)


def preprocess_frames(rgba_frames, size: int = MODEL_SIZE) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Official SS4D preprocessing of a clip of RGBA frames (see module docstring).

    Returns ``(rgb, alpha, crop_box)``: ``rgb`` ``uint8 [T, size, size, 3]`` premultiplied by alpha (object over
    black), ``alpha`` ``uint8 [T, size, size]`` (the resized alpha), ``crop_box`` the PIL box used for every frame
    (may extend outside the image; those parts are transparent).
    Raises :class:`InputError` when every frame is fully transparent or frames are not RGBA.
    """
    rgba, box = crop_rgba_frames(rgba_frames, size)
    x = rgba.astype(np.float32) / 255
    rgb = (x[..., :3] * x[..., 3:4] * 255).astype(np.uint8)
    return rgb, np.ascontiguousarray(rgba[..., 3]), box


def crop_rgba_frames(rgba_frames, size: int = MODEL_SIZE) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The crop of :func:`preprocess_frames` (one square box around the alpha of all frames, LANCZOS to ``size``)
    keeping straight RGBA: ``(uint8 [T, size, size, 4], crop_box)``. Training crops its conditioning videos with
    it too, so the model sees inputs framed exactly as at inference."""
    frames = _as_rgba_list(rgba_frames)
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    box = crop_box_from_bbox(alpha_bbox(frames))
    out = np.empty((len(frames), size, size, 4), np.uint8)
    for i, f in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(f, "RGBA").crop(box).resize((size, size), Image.Resampling.LANCZOS))
    return out, box


def to_model_input(frames_uint8, size: int = MODEL_SIZE) -> torch.Tensor:
    """``uint8`` RGB frames (``[T, H, W, 3]`` array or list) -> ``float32`` tensor ``[T, 3, size, size]`` in [0, 1].

    Frames not already ``size x size`` are resized with LANCZOS (as the reference ``encode_image`` does); RGBA input
    is reduced to its RGB channels (the premultiplied frames from :func:`preprocess_frames` are RGB already)."""
    frames = list(frames_uint8) if not (isinstance(frames_uint8, np.ndarray) and frames_uint8.ndim == 3) \
        else [frames_uint8]
    if not frames:
        raise ValueError("no frames")
    out = np.empty((len(frames), 3, size, size), np.float32)
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] not in (3, 4):
            raise ValueError(f"frames must be uint8 HxWx3, got {f.dtype} {f.shape}")
        f = f[..., :3]
        if f.shape[:2] != (size, size):
            f = np.asarray(Image.fromarray(np.ascontiguousarray(f), "RGB").resize((size, size),
                                                                                 Image.Resampling.LANCZOS))
        out[i] = f.transpose(2, 0, 1).astype(np.float32) / 255
    return torch.from_numpy(out)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` with the ImageNet statistics over the channel dim (``[..., 3, H, W]``)."""
    if x.shape[-3] != 3:
        raise ValueError(f"expected 3 channels at dim -3, got shape {tuple(x.shape)}")
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std
