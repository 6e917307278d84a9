"""Procedural surface textures (solid, stripes, checker, value noise, spots, gradient) evaluated at rest positions."""
from __future__ import annotations

import numpy as np

from .primitives import (
    _hsv,
    _unit,
)


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
