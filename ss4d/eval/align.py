"""Aligning a prediction with the ground truth (``shared/spec/evaluation.md``, "Aligning a prediction").

A generator outputs the object in its own canonical frame at its own scale. Before scoring we look for the camera
(azimuth, elevation, distance; fov and look-at target fixed to the protocol's) that best reproduces the input video
from the prediction, then render the novel views from that pose plus the protocol's azimuth offsets.

Search (:func:`align_to_input`; with ``fixed_azimuth_deg`` the azimuth is pinned and only elevation and distance
are searched - the *fixed-yaw* variant of the scores, see :func:`yaw_error_deg`):

* renders are cheap *proxy* renders (:func:`splat`): every Gaussian with opacity >= ``min_opacity`` stands for 7
  points (its centre and +-2 sigma along its axes; the centre only in the coarse grid), at most a fixed random
  subset per frame (drawn from ``seed``), projected into a low-resolution image with a z-buffer (the nearest point
  gives the colour), 1-px holes closed by a 3x3 morphological closing; the input frames are area-downsampled to
  the same size;
* score of a pose: ``(1 - soft IoU(alpha)) + color_weight * L1(RGB on white, over the union of both masks)``,
  averaged over frames; lower is better;
* coarse grid: azimuth every ``az_step`` (5) degrees x ``elevations`` (-30 ... 30 every 10 degrees) at the
  protocol distance, scored on ``coarse_frames`` (8) evenly spaced frames at ``coarse_size`` (48) px; each pose is
  scored again at the distance matching the mask areas (``d = d0 sqrt(A_pred / A_gt)``, apparent size ~ 1 / d)
  and keeps the better of the two;
* refinement of the ``top_k`` (3) best coarse poses (azimuths at least 2 steps apart) over **all frames** at
  ``size`` (64) px: a best-improvement pattern search over azimuth, elevation (kept in -30 ... 30) and
  log-distance, steps (2.5 deg, 2.5 deg, 4 %) halved ``levels`` (4) times;
* polish of the best pose at ``final_size`` (128, at most the input's size) px with more points, steps (1 deg,
  1 deg, 1.5 %) halved 3 times.

On a synthetic object rendered by the rasterizer at a known pose the search recovers azimuth and elevation within
about 0.5 deg and the distance within 1 % (see ``tests/test_eval_protocol.py``).

The found pose maps the prediction's frame into the ground truth's (:func:`prediction_to_gt`): both cameras look
at the origin, so the image is reproduced when camera coordinates agree up to the factor ``r_gt / d``::

    X_gt = (r_gt / d) R_gt^T R_pred X_pred

(``R`` the world-to-camera rotations). Geometry metrics voxelize the transformed Gaussian centres in the ground-truth
box (:func:`prediction_voxels`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ss4d.render.camera import Camera, look_at_extrinsics, orbit_camera, orbit_position

__all__ = [
    "AlignSettings",
    "Pose",
    "PointSet",
    "gaussian_points",
    "splat",
    "pose_loss",
    "align_to_input",
    "yaw_error_deg",
    "pose_camera",
    "prediction_to_gt",
    "transform_points",
    "prediction_voxels",
]


@dataclass
class AlignSettings:
    size: int = 64                    # proxy render side for the refinement
    coarse_size: int = 48             # ... and for the coarse grid
    az_step: float = 5.0
    elevations: tuple = (-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0)
    elevation_range: tuple = (-30.0, 30.0)
    distance_range: tuple = (0.4, 4.0)   # times the protocol radius
    max_points: int = 8000            # proxy points per frame, refinement (7 per Gaussian: centre +- 1 sigma)
    coarse_points: int = 1500         # proxy points per frame, coarse grid (Gaussian centres)
    coarse_frames: int = 8            # frames (evenly spaced) scored by the coarse grid; the refinement uses all
    min_opacity: float = 0.05
    top_k: int = 3
    steps: tuple = (2.5, 2.5, 0.04)   # initial refinement steps: azimuth deg, elevation deg, log-distance
    levels: int = 4                   # step halvings
    final_size: int = 128             # polish of the best pose at this side (at most the input's)
    final_points: int = 30000
    final_steps: tuple = (1.0, 1.0, 0.015)
    final_levels: int = 3
    color_weight: float = 1.0
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict | None) -> AlignSettings:
        d = dict(d or {})
        keys = cls.__dataclass_fields__.keys()
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in keys})


@dataclass
class Pose:
    """Camera pose in the prediction's frame that reproduces the input view: azimuth / elevation in degrees
    (``dataset`` orbit convention), distance to the origin, and its proxy score."""

    azimuth_deg: float
    elevation_deg: float
    distance: float
    loss: float = float("nan")
    iou: float = float("nan")
    l1: float = float("nan")
    empty: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> Pose:
        kw = {k: (float("nan") if d.get(k) is None else d[k]) for k in ("loss", "iou", "l1")}
        return cls(float(d["azimuth_deg"]), float(d["elevation_deg"]), float(d["distance"]), **kw,
                   empty=bool(d.get("empty", False)))


# ================================================================================================================
# proxy rendering
# ================================================================================================================
@dataclass
class PointSet:
    """Coloured points of all frames: ``xyz [M, 3]``, ``rgb [M, 3]`` in [0, 1], ``frame [M]`` long."""

    xyz: torch.Tensor
    rgb: torch.Tensor
    frame: torch.Tensor
    num_frames: int

    @property
    def empty(self) -> bool:
        return self.xyz.shape[0] == 0


def gaussian_points(gaussians: Sequence, max_points: int, min_opacity: float = 0.05, seed: int = 0,
                    extent: bool = True) -> PointSet:
    """Coloured points standing for the Gaussians with opacity >= ``min_opacity``: with ``extent`` each Gaussian's
    centre plus the 6 points at +-2 sigma along its axes (where the alpha of a dense surface of overlapping
    Gaussians falls to about 1/2: measured against the rasterizer, this removes the proxy's silhouette shrink that
    otherwise biases the distance by a few percent), else the centre only; at most ``max_points`` points per frame
    (a random subset of the Gaussians, reproducible from ``seed``)."""
    from ss4d.render.rasterizer import quaternion_to_matrix

    xs, cs, fs = [], [], []
    gen = torch.Generator().manual_seed(int(seed))
    per = 7 if extent else 1
    for t, g in enumerate(gaussians):
        with torch.no_grad():
            xyz = g.get_xyz.detach().float().cpu()
            rgb = g.get_colors.detach().float().cpu().clamp(0, 1)
            op = g.get_opacity.detach().float().cpu().reshape(-1)
        keep = (op >= min_opacity).nonzero().flatten()
        cap = max(1, int(max_points) // per)
        if keep.numel() > cap:
            keep = keep[torch.randperm(keep.numel(), generator=gen)[:cap]].sort().values
        p, c = xyz[keep], rgb[keep]
        if extent and keep.numel():
            with torch.no_grad():
                axes = quaternion_to_matrix(g.get_rotation.detach().float().cpu()[keep])   # columns = axes
                sc = g.get_scaling.detach().float().cpu()[keep]
            off = (axes * sc[:, None, :]).transpose(1, 2) * 2.0        # [N, 3 axes, 3]
            p = torch.cat([p[:, None], p[:, None] + off, p[:, None] - off], 1).reshape(-1, 3)
            c = c[:, None].expand(-1, 7, 3).reshape(-1, 3)
        xs.append(p)
        cs.append(c)
        fs.append(torch.full((p.shape[0],), t, dtype=torch.long))
    return PointSet(torch.cat(xs), torch.cat(cs), torch.cat(fs), len(gaussians))


def pose_camera(pose: Pose, fov_deg: float, size: int, azimuth_offset_deg: float = 0.0) -> Camera:
    """The protocol camera at ``pose`` (+ an azimuth offset), looking at the origin."""
    return orbit_camera(math.radians(pose.azimuth_deg + azimuth_offset_deg), math.radians(pose.elevation_deg),
                        pose.distance, math.radians(fov_deg), size, size, near=0.05, far=pose.distance + 2.0)


def _extrinsics(az_deg: float, el_deg: float, dist: float) -> torch.Tensor:
    eye = orbit_position(math.radians(az_deg), math.radians(el_deg), dist)
    return look_at_extrinsics(eye)


def _sep3(x: torch.Tensor, op, pad: float) -> torch.Tensor:
    """3x3 neighbourhood reduction (``op`` = torch.maximum / minimum / add) of ``[N, C, S, S]``, separable, with
    ``pad`` outside the image (faster than the pooling kernels on one CPU thread)."""
    p = F.pad(x, (1, 1, 1, 1), value=pad)
    h = op(op(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return op(op(h[..., :-2, :], h[..., 1:-1, :]), h[..., 2:, :])


def splat(points: PointSet, extrinsics: torch.Tensor, fov_deg: float, size: int,
          fill_color: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Proxy render of all frames from one camera (``extrinsics [4, 4]``) or a batch (``[K, 4, 4]``):
    ``(alpha [(K,) T, S, S] in {0, 1}, rgb [(K,) T, 3, S, S] over white)``. Pixels between projected points are
    closed (3x3 closing of the coverage); ``fill_color`` gives them the mean colour of their covered neighbours
    (else white)."""
    E = extrinsics.float()
    single = E.dim() == 2
    if single:
        E = E[None]
    K, S, T = E.shape[0], int(size), points.num_frames
    M = points.xyz.shape[0]
    n = K * T * S * S
    if M:
        f = 0.5 / math.tan(math.radians(fov_deg) / 2)
        # rows of the (normalised-pixel) projection: u z = (f x + z / 2), v z = (f y + z / 2)
        P = E[:, :3, :].clone()
        P[:, 0] = f * E[:, 0] + 0.5 * E[:, 2]
        P[:, 1] = f * E[:, 1] + 0.5 * E[:, 2]
        q = torch.einsum("kij,mj->kmi", P[:, :, :3], points.xyz) + P[:, None, :, 3]     # [K, M, 3]
        z = q[..., 2]
        zs = z.clamp_min(1e-6) / S
        px = torch.floor(q[..., 0] / zs)
        py = torch.floor(q[..., 1] / zs)
        ok = (z > 1e-3) & (px >= 0) & (px < S) & (py >= 0) & (py < S)
        base = (torch.arange(K)[:, None] * T + points.frame[None]) * (S * S)
        key = torch.where(ok, base + (py * S + px).long(), n).reshape(-1)
        zf = torch.where(ok, z, math.inf).reshape(-1)
        zmin = torch.full((n + 1,), math.inf).scatter_reduce(0, key, zf, "amin")
        win = ok.reshape(-1) & (zf <= zmin[key])
        pos = torch.where(win, torch.arange(K * M), -1)
        best = torch.full((n + 1,), -1, dtype=torch.long).scatter_reduce(0, key, pos, "amax")[:n]
        hit = best >= 0
        alpha = hit.float()
        col = torch.where(hit[:, None], points.rgb[best.clamp_min(0) % M], 1.0)
    else:
        alpha, col = torch.zeros(n), torch.ones(n, 3)
    alpha = alpha.view(K * T, 1, S, S)
    col = col.view(K * T, S, S, 3).permute(0, 3, 1, 2)
    # close 1-px holes between projected points; fill their colour from the covered neighbours
    closed = torch.maximum(_sep3(_sep3(alpha, torch.maximum, 0.0), torch.minimum, 1.0), alpha)
    fill = (closed > alpha)
    if fill_color and bool(fill.any()):
        num = _sep3(col * alpha, torch.add, 0.0)
        den = _sep3(alpha, torch.add, 0.0).clamp_min(1e-6)
        col = torch.where(fill, num / den, col)
    rgb = col * closed + (1.0 - closed)
    alpha = closed.view(K, T, S, S)
    rgb = rgb.view(K, T, 3, S, S)
    return (alpha[0], rgb[0]) if single else (alpha, rgb)


def _downsample_gt(gt_rgba: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8/float ``[T, 4, H, W]`` -> (alpha ``[T, S, S]``, white-composited rgb ``[T, 3, S, S]``), area average."""
    x = gt_rgba.float()
    if x.max() > 1.0:
        x = x / 255.0
    rgb = x[:, :3] * x[:, 3:4] + (1.0 - x[:, 3:4])
    a = F.adaptive_avg_pool2d(x[:, 3:4], (size, size))[:, 0]
    rgb = F.adaptive_avg_pool2d(rgb, (size, size))
    return a, rgb


def pose_loss(pred_alpha, pred_rgb, gt_alpha, gt_rgb, color_weight: float = 1.0):
    """Loss of proxy renders against the downsampled input frames: ``(loss, mean soft IoU, mean L1)``, floats for
    one render ``[T, S, S]`` / ``[T, 3, S, S]``, tensors ``[K]`` for a batch ``[K, T, ...]``."""
    single = pred_alpha.dim() == 3
    if single:
        pred_alpha, pred_rgb = pred_alpha[None], pred_rgb[None]
    inter = torch.minimum(pred_alpha, gt_alpha).sum((-2, -1))
    union = torch.maximum(pred_alpha, gt_alpha)
    us = union.sum((-2, -1))
    iou = torch.where(us > 0, inter / us.clamp_min(1e-9), torch.ones_like(us)).mean(1)
    m = (union > 0.01).float()
    l1 = (((pred_rgb - gt_rgb).abs().mean(2) * m).sum((-2, -1)) / m.sum((-2, -1)).clamp_min(1.0)).mean(1)
    loss = (1.0 - iou) + color_weight * l1
    if single:
        return float(loss[0]), float(iou[0]), float(l1[0])
    return loss, iou, l1


# ================================================================================================================
# the search
# ================================================================================================================
def _batch_eval(pts, size, ga, gr, poses, fov_deg, color_weight, chunk, fill_color=True):
    """Losses of many ``(az, el, dist)`` poses: ``(loss [K], iou [K], l1 [K], area [K])``."""
    out = [[], [], [], []]
    for i in range(0, len(poses), chunk):
        Es = torch.stack([_extrinsics(*q) for q in poses[i:i + chunk]])
        a, rgb = splat(pts, Es, fov_deg, size, fill_color)
        loss, iou, l1 = pose_loss(a, rgb, ga, gr, color_weight)
        for lst, v in zip(out, (loss, iou, l1, a.sum((1, 2, 3)))):
            lst.append(v)
    return [torch.cat(v) for v in out]


def _chunk(pts: PointSet, budget: int = 1_000_000) -> int:
    return max(1, min(64, budget // max(1, pts.xyz.shape[0])))


def align_to_input(gaussians: Sequence, gt_input_rgba: torch.Tensor, *, fov_deg: float = 40.0, radius: float = 2.0,
                   settings: AlignSettings | None = None, fixed_azimuth_deg: float | None = None) -> Pose:
    """Find the pose (in the prediction's frame) whose renders best reproduce the input frames
    ``gt_input_rgba [T, 4, H, W]`` (uint8 or float); see the module docs. ``fixed_azimuth_deg`` pins the azimuth
    (only elevation and distance are searched): the *fixed-yaw* scores, where a prediction facing the wrong way
    cannot be turned round by the search."""
    s = settings or AlignSettings()
    fixed = fixed_azimuth_deg is not None
    if len(gaussians) != gt_input_rgba.shape[0]:
        raise ValueError(f"{len(gaussians)} predicted frames vs {gt_input_rgba.shape[0]} input frames")
    fine = gaussian_points(gaussians, s.max_points, s.min_opacity, s.seed)
    if fine.empty:
        return Pose(0.0, 0.0, float(radius), empty=True)
    T = len(gaussians)
    sub = sorted({int(round(x)) for x in np.linspace(0, T - 1, max(1, min(s.coarse_frames, T)))})
    coarse = gaussian_points([gaussians[t] for t in sub], s.coarse_points, s.min_opacity, s.seed, extent=False)
    ga_c, gr_c = _downsample_gt(gt_input_rgba[sub], s.coarse_size)
    ga_f, gr_f = _downsample_gt(gt_input_rgba, s.size)
    dmin, dmax = s.distance_range[0] * radius, s.distance_range[1] * radius
    el_lo, el_hi = s.elevation_range
    cw = s.color_weight

    # coarse grid at the protocol distance, then at the distance matching the mask areas
    n_az = max(1, int(round(360.0 / s.az_step)))
    azimuths = [float(fixed_azimuth_deg) % 360.0] if fixed else [i * 360.0 / n_az for i in range(n_az)]
    grid = [(az, float(el), float(radius)) for az in azimuths for el in s.elevations]
    loss, _, _, area = _batch_eval(coarse, s.coarse_size, ga_c, gr_c, grid, fov_deg, cw, _chunk(coarse), False)
    gt_area = float(ga_c.sum())
    if gt_area > 0:
        d = (radius * torch.sqrt(area / gt_area)).clamp(dmin, dmax)
        d = torch.where(area > 0, d, torch.full_like(d, radius))
        grid2 = [(q[0], q[1], float(di)) for q, di in zip(grid, d.tolist())]
        loss2, _, _, _ = _batch_eval(coarse, s.coarse_size, ga_c, gr_c, grid2, fov_deg, cw, _chunk(coarse), False)
        better = loss2 < loss
        loss = torch.where(better, loss2, loss)
        grid = [q2 if b else q for q, q2, b in zip(grid, grid2, better.tolist())]
    order = sorted(range(len(grid)), key=lambda i: (float(loss[i]), grid[i][0], grid[i][1]))
    starts = []
    for i in order:
        c = grid[i]
        if fixed or all(min(abs(c[0] - o[0]), 360 - abs(c[0] - o[0])) > 2 * s.az_step - 1e-9 for o in starts):
            starts.append(c)
        if len(starts) >= s.top_k:
            break

    # refinement: best-improvement pattern search on (azimuth, elevation, log distance) at the fine resolution
    lo = (-math.inf, el_lo, math.log(dmin))
    hi = (math.inf, el_hi, math.log(dmax))
    best = None
    steps = (0.0, *s.steps[1:]) if fixed else s.steps           # a zero step keeps the azimuth
    final_steps = (0.0, *s.final_steps[1:]) if fixed else s.final_steps
    for az, el, d in starts:
        cand = _pattern_search(fine, s.size, ga_f, gr_f, (az, el, math.log(d)), steps, s.levels, lo, hi, fov_deg, cw)
        if best is None or cand.loss < best.loss - 1e-12:
            best = cand
    # polish the best pose at a higher resolution (when the input frames have it)
    H = int(gt_input_rgba.shape[-1])
    fs = min(int(s.final_size), H)
    if fs > s.size:
        pts = gaussian_points(gaussians, s.final_points, s.min_opacity, s.seed)
        ga, gr = _downsample_gt(gt_input_rgba, fs)
        best = _pattern_search(pts, fs, ga, gr, (best.azimuth_deg, best.elevation_deg, math.log(best.distance)),
                               final_steps, s.final_levels, lo, hi, fov_deg, cw)
    return best


def yaw_error_deg(pose_azimuth_deg: float, input_yaw_deg: float) -> float:
    """Signed azimuth difference ``pose - input`` wrapped to ``(-180, 180]`` degrees: how far the pose search turned
    the prediction from the input camera's yaw in the model's output frame (0 = the model faced the object the way
    the input video shows it; +-180 = backwards)."""
    d = (float(pose_azimuth_deg) - float(input_yaw_deg)) % 360.0
    return d - 360.0 if d > 180.0 else d


def _pattern_search(pts, size, ga, gr, x, steps, levels, lo, hi, fov_deg, cw) -> Pose:
    """Best-improvement pattern search from ``x = (az, el, log d)``: try +-step on each coordinate, move to the
    best improving neighbour, halve the steps when none improves (``levels`` times)."""
    chunk = _chunk(pts)
    x = tuple(x)
    lv, iv, cv, _ = _batch_eval(pts, size, ga, gr, [(x[0], x[1], math.exp(x[2]))], fov_deg, cw, chunk)
    cur, cur_m = float(lv[0]), (float(iv[0]), float(cv[0]))
    steps = list(steps)
    for _level in range(int(levels)):
        while True:
            nbrs = []
            for j in range(3):
                for sign in (1.0, -1.0):
                    y = list(x)
                    y[j] = min(max(y[j] + sign * steps[j], lo[j]), hi[j])
                    if tuple(y) != x and tuple(y) not in nbrs:
                        nbrs.append(tuple(y))
            if not nbrs:
                break
            lv, iv, cv, _ = _batch_eval(pts, size, ga, gr, [(y[0], y[1], math.exp(y[2])) for y in nbrs], fov_deg,
                                        cw, chunk)
            j = int(torch.argmin(lv))
            if float(lv[j]) < cur - 1e-9:
                x, cur, cur_m = nbrs[j], float(lv[j]), (float(iv[j]), float(cv[j]))
            else:
                break
        steps = [st / 2 for st in steps]
    return Pose(x[0] % 360.0, x[1], math.exp(x[2]), cur, cur_m[0], cur_m[1])


# ================================================================================================================
# prediction -> ground-truth frame
# ================================================================================================================
def prediction_to_gt(pose: Pose, gt_azimuth_deg: float, gt_elevation_deg: float = 0.0,
                     gt_radius: float = 2.0) -> tuple[float, torch.Tensor]:
    """``(scale, R [3, 3])`` with ``X_gt = scale * R @ X_pred`` (module docs)."""
    Ep = _extrinsics(pose.azimuth_deg, pose.elevation_deg, pose.distance).double()
    Eg = _extrinsics(gt_azimuth_deg, gt_elevation_deg, gt_radius).double()
    R = Eg[:3, :3].T @ Ep[:3, :3]
    return float(gt_radius / pose.distance), R


def transform_points(xyz: torch.Tensor, scale: float, R: torch.Tensor) -> torch.Tensor:
    return (xyz.double() @ R.T.double()) * scale


def prediction_voxels(gaussians: Sequence, scale: float, R: torch.Tensor, resolution: int = 64,
                      min_opacity: float = 0.05) -> list[torch.Tensor]:
    """Per frame: voxels ``[N, 3]`` (int64, unique) of the ``resolution``-cubed ground-truth grid holding the
    transformed centre of a Gaussian with opacity >= ``min_opacity``. Voxels outside ``[0, R)`` are kept (a
    misplaced prediction is penalised by the Chamfer distance, not clipped into the box)."""
    out = []
    for g in gaussians:
        with torch.no_grad():
            xyz = g.get_xyz.detach().cpu()
            op = g.get_opacity.detach().cpu().reshape(-1)
        p = transform_points(xyz[op >= min_opacity], scale, R)
        idx = torch.floor((p + 0.5) * resolution).long()
        out.append(torch.unique(idx, dim=0) if idx.shape[0] else torch.zeros(0, 3, dtype=torch.long))
    return out
