"""Surface primitives of procedural clips (ellipsoid, capsule, box): area-uniform samples, extents, rotations."""
from __future__ import annotations

import math

import numpy as np
import torch

TAU = 2.0 * math.pi


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _axis_angle(axis, angle: float) -> np.ndarray:
    """Rotation matrix about ``axis`` by ``angle`` (Rodrigues)."""
    k = _unit(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * (K @ K)


def _z_to(d) -> np.ndarray:
    """A rotation mapping local +z onto the direction ``d``."""
    d = _unit(d)
    z = np.array([0.0, 0.0, 1.0])
    c = float(z @ d)
    if c > 1 - 1e-12:
        return np.eye(3)
    if c < -1 + 1e-12:
        return _axis_angle([1.0, 0.0, 0.0], math.pi)
    return _axis_angle(np.cross(z, d), math.acos(c))


def _wave(m: dict, t: float) -> float:
    return m.get("base", 0.0) + m["amp"] * math.sin(TAU * t / m["period"] + m["phase"])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    h = (h % 1.0) * 6
    i = int(h) % 6
    f = h - int(h)
    p, q, u = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, u, p), (q, v, p), (p, v, u), (p, q, v), (u, p, v), (v, p, q)][i])


def _polar_rotation(J: np.ndarray) -> np.ndarray:
    """Closest rotation to ``J [3,3]`` (polar decomposition via SVD)."""
    U, _, Vt = np.linalg.svd(J)
    R = U @ Vt
    if np.linalg.det(R) < 0:
        U[:, -1] *= -1
        R = U @ Vt
    return R


def normal_to_quaternion(n: torch.Tensor) -> torch.Tensor:
    """(w, x, y, z) unit quaternions ``[N,4]`` rotating +z onto the unit normals ``n [N,3]`` (shortest arc)."""
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w = 1.0 + n[:, 2]
    q = torch.stack([w, -n[:, 1], n[:, 0], torch.zeros_like(w)], 1)
    flip = w < 1e-6  # n = -z: rotate by pi about x
    if flip.any():
        q[flip] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=q.dtype)
    return q / q.norm(dim=-1, keepdim=True)


def _sphere_dirs(rng: np.random.Generator, n: int) -> np.ndarray:
    u = rng.normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True).clip(1e-12)


def _sample_ellipsoid(size, n, rng):
    r = np.asarray(size, dtype=np.float64)
    cand = _sphere_dirs(rng, 4 * n)
    w = np.prod(r) * np.linalg.norm(cand / r, axis=1)  # area element of the map u -> r*u
    area = 4 * math.pi * float(w.mean())
    idx = rng.choice(cand.shape[0], size=n, replace=False, p=w / w.sum())
    u = cand[idx]
    p = u * r
    nrm = u / r
    return p, nrm / np.linalg.norm(nrm, axis=1, keepdims=True), area


def _sample_capsule(size, n, rng):
    rad, h = float(size[0]), float(size[1])
    a_cyl, a_cap = TAU * rad * 2 * h, 4 * math.pi * rad * rad
    n_cyl = int(round(n * a_cyl / (a_cyl + a_cap)))
    n_cap = n - n_cyl
    th = rng.uniform(0, TAU, n_cyl)
    z = rng.uniform(-h, h, n_cyl)
    pc = np.stack([rad * np.cos(th), rad * np.sin(th), z], 1)
    nc = np.stack([np.cos(th), np.sin(th), np.zeros_like(th)], 1)
    u = _sphere_dirs(rng, n_cap)
    ps = u * rad + np.where(u[:, 2:3] >= 0, 1.0, -1.0) * np.array([0.0, 0.0, h])
    return np.concatenate([pc, ps]), np.concatenate([nc, u]), a_cyl + a_cap


def _sample_box(size, n, rng):
    a = np.asarray(size, dtype=np.float64)
    face_area = np.array([a[1] * a[2], a[0] * a[2], a[0] * a[1]]) * 4
    probs = np.repeat(face_area, 2) / (2 * face_area.sum())
    face = rng.choice(6, size=n, p=probs)
    axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
    p = rng.uniform(-1, 1, (n, 3)) * a
    p[np.arange(n), axis] = sign * a[axis]
    nrm = np.zeros((n, 3))
    nrm[np.arange(n), axis] = sign
    return p, nrm, float(2 * face_area.sum())


_SAMPLERS = {"ellipsoid": _sample_ellipsoid, "capsule": _sample_capsule, "box": _sample_box}


def _rest_area(shape: str, size) -> float:
    s = np.asarray(size, dtype=np.float64)
    if shape == "box":
        return float(8 * (s[0] * s[1] + s[1] * s[2] + s[0] * s[2]))
    if shape == "capsule":
        return float(TAU * s[0] * 2 * s[1] + 4 * math.pi * s[0] ** 2)
    p = 1.6075  # Knud Thomsen's approximation
    a, b, c = s
    return float(4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p))


def _extent(shape: str, size) -> np.ndarray:
    """Half extents of the primitive's bounding box (rest pose, primitive centred)."""
    s = np.asarray(size, dtype=np.float64)
    if shape == "capsule":
        return np.array([s[0], s[0], s[0] + s[1]])
    return s.copy()
