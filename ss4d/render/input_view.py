"""The one estimator of the input camera in a 4D output's frame, from silhouettes.

SS4D outputs the object in its own canonical frame, not the input camera's, so the input view is found by search:
azimuth/elevation on low-resolution voxel renders, each candidate cropped like the preprocessing (1.2 x the union
bounding box over the clip) and scored against the input masks. The pipeline's colour transfer, the renders'
``input | output`` video and anything else that needs the input view use :func:`estimate_input_view`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ss4d.media.masks import mask_from_premultiplied
from ss4d.render.camera import Camera, orbit_camera
from ss4d.render.preview import gaussians_to_voxels, render_voxels, voxel_colors_from_gaussians

__all__ = [
    "DEFAULT_FOV_DEG",
    "DEFAULT_RADIUS",
    "crop_box",
    "cropped_camera",
    "estimate_input_view",
    "frame_voxels",
    "input_arrays",
    "input_view_camera",
    "resize_image",
    "view_camera",
]

DEFAULT_RADIUS = 2.0
DEFAULT_FOV_DEG = 40.0


def view_camera(yaw_deg: float, pitch_deg: float, res: int, radius: float = DEFAULT_RADIUS,
            fov_deg: float = DEFAULT_FOV_DEG) -> Camera:
    return orbit_camera(math.radians(yaw_deg), math.radians(pitch_deg), radius, math.radians(fov_deg), res, res)


def input_arrays(input_frames, input_alpha=None) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """-> (RGB uint8 frames composited on white, float masks in [0,1] or None).

    4-channel frames are straight-alpha RGBA. 3-channel frames are used as they are; with ``input_alpha`` they are
    taken as premultiplied (the preprocessing output) and composited onto white; without it, a mask is guessed
    from non-black pixels when the frame border is black (premultiplied frames)."""
    if isinstance(input_frames, torch.Tensor):
        input_frames = input_frames.detach().cpu().numpy()
    frames = [np.asarray(f) for f in input_frames]
    if any(f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] not in (3, 4) for f in frames):
        raise ValueError("input frames must be uint8 HxWx3 or HxWx4")
    alphas = None
    if input_alpha is not None:
        if isinstance(input_alpha, torch.Tensor):
            input_alpha = input_alpha.detach().cpu().numpy()
        alphas = [np.asarray(a).reshape(f.shape[:2]).astype(np.float32) / (255.0 if np.asarray(a).dtype == np.uint8
                                                                          else 1.0)
                  for a, f in zip(input_alpha, frames)]
    rgbs, masks = [], []
    for i, f in enumerate(frames):
        if f.shape[2] == 4:
            a = f[..., 3:].astype(np.float32) / 255.0
            rgbs.append(np.rint(f[..., :3] * a + 255.0 * (1 - a)).astype(np.uint8))
            masks.append(a[..., 0])
        elif alphas is not None:
            a = alphas[i][..., None]
            rgbs.append(np.clip(np.rint(f.astype(np.float32) + 255.0 * (1 - a)), 0, 255).astype(np.uint8))
            masks.append(a[..., 0])
        else:
            rgbs.append(f)
            masks.append(None)
    if any(m is None for m in masks):
        border = np.concatenate([np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]]) for f in frames])
        if border.astype(np.float32).mean() < 4.0:  # black surround: premultiplied frames, guess the masks
            masks = [mask_from_premultiplied(f).astype(np.float32) for f in frames]
            rgbs = [np.clip(f.astype(np.float32) + 255.0 * (1 - m[..., None]), 0, 255).astype(np.uint8)
                    for f, m in zip(frames, masks)]
        else:
            masks = None
    return rgbs, masks


def crop_box(alpha_frames: Sequence[np.ndarray], ratio: float = 1.2, thr: float = 0.5):
    """Normalised square crop ``(x0, y0, x1, y1)`` of ``ratio`` x the union bounding box of ``alpha > thr`` over all
    frames (the preprocessing's whole-clip crop), or None when nothing is covered."""
    m = np.zeros_like(alpha_frames[0], dtype=bool)
    for a in alpha_frames:
        m |= a > thr
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return None
    H, W = m.shape
    cx, cy = (xs.min() + xs.max() + 1) / 2 / W, (ys.min() + ys.max() + 1) / 2 / H
    h = max((xs.max() + 1 - xs.min()) / W, (ys.max() + 1 - ys.min()) / H) / 2 * ratio
    return (cx - h, cy - h, cx + h, cy + h)


def cropped_camera(cam: Camera, box, width: int | None = None, height: int | None = None) -> Camera:
    """The camera whose image is the normalised region ``box = (x0, y0, x1, y1)`` of ``cam``'s image."""
    x0, y0, x1, y1 = box
    K = cam.intrinsics.clone()
    sx, sy = x1 - x0, y1 - y0
    K[0, 0], K[0, 2] = K[0, 0] / sx, (K[0, 2] - x0) / sx
    K[1, 1], K[1, 2] = K[1, 1] / sy, (K[1, 2] - y0) / sy
    return Camera(cam.extrinsics, K, width or cam.width, height or cam.height, cam.near, cam.far)


def resize_image(img: np.ndarray, size: int, resample=Image.Resampling.BILINEAR) -> np.ndarray:
    if img.dtype != np.uint8:
        return np.asarray(Image.fromarray(img.astype(np.float32), "F").resize((size, size), resample))
    return np.asarray(Image.fromarray(img).resize((size, size), resample))


def frame_voxels(gaussians_list: Sequence | None, coords: Sequence | None, voxel_resolution: int = 64):
    """Per-frame ``[N_t,3]`` voxels (given or derived from the Gaussians) and their colours (grey without
    Gaussians: ``gaussians_list=None`` with ``coords``)."""
    if gaussians_list is None:
        if coords is None:
            raise ValueError("frame_voxels needs the Gaussians or the voxel coordinates")
        coords = [c[:, 1:] if np.ndim(c) == 2 and np.shape(c)[1] == 4 else c for c in coords]
        return coords, [np.full((len(c), 3), 128, np.uint8) for c in coords]
    if coords is None:
        coords = [gaussians_to_voxels(g, voxel_resolution) for g in gaussians_list]
    coords = [c[:, 1:] if np.ndim(c) == 2 and np.shape(c)[1] == 4 else c for c in coords]
    if len(coords) != len(gaussians_list):
        raise ValueError(f"{len(coords)} voxel sets for {len(gaussians_list)} frames")
    cols = [voxel_colors_from_gaussians(g, c, voxel_resolution) for g, c in zip(gaussians_list, coords)]
    return coords, cols


def estimate_input_view(gaussians_list: Sequence | None, input_frames, input_alpha=None, *,
                        coords: Sequence | None = None, res: int = 48, max_frames: int = 3, yaw_step_deg: float = 15.0,
                        coarse_pitches_deg: Sequence[float] = (0.0, 20.0), num_seeds: int = 3, refine_steps: int = 3,
                        pitch_range_deg: tuple[float, float] = (-30.0, 45.0), radius: float = DEFAULT_RADIUS,
                        fov_deg: float = DEFAULT_FOV_DEG, voxel_resolution: int = 64) -> dict | None:
    """Estimate the camera of the input video in the output's canonical frame.

    Cheap proxy renders: the frames' voxels (``coords``, or voxels of the Gaussian centres) drawn as flat-coloured
    cubes at ``res`` pixels for up to ``max_frames`` frames. Candidate poses: a yaw grid at ``coarse_pitches_deg``,
    then ``refine_steps`` rounds of a shrinking 3x3 yaw/elevation neighbourhood search around each of the
    ``num_seeds`` best coarse poses. Each candidate is cropped like the preprocessing (1.2 x the union bounding box
    over the frames) and scored by mask IoU minus half the colour L1 against the input (mask IoU alone when
    ``gaussians_list`` is None: a structure without colours, given by ``coords``).
    Returns ``{"yaw_deg", "pitch_deg", "crop" (normalised box of the uncropped view), "score"}``, or None when the
    input gives no usable masks (no alpha and no black surround)."""
    rgbs, masks = input_arrays(input_frames, input_alpha)
    T = len(gaussians_list) if gaussians_list is not None else len(coords if coords is not None else [])
    color_weight = 0.5 if gaussians_list is not None else 0.0
    if masks is None or len(rgbs) != T:
        return None
    idx = sorted({round(i * (T - 1) / max(max_frames - 1, 1)) for i in range(min(max_frames, T))})
    box_filter = Image.Resampling.BOX  # area averages, like the supersampled proxy renders
    tgt_m = [resize_image(masks[i], res, box_filter) for i in idx]
    tgt_c = [resize_image(rgbs[i], res, box_filter).astype(np.float32) / 255.0 for i in idx]
    if sum(float(m.sum()) for m in tgt_m) < 1:
        return None
    vox, cols = frame_voxels(gaussians_list, coords, voxel_resolution)
    if all(len(vox[i]) == 0 for i in idx):
        return None
    big = 2 * res  # the uncropped view, wider than the crop

    def draw(i, cam, ssaa):
        img, a = render_voxels(vox[i], cols[i], cam, voxel_resolution, ssaa=ssaa, shading=False, return_alpha=True,
                               bg=(1.0, 1.0, 1.0))
        return img.astype(np.float32) / 255.0, a

    def score(yaw, pitch):
        cam = view_camera(yaw, pitch, big, radius, fov_deg)
        box = crop_box([draw(i, cam, 1)[1] for i in idx])
        if box is None:
            return -1.0, None
        ccam = cropped_camera(cam, box, res, res)
        s = 0.0
        for i, tm, tc in zip(idx, tgt_m, tgt_c):
            c, a = draw(i, ccam, 2)
            union = np.maximum(a, tm).sum() + 1e-6
            both = np.minimum(a, tm)[..., None]
            l1 = float((np.abs(c - tc) * both).sum() / (3 * both.sum() + 1e-6))
            s += float(both.sum() / union) - color_weight * l1
        return s / len(idx), box

    cache: dict = {}

    def consider(best, yaw, pitch):
        key = (round(yaw % 360.0, 6), round(pitch, 6))
        if key not in cache:
            cache[key] = score(*key)
        sc, box = cache[key]
        return (sc, key[0], key[1], box) if sc > best[0] else best

    coarse = [consider((-2.0, 0.0, 0.0, None), float(y), float(p))
              for p in coarse_pitches_deg for y in np.arange(0.0, 360.0, yaw_step_deg)]
    coarse.sort(key=lambda c: -c[0])
    seeds: list = []
    for c in coarse:  # the best few coarse poses that are not neighbours of a better one
        if len(seeds) == num_seeds:
            break
        if all(abs((c[1] - s[1] + 180) % 360 - 180) > yaw_step_deg or abs(c[2] - s[2]) > 0 for s in seeds):
            seeds.append(c)
    best = seeds[0]
    for seed in seeds:  # shrinking 3x3 yaw/elevation neighbourhood search around each seed
        cur = seed
        dy, dp = yaw_step_deg / 2, 10.0
        for _ in range(refine_steps):
            y0, p0 = cur[1], cur[2]
            for a in (-dy, 0.0, dy):
                for e in (-dp, 0.0, dp):
                    if a or e:
                        cur = consider(cur, y0 + a, float(np.clip(p0 + e, *pitch_range_deg)))
            dy, dp = dy / 2, dp / 2
        if cur[0] > best[0]:
            best = cur
    if best[3] is None:
        return None
    return {"yaw_deg": best[1], "pitch_deg": best[2], "crop": tuple(float(x) for x in best[3]), "score": best[0]}


def input_view_camera(view: dict, resolution: int, radius: float = DEFAULT_RADIUS,
                      fov_deg: float = DEFAULT_FOV_DEG) -> Camera:
    """The camera of an input view (:func:`estimate_input_view`'s dict: ``yaw_deg``, ``pitch_deg``, optional
    ``crop``) at ``resolution`` pixels: its image lines up with the preprocessed input frames."""
    cam = view_camera(view["yaw_deg"], view.get("pitch_deg", 0.0), resolution, radius, fov_deg)
    if view.get("crop") is not None:
        cam = cropped_camera(cam, view["crop"], resolution, resolution)
    return cam
