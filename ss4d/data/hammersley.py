"""Hammersley sphere cameras, as the TRELLIS dataset toolkit places its 150 feature / VAE render views.

The official ``dataset_toolkits/utils.py`` + ``render.py``::

    offset = (rand(), rand())                                  # one random offset per object
    u, v = (i / N, radical_inverse(2, i))                      # 2D Hammersley point i of N
    u += offset[0] / N;  v += offset[1]
    pitch = arccos(1 - 2u) - pi/2;  yaw = 2 pi v
    camera at r (cos yaw cos pitch, sin yaw cos pitch, sin pitch), looking at the origin (z-up world), r = 2, fov 40 deg

``u`` stays in ``[0, 1)`` so the pitch covers ``[-90, 90)`` degrees with an area-uniform distribution; ``v`` may
exceed 1, which only wraps the yaw.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ss4d.lowdiscrepancy import PRIMES, hammersley_sequence, radical_inverse
from ss4d.render.camera import Camera, intrinsics_from_fov, look_at_extrinsics

__all__ = [
    "PRIMES",
    "radical_inverse",
    "hammersley_sequence",
    "sphere_hammersley_sequence",
    "hammersley_views",
    "hammersley_cameras",
    "look_at_camera",
]

def sphere_hammersley_sequence(n: int, num_samples: int, offset=(0.0, 0.0), remap: bool = False
                               ) -> tuple[float, float]:
    """``(yaw, pitch)`` in radians of view ``n`` of ``num_samples`` (official ``sphere_hammersley_sequence``)."""
    u, v = hammersley_sequence(2, n, num_samples)
    u += offset[0] / num_samples
    v += offset[1]
    if remap:
        u = 2 * u if u < 0.25 else 2 / 3 * u + 1 / 3
    pitch = math.acos(1 - 2 * u) - math.pi / 2
    yaw = v * 2 * math.pi
    return yaw, pitch


def _rng(seed=None, rng=None) -> np.random.Generator:
    if rng is not None:
        return rng
    return np.random.default_rng(seed)


def hammersley_views(num_views: int, radius: float = 2.0, fov: float = math.radians(40), offset=None, seed=None,
                     rng: np.random.Generator | None = None) -> list[dict]:
    """The official view list ``[{yaw, pitch, radius, fov}]`` (radians). ``offset`` defaults to a random
    ``(u, v)`` offset in ``[0,1)^2`` drawn from ``rng`` / ``seed`` (the official ``np.random.rand()`` twice)."""
    if offset is None:
        r = _rng(seed, rng)
        offset = (float(r.random()), float(r.random()))
    out = []
    for i in range(int(num_views)):
        y, p = sphere_hammersley_sequence(i, num_views, offset)
        out.append({"yaw": y, "pitch": p, "radius": float(radius), "fov": float(fov)})
    return out


def look_at_camera(eye, target=(0.0, 0.0, 0.0), fov: float = math.radians(40), width: int = 512,
                   height: int | None = None, near: float = 0.8, far: float = 1.6) -> Camera:
    """Look-at :class:`Camera` (z-up world) from :func:`ss4d.render.camera.look_at_extrinsics`, evaluated in float64
    (defined straight above / below the target too)."""
    height = width if height is None else height
    E = look_at_extrinsics(torch.as_tensor(eye, dtype=torch.float64), target, dtype=torch.float64)
    return Camera(E.float(), intrinsics_from_fov(fov), width, height, near, far)


def hammersley_cameras(num_views: int, radius: float = 2.0, fov: float = math.radians(40), width: int = 512,
                       height: int | None = None, offset=None, seed=None, rng: np.random.Generator | None = None,
                       near: float = 0.8, far: float = 1.6) -> list[Camera]:
    """``num_views`` :class:`Camera` s on the Hammersley sphere (see the module docstring), looking at the origin.

    ``near``/``far`` default to the official Gaussian-render planes for radius 2 (0.8, 1.6)."""
    views = hammersley_views(num_views, radius, fov, offset, seed, rng)
    cams = []
    for v in views:
        y, p = v["yaw"], v["pitch"]
        eye = (radius * math.cos(y) * math.cos(p), radius * math.sin(y) * math.cos(p), radius * math.sin(p))
        cams.append(look_at_camera(eye, (0.0, 0.0, 0.0), fov, width, height, near, far))
    return cams
