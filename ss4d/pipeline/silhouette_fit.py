"""Silhouette fit of the decoded Gaussians to the input masks (an ss4d post-step, not in SS4D; training-free).

The structure is a 32^3 grid in the small default model: its voxels are about 4 px wide in a 128 px input view, and
the Gaussian decoder leaves holes between them. Since the input camera is known up to the crop (the view that the
silhouette guidance chose for carving and filling, :class:`ss4d.pipeline.silhouette.SilhouetteGuide`), each
frame's Gaussians can be fitted to that frame's mask by a few gradient steps through the differentiable rasterizer:
opacities and scales change freely, centres move at most ``max_offset`` (a fraction of the voxel size), colours and
rotations stay. Gaussians outside the mask fade, holes inside close; the other views change only through that.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..gaussians import Gaussians
from ..render.camera import Camera
from ..render.rasterizer import rasterize

__all__ = ["SilhouetteFitSettings", "fit_silhouettes", "read_silhouette_fit"]


@dataclass(frozen=True)
class SilhouetteFitSettings:
    """`post_steps` entry ``{"name": "silhouette_fit", ...}``: Adam `steps` at learning rate `lr` on the raw opacity
    and scale (and the centres, kept within `max_offset` voxels of the decoded ones), comparing alpha with the mask at
    `size` pixels; `scales: false` keeps the scales (only opacities and centres move)."""

    steps: int = 20
    lr: float = 0.1
    size: int = 128
    max_offset: float = 0.3
    scales: bool = True


def read_silhouette_fit(entry: dict, error=ValueError) -> SilhouetteFitSettings:
    """The settings of a ``post_steps`` entry (unknown or invalid fields raise `error`)."""
    known = set(SilhouetteFitSettings.__dataclass_fields__)
    bad = sorted(set(entry) - known - {"name"})
    if bad:
        raise error(f"pipeline.json: post-step silhouette_fit has unknown fields {bad}; known: {sorted(known)}")
    try:
        s = SilhouetteFitSettings(**{k: v for k, v in entry.items() if k != "name"})
        ok = int(s.steps) == s.steps >= 0 and float(s.lr) > 0 and int(s.size) == s.size >= 8 \
            and float(s.max_offset) >= 0 and isinstance(s.scales, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise error(f"pipeline.json: invalid silhouette_fit settings {entry!r}")
    return s


def _target(alpha: np.ndarray, size: int) -> torch.Tensor:
    """A mask ``[H, W]`` (uint8 or float in [0, 1]) area-resized to ``[size, size]`` float."""
    a = torch.as_tensor(np.asarray(alpha)).float()
    if np.asarray(alpha).dtype == np.uint8:
        a = a / 255.0
    return F.interpolate(a[None, None], size=(size, size), mode="area")[0, 0]


def fit_silhouettes(gaussians: Sequence[Gaussians], alpha: Sequence[np.ndarray], camera: Camera,
                    settings: SilhouetteFitSettings = SilhouetteFitSettings(), voxel_size: float = 1 / 32
                    ) -> list[Gaussians]:
    """Each frame's Gaussians fitted to its mask in `camera` (the preprocessed input's view; resized to
    ``settings.size``): mean squared error of the rendered alpha against the area-resized mask. Returns new
    Gaussians (the inputs are not changed)."""
    if len(gaussians) != len(alpha):
        raise ValueError(f"{len(gaussians)} Gaussian frames vs {len(alpha)} masks")
    s = settings
    cam = camera.resized(int(s.size), int(s.size))
    reach = float(s.max_offset) * voxel_size
    out = []
    for g, a in zip(gaussians, alpha):
        if s.steps == 0 or len(g) == 0:
            out.append(g)
            continue
        tgt = _target(a, int(s.size)).to(g._xyz)
        scale = torch.tensor(g.aabb[3:], dtype=g._xyz.dtype)  # raw _xyz is in aabb units
        lim = reach / scale
        op = g._opacity.detach().clone().requires_grad_(True)
        sc = g._scaling.detach().clone().requires_grad_(True)
        xyz = g._xyz.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([op, sc, xyz] if s.scales else [op, xyz], lr=float(s.lr))
        for _ in range(int(s.steps)):
            cur = replace(g, _xyz=xyz, _scaling=sc, _opacity=op)
            loss = (rasterize(cur, cam, chunk=128)["alpha"][0] - tgt).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                xyz.copy_(g._xyz + torch.maximum(torch.minimum(xyz - g._xyz, lim), -lim))
        out.append(replace(g, _xyz=xyz.detach(), _scaling=sc.detach(), _opacity=op.detach(), meta=dict(g.meta)))
    return out


def center_in_view(gaussians: Sequence[Gaussians], view: dict, radius: float = 2.0, fov_deg: float = 40.0
                   ) -> tuple[list[Gaussians], torch.Tensor]:
    """Translate every frame's Gaussians (by one vector, perpendicular to the view direction) so that the input
    crop's centre moves to the centre of the uncropped `view` (``input_view_camera``'s dict): the input camera then
    looks at the middle of the object's silhouette, as a camera that looks at the object's box centre does (the
    data's and the evaluation's convention). Returns ``(gaussians, world shift [3])``."""
    from ..render.input_view import view_camera

    crop = view.get("crop")
    if crop is None:
        return list(gaussians), torch.zeros(3)
    cam = view_camera(view["yaw_deg"], view.get("pitch_deg", 0.0), 1, radius, fov_deg)
    K, E = cam.intrinsics, cam.extrinsics
    cx, cy = (crop[0] + crop[2]) / 2, (crop[1] + crop[3]) / 2
    xyz = torch.cat([g.get_xyz.detach().reshape(-1, 3) for g in gaussians]).to(E.dtype)
    mid = (xyz.min(0).values + xyz.max(0).values) / 2 if len(xyz) else torch.zeros(3, dtype=E.dtype)
    depth = float(E[2, :3] @ mid + E[2, 3])  # view depth of the object's box centre: its image moves as far
    d_cam = torch.tensor([(cx - float(K[0, 2])) / float(K[0, 0]) * depth,
                          (cy - float(K[1, 2])) / float(K[1, 1]) * depth, 0.0], dtype=E.dtype)
    shift = -(E[:3, :3].T @ d_cam).float()
    out = []
    for g in gaussians:
        s = (shift / torch.tensor(g.aabb[3:])).to(g._xyz)
        out.append(replace(g, _xyz=g._xyz + s, meta=dict(g.meta)))
    return out, shift
