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

from dataclasses import dataclass, field

import numpy as np
import torch

from ss4d.gaussians import Gaussians
from ss4d.render.camera import Camera
from ss4d.render.rasterizer import rasterize

from .input_cameras import input_camera_path
from .kinematics import (
    Part,
    _deform_with_jacobian,
    _part_scale,
    _world_transforms,
)
from .primitives import (
    _SAMPLERS,
    _rest_area,
    normal_to_quaternion,
)
from .templates import (
    _TEMPLATES,
    _freeze,
    _scale_motion,
)
from .textures import _texture
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

KINDS = ("creature", "humanoid", "robot_arm", "windmill", "carousel", "plant", "blobs")
LIGHTS = ((np.array([4.0, 1.0, 6.0]) / np.linalg.norm([4.0, 1.0, 6.0]), 0.65),
          (np.array([-3.0, -2.0, 1.0]) / np.linalg.norm([-3.0, -2.0, 1.0]), 0.2))
AMBIENT = 0.35












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
