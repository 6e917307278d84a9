"""Monocular input-video camera paths: the one generator for procedural clips and Blender-rendered assets."""
from __future__ import annotations

import math

import numpy as np

from .hammersley import look_at_camera

__all__ = ["input_camera_path"]


def input_camera_path(num_frames: int, rng: np.random.Generator, points=None, *, bound_radius: float | None = None,
                      fov_range_deg=(30.0, 50.0), elevation_range_deg=(-10.0, 30.0), orbit_prob: float = 0.3,
                      orbit_rate_deg=(0.5, 2.0), fill_range=(0.8, 0.95), size: int = 512, min_depth: float = 0.05,
                      min_radius: float = 0.05) -> tuple[list, dict]:
    """Monocular input-video cameras looking at the origin (z-up) with a random fov / elevation / yaw; with
    probability ``orbit_prob`` the camera slowly orbits (constant yaw rate, random sign), otherwise it is fixed.

    The distance is the smallest (at least ``min_radius``) for which every surface point of every frame
    (``points``: per-frame ``[P_t, 3]`` arrays or one ``[T, P, 3]`` array, canonical) lies at least ``min_depth``
    in front of the camera and projects within ``fill`` (drawn from ``fill_range``) of the half-frame around the
    centre, i.e. the object fills the frame over the whole clip (closed form: ``d >= |X| / s - z.x`` per point with
    ``s = fill tan(fov / 2)``). Without ``points`` the bounding sphere of radius ``bound_radius`` is fitted instead
    (``d = bound_radius / (fill sin(fov / 2))``). Returns ``(cameras [T], params)``."""
    if points is None and bound_radius is None:
        raise ValueError("input_camera_path needs points or bound_radius")
    fov = math.radians(rng.uniform(*fov_range_deg))
    elev = math.radians(rng.uniform(*elevation_range_deg))
    yaw0 = rng.uniform(0.0, 2 * math.pi)
    fill = rng.uniform(*fill_range)
    orbit = bool(rng.uniform() < orbit_prob)
    rate = math.radians(rng.uniform(*orbit_rate_deg)) * float(rng.choice([-1.0, 1.0])) if orbit else 0.0
    dirs = []
    for t in range(num_frames):
        y = yaw0 + rate * t
        dirs.append(np.array([math.cos(y) * math.cos(elev), math.sin(y) * math.cos(elev), math.sin(elev)]))
    if points is None:
        radius = bound_radius / (fill * math.sin(fov / 2))
    else:
        s = fill * math.tan(fov / 2)  # |X| / Z <= fill tan(fov / 2)  <=>  |u - 0.5| <= fill / 2
        radius = min_radius
        for t in range(num_frames):
            zc = -dirs[t]  # camera forward (OpenCV z)
            xc = np.cross([0.0, 0.0, -1.0], zc)
            xc /= np.linalg.norm(xc)
            yc = np.cross(zc, xc)
            p = np.asarray(points[min(t, len(points) - 1)], dtype=np.float64).reshape(-1, 3)
            if p.size:  # camera at r*d: depth of p is r + p.zc; need max(|p.xc|, |p.yc|) <= s * depth
                X, Y, W = p @ xc, p @ yc, p @ zc
                need = np.maximum(np.abs(X), np.abs(Y)) / s - W
                radius = max(radius, float(need.max()), float((min_depth - W).max()))
    cams = [look_at_camera(radius * d, (0.0, 0.0, 0.0), fov, size, size, near=max(0.05, radius - 1.0),
                           far=radius + 1.0) for d in dirs]
    params = {"fov": fov, "elevation": elev, "yaw0": yaw0, "yaw_rate": float(rate), "radius": radius,
              "orbit": orbit, "fill": float(fill)}
    if bound_radius is not None:
        params["bound_radius"] = float(bound_radius)
    return cams, params
