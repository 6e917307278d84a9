"""Which voxels a camera sees: a coarse depth buffer of the voxel centres (no mesh needed).

Used where a voxel should take the colour of the pixel it projects to only if nothing is in front of it: the
visibility-aware voxel colour features of the data toolkit and the pixel-aligned conditioning of the latent flow.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .camera import Camera, as_camera, project_points

__all__ = ["visible_points"]


def visible_points(points: torch.Tensor, camera: Camera, voxel_size: float, grid: int | None = None,
                   tolerance: float = 0.8, cells_per_voxel: int = 4) -> torch.Tensor:
    """``bool [N]``: which of the voxel centres ``points [N, 3]`` (cubes of side ``voxel_size``) ``camera`` sees.

    Each centre is splatted into a ``grid`` x ``grid`` depth buffer of the camera's image (default:
    ``cells_per_voxel`` cells per projected voxel side at the median depth), every depth spreads over a square of
    about one voxel side (a minimum filter of ``cells_per_voxel + 1`` cells: the voxel's footprint, which also
    closes the gaps between neighbouring centres), and a voxel counts as visible when its depth is within
    ``tolerance`` voxel sides of the nearest depth at its cell and it projects inside the image in front of the
    camera."""
    cam = as_camera(camera)
    pts = points.float().reshape(-1, 3)
    N = pts.shape[0]
    if N == 0:
        return torch.zeros(0, dtype=torch.bool)
    uv, depth = project_points(pts, cam.extrinsics, cam.intrinsics)
    depth = depth.reshape(-1).float()
    if grid is None:  # projected voxel side, in image widths, at the median depth
        front = depth[depth > 0]
        med = float(front.median()) if front.numel() else 1.0
        side = float(cam.intrinsics[0, 0]) * voxel_size / max(med, 1e-6)
        grid = int(min(2048, max(16, round(cells_per_voxel / max(side, 1e-6)))))
    inside = (uv >= 0).all(1) & (uv < 1).all(1) & (depth > 0)
    cell = (uv.clamp(0, 1 - 1e-6) * grid).long()
    flat = cell[:, 1] * grid + cell[:, 0]
    zbuf = torch.full((grid * grid,), float("inf"))
    zbuf.scatter_reduce_(0, flat[inside], depth[inside], reduce="amin")
    k = cells_per_voxel // 2
    zbuf = -F.max_pool2d(-zbuf.view(1, 1, grid, grid), 2 * k + 1, stride=1, padding=k).view(-1)
    return inside & (depth <= zbuf[flat] + tolerance * voxel_size)
