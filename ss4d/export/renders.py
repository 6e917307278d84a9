"""Preview videos and images of a 4D Gaussian asset.

:func:`write_all_renders` writes (all on a white background, radius-2 cameras with a 40 degree field of view,
z-up world, azimuths in the ss4d/TRELLIS dataset convention ``eye = r (cos a cos e, sin a cos e, sin e)``):

* ``orbit.mp4`` - the animation playing while the camera circles once at elevation 20 degrees;
* ``grid.mp4`` - 2x2 fixed views at azimuths 0/90/180/270 (elevation 20), one video frame per animation frame;
* ``input_vs_output.mp4`` - the preprocessed input frame next to the output seen from the estimated input
  view (only when input frames are given);
* ``voxels.mp4`` / ``voxels.png`` - the occupied voxels as shaded cubes (orbit like ``orbit.mp4`` / a strip of up
  to 4 frames), via :mod:`ss4d.render.preview`.

The input view: SS4D outputs the object in its own canonical frame, not the input camera's (see the evaluation
spec), so :func:`estimate_input_view` searches azimuth/elevation on low-resolution renders for the camera whose
silhouettes best match the input masks after the same whole-clip crop the preprocessing applies (1.2 x the union
bounding box), and the output panel is rendered with that crop folded into the camera intrinsics.
"""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ss4d.io_utils import atomic_file, atomic_write_text
from ss4d.pipeline.preprocess import mask_from_premultiplied
from ss4d.pipeline.video_io import write_video
from ss4d.render.camera import Camera, orbit_camera
from ss4d.render.preview import DEFAULT_AABB, gaussians_to_voxels, render_voxels, voxel_colors_from_gaussians
from ss4d.render.rasterizer import rasterize

__all__ = [
    "DEFAULT_FOV_DEG",
    "DEFAULT_PITCH_DEG",
    "DEFAULT_RADIUS",
    "GRID_YAWS_DEG",
    "cropped_camera",
    "estimate_input_view",
    "input_view_camera",
    "orbit_schedule",
    "render_grid_frames",
    "render_orbit_frames",
    "render_side_by_side_frames",
    "render_voxel_orbit_frames",
    "to_uint8",
    "write_all_renders",
]

DEFAULT_RADIUS = 2.0
DEFAULT_FOV_DEG = 40.0
DEFAULT_PITCH_DEG = 20.0
GRID_YAWS_DEG = (0.0, 90.0, 180.0, 270.0)
WHITE = (1.0, 1.0, 1.0)


def to_uint8(color: torch.Tensor) -> np.ndarray:
    """``[3,H,W]`` float image in [0,1] -> ``uint8 [H,W,3]``."""
    return (color.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def _camera(yaw_deg: float, pitch_deg: float, res: int, radius: float = DEFAULT_RADIUS,
            fov_deg: float = DEFAULT_FOV_DEG) -> Camera:
    return orbit_camera(math.radians(yaw_deg), math.radians(pitch_deg), radius, math.radians(fov_deg), res, res)


@torch.no_grad()
def _render(g, cam: Camera, bg=WHITE, ssaa: int = 1) -> dict:
    return rasterize(g, cam, bg, ssaa=ssaa)


def orbit_schedule(num_anim_frames: int, num_frames: int | None = None, min_frames: int = 48) -> list[int]:
    """Animation frame shown at each orbit video frame: the animation loops while the camera turns once over
    ``num_frames`` video frames (default: the smallest multiple of the animation length that is >= ``min_frames``)."""
    T = int(num_anim_frames)
    if T < 1:
        raise ValueError("no frames to render")
    n = int(num_frames) if num_frames else T * max(1, math.ceil(min_frames / T))
    return [k % T for k in range(n)]


def render_orbit_frames(gaussians_list: Sequence, resolution: int = 256, *, num_frames: int | None = None,
                        min_frames: int = 48, pitch_deg: float = DEFAULT_PITCH_DEG, yaw0_deg: float = 0.0,
                        radius: float = DEFAULT_RADIUS, fov_deg: float = DEFAULT_FOV_DEG, bg=WHITE,
                        ssaa: int = 1) -> list[np.ndarray]:
    """One full camera revolution while the animation plays (see :func:`orbit_schedule`)."""
    sched = orbit_schedule(len(gaussians_list), num_frames, min_frames)
    n = len(sched)
    return [to_uint8(_render(gaussians_list[t], _camera(yaw0_deg + 360.0 * k / n, pitch_deg, resolution, radius,
                                                        fov_deg), bg, ssaa)["color"]) for k, t in enumerate(sched)]


def render_grid_frames(gaussians_list: Sequence, resolution: int = 256, *, yaws_deg: Sequence[float] = GRID_YAWS_DEG,
                       pitch_deg: float = DEFAULT_PITCH_DEG, radius: float = DEFAULT_RADIUS,
                       fov_deg: float = DEFAULT_FOV_DEG, bg=WHITE, ssaa: int = 1) -> list[np.ndarray]:
    """2x2 grid (``2*resolution`` square) of fixed views per animation frame; views in reading order."""
    if len(yaws_deg) != 4:
        raise ValueError("the grid needs exactly 4 azimuths")
    cams = [_camera(y, pitch_deg, resolution, radius, fov_deg) for y in yaws_deg]
    out = []
    for g in gaussians_list:
        v = [to_uint8(_render(g, c, bg, ssaa)["color"]) for c in cams]
        out.append(np.concatenate([np.concatenate(v[:2], 1), np.concatenate(v[2:], 1)], 0))
    return out


# ----------------------------------------------------------------------------------------------------------------
# input frames and the input view
# ----------------------------------------------------------------------------------------------------------------
def _input_arrays(input_frames, input_alpha=None) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
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


def _crop_box(alpha_frames: Sequence[np.ndarray], ratio: float = 1.2, thr: float = 0.5):
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


def _resize(img: np.ndarray, size: int, resample=Image.Resampling.BILINEAR) -> np.ndarray:
    if img.dtype != np.uint8:
        return np.asarray(Image.fromarray(img.astype(np.float32), "F").resize((size, size), resample))
    return np.asarray(Image.fromarray(img).resize((size, size), resample))


def _frame_voxels(gaussians_list: Sequence, coords: Sequence | None, voxel_resolution: int = 64):
    """Per-frame ``[N_t,3]`` voxels (given or derived from the Gaussians) and their colours."""
    if coords is None:
        coords = [gaussians_to_voxels(g, voxel_resolution) for g in gaussians_list]
    coords = [c[:, 1:] if np.ndim(c) == 2 and np.shape(c)[1] == 4 else c for c in coords]
    if len(coords) != len(gaussians_list):
        raise ValueError(f"{len(coords)} voxel sets for {len(gaussians_list)} frames")
    cols = [voxel_colors_from_gaussians(g, c, voxel_resolution) for g, c in zip(gaussians_list, coords)]
    return coords, cols


def estimate_input_view(gaussians_list: Sequence, input_frames, input_alpha=None, *, coords: Sequence | None = None,
                        res: int = 48, max_frames: int = 3, yaw_step_deg: float = 15.0,
                        coarse_pitches_deg: Sequence[float] = (0.0, 20.0), num_seeds: int = 3, refine_steps: int = 3,
                        pitch_range_deg: tuple[float, float] = (-30.0, 45.0), radius: float = DEFAULT_RADIUS,
                        fov_deg: float = DEFAULT_FOV_DEG, voxel_resolution: int = 64) -> dict | None:
    """Estimate the camera of the input video in the output's canonical frame.

    Cheap proxy renders: the frames' voxels (``coords``, or voxels of the Gaussian centres) drawn as flat-coloured
    cubes at ``res`` pixels for up to ``max_frames`` frames. Candidate poses: a yaw grid at ``coarse_pitches_deg``,
    then ``refine_steps`` rounds of a shrinking 3x3 yaw/elevation neighbourhood search around each of the
    ``num_seeds`` best coarse poses. Each candidate is cropped like the preprocessing (1.2 x the union bounding box
    over the frames) and scored by mask IoU minus half the colour L1 against the input.
    Returns ``{"yaw_deg", "pitch_deg", "crop" (normalised box of the uncropped view), "score"}``, or None when the
    input gives no usable masks (no alpha and no black surround)."""
    rgbs, masks = _input_arrays(input_frames, input_alpha)
    T = len(gaussians_list)
    if masks is None or len(rgbs) != T:
        return None
    idx = sorted({round(i * (T - 1) / max(max_frames - 1, 1)) for i in range(min(max_frames, T))})
    box_filter = Image.Resampling.BOX  # area averages, like the supersampled proxy renders
    tgt_m = [_resize(masks[i], res, box_filter) for i in idx]
    tgt_c = [_resize(rgbs[i], res, box_filter).astype(np.float32) / 255.0 for i in idx]
    if sum(float(m.sum()) for m in tgt_m) < 1:
        return None
    vox, cols = _frame_voxels(gaussians_list, coords, voxel_resolution)
    if all(len(vox[i]) == 0 for i in idx):
        return None
    big = 2 * res  # the uncropped view, wider than the crop

    def draw(i, cam, ssaa):
        img, a = render_voxels(vox[i], cols[i], cam, voxel_resolution, ssaa=ssaa, shading=False, return_alpha=True,
                               bg=(1.0, 1.0, 1.0))
        return img.astype(np.float32) / 255.0, a

    def score(yaw, pitch):
        cam = _camera(yaw, pitch, big, radius, fov_deg)
        box = _crop_box([draw(i, cam, 1)[1] for i in idx])
        if box is None:
            return -1.0, None
        ccam = cropped_camera(cam, box, res, res)
        s = 0.0
        for i, tm, tc in zip(idx, tgt_m, tgt_c):
            c, a = draw(i, ccam, 2)
            union = np.maximum(a, tm).sum() + 1e-6
            both = np.minimum(a, tm)[..., None]
            l1 = float((np.abs(c - tc) * both).sum() / (3 * both.sum() + 1e-6))
            s += float(both.sum() / union) - 0.5 * l1
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
    cam = _camera(view["yaw_deg"], view.get("pitch_deg", 0.0), resolution, radius, fov_deg)
    if view.get("crop") is not None:
        cam = cropped_camera(cam, view["crop"], resolution, resolution)
    return cam


def render_side_by_side_frames(gaussians_list: Sequence, input_frames, resolution: int = 256, *, input_alpha=None,
                               view: dict | str | None = "auto", coords: Sequence | None = None,
                               voxel_resolution: int = 64, radius: float = DEFAULT_RADIUS,
                               fov_deg: float = DEFAULT_FOV_DEG, bg=WHITE, ssaa: int = 1):
    """``input | output`` frames (``resolution`` x ``2*resolution``). ``view``: ``"auto"`` (estimate it,
    :func:`estimate_input_view`), a dict with ``yaw_deg``, ``pitch_deg`` and optionally ``crop``, or None
    (azimuth 0, elevation 0, no crop). Returns ``(frames, view_used)``."""
    rgbs, _ = _input_arrays(input_frames, input_alpha)
    if len(rgbs) != len(gaussians_list):
        raise ValueError(f"{len(rgbs)} input frames for {len(gaussians_list)} output frames")
    if isinstance(view, str):
        if view != "auto":
            raise ValueError(f"view must be 'auto', a dict or None, got {view!r}")
        view = estimate_input_view(gaussians_list, input_frames, input_alpha, coords=coords, radius=radius,
                                   fov_deg=fov_deg, voxel_resolution=voxel_resolution)
    if view is None:
        view = {"yaw_deg": 0.0, "pitch_deg": 0.0, "crop": None}
    cam = input_view_camera(view, resolution, radius, fov_deg)
    out = []
    for g, f in zip(gaussians_list, rgbs):
        left = _resize(f, resolution, Image.Resampling.LANCZOS)
        out.append(np.concatenate([left, to_uint8(_render(g, cam, bg, ssaa)["color"])], 1))
    return out, view


def render_voxel_orbit_frames(coords_list: Sequence, colors_list: Sequence | None, resolution: int = 256, *,
                              schedule: Sequence[int] | None = None, pitch_deg: float = DEFAULT_PITCH_DEG,
                              yaw0_deg: float = 0.0, radius: float = DEFAULT_RADIUS, fov_deg: float = DEFAULT_FOV_DEG,
                              voxel_resolution: int = 64, **kw) -> list[np.ndarray]:
    """Voxel cubes along the same orbit as :func:`render_orbit_frames` (``schedule`` = frame per video frame)."""
    sched = list(schedule) if schedule is not None else orbit_schedule(len(coords_list))
    n = len(sched)
    cols = colors_list if colors_list is not None else [None] * len(coords_list)
    return [render_voxels(coords_list[t], cols[t], _camera(yaw0_deg + 360.0 * k / n, pitch_deg, resolution, radius,
                                                           fov_deg), voxel_resolution, **kw)
            for k, t in enumerate(sched)]


def _save_png(path: Path, img: np.ndarray) -> Path:
    with atomic_file(path, overwrite=True) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return path


def write_all_renders(out_dir, gaussians_list: Sequence, input_frames=None, coords: Sequence | None = None,
                      fps: float = 30.0, resolution: int = 256, *, input_alpha=None, input_view="auto",
                      orbit_min_frames: int = 48, voxel_resolution: int = 64, ssaa: int = 1) -> dict[str, Path]:
    """Write the preview renders into ``out_dir`` and return ``{name: path}`` for
    ``orbit``, ``grid``, ``input_vs_output`` (only with ``input_frames``), ``voxels`` and ``voxels_image``.

    ``coords``: per-frame ``[N_t,3]`` occupied voxels (None: derived from the Gaussian centres).
    ``input_frames``: ``[T,H,W,3|4]`` uint8 (see :func:`render_side_by_side_frames` for ``input_alpha`` /
    ``input_view``). Videos go through :func:`ss4d.pipeline.video_io.write_video` (H.264 MP4, GIF fallback), so a
    returned path may end in ``.gif``. ``meta`` is ``renders.json``: the settings and the input view used."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gl = list(gaussians_list)
    if not gl:
        raise ValueError("no frames to render")
    res = int(resolution)
    paths: dict[str, Path] = {}
    meta: dict = {"fps": float(fps), "resolution": res, "radius": DEFAULT_RADIUS, "fov_deg": DEFAULT_FOV_DEG,
                  "orbit_pitch_deg": DEFAULT_PITCH_DEG, "grid_yaws_deg": list(GRID_YAWS_DEG),
                  "azimuth_convention": "eye = r (cos a cos e, sin a cos e, sin e), z up", "background": "white"}
    sched = orbit_schedule(len(gl), None, orbit_min_frames)
    coords, cols = _frame_voxels(gl, coords, voxel_resolution)
    paths["orbit"] = write_video(out_dir / "orbit.mp4", render_orbit_frames(gl, res, num_frames=len(sched), ssaa=ssaa),
                                 fps)
    paths["grid"] = write_video(out_dir / "grid.mp4", render_grid_frames(gl, res, ssaa=ssaa), fps)
    if input_frames is not None:
        try:
            frames, view = render_side_by_side_frames(gl, input_frames, res, input_alpha=input_alpha,
                                                      view=input_view, coords=coords,
                                                      voxel_resolution=voxel_resolution, ssaa=ssaa)
            meta["input_view"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in view.items()}
            paths["input_vs_output"] = write_video(out_dir / "input_vs_output.mp4", frames, fps)
        except ValueError as e:
            warnings.warn(f"input | output video skipped: {e}", stacklevel=2)

    aabb = getattr(gl[0], "aabb", DEFAULT_AABB)
    paths["voxels"] = write_video(out_dir / "voxels.mp4", render_voxel_orbit_frames(
        coords, cols, res, schedule=sched, voxel_resolution=voxel_resolution, aabb=aabb), fps)
    T = len(gl)
    k = min(4, T)
    pick = sorted({round(i * (T - 1) / max(k - 1, 1)) for i in range(k)})
    cam = _camera(45.0, DEFAULT_PITCH_DEG, res)
    strip = np.concatenate([render_voxels(coords[t], cols[t], cam, voxel_resolution, aabb=aabb) for t in pick], 1)
    paths["voxels_image"] = _save_png(out_dir / "voxels.png", strip)
    meta["orbit_frames"] = len(sched)
    meta["voxels_image_frames"] = pick
    meta["files"] = {name: p.name for name, p in paths.items()}
    paths["meta"] = atomic_write_text(out_dir / "renders.json", json.dumps(meta, indent=2) + "\n", overwrite=True)
    return paths
