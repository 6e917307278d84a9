"""ss4d.export: writing 4D Gaussian assets.

* :mod:`.ply` - one INRIA-3DGS ``.ply`` per frame (``save_ply`` / ``load_ply``);
* :mod:`.container` - the whole sequence in one ``.ss4d`` safetensors file, bit-exact (``save_4d`` / ``load_4d``);
* :mod:`.glb` - an animated ``.glb`` of per-frame voxel meshes switched by a STEP animation;
* :mod:`.viewer` - a self-contained ``viewer.html`` (own WebGL2 splat renderer, frames embedded: opens from disk);
* :mod:`.renders` - orbit / 2x2 grid / input-vs-output / voxel preview videos.

:func:`export_4d` (in :mod:`.save`) is the one writer of an asset folder; :func:`save_result` writes a pipeline
result with it.
"""
from __future__ import annotations

from .container import load_4d, read_4d_meta, save_4d, split_coords
from .glb import gaussians_to_glb, save_animated_glb, voxels_to_mesh
from .ply import PLY_PROPERTIES, Y_UP, Z_UP_TO_Y_UP, load_ply, save_ply
from .renders import write_all_renders
from .save import export_4d, save_result
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
    "save_result",
    "split_coords",
    "voxels_to_mesh",
    "write_all_renders",
    "write_viewer",
]
