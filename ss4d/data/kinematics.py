"""Kinematic tree of procedural clips: parts, joint motions and deformations, posed per frame with their Jacobians."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .primitives import (
    TAU,
    _axis_angle,
    _extent,
    _polar_rotation,
    _unit,
    _wave,
)


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
