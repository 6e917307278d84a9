"""Blender side of ``ss4d data render``: runs inside a Python process that imports ``bpy`` (Blender as a module,
``pip install ss4d[data]``).

What it does for one asset (see :func:`render_asset`):

1. fresh empty scene, import the file (glTF/GLB, FBX, OBJ, PLY, STL, USD, Alembic), render-time modifier
   settings copied to the viewport so that the exported mesh is the rendered mesh;
2. list its animation clips: every action that drives something (Blender >= 4.4 slotted actions: each slot is
   bound to the object / shape-key block it animates); an asset without animation is one ``static`` clip;
3. per clip: reset every object / bone / shape key to its imported rest state, bind the clip's action slots (all
   NLA tracks muted), evaluate the depsgraph over the whole frame range and normalise the **union of the
   per-frame world bounds** of all render-visible mesh geometry into one canonical box (longest side 1, centred
   at the origin, z-up) - one transform for the whole clip, applied as a parent empty above the asset's roots;
4. sample ``T`` frames uniformly over the clip's frame range (fractional frames use Blender sub-frames); per frame
   export the evaluated (skinned / morphed) triangle mesh in canonical coordinates and render ``V`` Hammersley
   views (radius 2, fov 40 deg, random offset) plus ``K`` monocular input camera paths as RGBA PNGs with a
   transparent film and the TRELLIS lights; every camera is read back from Blender (``matrix_world``) and stored
   as :class:`ss4d.render.camera.Camera` (OpenCV extrinsics, normalised intrinsics).

Nothing here imports ``bpy`` at module import time: :func:`have_bpy` / :func:`require_bpy` check for it, so the
package (and the driver :mod:`ss4d.data.render_assets`) imports fine without Blender.
"""
from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "BPY_MISSING_MESSAGE",
    "BpyMissingError",
    "AssetError",
    "SUPPORTED_EXTENSIONS",
    "DEFAULT_MAX_VERTICES",
    "have_bpy",
    "require_bpy",
    "check_asset_file",
    "check_vertex_budget",
    "sample_frames",
    "normalization_from_bounds",
    "opencv_to_blender_c2w",
    "ClipInfo",
    "RenderSettings",
    "RenderedClip",
    "reset_scene",
    "import_asset",
    "list_clips",
    "activate_clip",
    "evaluate_meshes",
    "render_asset",
]

from .blender_base import (
    _CAM_NAME as _CAM_NAME,
)
from .blender_base import (
    _NORM_NAME as _NORM_NAME,
)
from .blender_base import (
    BPY_MISSING_MESSAGE as BPY_MISSING_MESSAGE,
)
from .blender_base import (
    DEFAULT_MAX_VERTICES as DEFAULT_MAX_VERTICES,
)
from .blender_base import (
    GEOMETRY_TYPES as GEOMETRY_TYPES,
)
from .blender_base import (
    SUPPORTED_EXTENSIONS as SUPPORTED_EXTENSIONS,
)
from .blender_base import (
    TRELLIS_LIGHTS as TRELLIS_LIGHTS,
)
from .blender_base import (
    AssetError as AssetError,
)
from .blender_base import (
    BpyMissingError as BpyMissingError,
)
from .blender_base import (
    ClipInfo as ClipInfo,
)
from .blender_base import (
    RenderedClip as RenderedClip,
)
from .blender_base import (
    RenderSettings as RenderSettings,
)
from .blender_base import (
    _capture_stderr as _capture_stderr,
)
from .blender_base import (
    bounds_frames as bounds_frames,
)
from .blender_base import (
    check_asset_file as check_asset_file,
)
from .blender_base import (
    check_vertex_budget as check_vertex_budget,
)
from .blender_base import (
    have_bpy as have_bpy,
)
from .blender_base import (
    normalization_from_bounds as normalization_from_bounds,
)
from .blender_base import (
    opencv_to_blender_c2w as opencv_to_blender_c2w,
)
from .blender_base import (
    require_bpy as require_bpy,
)
from .blender_base import (
    safe_name as safe_name,
)
from .blender_base import (
    sample_frames as sample_frames,
)
from .blender_base import (
    update_motion,
)
from .blender_render import (
    place_camera as place_camera,
)
from .blender_render import (
    render_still as render_still,
)
from .blender_render import (
    setup_camera as setup_camera,
)
from .blender_render import (
    setup_lights as setup_lights,
)
from .blender_render import (
    setup_render as setup_render,
)
from .blender_scene import (
    _SLOT_TYPES as _SLOT_TYPES,
)
from .blender_scene import (
    RestState as RestState,
)
from .blender_scene import (
    _action_has_curves as _action_has_curves,
)
from .blender_scene import (
    _animatable_ids as _animatable_ids,
)
from .blender_scene import (
    _canonical_root as _canonical_root,
)
from .blender_scene import (
    _id_type_code as _id_type_code,
)
from .blender_scene import (
    _render_visible_objects as _render_visible_objects,
)
from .blender_scene import (
    _run_importer as _run_importer,
)
from .blender_scene import (
    _set_normalization as _set_normalization,
)
from .blender_scene import (
    _slot_matches_type as _slot_matches_type,
)
from .blender_scene import (
    activate_clip as activate_clip,
)
from .blender_scene import (
    evaluate_meshes as evaluate_meshes,
)
from .blender_scene import (
    import_asset as import_asset,
)
from .blender_scene import (
    list_clips as list_clips,
)
from .blender_scene import (
    measure_clip as measure_clip,
)
from .blender_scene import (
    reset_scene as reset_scene,
)
from .blender_scene import (
    scene_vertex_count as scene_vertex_count,
)
from .blender_scene import (
    set_frame as set_frame,
)

# ================================================================================================================
# pure helpers (no bpy): file checks, frame sampling, normalisation, camera conversion
# ================================================================================================================


# ================================================================================================================
# settings / results
# ================================================================================================================


# ================================================================================================================
# bpy: scene, import, clips
# ================================================================================================================


# ================================================================================================================
# bpy: render setup, cameras
# ================================================================================================================


# ================================================================================================================
# one asset
# ================================================================================================================
def _clip_rng(seed: int, clip_id: str, stream: int) -> np.random.Generator:
    import zlib  # noqa: PLC0415

    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(clip_id.encode("utf-8")), int(stream)])


def _select(clips: list[ClipInfo], settings: RenderSettings) -> list[ClipInfo]:
    import fnmatch  # noqa: PLC0415

    if settings.clips:
        clips = [c for c in clips if any(fnmatch.fnmatchcase(c.name, p) for p in settings.clips)]
    if settings.max_clips and settings.max_clips > 0:
        clips = clips[: int(settings.max_clips)]
    return clips


def render_asset(path, settings: RenderSettings, clip_ids: Callable[[list[str]], list[str]],
                 skip: set, make_folder: Callable[[str], Path],
                 on_event: Callable[[dict], None] | None = None) -> Iterator[RenderedClip]:
    """Import ``path`` and yield one :class:`RenderedClip` per clip whose id is not in ``skip``.

    ``clip_ids(names) -> ids`` names the clips; ``make_folder(id)`` returns an empty folder to fill (the caller
    finalises it after the yield). ``on_event`` receives ``{"event": "asset", ...}`` once the clips are known and
    ``{"event": "clip_error", ...}`` for a clip that fails (the other clips go on). Raises :class:`AssetError`
    when the whole asset is unusable."""
    import time  # noqa: PLC0415

    bpy = require_bpy()
    from mathutils import Matrix  # noqa: PLC0415

    from .hammersley import hammersley_cameras  # noqa: PLC0415
    from .input_cameras import input_camera_path  # noqa: PLC0415

    emit = on_event or (lambda e: None)
    reset_scene()
    import_asset(path)
    check_vertex_budget(scene_vertex_count(), settings.max_vertices)
    sc = bpy.context.scene
    fps = float(sc.render.fps) / float(sc.render.fps_base or 1.0)
    all_clips = list_clips()
    clips = _select(all_clips, settings)
    id_of = dict(zip([c.name for c in all_clips], clip_ids([c.name for c in all_clips])))  # ids over all clips
    ids = [id_of[c.name] for c in clips]
    emit({"event": "asset", "clips": [c.name for c in all_clips], "selected": [c.name for c in clips],
          "ids": ids, "static": bool(all_clips and all_clips[0].static), "fps": fps})
    if not clips:
        raise AssetError("no_clips", f"no clip matches {list(settings.clips)} (clips: {[c.name for c in all_clips]})")
    rest = RestState()
    root = _canonical_root()
    setup_render(settings)
    setup_lights()
    cam_obj = setup_camera()
    visible = _render_visible_objects()
    fov = math.radians(settings.fov_deg)
    S, C, T = int(settings.size), int(settings.cond_size), int(settings.num_frames)

    for clip, cid in zip(clips, ids):
        if cid in skip:
            continue
        folder = None
        try:
            activate_clip(clip, rest)
            root.matrix_world = Matrix.Identity(4)
            frames = sample_frames(clip.frame_start, clip.frame_end, T)
            center, scale, motion_w = measure_clip(clip, frames, visible, settings.max_vertices,
                                                   settings.max_bounds_frames)
            _set_normalization(root, center, scale)
            bpy.context.view_layer.update()
            # --- cameras ---
            if settings.per_frame_views:
                view_cams = [hammersley_cameras(settings.num_views, radius=settings.radius, fov=fov, width=S,
                                                rng=_clip_rng(settings.seed, cid, 100 + t)) for t in range(T)]
            else:
                vc = hammersley_cameras(settings.num_views, radius=settings.radius, fov=fov, width=S,
                                        rng=_clip_rng(settings.seed, cid, 1))
                view_cams = [vc] * T
            # --- pass 1: the evaluated mesh of every sampled frame (canonical now) ---
            folder = make_folder(cid)
            for sub in ["views", "meshes"] + [("cond" if k == 0 else f"cond_{k}")
                                              for k in range(int(settings.input_paths))]:
                (folder / sub).mkdir()
            nverts, nfaces, first, motion, frame_pts, bound_radius = [], [], None, 0.0, [], 0.0
            for t, f in enumerate(frames):
                set_frame(float(f))
                v, fc = evaluate_meshes(visible)
                np.savez_compressed(folder / "meshes" / f"f{t:03d}.npz", vertices=v.astype(np.float32),
                                    faces=fc.astype(np.int32), frame=np.float64(f))
                nverts.append(int(v.shape[0]))
                nfaces.append(int(fc.shape[0]))
                frame_pts.append(v[:: max(1, v.shape[0] // 50000)])
                if v.shape[0]:
                    bound_radius = max(bound_radius, float(np.linalg.norm(v, axis=1).max()))
                first, motion = update_motion(first, motion, v, float("nan"))
            # --- monocular input camera paths, fitted to the object over the whole clip ---
            cond_cams, cond_params = [], []
            for k in range(int(settings.input_paths)):
                cams, params = input_camera_path(T, _clip_rng(settings.seed, cid, 1000 + k), frame_pts,
                                                 fov_range_deg=settings.input_fov_deg,
                                                 elevation_range_deg=settings.input_elevation_deg,
                                                 orbit_prob=settings.input_orbit_prob, size=C)
                cond_cams.append(cams)
                cond_params.append(params)
            del frame_pts
            # --- pass 2: renders ---
            done: dict = {}
            stored_views = [[None] * settings.num_views for _ in range(T)]
            stored_cond = [[None] * T for _ in range(len(cond_cams))]
            n_renders, t_render = 0, 0.0
            for t, f in enumerate(frames):
                set_frame(float(f))
                jobs = [(folder / "views" / f"f{t:03d}_v{j:03d}.png", cam, S, ("v", t, j))
                        for j, cam in enumerate(view_cams[t])]
                jobs += [(folder / ("cond" if k == 0 else f"cond_{k}") / f"f{t:03d}.png", cond_cams[k][t], C,
                          ("c", k, t)) for k in range(len(cond_cams))]
                for out, cam, size, slot in jobs:
                    sc.render.resolution_x = sc.render.resolution_y = size
                    got = place_camera(cam_obj, cam.resized(size, size), size)
                    err = float((got.extrinsics - cam.extrinsics.float()).abs().max())
                    if err > 1e-4:
                        raise RuntimeError(f"camera placement error {err:.2e}")
                    # identical state (same frame value and camera) -> copy the earlier render
                    key = (float(f), size, np.round(got.extrinsics.double().numpy(), 6).tobytes(),
                           round(float(got.intrinsics[0, 0]), 6))
                    if key in done:
                        shutil.copyfile(done[key], out)
                    else:
                        tr = time.perf_counter()
                        render_still(out)
                        t_render += time.perf_counter() - tr
                        n_renders += 1
                        done[key] = out
                    if slot[0] == "v":
                        stored_views[slot[1]][slot[2]] = got
                    else:
                        stored_cond[slot[1]][slot[2]] = got
            clip_motion = motion_w * scale if np.isfinite(motion_w) else float("inf")
            static = bool(clip.static or clip_motion < 1e-6)
            flags = ["static"] if static else []
            if not clip.static and static:
                flags.append("no_motion")
            if not np.isfinite(clip_motion):
                flags.append("topology_changes")
            yield RenderedClip(
                name=clip.name, index=clip.index, clip_id=cid, folder=folder, frames=[float(x) for x in frames],
                frame_range=(clip.frame_start, clip.frame_end), center=[float(x) for x in center],
                scale=float(scale), bound_radius=bound_radius, views=stored_views, cond=stored_cond,
                cond_params=cond_params, num_vertices=nverts, num_faces=nfaces, motion=float(clip_motion),
                motion_sampled=float(motion),
                static=static, flags=flags, fps=fps, render_seconds=t_render, num_renders=n_renders)
        except Exception as e:  # noqa: BLE001 - one bad clip must not stop the others
            import traceback  # noqa: PLC0415

            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

            code = e.code if isinstance(e, AssetError) else "clip_failed"
            emit({"event": "clip_error", "id": cid, "clip": clip.name, "code": code,
                  "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
