"""Procedural animated 4D clips (no Blender): articulated, deforming, textured compositions of primitives.

A clip is a small kinematic tree of *parts*. Each part is a primitive (ellipsoid, capsule or box) with

* a **joint** to its parent: anchor point in the parent's frame, a rest orientation, and joint motions over time
  (``swing`` = sinusoidal rotation about an axis, ``spin`` = constant angular velocity, ``slide`` = sinusoidal
  translation), so limbs swing, wheels / blades spin, grippers open and close;
* **deformations** (in the part's own frame, applied in this order): ``grow`` (per-axis scale easing in or
  pulsing), ``blob`` (smooth time-varying radial morph), then the primitive is offset from its joint, ``twist``
  and ``bend`` (circular-arc bend along one axis, pivoting at the joint). Children ride on the *deformed* parent:
  a child's anchor follows the parent's deformation map, and its frame is rotated by the rotation part (polar
  decomposition) of the deformation Jacobian there, so legs stay attached to a bending body, leaves to a
  swaying, growing stem;
* a **texture** (solid, stripes, checker, value noise, spots, gradient) evaluated at the *rest* position of each
  surface sample, so the pattern sticks to the moving surface.

The surface is represented by dense area-uniform samples of the primitives drawn once in the rest pose (the same
samples in every frame, i.e. with correspondences), posed per frame; normals and local area changes come from the
Jacobian of the deformation (``n' ~ J^-T n``, ``dA' = det J |J^-T n| dA``). Colours are the albedo optionally
shaded by a fixed world-space Lambert light rig (view independent, like baked diffuse lighting).

Canonical normalisation is done once for the WHOLE clip (as the Blender path does): the union of the per-frame
bounding boxes is centred at the origin and scaled so that its longest side is 1, i.e. all frames live in the
canonical box ``[-0.5, 0.5]^3`` with comparable voxel coordinates.

Per frame ``t`` a :class:`ProceduralClip` provides: surface points / normals / colours, the surface voxels at
resolution ``R`` (:func:`~ss4d.data.voxelize.voxelize_points` of the points), and small flat 3D Gaussians on the
samples (rendered with :func:`ss4d.render.rasterize`). :func:`render_views` renders RGBA views and
``clip.input_cameras`` is a monocular "input video" camera path (fixed camera with random fov in [30, 50] deg and
elevation in [-10, 30] deg, at the distance where the clip's surface over all frames fills 80-95 % of the frame;
optionally a slow orbit).

Everything is seeded by ``numpy.random.default_rng(seed)`` and computed in float64 numpy, so a seed gives the same
clip on every machine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ss4d.gaussians import Gaussians
from ss4d.render.camera import Camera
from ss4d.render.rasterizer import rasterize

from .input_cameras import input_camera_path
from .voxelize import voxelize_points

__all__ = [
    "KINDS",
    "ClipFrame",
    "ProceduralClip",
    "make_clip",
    "render_views",
    "render_input_video",
    "input_camera_path",
    "normal_to_quaternion",
]

TAU = 2.0 * math.pi
KINDS = ("creature", "humanoid", "robot_arm", "windmill", "carousel", "plant", "blobs")
LIGHTS = ((np.array([4.0, 1.0, 6.0]) / np.linalg.norm([4.0, 1.0, 6.0]), 0.65),
          (np.array([-3.0, -2.0, 1.0]) / np.linalg.norm([-3.0, -2.0, 1.0]), 0.2))
AMBIENT = 0.35


# ================================================================================================================
# small math helpers (numpy float64)
# ================================================================================================================
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


# ================================================================================================================
# primitives: area-uniform rest-pose surface samples
# ================================================================================================================
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


# ================================================================================================================
# textures
# ================================================================================================================
def _hash01(ix, iy, iz, seed: int) -> np.ndarray:
    """Deterministic pseudo-random values in [0,1) for integer lattice points (64-bit integer mixing)."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= iz.astype(np.uint64) * np.uint64(0x165667B19E3779F9)
        h ^= np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x27D4EB2F165667C5)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _value_noise(p: np.ndarray, seed: int) -> np.ndarray:
    f = np.floor(p)
    i = f.astype(np.int64) + (1 << 20)
    w = p - f
    w = w * w * (3 - 2 * w)
    out = np.zeros(p.shape[0])
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                v = _hash01(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
                wx = w[:, 0] if dx else 1 - w[:, 0]
                wy = w[:, 1] if dy else 1 - w[:, 1]
                wz = w[:, 2] if dz else 1 - w[:, 2]
                out += v * wx * wy * wz
    return out


def _texture(tex: dict, p: np.ndarray) -> np.ndarray:
    """Albedo ``[n,3]`` in [0,1] at rest positions ``p [n,3]``."""
    c0, c1 = np.asarray(tex["c0"]), np.asarray(tex["c1"])
    q = p * tex.get("scale", 1.0) + np.asarray(tex.get("shift", (0.0, 0.0, 0.0)))
    kind = tex["type"]
    if kind == "solid":
        m = np.zeros(p.shape[0])
    elif kind == "stripes":
        s = q @ np.asarray(tex["dir"]) * tex["freq"] + tex["phase"]
        m = ((s - np.floor(s)) < tex["duty"]).astype(np.float64)
    elif kind == "checker":
        k = np.floor(q * tex["freq"]).astype(np.int64).sum(1)
        m = (k % 2).astype(np.float64)
    elif kind == "noise":
        v = (_value_noise(q * tex["freq"], tex["seed"]) * 0.65
             + _value_noise(q * tex["freq"] * 2.3, tex["seed"] + 1) * 0.35)
        m = np.clip((v - 0.5) * tex["contrast"] + 0.5, 0, 1)
    elif kind == "spots":
        centres = np.asarray(tex["centres"])
        d = np.linalg.norm(q[:, None, :] - centres[None], axis=2).min(1)
        m = (d < tex["radius"]).astype(np.float64)
    elif kind == "gradient":
        s = q @ np.asarray(tex["dir"])
        m = np.clip(s * 0.5 + 0.5, 0, 1)
    else:
        raise ValueError(f"unknown texture type {kind!r}")
    return c0[None] * (1 - m[:, None]) + c1[None] * m[:, None]


def _random_texture(rng: np.random.Generator, size_hint: float, hue: float | None = None) -> dict:
    h = rng.uniform() if hue is None else hue
    s0, v0 = rng.uniform(0.35, 0.9), rng.uniform(0.45, 0.95)
    c0 = _hsv(h, s0, v0)
    dh = rng.uniform(0.08, 0.5) * rng.choice([-1, 1])
    v1 = float(np.clip(v0 + rng.choice([-1, 1]) * rng.uniform(0.25, 0.5), 0.12, 1.0))
    c1 = _hsv(h + dh, rng.uniform(0.2, 1.0), v1)
    kind = rng.choice(["solid", "stripes", "stripes", "checker", "noise", "noise", "spots", "gradient"])
    scale = 1.0 / max(size_hint, 1e-3)
    tex = {"type": str(kind), "c0": c0.tolist(), "c1": c1.tolist(), "scale": float(scale),
           "shift": rng.uniform(-10, 10, 3).tolist()}
    if kind == "stripes":
        tex.update(dir=_unit(rng.normal(size=3)).tolist(), freq=float(rng.uniform(1.0, 3.0)),
                   phase=float(rng.uniform()), duty=float(rng.uniform(0.3, 0.6)))
    elif kind == "checker":
        tex.update(freq=float(rng.uniform(1.5, 3.5)))
    elif kind == "noise":
        tex.update(freq=float(rng.uniform(1.0, 3.0)), seed=int(rng.integers(0, 2**31)),
                   contrast=float(rng.uniform(1.5, 3.0)))
    elif kind == "spots":
        k = int(rng.integers(3, 9))
        tex.update(centres=(rng.normal(size=(k, 3)) * 0.7 + np.asarray(tex["shift"])).tolist(),
                   radius=float(rng.uniform(0.25, 0.5)))
    elif kind == "gradient":
        tex.update(dir=_unit(rng.normal(size=3)).tolist())
        tex["shift"] = [0.0, 0.0, 0.0]
    return tex


# ================================================================================================================
# parts and the kinematic tree
# ================================================================================================================
@dataclass
class Part:
    """One primitive of a clip (see the module docstring). ``motion``: list of joint motions; ``deform``: dict of
    deformations; ``texture``: texture spec. All fields are plain JSON-able values."""

    name: str
    shape: str
    size: list
    parent: int = -1
    anchor: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    rest_rot: list = field(default_factory=lambda: np.eye(3).tolist())
    offset: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    motion: list = field(default_factory=list)
    deform: dict = field(default_factory=dict)
    texture: dict = field(default_factory=dict)
    weight: float = 1.0  # relative sample density

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "shape", "size", "parent", "anchor", "rest_rot", "offset",
                                              "motion", "deform", "texture", "weight")}


def _joint_transform(part: Part, t: float) -> tuple[np.ndarray, np.ndarray]:
    R, T = np.eye(3), np.zeros(3)
    for m in part.motion:
        kind = m["type"]
        if kind == "swing":
            R = R @ _axis_angle(m["axis"], _wave(m, t))
        elif kind == "spin":
            R = R @ _axis_angle(m["axis"], m.get("phase", 0.0) + m["omega"] * t)
        elif kind == "slide":
            T = T + R @ (_unit(m["axis"]) * _wave(m, t))
        else:
            raise ValueError(f"unknown motion type {kind!r}")
    return R, T


def _grow_scale(g: dict, t: float) -> np.ndarray:
    if g["type"] == "ease":
        return 1.0 + (np.asarray(g["start"]) - 1.0) * math.exp(-t / g["tau"])
    if g["type"] == "const":
        return np.asarray(g["scale"], dtype=np.float64)
    if g["type"] == "pulse":
        return 1.0 + np.asarray(g["amp"]) * math.sin(TAU * t / g["period"] + g["phase"])
    raise ValueError(f"unknown grow type {g['type']!r}")


def _deform(part: Part, p: np.ndarray, t: float) -> np.ndarray:
    """Map rest primitive-centred points ``[n,3]`` to the part's joint frame at time ``t``."""
    d = part.deform
    q = p
    if "grow" in d:
        q = q * _grow_scale(d["grow"], t)
    if "blob" in d:
        b = d["blob"]
        r = np.linalg.norm(q, axis=1, keepdims=True).clip(1e-9)
        u = q / r
        g = np.zeros(q.shape[0])
        for dirv, f, sp, ph in zip(b["dirs"], b["freqs"], b["speeds"], b["phases"]):
            g += np.sin(f * (u @ np.asarray(dirv)) * math.pi + sp * t + ph)
        q = q * (1.0 + b["amp"] * g[:, None] / math.sqrt(len(b["freqs"])))
    q = q + np.asarray(part.offset)
    if "twist" in d:
        tw = d["twist"]
        a = tw["along"]
        i, j = [k for k in range(3) if k != a]
        ang = _wave(tw, t) * q[:, a]  # radians per unit length along the axis
        c, s = np.cos(ang), np.sin(ang)
        qi, qj = q[:, i] * c - q[:, j] * s, q[:, i] * s + q[:, j] * c
        q = q.copy()
        q[:, i], q[:, j] = qi, qj
    if "bend" in d:
        bd = d["bend"]
        kappa = _wave(bd, t) / bd["length"]
        if abs(kappa) > 1e-9:
            a, b = bd["along"], bd["toward"]
            s_, x_ = q[:, a], q[:, b]
            r = 1.0 / kappa - x_
            th = kappa * s_
            q = q.copy()
            q[:, b] = 1.0 / kappa - r * np.cos(th)
            q[:, a] = r * np.sin(th)
    return q


def _deform_with_jacobian(part: Part, p: np.ndarray, t: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Deformed points and the forward-difference Jacobian ``[n,3,3]`` (J[:, :, k] = dq/dp_k)."""
    q = _deform(part, p, t)
    J = np.empty(p.shape + (3,))
    for k in range(3):
        dp = p.copy()
        dp[:, k] += h
        J[:, :, k] = (_deform(part, dp, t) - q) / h
    return q, J


def _part_scale(part: Part) -> float:
    return float(np.max(_extent(part.shape, part.size)))


def _world_transforms(parts: list[Part], root: dict, t: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """World transform ``(R, T)`` of each part's joint frame at time ``t`` (``x_world = R x + T``)."""
    yaw = root.get("yaw0", 0.0) + root.get("yaw_rate", 0.0) * t
    bob = root.get("bob_amp", 0.0) * math.sin(TAU * t / root.get("bob_period", 16.0) + root.get("bob_phase", 0.0))
    R0 = _axis_angle([0.0, 0.0, 1.0], yaw)
    T0 = np.array([0.0, 0.0, bob]) + np.asarray(root.get("drift", (0.0, 0.0, 0.0))) * t
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for part in parts:
        if part.parent < 0:
            PR, PT = R0, T0
            aR, aT = np.eye(3), np.asarray(part.anchor, dtype=np.float64)
        else:
            par = parts[part.parent]
            PR, PT = out[part.parent]
            a_rest = (np.asarray(part.anchor, dtype=np.float64) - np.asarray(par.offset))[None]
            h = 1e-5 * _part_scale(par)
            aq, aJ = _deform_with_jacobian(par, a_rest, t, h)
            aR, aT = _polar_rotation(aJ[0]), aq[0]
        JR, JT = _joint_transform(part, t)
        Rr = np.asarray(part.rest_rot, dtype=np.float64)
        R = PR @ aR @ Rr @ JR
        T = PR @ (aR @ (Rr @ JT) + aT) + PT
        out.append((R, T))
    return out


# ================================================================================================================
# clip templates
# ================================================================================================================
def _swing(rng, axis, amp_deg, period, phase=None, base_deg=0.0) -> dict:
    return {"type": "swing", "axis": _unit(axis).tolist(), "amp": math.radians(amp_deg), "period": float(period),
            "phase": float(rng.uniform(0, TAU) if phase is None else phase), "base": math.radians(base_deg)}


def _limb(name, parent, anchor, direction, radius, half_len, motion, texture, deform=None) -> Part:
    """A capsule hanging from its joint along ``direction`` (local -z points along it)."""
    return Part(name, "capsule", [radius, half_len], parent, list(map(float, anchor)), _z_to(-np.asarray(direction,
                dtype=np.float64)).tolist(), [0.0, 0.0, -half_len], motion, deform or {}, texture)


def _bend(rng, along, toward, amp_deg, length, period, thickness) -> dict:
    amp = math.radians(amp_deg)
    amp = min(amp, 0.6 * length / max(thickness, 1e-6))  # keep |kappa| * thickness < 0.6 (no folding)
    return {"along": int(along), "toward": int(toward), "amp": float(amp), "length": float(length),
            "period": float(period), "phase": float(rng.uniform(0, TAU)), "base": 0.0}


def _period(rng, lo=10.0, hi=28.0) -> float:
    return float(rng.uniform(lo, hi))


def _tmpl_creature(rng):
    a, b, c = rng.uniform(0.5, 0.85), rng.uniform(0.25, 0.42), rng.uniform(0.22, 0.38)
    hue = rng.uniform()
    P = _period(rng, 8, 20)
    body_def = {}
    if rng.uniform() < 0.6:
        body_def["bend"] = _bend(rng, 0, 2, rng.uniform(10, 30), a, P, c)
    parts = [Part("body", "ellipsoid", [a, b, c], texture=_random_texture(rng, c, hue), deform=body_def)]
    n_legs = int(rng.choice([2, 4, 4, 6]))
    leg_r, leg_h = rng.uniform(0.06, 0.1), rng.uniform(0.15, 0.3)
    leg_tex = _random_texture(rng, leg_r * 2, hue + rng.uniform(-0.15, 0.15))
    knees = rng.uniform() < 0.5
    amp = rng.uniform(20, 40)
    xs = np.linspace(-0.6 * a, 0.6 * a, n_legs // 2) if n_legs > 2 else np.array([0.0])
    for i, x in enumerate(xs):
        for side in (1, -1):
            phase = (math.pi if (i + (side > 0)) % 2 else 0.0)
            anchor = [float(x), side * 0.65 * b, -0.55 * c]
            parts.append(_limb(f"leg{i}{'lr'[side > 0]}", 0, anchor, [0, 0.25 * side, -1], leg_r, leg_h,
                               [_swing(rng, [0, 1, 0], amp, P, phase)], leg_tex))
            if knees:
                parts.append(_limb(f"shin{i}{'lr'[side > 0]}", len(parts) - 1, [0, 0, -2 * leg_h], [0, 0, -1],
                                   leg_r * 0.85, leg_h * 0.8, [_swing(rng, [0, 1, 0], amp * 0.6, P, phase + 1.2,
                                                                      -10)], leg_tex))
    # neck + head
    hr = rng.uniform(0.18, 0.3)
    head_motion = [_swing(rng, [0, 1, 0], rng.uniform(8, 25), _period(rng, 8, 24))]
    if rng.uniform() < 0.6:
        head_motion.append(_swing(rng, [0, 0, 1], rng.uniform(10, 35), _period(rng, 10, 30)))
    head = Part("head", rng.choice(["ellipsoid", "box"]).item(),
                [hr * 1.2, hr * 0.9, hr] if rng.uniform() < 0.7 else [hr * 0.9, hr * 0.8, hr * 0.8],
                0, [0.85 * a, 0.0, 0.45 * c], np.eye(3).tolist(), [hr * 0.8, 0.0, hr * 0.6], head_motion,
                {}, _random_texture(rng, hr, hue + 0.1))
    parts.append(head)
    hi = len(parts) - 1
    eye_tex = {"type": "solid", "c0": [0.05, 0.05, 0.05], "c1": [0, 0, 0]}
    for side in (1, -1):
        parts.append(Part(f"eye{'lr'[side > 0]}", "ellipsoid", [hr * 0.22] * 3, hi,
                          [hr * 0.8 + head.size[0] * 0.85, side * head.size[1] * 0.45, hr * 0.6 + head.size[2] * 0.35],
                          texture=eye_tex, weight=2.0))
    # tail
    if rng.uniform() < 0.7:
        tl = rng.uniform(0.2, 0.4)
        tr = rng.uniform(0.04, 0.08)
        parts.append(_limb("tail", 0, [-0.9 * a, 0.0, 0.2 * c], [-1, 0, rng.uniform(0.2, 1.0)], tr, tl,
                           [_swing(rng, [1, 0, 0], rng.uniform(20, 45), _period(rng, 6, 14))], leg_tex,
                           {"bend": _bend(rng, 2, 0, rng.uniform(20, 50), 2 * tl, _period(rng, 6, 14), tr)}))
    # ears / horns
    if rng.uniform() < 0.5:
        for side in (1, -1):
            parts.append(Part(f"ear{'lr'[side > 0]}", "ellipsoid", [hr * 0.15, hr * 0.3, hr * 0.5], hi,
                              [hr * 0.6, side * head.size[1] * 0.6, hr * 0.6 + head.size[2] * 0.8],
                              _axis_angle([1, 0, 0], side * 0.4).tolist(), [0, 0, hr * 0.4],
                              [_swing(rng, [1, 0, 0], rng.uniform(5, 20), _period(rng, 6, 16))], {},
                              _random_texture(rng, hr, hue + 0.1)))
    root = {"bob_amp": rng.uniform(0.02, 0.08), "bob_period": P / 2, "bob_phase": rng.uniform(0, TAU),
            "yaw0": rng.uniform(0, TAU), "yaw_rate": math.radians(rng.uniform(-3, 3))}
    return parts, root


def _tmpl_humanoid(rng):
    hue = rng.uniform()
    w, d, hgt = rng.uniform(0.22, 0.32), rng.uniform(0.12, 0.18), rng.uniform(0.32, 0.45)
    P = _period(rng, 8, 20)
    torso_def = {"bend": _bend(rng, 2, 0, rng.uniform(5, 25), hgt, P, d)} if rng.uniform() < 0.6 else {}
    parts = [Part("torso", rng.choice(["ellipsoid", "box"]).item(), [d, w, hgt], deform=torso_def,
                  texture=_random_texture(rng, w, hue))]
    hr = rng.uniform(0.14, 0.2)
    parts.append(Part("head", "ellipsoid", [hr, hr * 0.9, hr * 1.1], 0, [0, 0, hgt], np.eye(3).tolist(),
                      [0, 0, hr * 1.2], [_swing(rng, [0, 0, 1], rng.uniform(10, 40), _period(rng))], {},
                      _random_texture(rng, hr, hue + 0.3)))
    jack = rng.uniform() < 0.5
    limb_tex = _random_texture(rng, 0.1, hue + rng.uniform(-0.2, 0.2))
    ar, al = rng.uniform(0.05, 0.08), rng.uniform(0.13, 0.2)
    amp_arm = rng.uniform(40, 80) if jack else rng.uniform(25, 50)
    for side in (1, -1):
        axis = [1, 0, 0] if jack else [0, 1, 0]
        ph = 0.0 if jack else (math.pi if side > 0 else 0.0)
        sgn = -side if jack else 1
        parts.append(_limb(f"upper_arm{'lr'[side > 0]}", 0, [0, side * (w + ar), hgt * 0.8], [0, 0.15 * side, -1],
                           ar, al, [_swing(rng, np.asarray(axis) * sgn, amp_arm, P, ph, sgn * 0)], limb_tex))
        parts.append(_limb(f"forearm{'lr'[side > 0]}", len(parts) - 1, [0, 0, -2 * al], [0, 0, -1], ar * 0.9, al,
                           [_swing(rng, [0, 1, 0], rng.uniform(10, 40), P, ph + 1.0, -20)], limb_tex))
    lr, ll = rng.uniform(0.06, 0.09), rng.uniform(0.16, 0.24)
    for side in (1, -1):
        axis = [1, 0, 0] if jack else [0, 1, 0]
        ph = 0.0 if jack else (0.0 if side > 0 else math.pi)
        parts.append(_limb(f"thigh{'lr'[side > 0]}", 0, [0, side * w * 0.5, -hgt * 0.85], [0, 0, -1], lr, ll,
                           [_swing(rng, np.asarray(axis) * (-side if jack else 1), rng.uniform(15, 35), P, ph)],
                           limb_tex))
        parts.append(_limb(f"shin{'lr'[side > 0]}", len(parts) - 1, [0, 0, -2 * ll], [0, 0, -1], lr * 0.85, ll,
                           [_swing(rng, [0, 1, 0], rng.uniform(10, 30), P, ph + 1.3, 15)], limb_tex))
    root = {"bob_amp": rng.uniform(0.03, 0.12), "bob_period": P / 2, "bob_phase": rng.uniform(0, TAU),
            "yaw0": rng.uniform(0, TAU), "yaw_rate": math.radians(rng.uniform(-4, 4))}
    return parts, root


def _tmpl_robot_arm(rng):
    hue = rng.uniform()
    bw = rng.uniform(0.25, 0.4)
    parts = [Part("base", "box", [bw, bw, 0.08], texture=_random_texture(rng, bw, hue))]
    spin = ({"type": "spin", "axis": [0, 0, 1], "omega": math.radians(rng.uniform(5, 15)) * rng.choice([-1, 1]),
             "phase": float(rng.uniform(0, TAU))} if rng.uniform() < 0.5
            else _swing(rng, [0, 0, 1], rng.uniform(30, 90), _period(rng)))
    tr = rng.uniform(0.1, 0.16)
    parts.append(Part("turret", "ellipsoid", [tr * 1.3, tr * 1.3, tr], 0, [0, 0, 0.08], np.eye(3).tolist(),
                      [0, 0, tr * 0.6], [spin], {}, _random_texture(rng, tr, hue + 0.5)))
    prev, prev_len = 1, tr * 1.2
    n_links = int(rng.integers(2, 5))
    for i in range(n_links):
        L = rng.uniform(0.2, 0.35)
        r = rng.uniform(0.05, 0.09) * (0.85 ** i)
        shape = rng.choice(["capsule", "box"]).item()
        size = [r, L * 0.5] if shape == "capsule" else [r, r, L * 0.5]
        base = rng.uniform(-40, 40) if i else rng.uniform(-20, 20)
        axis = [0, 1, 0] if i % 2 == 0 or rng.uniform() < 0.5 else [1, 0, 0]
        parts.append(Part(f"link{i}", shape, size, prev, [0, 0, prev_len], np.eye(3).tolist(),
                          [0, 0, L * 0.5 + (r if shape == "capsule" else 0.0)],
                          [_swing(rng, axis, rng.uniform(15, 45), _period(rng), None, base)], {},
                          _random_texture(rng, L, hue + 0.1 * i)))
        prev, prev_len = len(parts) - 1, L + (2 * r if shape == "capsule" else 0.0)
    # gripper: two fingers sliding in and out
    fr = rng.uniform(0.02, 0.04)
    P = _period(rng, 6, 16)
    ph = rng.uniform(0, TAU)
    tex = _random_texture(rng, 0.05, hue + 0.5)
    for side in (1, -1):
        parts.append(Part(f"finger{'lr'[side > 0]}", "box", [fr, fr * 1.5, fr * 4], prev, [0, 0, prev_len],
                          np.eye(3).tolist(), [0, 0, fr * 4],
                          [{"type": "slide", "axis": [0, side, 0], "amp": fr * 1.5, "period": P, "phase": ph,
                            "base": fr * 2.5}], {}, tex))
    root = {"yaw0": rng.uniform(0, TAU)}
    return parts, root


def _tmpl_windmill(rng):
    hue = rng.uniform()
    th = rng.uniform(0.5, 0.8)
    tw = rng.uniform(0.08, 0.14)
    tower = (Part("tower", "box", [tw, tw, th * 0.5], offset=[0, 0, th * 0.5], texture=_random_texture(rng, th, hue))
             if rng.uniform() < 0.5 else
             Part("tower", "capsule", [tw, th * 0.5], offset=[0, 0, th * 0.5], texture=_random_texture(rng, th, hue)))
    parts = [tower]
    hr = rng.uniform(0.08, 0.13)
    omega = math.radians(rng.uniform(12, 35)) * rng.choice([-1, 1])
    parts.append(Part("hub", "ellipsoid", [hr] * 3, 0, [tw + hr * 0.5, 0, th], _z_to([1, 0, 0]).tolist(),
                      [0, 0, 0], [{"type": "spin", "axis": [0, 0, 1], "omega": omega,
                                   "phase": float(rng.uniform(0, TAU))}], {}, _random_texture(rng, hr, hue + 0.5)))
    nb = int(rng.integers(2, 7))
    bl = rng.uniform(0.25, 0.4)
    blade_shape = rng.choice(["box", "ellipsoid"]).item()
    tex = _random_texture(rng, bl, hue + 0.3)
    pitch = _swing(rng, [0, 1, 0], rng.uniform(0, 20), _period(rng)) if rng.uniform() < 0.4 else None
    for k in range(nb):
        R = _axis_angle([0, 0, 1], TAU * k / nb) @ _z_to([1, 0, 0])
        # blade local z runs along the blade (radially in the hub plane), local x (thickness) along the spin axis
        parts.append(Part(f"blade{k}", blade_shape, [0.025, bl * 0.12, bl * 0.5], 1, [0, 0, 0], R.tolist(),
                          [0, 0, bl * 0.55], [pitch] if pitch else [], {}, tex))
    root = {"yaw0": rng.uniform(0, TAU), "yaw_rate": math.radians(rng.uniform(-2, 2))}
    return parts, root


def _tmpl_carousel(rng):
    hue = rng.uniform()
    dr = rng.uniform(0.5, 0.7)
    omega = math.radians(rng.uniform(8, 25)) * rng.choice([-1, 1])
    parts = [Part("disc", "ellipsoid", [dr, dr, 0.06], texture=_random_texture(rng, dr, hue),
                  motion=[{"type": "spin", "axis": [0, 0, 1], "omega": omega, "phase": float(rng.uniform(0, TAU))}])]
    parts.append(Part("pole", "capsule", [0.05, 0.3], 0, [0, 0, 0.06], offset=[0, 0, 0.3],
                      texture=_random_texture(rng, 0.3, hue + 0.5)))
    n = int(rng.integers(3, 7))
    P = _period(rng, 8, 20)
    for k in range(n):
        ang = TAU * k / n
        anchor = [0.7 * dr * math.cos(ang), 0.7 * dr * math.sin(ang), 0.06]
        shape = rng.choice(["ellipsoid", "box", "capsule"]).item()
        s = rng.uniform(0.07, 0.13)
        size = [s, s * 1.3] if shape == "capsule" else [s, s * rng.uniform(0.6, 1.4), s * rng.uniform(0.8, 1.5)]
        motion = [{"type": "slide", "axis": [0, 0, 1], "amp": rng.uniform(0.05, 0.15), "period": P,
                   "phase": TAU * k / n, "base": 0.2}]
        if rng.uniform() < 0.5:
            motion.append({"type": "spin", "axis": [0, 0, 1], "omega": math.radians(rng.uniform(-30, 30)),
                           "phase": 0.0})
        parts.append(Part(f"rider{k}", shape, size, 0, anchor, motion=motion,
                          texture=_random_texture(rng, s, hue + rng.uniform(-0.5, 0.5))))
    return parts, {"yaw0": rng.uniform(0, TAU)}


def _tmpl_plant(rng):
    hue = rng.uniform(0.2, 0.45)
    pr = rng.uniform(0.15, 0.25)
    parts = [Part("pot", rng.choice(["box", "ellipsoid"]).item(), [pr, pr, pr * 0.8],
                  texture=_random_texture(rng, pr, rng.uniform()))]
    sl = rng.uniform(0.3, 0.5)
    sr = rng.uniform(0.03, 0.05)
    P = _period(rng, 10, 24)
    stem_def = {"bend": _bend(rng, 2, 0, rng.uniform(15, 40), 2 * sl, P, sr),
                "grow": {"type": "ease", "start": [1.0, 1.0, rng.uniform(0.5, 0.8)], "tau": rng.uniform(6, 20)}}
    parts.append(Part("stem", "capsule", [sr, sl], 0, [0, 0, pr * 0.7], np.eye(3).tolist(), [0, 0, sl],
                      [_swing(rng, [1, 0, 0], rng.uniform(3, 10), _period(rng))], stem_def,
                      _random_texture(rng, sl, hue)))
    n_leaves = int(rng.integers(2, 6))
    leaf_tex = _random_texture(rng, 0.2, hue + 0.05)
    for k in range(n_leaves):
        zf = rng.uniform(0.3, 1.6)
        ang = rng.uniform(0, TAU)
        R = _axis_angle([0, 0, 1], ang) @ _z_to([1, 0, rng.uniform(0.2, 0.8)])
        ll = rng.uniform(0.12, 0.22)
        parts.append(Part(f"leaf{k}", "ellipsoid", [ll * 0.45, 0.015, ll], 1, [0, 0, zf * sl], R.tolist(),
                          [0, 0, ll * 0.95], [_swing(rng, [0, 1, 0], rng.uniform(5, 25), _period(rng, 6, 16))],
                          {"grow": {"type": "ease", "start": [0.3, 1.0, 0.3], "tau": rng.uniform(4, 16)}},
                          leaf_tex))
    fr = rng.uniform(0.08, 0.14)
    parts.append(Part("flower", "ellipsoid", [fr, fr, fr * 0.7], 1, [0, 0, 2 * sl + sr], np.eye(3).tolist(),
                      [0, 0, fr * 0.5], [],
                      {"grow": {"type": "pulse", "amp": [0.15, 0.15, 0.1], "period": _period(rng, 8, 20),
                                "phase": float(rng.uniform(0, TAU))}},
                      _random_texture(rng, fr, rng.uniform())))
    fi = len(parts) - 1
    npet = int(rng.integers(4, 9))
    ptex = _random_texture(rng, fr, rng.uniform())
    Pp = _period(rng, 8, 20)
    for k in range(npet):
        R = _axis_angle([0, 0, 1], TAU * k / npet) @ _z_to([1, 0, 0.3])
        parts.append(Part(f"petal{k}", "ellipsoid", [fr * 0.6, 0.012, fr * 1.2], fi, [0, 0, fr * 0.5], R.tolist(),
                          [0, 0, fr * 1.1], [_swing(rng, [0, 1, 0], rng.uniform(10, 35), Pp, 0.0, -15)], {},
                          ptex))
    return parts, {"yaw0": rng.uniform(0, TAU)}


def _tmpl_blobs(rng):
    hue = rng.uniform()
    parts = []
    nb = int(rng.integers(1, 4))
    for k in range(nb):
        r = rng.uniform(0.25, 0.45) if k == 0 else rng.uniform(0.12, 0.25)
        K = int(rng.integers(2, 5))
        blob = {"amp": float(rng.uniform(0.08, 0.2)), "dirs": [_unit(rng.normal(size=3)).tolist() for _ in range(K)],
                "freqs": rng.uniform(1.0, 3.0, K).tolist(), "speeds": (rng.uniform(0.2, 0.6, K) *
                                                                         rng.choice([-1, 1], K)).tolist(),
                "phases": rng.uniform(0, TAU, K).tolist()}
        deform = {"blob": blob}
        if rng.uniform() < 0.5:
            deform["grow"] = {"type": "pulse", "amp": rng.uniform(0.05, 0.2, 3).tolist(), "period": _period(rng),
                              "phase": float(rng.uniform(0, TAU))}
        size = (np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.6, 1.0)]) * r).tolist()
        if k == 0:
            parts.append(Part("core", "ellipsoid", size, deform=deform, texture=_random_texture(rng, r, hue),
                              motion=[{"type": "spin", "axis": _unit(rng.normal(size=3)).tolist(),
                                       "omega": math.radians(rng.uniform(-10, 10)), "phase": 0.0}]))
        else:
            # satellites orbit the core on tilted circles
            tilt = _z_to(rng.normal(size=3))
            dist = rng.uniform(0.5, 0.8)
            orbit = Part(f"orbit{k}", "ellipsoid", [0.02, 0.02, 0.02], 0, [0, 0, 0], tilt.tolist(), [0, 0, 0],
                         [{"type": "spin", "axis": [0, 0, 1], "omega": math.radians(rng.uniform(10, 30)) *
                           rng.choice([-1, 1]), "phase": float(rng.uniform(0, TAU))}], {},
                         {"type": "solid", "c0": [0.5, 0.5, 0.5], "c1": [0, 0, 0]}, weight=0.05)
            parts.append(orbit)
            parts.append(Part(f"satellite{k}", "ellipsoid", size, len(parts) - 1, [dist, 0, 0], deform=deform,
                              texture=_random_texture(rng, r, hue + rng.uniform(-0.4, 0.4))))
    return parts, {"yaw0": rng.uniform(0, TAU), "bob_amp": rng.uniform(0.0, 0.08), "bob_period": _period(rng),
                   "bob_phase": rng.uniform(0, TAU)}


_TEMPLATES = {"creature": _tmpl_creature, "humanoid": _tmpl_humanoid, "robot_arm": _tmpl_robot_arm,
              "windmill": _tmpl_windmill, "carousel": _tmpl_carousel, "plant": _tmpl_plant, "blobs": _tmpl_blobs}


def _freeze(parts: list[Part], root: dict) -> tuple[list[Part], dict]:
    """Remove all time dependence (static clip): joint motions evaluated at t=0, deformations at t=0."""
    for p in parts:
        frozen = []
        for m in p.motion:
            m = dict(m)
            if m["type"] == "spin":
                m["omega"] = 0.0
            else:
                m["base"] = _wave(m, 0.0)
                m["amp"] = 0.0
            frozen.append(m)
        p.motion = frozen
        d = p.deform
        if "grow" in d:
            d["grow"] = {"type": "const", "scale": _grow_scale(d["grow"], 0.0).tolist()}
        if "blob" in d:
            d["blob"] = dict(d["blob"], phases=[ph for ph in d["blob"]["phases"]],
                             speeds=[0.0] * len(d["blob"]["speeds"]))
        for k in ("bend", "twist"):
            if k in d:
                d[k] = dict(d[k], base=_wave(d[k], 0.0), amp=0.0)
    root = dict(root, yaw_rate=0.0, bob_amp=0.0, drift=(0.0, 0.0, 0.0))
    return parts, root


def _scale_motion(parts: list[Part], root: dict, s: float) -> None:
    for p in parts:
        for m in p.motion:
            if m["type"] == "spin":
                m["omega"] *= s
            else:
                m["amp"] *= s
        for k in ("bend", "twist"):
            if k in p.deform:
                p.deform[k]["amp"] *= s
        if "blob" in p.deform:
            p.deform["blob"]["speeds"] = [v * s for v in p.deform["blob"]["speeds"]]
    for k in ("yaw_rate", "bob_amp"):
        if k in root:
            root[k] *= s


# ================================================================================================================
# the clip
# ================================================================================================================
@dataclass
class ClipFrame:
    """One frame: canonical-box surface samples, their surface voxels and their Gaussians."""

    points: torch.Tensor    # [P, 3] float32
    normals: torch.Tensor   # [P, 3] float32
    colors: torch.Tensor    # [P, 3] float32 in [0, 1] (shaded if the clip is)
    voxels: torch.Tensor    # [N, 3] int32
    gaussians: Gaussians


@dataclass
class ProceduralClip:
    """A generated clip; see :func:`make_clip`. Per-frame tensors are ``[T, P, ...]``."""

    seed: int
    kind: str
    num_frames: int
    resolution: int
    points: torch.Tensor          # [T, P, 3] float32, canonical box
    normals: torch.Tensor         # [T, P, 3] float32
    colors: torch.Tensor          # [T, P, 3] float32 (shaded albedo)
    albedo: torch.Tensor          # [P, 3] float32
    gauss_scales: torch.Tensor    # [T, P] float32 tangential std-dev of each surface Gaussian
    part_ids: torch.Tensor        # [P] int64 part index of each sample
    center: list                  # world-space centre removed by the normalisation
    scale: float                  # world -> canonical scale factor
    parts: list                   # [Part.to_dict()]
    root: dict
    input_cameras: list           # [T] Camera: monocular input-video path
    input_camera_params: dict
    static: bool
    opacity: float = 0.98
    normal_scale_ratio: float = 0.15
    _voxels: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return self.num_frames

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])

    def voxels(self, t: int, resolution: int | None = None) -> torch.Tensor:
        """Surface voxels ``[N, 3]`` int32 of frame ``t`` (voxelisation of the frame's surface points)."""
        R = self.resolution if resolution is None else int(resolution)
        key = (int(t), R)
        if key not in self._voxels:
            self._voxels[key] = voxelize_points(self.points[t], R)
        return self._voxels[key]

    def gaussian_params(self, t: int) -> dict[str, torch.Tensor]:
        """Rasterizer dict (activated values) of frame ``t``: flat discs tangent to the surface."""
        s = self.gauss_scales[t]
        scales = torch.stack([s, s, (s * self.normal_scale_ratio).clamp_min(1e-4)], 1)
        return {"means": self.points[t], "scales": scales, "rotations": normal_to_quaternion(self.normals[t]),
                "opacities": torch.full((self.num_points,), self.opacity), "colors": self.colors[t]}

    def gaussians(self, t: int) -> Gaussians:
        g = self.gaussian_params(t)
        return Gaussians.from_activated(g["means"], g["colors"], g["scales"], g["rotations"], g["opacities"])

    def frame(self, t: int) -> ClipFrame:
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} out of range for a clip of {self.num_frames} frames")
        return ClipFrame(self.points[t], self.normals[t], self.colors[t], self.voxels(t), self.gaussians(t))

    def __getitem__(self, t: int) -> ClipFrame:
        return self.frame(t)

    def recipe(self) -> dict:
        """JSON-able description (template, parts, root motion, normalisation, input camera)."""
        return {"seed": self.seed, "kind": self.kind, "num_frames": self.num_frames, "resolution": self.resolution,
                "num_points": self.num_points, "center": self.center, "scale": self.scale, "static": self.static,
                "root": self.root, "parts": self.parts, "input_camera": self.input_camera_params}


def _sample_parts(parts: list[Part], num_points: int, rng: np.random.Generator):
    areas = np.array([_rest_area(p.shape, p.size) * p.weight for p in parts])
    counts = np.maximum(8, np.round(areas / areas.sum() * num_points)).astype(int)
    P, N, A, ids = [], [], [], []
    for i, (p, n) in enumerate(zip(parts, counts)):
        pts, nrm, area = _SAMPLERS[p.shape](p.size, int(n), rng)
        P.append(pts)
        N.append(nrm)
        A.append(np.full(len(pts), area / len(pts)))
        ids.append(np.full(len(pts), i))
    return np.concatenate(P), np.concatenate(N), np.concatenate(A), np.concatenate(ids)


def _pose(parts, root, p_rest, n_rest, ids, t):
    """World points, normals and area factors of all samples at time ``t``."""
    X = np.empty_like(p_rest)
    Nw = np.empty_like(n_rest)
    af = np.empty(p_rest.shape[0])
    tf = _world_transforms(parts, root, t)
    for i, part in enumerate(parts):
        m = ids == i
        if not m.any():
            continue
        q, J = _deform_with_jacobian(part, p_rest[m], t, 1e-5 * _part_scale(part))
        n0 = n_rest[m]
        JT = np.transpose(J, (0, 2, 1))
        det = np.linalg.det(J)
        with np.errstate(all="ignore"):
            nj = np.linalg.solve(JT, n0[..., None])[..., 0]
        bad = ~np.isfinite(nj).all(1) | (np.abs(det) < 1e-12)
        nj[bad] = n0[bad]
        nl = np.linalg.norm(nj, axis=1)
        area = np.abs(det) * nl
        area[bad] = 1.0
        R, T = tf[i]
        X[m] = q @ R.T + T
        Nw[m] = (nj / nl.clip(1e-12)[:, None]) @ R.T
        af[m] = area
    return X, Nw, af


def _shade(albedo: np.ndarray, normals: np.ndarray) -> np.ndarray:
    light = np.full(normals.shape[0], AMBIENT)
    for d, w in LIGHTS:
        light += w * np.clip(normals @ d, 0, None)
    return np.clip(albedo * light[:, None], 0.0, 1.0)


def make_clip(seed: int, num_frames: int = 16, resolution: int = 64, *, kind: str | None = None,
              num_points: int | None = None, static: bool = False, motion_scale: float = 1.0,
              shading: bool = True, gaussian_scale: float = 0.8, orbit_prob: float = 0.3,
              input_fov_range_deg=(30.0, 50.0), input_elevation_range_deg=(-10.0, 30.0),
              input_size: int = 512) -> ProceduralClip:
    """Generate a deterministic animated clip.

    ``kind``: one of :data:`KINDS` (default: drawn from the seed). ``num_points``: surface samples (default
    ``max(4096, 12 R^2)``, i.e. several samples per voxel face). ``static``: freeze all motion (the clip gets the
    ``static`` flag). ``motion_scale`` scales all motion amplitudes / speeds. ``gaussian_scale``: tangential
    std-dev of the surface Gaussians relative to the sample spacing ``sqrt(area per sample)``. Motion periods are
    in frames (8-30), independent of ``num_frames``, so a longer clip extends a shorter one's motion (only the
    canonical normalisation differs)."""
    T = int(num_frames)
    R = int(resolution)
    if T < 1 or R < 1:
        raise ValueError("num_frames and resolution must be >= 1")
    rng = np.random.default_rng(int(seed))
    if kind is None:
        kind = str(rng.choice(KINDS))
    if kind not in _TEMPLATES:
        raise ValueError(f"unknown clip kind {kind!r}; choose from {KINDS}")
    parts, root = _TEMPLATES[kind](rng)
    if motion_scale != 1.0:
        _scale_motion(parts, root, float(motion_scale))
    if static:
        parts, root = _freeze(parts, root)
    n_pts = int(num_points) if num_points is not None else max(4096, 12 * R * R)
    p_rest, n_rest, a_rest, ids = _sample_parts(parts, n_pts, np.random.default_rng([int(seed), 1]))
    albedo = np.concatenate([_texture(parts[i].texture, p_rest[ids == i]) for i in range(len(parts))]) \
        if len(parts) else np.zeros((0, 3))
    Xs, Ns, As = [], [], []
    for t in range(T):
        X, Nw, af = _pose(parts, root, p_rest, n_rest, ids, float(t))
        Xs.append(X)
        Ns.append(Nw)
        As.append(af)
    X = np.stack(Xs)
    lo, hi = X.reshape(-1, 3).min(0), X.reshape(-1, 3).max(0)
    center = (lo + hi) / 2
    scale = 1.0 / float(np.max(hi - lo))
    Xc = (X - center) * scale
    Nw = np.stack(Ns)
    colors = np.stack([_shade(albedo, Nw[t]) for t in range(T)]) if shading else np.broadcast_to(albedo, Nw.shape)
    gs = gaussian_scale * np.sqrt(a_rest[None] * np.stack(As)) * scale
    is_static = bool(static or T == 1 or float(np.abs(Xc - Xc[:1]).max()) < 1e-4)
    bound_radius = float(np.linalg.norm(Xc, axis=2).max())
    cams, cam_params = input_camera_path(T, np.random.default_rng([int(seed), 2]), Xc, bound_radius=bound_radius,
                                         fov_range_deg=input_fov_range_deg,
                                         elevation_range_deg=input_elevation_range_deg, orbit_prob=orbit_prob,
                                         size=input_size, min_depth=0.3, min_radius=0.0)
    f32 = torch.float32
    return ProceduralClip(
        seed=int(seed), kind=kind, num_frames=T, resolution=R,
        points=torch.from_numpy(np.ascontiguousarray(Xc)).to(f32),
        normals=torch.from_numpy(np.ascontiguousarray(Nw)).to(f32),
        colors=torch.from_numpy(np.ascontiguousarray(colors)).to(f32),
        albedo=torch.from_numpy(albedo).to(f32),
        gauss_scales=torch.from_numpy(gs).to(f32),
        part_ids=torch.from_numpy(ids).long(),
        center=center.tolist(), scale=scale,
        parts=[p.to_dict() for p in parts], root={k: (list(v) if isinstance(v, tuple) else v) for k, v in root.items()},
        input_cameras=cams, input_camera_params=cam_params, static=is_static)


# ================================================================================================================
# rendering
# ================================================================================================================
def _cameras_per_frame(cameras, T: int) -> list[list[Camera]]:
    if isinstance(cameras, Camera):
        return [[cameras]] * T
    cameras = list(cameras)
    if not cameras:
        raise ValueError("render_views: no cameras")
    if isinstance(cameras[0], Camera):
        return [cameras] * T  # shared by every frame
    if len(cameras) != T:
        raise ValueError(f"render_views: {len(cameras)} per-frame camera lists for {T} frames")
    return [list(c) for c in cameras]


@torch.no_grad()
def render_views(clip: ProceduralClip, cameras, size: int | tuple[int, int] | None = None, *,
                 frames=None, ssaa: int = 1, straight_alpha: bool = True, device=None) -> torch.Tensor:
    """Render ``rgba [T, V, 4, H, W]`` float in [0, 1].

    ``cameras``: a list of ``V`` cameras shared by all frames, or ``T`` lists of ``V`` cameras (one list per
    frame), or a single camera. ``size``: output size (int or ``(W, H)``; default: each camera's own size).
    ``frames``: subset of frame indices (default all). The background is transparent; with ``straight_alpha``
    (default, what RGBA PNGs store) colour is un-premultiplied (``C / alpha``, 0 where alpha < 1/255), otherwise
    premultiplied (colour over black). ``device``: render there (e.g. ``"cuda"``); the result is returned on the
    CPU."""
    frames = list(range(clip.num_frames)) if frames is None else [int(f) for f in frames]
    per_frame = _cameras_per_frame(cameras, clip.num_frames)
    out = []
    for t in frames:
        g = clip.gaussian_params(t)
        if device is not None:
            g = {k: v.to(device) for k, v in g.items()}
        views = []
        for cam in per_frame[t]:
            if size is not None:
                w, h = (size, size) if isinstance(size, int) else size
                cam = cam.resized(int(w), int(h))
            if device is not None:
                cam = cam.to(device)
            o = rasterize(g, cam, (0.0, 0.0, 0.0), ssaa=ssaa)
            a = o["alpha"].clamp(0, 1)
            c = o["color"].clamp(0, 1)
            if straight_alpha:
                c = torch.where(a > 1.0 / 255.0, (c / a.clamp_min(1e-6)).clamp(0, 1), torch.zeros_like(c))
            views.append(torch.cat([c, a], 0).cpu())
        out.append(torch.stack(views))
    return torch.stack(out)


def render_input_video(clip: ProceduralClip, size: int | None = None, **kw) -> torch.Tensor:
    """The monocular input video ``rgba [T, 4, H, W]`` seen by ``clip.input_cameras``."""
    return render_views(clip, [[c] for c in clip.input_cameras], size, **kw)[:, 0]
