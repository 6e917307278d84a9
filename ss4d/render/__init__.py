"""ss4d.render: cameras (official TRELLIS/SS4D conventions) and a pure-PyTorch tile-based 3D Gaussian rasterizer."""
from ..gaussians import Gaussians
from .camera import (
    Camera,
    blender_c2w_to_opencv_extrinsics,
    camera_from_blender,
    fov_from_intrinsics,
    intrinsics_from_fov,
    look_at_extrinsics,
    orbit_camera,
    orbit_position,
    project_points,
)
from .rasterizer import project_gaussians, rasterize, render_frames

__all__ = [
    "Camera",
    "Gaussians",
    "blender_c2w_to_opencv_extrinsics",
    "camera_from_blender",
    "fov_from_intrinsics",
    "intrinsics_from_fov",
    "look_at_extrinsics",
    "orbit_camera",
    "orbit_position",
    "project_gaussians",
    "project_points",
    "rasterize",
    "render_frames",
]
