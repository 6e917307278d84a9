"""Cameras in the official TRELLIS/SS4D convention.

* Extrinsics: OpenCV world-to-camera 4x4 (camera x right, y down, z forward).
* Intrinsics: *normalised* 3x3, ``fx = 0.5 / tan(fovx / 2)``, ``cx = cy = 0.5``; image coordinates in [0, 1]
  (multiply by the width/height for pixels).
* World is z-up (the look-at ``up`` default is ``(0, 0, 1)``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "Camera",
    "intrinsics_from_fov",
    "fov_from_intrinsics",
    "look_at_extrinsics",
    "orbit_position",
    "orbit_camera",
    "project_points",
    "blender_c2w_to_opencv_extrinsics",
    "camera_from_blender",
]


def _as_tensor(x, dtype=None, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype or (x.dtype if x.is_floating_point() else torch.float32), device=device or x.device)
    return torch.as_tensor(x, dtype=dtype or torch.float32, device=device)


def intrinsics_from_fov(fov_rad: float | torch.Tensor, fov_y_rad: float | torch.Tensor | None = None,
                        dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised intrinsics ``[[fx,0,0.5],[0,fy,0.5],[0,0,1]]`` with ``fx = 0.5 / tan(fov/2)``.

    ``fov_y_rad`` defaults to ``fov_rad`` (the official ``intrinsics_from_fov_xy(fov, fov)``)."""
    fx_fov = _as_tensor(fov_rad, dtype, device)
    fy_fov = fx_fov if fov_y_rad is None else _as_tensor(fov_y_rad, dtype, device)
    K = torch.zeros(3, 3, dtype=dtype, device=fx_fov.device)
    K[0, 0] = 0.5 / torch.tan(fx_fov / 2)
    K[1, 1] = 0.5 / torch.tan(fy_fov / 2)
    K[0, 2] = 0.5
    K[1, 2] = 0.5
    K[2, 2] = 1.0
    return K


def fov_from_intrinsics(intrinsics: torch.Tensor) -> tuple[float, float]:
    """``(fovx, fovy)`` in radians from normalised intrinsics: ``fov = 2 atan(0.5 / f)``."""
    K = _as_tensor(intrinsics)
    return 2 * math.atan(0.5 / float(K[0, 0])), 2 * math.atan(0.5 / float(K[1, 1]))


def look_at_extrinsics(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0), dtype=torch.float32) -> torch.Tensor:
    """OpenCV world-to-camera 4x4 for a camera at ``eye`` looking at ``target`` (z-up world by default).

    Camera axes: z = forward (towards the target), x = z cross up (right), y = z cross x (down). Straight above /
    below the target (forward parallel to ``up``) the image "up" falls back to the world -x / +x direction,
    continuous with the views at yaw 0."""
    eye = _as_tensor(eye, dtype)
    target = _as_tensor(target, dtype, eye.device)
    up = _as_tensor(up, dtype, eye.device)
    z = target - eye
    x = torch.linalg.cross(-up, z)
    if float(x.norm()) < 1e-6 * float(z.norm()):  # looking straight down or up: up = +-x keeps x continuous
        up = torch.tensor([1.0, 0.0, 0.0], dtype=dtype, device=eye.device) * (-1.0 if float(z[2]) < 0 else 1.0)
        x = torch.linalg.cross(-up, z)
    y = torch.linalg.cross(z, x)
    z = z / z.norm()
    x = x / x.norm()
    y = y / y.norm()
    R = torch.stack([x, y, z], dim=0)
    E = torch.eye(4, dtype=dtype, device=eye.device)
    E[:3, :3] = R
    E[:3, 3] = -(R @ eye)
    return E


def orbit_position(yaw: float, pitch: float, radius: float, convention: str = "dataset") -> torch.Tensor:
    """Camera position on a sphere around the origin (yaw/pitch in radians).

    ``convention="dataset"`` (default; the TRELLIS dataset toolkit / Blender render script):
    ``r (cos yaw cos pitch, sin yaw cos pitch, sin pitch)``.
    ``convention="render_utils"`` (TRELLIS ``utils/render_utils.py`` video orbits):
    ``r (sin yaw cos pitch, cos yaw cos pitch, sin pitch)``."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    if convention == "dataset":
        p = (cy * cp, sy * cp, sp)
    elif convention == "render_utils":
        p = (sy * cp, cy * cp, sp)
    else:
        raise ValueError(f"unknown orbit convention {convention!r}")
    return torch.tensor(p, dtype=torch.float64).mul(radius).float()


def project_points(xyz: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points ``[..., 3]`` -> (normalised ``uv [..., 2]`` in [0, 1] for visible points,
    view-space ``depth [...]``). ``uv = (fx X/Z + cx, fy Y/Z + cy)``."""
    E = extrinsics.to(xyz)
    K = intrinsics.to(xyz)
    p = xyz @ E[:3, :3].T + E[:3, 3]
    z = p[..., 2]
    uv = torch.stack([K[0, 0] * p[..., 0] / z + K[0, 2], K[1, 1] * p[..., 1] / z + K[1, 2]], dim=-1)
    return uv, z


def blender_c2w_to_opencv_extrinsics(c2w) -> torch.Tensor:
    """Blender camera-to-world (camera looks down -z, y up) -> OpenCV world-to-camera 4x4.

    Flip the camera's y and z axes (columns 1 and 2 of the rotation), then invert."""
    c2w = _as_tensor(c2w)
    if c2w.shape == (3, 4):
        c2w = torch.cat([c2w, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=c2w.dtype, device=c2w.device)], 0)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=c2w.dtype, device=c2w.device))
    c2w_cv = c2w @ flip
    R = c2w_cv[:3, :3]
    t = c2w_cv[:3, 3]
    E = torch.eye(4, dtype=c2w.dtype, device=c2w.device)
    E[:3, :3] = R.T
    E[:3, 3] = -(R.T @ t)
    return E


@dataclass(eq=False)
class Camera:
    """A pinhole camera: OpenCV w2c ``extrinsics [4,4]``, normalised ``intrinsics [3,3]``, image size in pixels
    and the near/far planes the official renderer passes along (not used for culling: the rasterizer culls at
    view z <= 0.2 like the official CUDA code)."""

    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    width: int = 512
    height: int = 512
    near: float = 0.8
    far: float = 1.6

    def __post_init__(self):
        self.extrinsics = _as_tensor(self.extrinsics)
        self.intrinsics = _as_tensor(self.intrinsics, device=self.extrinsics.device)
        if self.extrinsics.shape == (3, 4):
            bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=self.extrinsics.dtype, device=self.extrinsics.device)
            self.extrinsics = torch.cat([self.extrinsics, bottom], 0)
        if self.extrinsics.shape != (4, 4) or self.intrinsics.shape != (3, 3):
            raise ValueError("Camera needs extrinsics [4,4] (or [3,4]) and intrinsics [3,3]")
        self.width = int(self.width)
        self.height = int(self.height)

    # --- derived quantities ---
    @property
    def fovx(self) -> float:
        return 2 * math.atan(0.5 / float(self.intrinsics[0, 0]))

    @property
    def fovy(self) -> float:
        return 2 * math.atan(0.5 / float(self.intrinsics[1, 1]))

    @property
    def position(self) -> torch.Tensor:
        """Camera centre in world coordinates."""
        R = self.extrinsics[:3, :3]
        return -(R.T @ self.extrinsics[:3, 3])

    @property
    def c2w(self) -> torch.Tensor:
        return torch.linalg.inv(self.extrinsics)

    def pixel_intrinsics(self) -> torch.Tensor:
        """Intrinsics in pixels (fx*W, fy*H, cx*W, cy*H)."""
        K = self.intrinsics.clone()
        K[0] *= self.width
        K[1] *= self.height
        K[2] = torch.tensor([0.0, 0.0, 1.0], dtype=K.dtype)
        return K

    def projection_matrix(self) -> torch.Tensor:
        """The official ``intrinsics_to_projection(intrinsics, near, far)`` (OpenGL-style clip matrix)."""
        K = self.intrinsics
        P = torch.zeros(4, 4, dtype=K.dtype, device=K.device)
        P[0, 0] = 2 * K[0, 0]
        P[1, 1] = 2 * K[1, 1]
        P[0, 2] = 2 * K[0, 2] - 1
        P[1, 2] = -2 * K[1, 2] + 1
        P[2, 2] = self.far / (self.far - self.near)
        P[2, 3] = self.near * self.far / (self.near - self.far)
        P[3, 2] = 1.0
        return P

    def project(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return project_points(xyz, self.extrinsics, self.intrinsics)

    def to(self, device=None, dtype=None) -> Camera:
        return Camera(self.extrinsics.to(device=device, dtype=dtype), self.intrinsics.to(device=device, dtype=dtype),
                      self.width, self.height, self.near, self.far)

    def resized(self, width: int, height: int) -> Camera:
        """Same camera, other image size (normalised intrinsics are resolution independent)."""
        return Camera(self.extrinsics, self.intrinsics, width, height, self.near, self.far)

    # --- (de)serialisation ---
    def to_dict(self) -> dict:
        return {
            "extrinsics": [[float(v) for v in row] for row in self.extrinsics.detach().cpu().double().tolist()],
            "intrinsics": [[float(v) for v in row] for row in self.intrinsics.detach().cpu().double().tolist()],
            "width": int(self.width),
            "height": int(self.height),
            "near": float(self.near),
            "far": float(self.far),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        return cls(torch.tensor(d["extrinsics"], dtype=torch.float32),
                   torch.tensor(d["intrinsics"], dtype=torch.float32),
                   int(d.get("width", 512)), int(d.get("height", 512)),
                   float(d.get("near", 0.8)), float(d.get("far", 1.6)))

    @classmethod
    def look_at(cls, eye, target=(0.0, 0.0, 0.0), fov: float = math.radians(40), width: int = 512, height: int = 512,
                up=(0.0, 0.0, 1.0), near: float = 0.8, far: float = 1.6) -> Camera:
        return cls(look_at_extrinsics(eye, target, up), intrinsics_from_fov(fov), width, height, near, far)


def orbit_camera(yaw: float, pitch: float, radius: float = 2.0, fov: float = math.radians(40), width: int = 512,
                 height: int = 512, near: float = 0.8, far: float = 1.6, convention: str = "dataset") -> Camera:
    """Camera on an orbit around the origin looking at it (z-up); yaw, pitch and fov in radians.

    Position per :func:`orbit_position` (default ``r (cos y cos p, sin y cos p, sin p)``)."""
    eye = orbit_position(yaw, pitch, radius, convention)
    return Camera.look_at(eye, (0.0, 0.0, 0.0), fov, width, height, near=near, far=far)


def camera_from_blender(c2w, fov: float, width: int = 512, height: int = 512, near: float = 0.8,
                        far: float = 1.6) -> Camera:
    """Camera from a Blender camera-to-world matrix and a (square-pixel) field of view in radians."""
    return Camera(blender_c2w_to_opencv_extrinsics(c2w), intrinsics_from_fov(fov), width, height, near, far)


def as_camera(camera) -> Camera:
    """Accept a :class:`Camera`, its dict form, or ``(extrinsics, intrinsics, width, height)``."""
    if isinstance(camera, Camera):
        return camera
    if isinstance(camera, dict):
        return Camera.from_dict(camera)
    if isinstance(camera, Sequence) and len(camera) >= 4:
        return Camera(*camera)
    raise TypeError(f"cannot interpret {type(camera).__name__} as a Camera")
