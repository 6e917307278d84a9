"""Voxel previews: the occupied 64^3 voxels of a frame drawn as small shaded, coloured cubes.

Geometry helpers shared with the GLB exporter:

* :func:`voxels_to_quads` / :func:`voxels_to_mesh` - only the *exposed* faces of the cubes (a face between two
  occupied voxels is dropped), each face its own 4 vertices (flat colour and normal);
* :func:`voxel_colors_from_gaussians` - colour of a voxel = opacity-weighted mean colour of its Gaussians;
* :func:`gaussians_to_voxels` - occupied voxels from Gaussian centres when the sparse structure is not at hand.

World placement matches the Gaussians: voxel ``i`` of an ``R``-grid spans ``[i/R - 0.5, (i+1)/R - 0.5]`` (the
default aabb ``[-0.5,-0.5,-0.5, 1,1,1]``; another aabb scales/offsets it), its centre ``(i + 0.5)/R - 0.5``.

:func:`render_voxels` is a small numpy z-buffer rasterizer for those faces (perspective-correct depth, back-face
culling, Lambert shading from a head light), using the same camera model and pixel-centre convention as
:func:`ss4d.render.rasterizer.rasterize`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .camera import Camera, as_camera

__all__ = [
    "DEFAULT_AABB",
    "gaussians_to_voxels",
    "render_voxels",
    "render_voxel_frames",
    "voxel_colors_from_gaussians",
    "voxels_to_mesh",
    "voxels_to_quads",
]

DEFAULT_AABB = (-0.5, -0.5, -0.5, 1.0, 1.0, 1.0)
_GREY = (0.7, 0.7, 0.7)


def _np(x, dtype=None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _coords(coords, resolution: int) -> np.ndarray:
    c = _np(coords)
    if c.size == 0:
        return np.zeros((0, 3), np.int64)
    if c.ndim != 2 or c.shape[1] not in (3, 4):
        raise ValueError(f"voxel coords must be [N,3] (x, y, z) or [N,4] (frame, x, y, z), got {c.shape}")
    if c.shape[1] == 4:
        c = c[:, 1:]
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError("voxel coords must be integers")
    c = c.astype(np.int64)
    if c.min() < 0 or c.max() >= resolution:
        raise ValueError(f"voxel coords must lie in [0, {resolution}), got range [{c.min()}, {c.max()}]")
    return c


def _colors(colors, n: int) -> np.ndarray:
    if colors is None:
        return np.tile(np.asarray(_GREY, np.float32), (n, 1))
    c = _np(colors)
    if c.ndim == 1:
        c = np.tile(c[None], (n, 1))
    if c.shape[0] != n or c.shape[1] < 3:
        raise ValueError(f"need one RGB colour per voxel ({n}), got shape {c.shape}")
    c = c[:, :3]
    c = c.astype(np.float32) / 255.0 if c.dtype == np.uint8 else c.astype(np.float32)
    return np.clip(c, 0.0, 1.0)


def _dedup(c: np.ndarray, cols: np.ndarray | None = None):
    """Drop repeated voxels, keeping the first occurrence (and its colour) in the given order."""
    if len(c) == 0:
        return c, cols
    _, first = np.unique(c, axis=0, return_index=True)
    keep = np.sort(first)
    return c[keep], (cols[keep] if cols is not None else None)


def _keys(c: np.ndarray, resolution: int) -> np.ndarray:
    """Unique integer key per voxel, with room for the neighbours one step outside the grid."""
    b = resolution + 2
    c = c + 1
    return (c[:, 0] * b + c[:, 1]) * b + c[:, 2]


# the 6 face directions: (axis, sign); quad corners are CCW seen from outside (normal = sign * e_axis)
_DIRS = [(0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1)]
_CORNERS_POS = np.array([(0, 0), (1, 0), (1, 1), (0, 1)])
_CORNERS_NEG = np.array([(0, 0), (0, 1), (1, 1), (1, 0)])


def voxels_to_quads(coords, resolution: int = 64, aabb=DEFAULT_AABB, *, unique: bool = True):
    """Exposed cube faces of a voxel set.

    Returns ``quads [Q,4,3]`` float64 world corners (counter-clockwise seen from outside), ``normals [Q,3]`` and
    ``voxel [Q]`` (index into the (deduplicated, if ``unique``) coords, also returned as ``coords [N,3]``)."""
    c = _coords(coords, resolution)
    if unique:
        c, _ = _dedup(c)  # keeps the given order, so colours stay aligned with first occurrences
    keys = _keys(c, resolution)
    sorted_keys = np.sort(keys)
    quads, normals, vids = [], [], []
    for axis, sign in _DIRS:
        d = np.zeros(3, np.int64)
        d[axis] = sign
        nk = _keys(c + d, resolution)
        pos = np.searchsorted(sorted_keys, nk)
        present = (pos < len(sorted_keys)) & (sorted_keys[np.minimum(pos, len(sorted_keys) - 1)] == nk)
        idx = np.nonzero(~present)[0]
        b, cc = (axis + 1) % 3, (axis + 2) % 3
        corners = _CORNERS_POS if sign > 0 else _CORNERS_NEG
        q = np.repeat(c[idx][:, None, :].astype(np.float64), 4, axis=1)
        q[:, :, axis] += 1.0 if sign > 0 else 0.0
        q[:, :, b] += corners[:, 0]
        q[:, :, cc] += corners[:, 1]
        n = np.zeros((len(idx), 3))
        n[:, axis] = sign
        quads.append(q)
        normals.append(n)
        vids.append(idx)
    quads = np.concatenate(quads) if quads else np.zeros((0, 4, 3))
    a = np.asarray(aabb, np.float64)
    quads = quads / resolution * a[3:] + a[:3]
    return quads, np.concatenate(normals), np.concatenate(vids), c


def voxels_to_mesh(coords, colors=None, resolution: int = 64, aabb=DEFAULT_AABB, *, return_normals: bool = False):
    """Triangle mesh of the exposed faces of ``coords [N,3]`` (int voxel indices in ``[0, resolution)``).

    Returns ``(vertices [V,3] float32, faces [F,3] int32, vertex_colors [V,3] float32 in [0,1])`` (+ ``normals
    [V,3]`` with ``return_normals``): 4 vertices and 2 counter-clockwise triangles per exposed face, every vertex
    carrying its voxel's colour (``colors [N,3]`` float in [0,1] or uint8; grey if None). Duplicate voxels are
    merged (first colour wins)."""
    c = _coords(coords, resolution)
    c, cols = _dedup(c, _colors(colors, len(c)))
    quads, normals, vid, _ = voxels_to_quads(c, resolution, aabb, unique=False)
    Q = len(quads)
    vertices = quads.reshape(-1, 3).astype(np.float32)
    base = (np.arange(Q, dtype=np.int64) * 4)[:, None]
    faces = np.concatenate([base + np.array([0, 1, 2]), base + np.array([0, 2, 3])], 1).reshape(-1, 3)
    vcols = np.repeat(cols[vid], 4, axis=0).astype(np.float32)
    out = (vertices, faces.astype(np.int32), vcols.reshape(-1, 3))
    if return_normals:
        out = out + (np.repeat(normals, 4, axis=0).astype(np.float32),)
    return out


# ----------------------------------------------------------------------------------------------------------------
# voxels <-> Gaussians
# ----------------------------------------------------------------------------------------------------------------
def _voxel_index(xyz: np.ndarray, resolution: int, aabb) -> np.ndarray:
    a = np.asarray(aabb, np.float64)
    return np.clip(np.floor((xyz - a[:3]) / a[3:] * resolution), 0, resolution - 1).astype(np.int64)


def gaussians_to_voxels(gaussians, resolution: int = 64, min_opacity: float = 0.05) -> np.ndarray:
    """Occupied voxels ``[N,3]`` int32 (sorted x, y, z) = voxels holding the centre of a Gaussian with activated
    opacity >= ``min_opacity``. A stand-in for the sparse structure when only Gaussians are available."""
    with torch.no_grad():
        xyz = gaussians.get_xyz.detach().cpu().double().numpy()
        op = gaussians.get_opacity.detach().cpu().reshape(-1).numpy()
    keep = op >= min_opacity
    if not keep.any():
        return np.zeros((0, 3), np.int32)
    return np.unique(_voxel_index(xyz[keep], resolution, getattr(gaussians, "aabb", DEFAULT_AABB)),
                     axis=0).astype(np.int32)


def voxel_colors_from_gaussians(gaussians, coords, resolution: int = 64) -> np.ndarray:
    """Colour ``[N,3]`` float32 in [0,1] per voxel = opacity-weighted mean display colour of its Gaussians.

    When the frame holds ``G`` Gaussians per voxel in voxel-major order (the decoder's layout, recognised by the
    count and by the group centres lying in their voxels) the groups are used directly; otherwise each Gaussian
    goes to the voxel containing its centre and voxels left empty take the colour of the nearest Gaussian."""
    c = _coords(coords, resolution)
    N = len(c)
    if N == 0:
        return np.zeros((0, 3), np.float32)
    if len(gaussians) == 0:
        return np.tile(np.asarray(_GREY, np.float32), (N, 1))
    aabb = getattr(gaussians, "aabb", DEFAULT_AABB)
    with torch.no_grad():
        xyz = gaussians.get_xyz.detach().cpu().double().numpy()
        col = gaussians.get_colors.detach().cpu().double().clamp(0, 1).numpy()
        w = gaussians.get_opacity.detach().cpu().double().reshape(-1).numpy() + 1e-6
    M = len(xyz)
    if M % N == 0:
        G = M // N
        a = np.asarray(aabb, np.float64)
        centres = ((c + 0.5) / resolution) * a[3:] + a[:3]
        mean_pos = xyz.reshape(N, G, 3).mean(1)
        if np.all(np.abs(mean_pos - centres) <= a[3:] / resolution):
            wg = w.reshape(N, G, 1)
            return ((col.reshape(N, G, 3) * wg).sum(1) / wg.sum(1)).astype(np.float32)
    vi = _voxel_index(xyz, resolution, aabb)
    keys = _keys(c, resolution)
    order = np.argsort(keys)
    sk = keys[order]
    gk = _keys(vi, resolution)
    pos = np.minimum(np.searchsorted(sk, gk), N - 1)
    hit = sk[pos] == gk
    tgt = order[pos[hit]]
    acc = np.zeros((N, 3))
    wsum = np.zeros(N)
    np.add.at(acc, tgt, col[hit] * w[hit, None])
    np.add.at(wsum, tgt, w[hit])
    out = np.zeros((N, 3))
    filled = wsum > 0
    out[filled] = acc[filled] / wsum[filled, None]
    if (~filled).any():
        from scipy.spatial import cKDTree

        a = np.asarray(aabb, np.float64)
        centres = ((c[~filled] + 0.5) / resolution) * a[3:] + a[:3]
        _, nn = cKDTree(xyz).query(centres)
        out[~filled] = col[nn]
    return out.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# z-buffer rendering
# ----------------------------------------------------------------------------------------------------------------
_MAX_CANDIDATES = 2_000_000
_NEAR = 0.05
_LIGHT = np.array([-0.35, -0.55, -1.0]) / np.linalg.norm([-0.35, -0.55, -1.0])  # camera space: up-left, to camera


def _raster_triangles(u, v, z, H: int, W: int):
    """Rasterize screen triangles ``u, v, z [T,3]`` (pixel coords, view depth). Returns per pixel the index of the
    nearest triangle (-1 = none) and its depth."""
    zbuf = np.full(H * W, np.inf)
    ibuf = np.full(H * W, -1, np.int64)
    if len(u) == 0:
        return ibuf, zbuf
    x0 = np.clip(np.ceil(u.min(1)), 0, W).astype(np.int64)
    x1 = np.clip(np.floor(u.max(1)) + 1, 0, W).astype(np.int64)
    y0 = np.clip(np.ceil(v.min(1)), 0, H).astype(np.int64)
    y1 = np.clip(np.floor(v.max(1)) + 1, 0, H).astype(np.int64)
    wdt = np.maximum(x1 - x0, 0)
    cnt = wdt * np.maximum(y1 - y0, 0)
    area = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (u[:, 2] - u[:, 0]) * (v[:, 1] - v[:, 0])
    tri = np.nonzero((cnt > 0) & (np.abs(area) > 1e-12))[0]
    csum = np.cumsum(cnt[tri])
    start = 0
    while start < len(tri):
        base = csum[start - 1] if start else 0
        stop = max(int(np.searchsorted(csum, base + _MAX_CANDIDATES, side="right")), start + 1)
        t = tri[start:stop]
        start = stop
        c = cnt[t]
        rep = np.repeat(np.arange(len(t)), c)
        local = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        ti = t[rep]
        px = (x0[ti] + local % wdt[ti]).astype(np.float64)
        py = (y0[ti] + local // wdt[ti]).astype(np.float64)
        uu, vv, zz, ar = u[ti], v[ti], z[ti], area[ti]
        # barycentrics via edge functions, normalised by the signed area (orientation independent)
        b0 = ((uu[:, 1] - px) * (vv[:, 2] - py) - (uu[:, 2] - px) * (vv[:, 1] - py)) / ar
        b1 = ((uu[:, 2] - px) * (vv[:, 0] - py) - (uu[:, 0] - px) * (vv[:, 2] - py)) / ar
        b2 = 1.0 - b0 - b1
        eps = -1e-9
        inside = (b0 >= eps) & (b1 >= eps) & (b2 >= eps)
        if not inside.any():
            continue
        b0, b1, b2, zz, ti = b0[inside], b1[inside], b2[inside], zz[inside], ti[inside]
        pix = py[inside].astype(np.int64) * W + px[inside].astype(np.int64)
        depth = 1.0 / (b0 / zz[:, 0] + b1 / zz[:, 1] + b2 / zz[:, 2])  # perspective-correct
        order = np.lexsort((depth, pix))
        pix, depth, ti = pix[order], depth[order], ti[order]
        first = np.ones(len(pix), bool)
        first[1:] = pix[1:] != pix[:-1]
        pix, depth, ti = pix[first], depth[first], ti[first]
        closer = depth < zbuf[pix]
        zbuf[pix[closer]] = depth[closer]
        ibuf[pix[closer]] = ti[closer]
    return ibuf, zbuf


def render_voxels(coords, colors, camera, resolution: int = 64, *, bg=(1.0, 1.0, 1.0), aabb=DEFAULT_AABB,
                  ssaa: int = 2, shading: bool = True, return_alpha: bool = False):
    """Draw the voxels as cubes seen by ``camera``, Lambert-shaded from a head light (flat colours with
    ``shading=False``). Returns a ``uint8 [H,W,3]`` image (and the float coverage ``[H,W]`` in [0,1] with
    ``return_alpha``). ``colors``: ``[N,3]`` per voxel (None: grey). ``ssaa``: supersampling factor."""
    camera = as_camera(camera)
    s = max(1, int(ssaa))
    W, H = camera.width * s, camera.height * s
    c = _coords(coords, resolution)
    c, cols = _dedup(c, _colors(colors, len(c)))
    quads, normals, vid, _ = voxels_to_quads(c, resolution, aabb, unique=False)
    E = camera.extrinsics.detach().cpu().double().numpy()
    K = camera.intrinsics.detach().cpu().double().numpy()
    R, tvec = E[:3, :3], E[:3, 3]
    pc = quads @ R.T + tvec  # [Q,4,3] camera space
    nc = normals @ R.T
    ok = (pc[:, :, 2] > _NEAR).all(1) & ((nc * pc.mean(1)).sum(1) < 0)  # in front and facing the camera
    pc, nc, vid = pc[ok], nc[ok], vid[ok]
    u = K[0, 0] * W * pc[:, :, 0] / pc[:, :, 2] + K[0, 2] * W - 0.5
    v = K[1, 1] * H * pc[:, :, 1] / pc[:, :, 2] + K[1, 2] * H - 0.5
    z = pc[:, :, 2]
    tri = np.array([[0, 1, 2], [0, 2, 3]])
    U = u[:, tri].reshape(-1, 3)
    V = v[:, tri].reshape(-1, 3)
    Z = z[:, tri].reshape(-1, 3)
    ibuf, _ = _raster_triangles(U, V, Z, H, W)
    shade = 0.35 + 0.65 * np.clip(nc @ _LIGHT, 0.0, 1.0) if shading else np.ones(len(nc))  # per quad
    quad_rgb = cols[vid] * shade[:, None]
    img = np.empty((H * W, 3))
    img[:] = np.asarray(bg, np.float64).reshape(-1)[:3] if np.size(bg) >= 3 else float(np.ravel(bg)[0])
    hit = ibuf >= 0
    img[hit] = quad_rgb[ibuf[hit] // 2]
    img = img.reshape(H, W, 3)
    alpha = hit.reshape(H, W).astype(np.float64)
    if s > 1:
        img = img.reshape(H // s, s, W // s, s, 3).mean((1, 3))
        alpha = alpha.reshape(H // s, s, W // s, s).mean((1, 3))
    out = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return (out, alpha.astype(np.float32)) if return_alpha else out


def render_voxel_frames(coords_list: Sequence, colors_list: Sequence | None, cameras, resolution: int = 64,
                        **kwargs) -> list[np.ndarray]:
    """Render frame ``i``'s voxels with ``cameras[i]`` (a single camera is used for every frame)."""
    if isinstance(cameras, (Camera, dict)):
        cameras = [cameras] * len(coords_list)
    if len(cameras) != len(coords_list):
        raise ValueError(f"{len(coords_list)} voxel frames vs {len(cameras)} cameras")
    colors_list = colors_list if colors_list is not None else [None] * len(coords_list)
    return [render_voxels(c, col, cam, resolution, **kwargs) for c, col, cam in zip(coords_list, colors_list, cameras)]
