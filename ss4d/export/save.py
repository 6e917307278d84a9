"""Write a whole generation result: exports (PLY frames, .ss4d container, animated GLB, web viewer) and renders.

Everything is written into a temporary folder next to the target and renamed into place at the end, so a
failed run leaves nothing half-written and an existing output is only replaced with `overwrite=True` (an existing
*empty* folder counts as free).
"""
from __future__ import annotations

from pathlib import Path

from ..io_utils import atomic_dir
from .container import save_4d
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


def save_result(result, out_dir, overwrite: bool = False, renders: bool = True, render_size: int = 256) -> Path:
    """Write the result's exports (and renders) into ``out_dir`` in one atomic step and return ``out_dir``."""
    out_dir = Path(out_dir)
    res = _grid_resolution(result.coords)
    with atomic_dir(out_dir, overwrite=overwrite or is_empty_dir(out_dir)) as tmp:
        tmp = Path(tmp)
        (tmp / "ply").mkdir()
        plys = []
        for t, g in enumerate(result.gaussians):
            p = tmp / "ply" / f"frame_{t:03d}.ply"
            save_ply(g, p)
            plys.append(p)
        save_4d(tmp / "result.ss4d", result.gaussians, result.fps,
                coords=[c.int() for c in result.coords],
                extra_meta={"seed": result.meta.get("seed"), "voxel_resolution": res,
                            "timings": result.timings}, input_frames=result.frames)
        gaussians_to_glb(tmp / "animation.glb", result.gaussians, result.fps, coords=result.coords,
                         resolution=res)
        write_viewer(tmp, result.gaussians, result.fps)
        if renders:
            write_all_renders(tmp / "renders", result.gaussians, result.frames, result.coords, result.fps,
                              resolution=render_size, voxel_resolution=res,
                              input_view=result.meta.get("input_view") or "auto")
    return out_dir
