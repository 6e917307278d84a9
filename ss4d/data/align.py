"""Rotate a training sample about the vertical (z) axis, e.g. into the frame of its input camera.

A generator trained in each object's own canonical frame has to guess, from one image, which way the object
faces; with little data and compute that guess fails and the structure flow learns an average blob. Trained
"view-aligned" (every clip turned so its first input camera sits at yaw ``target_yaw_deg``), the model instead
learns where the silhouette is. The world turns as one: voxels, their features, view and input cameras; the
images stay as they are. See docs/training.md ("view-aligned training").
"""
from __future__ import annotations

import math

import torch

from ss4d.render.camera import Camera


def camera_yaw(camera: Camera) -> float:
    """Yaw (radians) of a camera's position around the z axis: ``atan2(y, x)`` (the dataset orbit convention)."""
    p = camera.position.double()
    return math.atan2(float(p[1]), float(p[0]))


def _rz(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def rotate_camera_z(camera: Camera, angle: float) -> Camera:
    """The same camera after the world turned by ``angle`` about z (world points ``x' = Rz x``)."""
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = _rz(angle).T
    ext = (camera.extrinsics.double() @ m).to(camera.extrinsics.dtype)
    return Camera(ext, camera.intrinsics.clone(), camera.width, camera.height, camera.near, camera.far)


def _source_index(R: int, angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For every target voxel of an ``R``^3 grid (x-major flat order): the flat index of the source voxel whose
    cell holds the inversely rotated centre, and whether that lies inside the grid (nearest-cell resampling:
    no holes in the target, a 90-degree turn is an exact permutation)."""
    i = torch.arange(R, dtype=torch.float64)
    gx, gy, gz = torch.meshgrid(i, i, i, indexing="ij")
    q = torch.stack([gx, gy, gz], -1).reshape(-1, 3)
    q = (q + 0.5) / R - 0.5
    p = q @ _rz(angle)  # row-vector form of Rz(-angle) q
    src = torch.floor((p + 0.5) * R + 1e-9).long()
    inside = ((src >= 0) & (src < R)).all(1)
    src = src.clamp(0, R - 1)
    return (src[:, 0] * R + src[:, 1]) * R + src[:, 2], inside


def rotate_sample_z(sample: dict, angle: float) -> dict:
    """A :class:`~ss4d.data.ClipDataset` sample with its world turned by ``angle`` radians about z.

    ``occupancy [T,R,R,R]`` and ``coords``/``feats`` are resampled (a voxel's features travel with it; parts
    turned out of the unit box are dropped), ``cameras`` and ``cond_cameras`` follow the world, images are
    unchanged. Other keys are passed through."""
    out = dict(sample)
    occ = sample.get("occupancy")
    if occ is None:  # every ClipDataset sample has it; it also fixes the grid resolution of `coords`
        raise ValueError("rotate_sample_z needs a sample with 'occupancy' [T, R, R, R]")
    coords = sample.get("coords")
    T, R = occ.shape[0], occ.shape[-1]
    src, inside = _source_index(R, angle)
    out["occupancy"] = (occ.reshape(T, -1)[:, src] & inside).reshape(occ.shape)
    if coords is not None:
        cl = coords.long()
        row = torch.full((T, R * R * R), -1, dtype=torch.long)
        row[cl[:, 0], (cl[:, 1] * R + cl[:, 2]) * R + cl[:, 3]] = torch.arange(cl.shape[0])
        tgt = torch.where(inside, row[:, src], torch.full_like(row[:, src], -1))
        t_idx, v_idx = torch.nonzero(tgt >= 0, as_tuple=True)  # frame-major, then x, y, z: sorted
        out["coords"] = torch.stack([t_idx, v_idx // (R * R), (v_idx // R) % R, v_idx % R], 1).to(coords.dtype)
        out["feats"] = sample["feats"][tgt[t_idx, v_idx]]
    if "cameras" in sample:
        out["cameras"] = [[rotate_camera_z(c, angle) for c in cams] for cams in sample["cameras"]]
    if "cond_cameras" in sample:
        out["cond_cameras"] = [rotate_camera_z(c, angle) for c in sample["cond_cameras"]]
    return out


class AlignToInputView:
    """Dataset transform: turn each sample so that its first input camera sits at yaw ``target_yaw_deg`` (the
    pipeline's default front camera is yaw 0), optionally jittered by up to ``jitter_deg`` (uniform, drawn from
    torch's global RNG)."""

    def __init__(self, target_yaw_deg: float = 0.0, jitter_deg: float = 0.0):
        self.target = math.radians(float(target_yaw_deg))
        self.jitter = math.radians(float(jitter_deg))

    def __call__(self, sample: dict) -> dict:
        cams = sample.get("cond_cameras")
        if not cams:
            raise ValueError(f"clip {sample.get('id', '?')}: view alignment needs the input cameras (cond_cameras)")
        angle = self.target - camera_yaw(cams[0])
        if self.jitter:
            angle += (torch.rand(()).item() * 2.0 - 1.0) * self.jitter
        return rotate_sample_z(sample, angle)

    def __repr__(self) -> str:
        t, j = math.degrees(self.target), math.degrees(self.jitter)
        return f"AlignToInputView(target_yaw_deg={t:g}, jitter_deg={j:g})"
