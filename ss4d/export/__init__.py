"""ss4d.export: writing 4D Gaussian assets.

* :mod:`.ply` - one INRIA-3DGS ``.ply`` per frame (``save_ply`` / ``load_ply``);
* :mod:`.container` - the whole sequence in one ``.ss4d`` safetensors file, bit-exact (``save_4d`` / ``load_4d``);
* :mod:`.glb` - an animated ``.glb`` of per-frame voxel meshes switched by a STEP animation;
* :mod:`.viewer` - a self-contained ``viewer.html`` (own WebGL2 splat renderer, frames embedded: opens from disk);
* :mod:`.renders` - orbit / 2x2 grid / input-vs-output / voxel preview videos.

:func:`export_4d` writes the usual set of files into one folder.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .container import load_4d, read_4d_meta, save_4d, split_coords
from .glb import gaussians_to_glb, save_animated_glb, voxels_to_mesh
from .ply import PLY_PROPERTIES, Y_UP, Z_UP_TO_Y_UP, load_ply, save_ply
from .renders import write_all_renders
from .viewer import write_viewer

__all__ = [
    "PLY_PROPERTIES",
    "Y_UP",
    "Z_UP_TO_Y_UP",
    "export_4d",
    "gaussians_to_glb",
    "load_4d",
    "load_ply",
    "read_4d_meta",
    "save_4d",
    "save_animated_glb",
    "save_ply",
    "split_coords",
    "voxels_to_mesh",
    "write_all_renders",
    "write_viewer",
]


def export_4d(out_dir, gaussians_list: Sequence, fps: float, *, coords: Sequence | None = None, input_frames=None,
              extra_meta: dict | None = None, name: str = "asset", ply: bool = True, glb: bool = True,
              viewer: bool = True, overwrite: bool = True) -> dict[str, Path | list[Path]]:
    """Write ``{name}.ss4d``, ``ply/frame_XXXX.ply`` (one per frame), ``{name}.glb`` and ``viewer.html`` into
    ``out_dir`` (each file atomically) and return their paths (``"ss4d"``, ``"ply"`` (list), ``"glb"``,
    ``"viewer"``). Renders are separate: :func:`write_all_renders`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gl = list(gaussians_list)
    per_frame = split_coords(coords, len(gl)) if coords is not None else None
    out: dict[str, Path | list[Path]] = {}
    out["ss4d"] = save_4d(out_dir / f"{name}.ss4d", gl, fps, per_frame, extra_meta, input_frames=input_frames,
                          overwrite=overwrite)
    if ply:
        out["ply"] = [save_ply(g, out_dir / "ply" / f"frame_{t:04d}.ply", overwrite=overwrite)
                      for t, g in enumerate(gl)]
    if glb:
        out["glb"] = gaussians_to_glb(out_dir / f"{name}.glb", gl, fps, per_frame, overwrite=overwrite)
    if viewer:
        out["viewer"] = write_viewer(out_dir, gl, fps, overwrite=overwrite)
    return out
