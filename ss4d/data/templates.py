"""Templates of procedural clips (creature, humanoid, robot arm, windmill, carousel, plant, blobs): part trees."""
from __future__ import annotations

import math

import numpy as np

from .kinematics import (
    Part,
    _grow_scale,
)
from .primitives import (
    TAU,
    _axis_angle,
    _unit,
    _wave,
    _z_to,
)
from .textures import _random_texture


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
