"""Write a whole generation result: exports (PLY frames, .ss4d container, animated GLB, web viewer) and renders.

Everything is written into a temporary folder next to the target and renamed into place at the end, so a
failed run leaves nothing half-written and an existing output is only replaced with `overwrite=True` (an existing
*empty* folder counts as free).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..io_utils import atomic_dir
from .container import save_4d, split_coords
from .glb import gaussians_to_glb
from .ply import save_ply
from .renders import write_all_renders
from .viewer import write_viewer


def is_empty_dir(path) -> bool:
    """True when ``path`` is an existing folder with nothing in it (such an output target is free to use)."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def export_plys(gaussians_list, folder, overwrite: bool = False, *, up: str = "z", sh_degree: int = 0) -> list[Path]:
    """Write ``folder/frame_XXX.ply`` per frame (``up`` / ``sh_degree`` as in :func:`save_ply`), all or nothing."""
    folder = Path(folder)
    with atomic_dir(folder, overwrite=overwrite or is_empty_dir(folder)) as tmp:
        names = [f"frame_{t:03d}.ply" for t in range(len(gaussians_list))]
        for g, n in zip(gaussians_list, names):
            save_ply(g, Path(tmp) / n, up=up, sh_degree=sh_degree)
    return [folder / n for n in names]


def export_glb(gaussians_list, coords, path, fps: float, resolution: int | None = None) -> Path:
    res = resolution or _grid_resolution(coords)
    return gaussians_to_glb(path, gaussians_list, fps, coords=coords, resolution=res)


def _grid_resolution(coords) -> int:
    if not coords:
        return 64
    m = max(int(c.max()) for c in coords if len(c)) + 1
    return 32 if m <= 32 else 64


def export_4d(out_dir, gaussians_list: Sequence, fps: float, *, coords: Sequence | None = None, input_frames=None,
              extra_meta: dict | None = None, ply: bool = True, glb: bool = True, viewer: bool = True,
              renders: bool = False, render_size: int = 256, input_view: dict | str | None = "auto",
              overwrite: bool = False) -> dict[str, Path | list[Path]]:
    """The one writer of an asset folder, in one atomic step: ``result.ss4d`` always, ``ply/frame_XXX.ply``,
    ``animation.glb``, ``viewer.html`` and ``renders/`` as asked. Returns the paths (``"ss4d"``, ``"ply"`` (list),
    ``"glb"``, ``"viewer"``, ``"renders"`` (dict))."""
    out_dir = Path(out_dir)
    gl = list(gaussians_list)
    per_frame = split_coords(coords, len(gl)) if coords is not None else None
    res = _grid_resolution(per_frame) if per_frame is not None else 64
    meta = {"voxel_resolution": res, **(extra_meta or {})}
    names: dict[str, Path | list[Path]] = {}
    with atomic_dir(out_dir, overwrite=overwrite or is_empty_dir(out_dir)) as tmp:
        tmp = Path(tmp)
        save_4d(tmp / "result.ss4d", gl, fps, coords=per_frame, extra_meta=meta, input_frames=input_frames)
        names["ss4d"] = out_dir / "result.ss4d"
        if ply:
            (tmp / "ply").mkdir()
            for t, g in enumerate(gl):
                save_ply(g, tmp / "ply" / f"frame_{t:03d}.ply")
            names["ply"] = [out_dir / "ply" / f"frame_{t:03d}.ply" for t in range(len(gl))]
        if glb:
            gaussians_to_glb(tmp / "animation.glb", gl, fps, coords=per_frame, resolution=res)
            names["glb"] = out_dir / "animation.glb"
        if viewer:
            write_viewer(tmp, gl, fps)
            names["viewer"] = out_dir / "viewer.html"
        if renders:
            written = write_all_renders(tmp / "renders", gl, input_frames, per_frame, fps, resolution=render_size,
                                        voxel_resolution=res, input_view=input_view)
            names["renders"] = {k: out_dir / "renders" / v.name for k, v in written.items()}
    return names


def save_result(result, out_dir, overwrite: bool = False, renders: bool = True, render_size: int = 256) -> Path:
    """Write a :class:`~ss4d.pipeline.video_to_4d.VideoTo4DResult` (exports and renders) with :func:`export_4d` and
    return ``out_dir``."""
    export_4d(out_dir, result.gaussians, result.fps, coords=result.coords, input_frames=result.frames,
              extra_meta={"seed": result.meta.get("seed"), "timings": result.timings}, renders=renders,
              render_size=render_size, input_view=result.meta.get("input_view") or "auto", overwrite=overwrite)
    return Path(out_dir)
