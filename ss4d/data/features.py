"""Per-voxel features by projecting multi-view feature maps onto voxel centres (TRELLIS ``extract_feature.py``).

For each frame: every one of its ``V`` views is encoded into a feature map ``[V, C, h, w]``; each voxel centre
``(i + 0.5)/R - 0.5`` is projected with the view's camera (OpenCV extrinsics, normalised intrinsics -> ``uv`` in
``[0, 1]``), sampled with ``grid_sample(bilinear, align_corners=False)`` at ``uv * 2 - 1`` (zero padding outside
the image) and the samples are **averaged over all views**. Like the official toolkit there is **no visibility
test**: occluded views and views where the voxel falls outside the image contribute too (the latter as zeros).
The result is stored as fp16 ``[N, C]``.

Encoders:

* ``"color"`` (built in): the plain RGBA image, premultiplied (``rgb * a, a``), i.e. the per-voxel features are
  the view-averaged premultiplied colour and coverage (4 channels). ``rgb_mean / a_mean`` is the coverage-weighted
  mean colour.
* any callable ``encoder(images) -> [V, C, h, w]``: ``images`` is the *straight-alpha* RGBA batch
  ``float [V, 4, H, W]`` in [0, 1] (exactly what the view PNGs store); the encoder does its own premultiplication,
  resizing and normalisation (e.g. DINOv2: premultiply, 518^2, ImageNet normalisation, patch tokens reshaped to
  ``[V, 1024, 37, 37]``). The feature map may have any spatial size: ``uv`` addresses the whole image.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ss4d.render.camera import Camera, as_camera, project_points
from ss4d.render.visibility import visible_points

from .voxelize import voxel_centers

__all__ = ["premultiply", "color_encoder", "get_encoder", "project_features", "voxel_features", "ENCODERS"]


def premultiply(rgba: torch.Tensor) -> torch.Tensor:
    """Straight ``[..., 4, H, W]`` RGBA -> premultiplied (``rgb * a, a``)."""
    return torch.cat([rgba[..., :3, :, :] * rgba[..., 3:4, :, :], rgba[..., 3:4, :, :]], dim=-3)


def color_encoder(images: torch.Tensor) -> torch.Tensor:
    """The ``"color"`` encoder: premultiplied RGBA ``[V, 4, H, W]``."""
    return premultiply(images.float())


ENCODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"color": color_encoder}


def get_encoder(encoder) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """``(name, callable)`` for a registered name or a callable (name from ``encoder.name`` / its class)."""
    if isinstance(encoder, str):
        if encoder not in ENCODERS:
            raise ValueError(f"unknown feature encoder {encoder!r}; registered: {sorted(ENCODERS)} "
                             "(or pass a callable)")
        return encoder, ENCODERS[encoder]
    if callable(encoder):
        name = getattr(encoder, "name", None) or getattr(encoder, "__name__", None) or type(encoder).__name__
        return str(name), encoder
    raise TypeError("encoder must be a registered name or a callable images[V,4,H,W] -> features[V,C,h,w]")


def project_features(points: torch.Tensor, cameras: Sequence[Camera], feature_maps: torch.Tensor,
                     reduce: str = "mean") -> torch.Tensor:
    """Sample ``feature_maps [V, C, h, w]`` at the projections of ``points [N, 3]`` in each of the ``V`` cameras
    (bilinear, ``align_corners=False``, ``uv * 2 - 1``, zeros outside) and average over the views.
    Returns ``float32 [N, C]`` (``reduce="none"``: ``[V, N, C]``)."""
    cams = [as_camera(c) for c in cameras]
    V = feature_maps.shape[0]
    if len(cams) != V:
        raise ValueError(f"{len(cams)} cameras for {V} feature maps")
    pts = points.float().reshape(-1, 3)
    N = pts.shape[0]
    if N == 0:
        return torch.zeros((V, 0, feature_maps.shape[1]) if reduce == "none" else (0, feature_maps.shape[1]))
    fm = feature_maps.float()
    uvs = []
    for c in cams:
        uv, _ = project_points(pts, c.extrinsics, c.intrinsics)
        uvs.append(uv)
    grid = torch.stack(uvs)[:, None] * 2 - 1  # [V, 1, N, 2]
    s = F.grid_sample(fm, grid.to(fm.dtype), mode="bilinear", align_corners=False)  # [V, C, 1, N]
    s = s[:, :, 0].permute(0, 2, 1)  # [V, N, C]
    if reduce == "none":
        return s
    if reduce != "mean":
        raise ValueError(f"unknown reduce {reduce!r}")
    return s.mean(0)


@torch.no_grad()
def voxel_features(coords: torch.Tensor, resolution: int, images: torch.Tensor, cameras: Sequence[Camera],
                   encoder="color", batch_views: int = 16, dtype=torch.float16,
                   visibility: bool = False) -> torch.Tensor:
    """Features ``[N, C]`` (``dtype``, default fp16) of the voxels ``coords [N, 3]`` from the views
    ``images [V, 4, H, W]`` (straight RGBA, float in [0, 1] or uint8) seen by ``cameras [V]``.

    Views are encoded ``batch_views`` at a time and their samples are summed, then divided by ``V``, so the
    result is the mean over all views whatever the batching. ``visibility=True`` (an ss4d option; the official
    toolkit averages over all views) averages each voxel over the views that see it
    (:func:`ss4d.render.visibility.visible_points` on the voxel set itself), so a surface voxel takes its own
    colour instead of a mix with the far side; a voxel no view sees keeps the all-view mean."""
    _, enc = get_encoder(encoder)
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    V = images.shape[0]
    if len(cameras) != V:
        raise ValueError(f"{len(cameras)} cameras for {V} images")
    pts = voxel_centers(coords, resolution)
    acc = vis_acc = None
    seen = torch.zeros(pts.shape[0])
    for s in range(0, V, max(1, int(batch_views))):
        fm = enc(images[s:s + batch_views])
        if fm.dim() != 4 or fm.shape[0] != images[s:s + batch_views].shape[0]:
            raise ValueError(f"encoder returned {tuple(fm.shape)}, expected [V, C, h, w]")
        samples = project_features(pts, cameras[s:s + batch_views], fm, reduce="none")
        part = samples.sum(0)
        acc = part if acc is None else acc + part
        if visibility:
            w = torch.stack([visible_points(pts, c, 1.0 / resolution) for c in cameras[s:s + batch_views]]).float()
            vpart = (samples * w[..., None]).sum(0)
            vis_acc = vpart if vis_acc is None else vis_acc + vpart
            seen += w.sum(0)
    out = acc / V
    if visibility:
        hit = seen > 0
        out[hit] = vis_acc[hit] / seen[hit, None]
    return out.to(dtype)
