"""Preview videos and images of a 4D Gaussian asset.

:func:`write_all_renders` writes (all on a white background, radius-2 cameras with a 40 degree field of view,
z-up world, azimuths in the ss4d/TRELLIS dataset convention ``eye = r (cos a cos e, sin a cos e, sin e)``):

* ``orbit.mp4`` - the animation playing while the camera circles once at elevation 20 degrees;
* ``grid.mp4`` - 2x2 fixed views at azimuths 0/90/180/270 (elevation 20), one video frame per animation frame;
* ``input_vs_output.mp4`` - the preprocessed input frame next to the output seen from the estimated input
  view (only when input frames are given);
* ``voxels.mp4`` / ``voxels.png`` - the occupied voxels as shaded cubes (orbit like ``orbit.mp4`` / a strip of up
  to 4 frames), via :mod:`ss4d.render.preview`.

The input view (the camera of the input video in the output's frame) comes from the one estimator,
:func:`ss4d.render.input_view.estimate_input_view`; the output panel is rendered with the preprocessing's crop
folded into the camera intrinsics.
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
from ss4d.media.write import write_video
from ss4d.render.camera import Camera
from ss4d.render.input_view import (
    DEFAULT_FOV_DEG,
    DEFAULT_RADIUS,
    cropped_camera,
    estimate_input_view,
    frame_voxels,
    input_arrays,
    input_view_camera,
    resize_image,
    view_camera,
)
from ss4d.render.preview import DEFAULT_AABB, render_voxels
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

DEFAULT_PITCH_DEG = 20.0
GRID_YAWS_DEG = (0.0, 90.0, 180.0, 270.0)
WHITE = (1.0, 1.0, 1.0)


def to_uint8(color: torch.Tensor) -> np.ndarray:
    """``[3,H,W]`` float image in [0,1] -> ``uint8 [H,W,3]``."""
    return (color.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


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
    return [to_uint8(_render(gaussians_list[t], view_camera(yaw0_deg + 360.0 * k / n, pitch_deg, resolution, radius,
                                                        fov_deg), bg, ssaa)["color"]) for k, t in enumerate(sched)]


def render_grid_frames(gaussians_list: Sequence, resolution: int = 256, *, yaws_deg: Sequence[float] = GRID_YAWS_DEG,
                       pitch_deg: float = DEFAULT_PITCH_DEG, radius: float = DEFAULT_RADIUS,
                       fov_deg: float = DEFAULT_FOV_DEG, bg=WHITE, ssaa: int = 1) -> list[np.ndarray]:
    """2x2 grid (``2*resolution`` square) of fixed views per animation frame; views in reading order."""
    if len(yaws_deg) != 4:
        raise ValueError("the grid needs exactly 4 azimuths")
    cams = [view_camera(y, pitch_deg, resolution, radius, fov_deg) for y in yaws_deg]
    out = []
    for g in gaussians_list:
        v = [to_uint8(_render(g, c, bg, ssaa)["color"]) for c in cams]
        out.append(np.concatenate([np.concatenate(v[:2], 1), np.concatenate(v[2:], 1)], 0))
    return out


# ----------------------------------------------------------------------------------------------------------------
# input frames and the input view
# ----------------------------------------------------------------------------------------------------------------
def render_side_by_side_frames(gaussians_list: Sequence, input_frames, resolution: int = 256, *, input_alpha=None,
                               view: dict | str | None = "auto", coords: Sequence | None = None,
                               voxel_resolution: int = 64, radius: float = DEFAULT_RADIUS,
                               fov_deg: float = DEFAULT_FOV_DEG, bg=WHITE, ssaa: int = 1):
    """``input | output`` frames (``resolution`` x ``2*resolution``). ``view``: ``"auto"`` (estimate it,
    :func:`estimate_input_view`), a dict with ``yaw_deg``, ``pitch_deg`` and optionally ``crop``, or None
    (azimuth 0, elevation 0, no crop). Returns ``(frames, view_used)``."""
    rgbs, _ = input_arrays(input_frames, input_alpha)
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
        left = resize_image(f, resolution, Image.Resampling.LANCZOS)
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
    return [render_voxels(coords_list[t], cols[t], view_camera(yaw0_deg + 360.0 * k / n, pitch_deg, resolution, radius,
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
    ``input_view``). Videos go through :func:`ss4d.media.write.write_video` (H.264 MP4, GIF fallback), so a
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
    coords, cols = frame_voxels(gl, coords, voxel_resolution)
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
    cam = view_camera(45.0, DEFAULT_PITCH_DEG, res)
    strip = np.concatenate([render_voxels(coords[t], cols[t], cam, voxel_resolution, aabb=aabb) for t in pick], 1)
    paths["voxels_image"] = _save_png(out_dir / "voxels.png", strip)
    meta["orbit_frames"] = len(sched)
    meta["voxels_image_frames"] = pick
    meta["files"] = {name: p.name for name, p in paths.items()}
    paths["meta"] = atomic_write_text(out_dir / "renders.json", json.dumps(meta, indent=2) + "\n", overwrite=True)
    return paths
