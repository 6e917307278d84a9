"""Tile-based differentiable 3D Gaussian rasterizer in pure PyTorch.

Reproduces the forward rules of the mip-splatting fork of ``diff-gaussian-rasterization`` used by TRELLIS/SS4D:

* ``cov3D = R S S^T R^T`` from the normalised quaternion (w, x, y, z) and the activated scales;
* points with view-space ``z <= 0.2`` are culled;
* EWA Jacobian with ``x/z`` and ``y/z`` clamped to ``+-1.3 tan(fov/2)``, focal lengths ``fx W``, ``fy H``;
* a 0.1 px^2 screen-space filter on the 2D covariance with opacity compensation
  ``sqrt(det0 / (det1 + 1e-6) + 1e-6)`` (0 when either determinant is <= 1e-6);
* ``radius = ceil(3 sqrt(lambda_max))`` and 16x16 tiles touched by the square of that radius;
* per pixel ``alpha = min(0.99, o exp(-d^T Sigma^-1 d / 2))``, skipped below 1/255, front-to-back by view depth,
  a pixel stops before a Gaussian that would bring its transmittance below 1e-4; ``color = C + T bg``.
* Pixel ``(i, j)`` sits at ``x = i, y = j`` where a point projects to ``x = fx W X/Z + cx W - 0.5``.

Implementation: Gaussians are binned into (tile, Gaussian) pairs sorted by (tile, depth). Tiles are processed in
depth-ordered chunks of ``chunk`` Gaussians, all tiles with work left at that depth together, as dense
``[tiles, chunk, 256 px]`` batches; transmittance is carried between chunks. Tiles are dropped once every pixel has
terminated. The forward keeps only per-chunk transmittance; the backward re-computes each chunk (in reverse order)
and back-propagates through it with autograd, so memory stays bounded by one chunk.

Pairs that cannot produce ``alpha >= 1/255`` anywhere in a tile (given the Gaussian's opacity) are dropped before
rasterization; this is an exact optimisation (those pairs are skipped by the per-pixel rule anyway).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .camera import Camera, as_camera

__all__ = ["rasterize", "render_frames", "project_gaussians", "quaternion_to_matrix", "BLOCK", "KERNEL_SIZE"]

BLOCK = 16
KERNEL_SIZE = 0.1
NEAR_CULL = 0.2
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4

# packed per-Gaussian columns used by the tile kernel
_MX, _MY, _CA, _CB, _CC, _OP, _R, _G, _B, _Z = range(10)
_NF = 10


# ----------------------------------------------------------------------------------------------------------------
# per-Gaussian preprocessing (differentiable, plain autograd)
# ----------------------------------------------------------------------------------------------------------------
def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(w, x, y, z) quaternions ``[N,4]`` (normalised here) -> rotation matrices ``[N,3,3]``."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(q.shape[:-1] + (3, 3))


def project_gaussians(means, scales, rotations, opacities, camera: Camera, kernel_size: float = KERNEL_SIZE,
                      scale_modifier: float = 1.0) -> dict[str, torch.Tensor]:
    """Screen-space Gaussians. Returns ``means2d [N,2]`` (pixels), ``conic [N,3]`` (a, b, c of the inverse 2D
    covariance incl. the filter), ``opacity [N]`` (compensated), ``depth [N]`` (view z), ``radius [N]`` (int, 0 =
    culled), ``cov2d [N,3]`` (with the filter)."""
    dtype = means.dtype
    E = camera.extrinsics.to(device=means.device, dtype=dtype)
    K = camera.intrinsics.to(device=means.device, dtype=dtype)
    W, H = camera.width, camera.height
    Rw = E[:3, :3]
    p = means @ Rw.T + E[:3, 3]
    z = p[:, 2]
    valid = z > NEAR_CULL
    zs = torch.where(valid, z, torch.ones_like(z))
    fx, fy = K[0, 0] * W, K[1, 1] * H
    cx, cy = K[0, 2] * W, K[1, 2] * H
    # (the official projection matrix puts the y principal point at (1 - cy) H; identical for cy = 0.5)
    mx = fx * p[:, 0] / zs + cx - 0.5
    my = fy * p[:, 1] / zs + cy - 0.5

    limx = 1.3 * (0.5 / K[0, 0])
    limy = 1.3 * (0.5 / K[1, 1])
    tx = torch.minimum(torch.maximum(p[:, 0] / zs, -limx), limx) * zs
    ty = torch.minimum(torch.maximum(p[:, 1] / zs, -limy), limy) * zs
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / (zs * zs), zero, fy / zs, -fy * ty / (zs * zs)], -1).reshape(-1, 2, 3)
    T = J @ Rw  # [N,2,3]
    Rq = quaternion_to_matrix(rotations)
    M = Rq * (scales * scale_modifier)[:, None, :]  # R S
    TM = T @ M  # [N,2,3]
    cov = TM @ TM.transpose(1, 2)  # J W R S S^T R^T W^T J^T
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    det0 = (a * c - b * b).clamp_min(1e-6)
    a = a + kernel_size
    c = c + kernel_size
    det1 = (a * c - b * b).clamp_min(1e-6)
    coef = torch.sqrt(det0 / (det1 + 1e-6) + 1e-6)
    coef = torch.where((det0 <= 1e-6) | (det1 <= 1e-6), torch.zeros_like(coef), coef)
    det = a * c - b * b
    ok = valid & (det != 0)
    det_s = torch.where(ok, det, torch.ones_like(det))
    conic = torch.stack([c / det_s, -b / det_s, a / det_s], -1)
    opacity = opacities.reshape(-1) * coef
    with torch.no_grad():
        mid = 0.5 * (a + c)
        lam1 = mid + torch.sqrt(torch.clamp_min(mid * mid - det, 0.1))
        lam2 = mid - torch.sqrt(torch.clamp_min(mid * mid - det, 0.1))
        radius = torch.ceil(3.0 * torch.sqrt(torch.maximum(lam1, lam2).clamp_min(0))).to(torch.int64)
        radius = torch.where(ok, radius, torch.zeros_like(radius))
    return {"means2d": torch.stack([mx, my], -1), "conic": conic, "opacity": opacity, "depth": z,
            "radius": radius, "cov2d": torch.stack([a, b, c], -1)}


# ----------------------------------------------------------------------------------------------------------------
# binning
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def _bin(means2d, cov2d, opacity, depth, radius, W: int, H: int, tight: bool = True):
    """(tile, Gaussian) pairs sorted by (tile, depth). Returns ``pair_gid [P]`` and per tile ``start/count``."""
    device = means2d.device
    gx, gy = (W + BLOCK - 1) // BLOCK, (H + BLOCK - 1) // BLOCK
    mx, my = means2d[:, 0], means2d[:, 1]
    r = radius.to(means2d.dtype)
    # official getRect: [floor((p - r) / 16), floor((p + r + 15) / 16)) clamped to the grid
    x0 = torch.floor((mx - r) / BLOCK).clamp(0, gx).to(torch.int64)
    x1 = torch.floor((mx + r + BLOCK - 1) / BLOCK).clamp(0, gx).to(torch.int64)
    y0 = torch.floor((my - r) / BLOCK).clamp(0, gy).to(torch.int64)
    y1 = torch.floor((my + r + BLOCK - 1) / BLOCK).clamp(0, gy).to(torch.int64)
    keep = (radius > 0) & ((x1 - x0) * (y1 - y0) > 0)
    if tight:
        # alpha >= 1/255 needs o exp(-q/2) >= 1/255, i.e. q <= 2 log(255 o); bounding box of that ellipse
        o = opacity.to(torch.float64)
        keep &= o >= ALPHA_MIN * (1 - 1e-6)
        q = (2 * torch.log((o * 255.0).clamp_min(1.0))).to(means2d.dtype)
        hx = torch.sqrt(q * cov2d[:, 0]) * 1.001 + 0.01
        hy = torch.sqrt(q * cov2d[:, 2]) * 1.001 + 0.01
        x0 = torch.maximum(x0, torch.floor((mx - hx) / BLOCK).clamp(0, gx).to(torch.int64))
        x1 = torch.minimum(x1, (torch.floor((mx + hx) / BLOCK) + 1).clamp(0, gx).to(torch.int64))
        y0 = torch.maximum(y0, torch.floor((my - hy) / BLOCK).clamp(0, gy).to(torch.int64))
        y1 = torch.minimum(y1, (torch.floor((my + hy) / BLOCK) + 1).clamp(0, gy).to(torch.int64))
        keep &= (x1 > x0) & (y1 > y0)
    gids = torch.nonzero(keep).squeeze(1)
    n_tiles = gx * gy
    if gids.numel() == 0:
        z = torch.zeros(n_tiles, dtype=torch.int64, device=device)
        return torch.zeros(0, dtype=torch.int64, device=device), z, z.clone(), gx, gy
    # depth order (stable: ties keep index order, like the official radix sort)
    gids = gids[torch.argsort(depth[gids], stable=True)]
    x0, x1, y0, y1 = x0[gids], x1[gids], y0[gids], y1[gids]
    wdt = x1 - x0
    cnt = wdt * (y1 - y0)
    P = int(cnt.sum())
    rank = torch.repeat_interleave(torch.arange(gids.numel(), device=device), cnt)
    off = torch.cumsum(cnt, 0) - cnt
    local = torch.arange(P, device=device) - off[rank]
    w_r = wdt[rank]
    tile = (y0[rank] + local // w_r) * gx + x0[rank] + local % w_r
    pair_rank = rank
    if tight:
        # exact ellipse-vs-tile test: min over the tile's pixel rectangle of q(d) must be <= 2 log(255 o)
        g = gids[pair_rank]
        keep_p = _tile_ellipse_test(means2d[g], cov2d[g], opacity[g], tile, gx, W, H)
        tile, pair_rank = tile[keep_p], pair_rank[keep_p]
    key = tile * gids.numel() + pair_rank
    order = torch.argsort(key)
    tile = tile[order]
    pair_gid = gids[pair_rank[order]]
    count = torch.bincount(tile, minlength=n_tiles)
    start = torch.cumsum(count, 0) - count
    return pair_gid, start, count, gx, gy


def _tile_ellipse_test(m, cov, o, tile, gx, W, H):
    """Conservative test whether a Gaussian reaches alpha >= 1/255 anywhere on a tile's pixel centres' rectangle.

    Minimises the quadratic form ``q(d) = d^T Sigma^-1 d`` over the rectangle: the minimum lies at the centre if it
    is inside, else on an edge (a clamped 1D minimisation per edge)."""
    dt = torch.float64
    m = m.to(dt)
    a, b, c = cov[:, 0].to(dt), cov[:, 1].to(dt), cov[:, 2].to(dt)
    det = a * c - b * b
    ia, ib, ic = c / det, -b / det, a / det  # conic
    tx = (tile % gx).to(dt)
    ty = (tile // gx).to(dt)
    xl, xh = tx * BLOCK, torch.clamp(tx * BLOCK + BLOCK - 1, max=W - 1)
    yl, yh = ty * BLOCK, torch.clamp(ty * BLOCK + BLOCK - 1, max=H - 1)
    # d = p - m; rectangle in d coordinates
    dxl, dxh = xl - m[:, 0], xh - m[:, 0]
    dyl, dyh = yl - m[:, 1], yh - m[:, 1]
    inside = (dxl <= 0) & (dxh >= 0) & (dyl <= 0) & (dyh >= 0)

    def q(dx, dy):
        return ia * dx * dx + 2 * ib * dx * dy + ic * dy * dy

    best = torch.full_like(a, float("inf"))
    for dx in (dxl, dxh):  # vertical edges: minimise over dy for fixed dx -> dy = -ib dx / ic
        dy = torch.minimum(torch.maximum(-ib * dx / ic, dyl), dyh)
        best = torch.minimum(best, q(dx, dy))
    for dy in (dyl, dyh):
        dx = torch.minimum(torch.maximum(-ib * dy / ia, dxl), dxh)
        best = torch.minimum(best, q(dx, dy))
    best = torch.where(inside, torch.zeros_like(best), best)
    thr = 2 * torch.log((o.to(dt) * 255.0).clamp_min(1.0))
    return best <= thr * 1.001 + 1e-3


# ----------------------------------------------------------------------------------------------------------------
# the tile kernel
# ----------------------------------------------------------------------------------------------------------------
def _pixel_coords(tiles, gx, dtype):
    ar = torch.arange(BLOCK, device=tiles.device, dtype=dtype)
    px = (tiles % gx).to(dtype)[:, None] * BLOCK + ar
    py = (tiles // gx).to(dtype)[:, None] * BLOCK + ar
    return px, py


def _chunk_forward(Gp, T_in, px, py, inplace: bool):
    """One depth chunk for a batch of tiles.

    ``Gp [n,k,10]`` packed Gaussians (front to back), ``T_in [n,256]`` transmittance entering the chunk
    (0 = pixel terminated). Returns ``contrib [n,5,256]`` (rgb, depth, alpha weights summed) and ``T_out``."""
    n, k, _ = Gp.shape
    dx = Gp[:, :, _MX, None] - px[:, None, :]  # [n,k,16]
    dy = Gp[:, :, _MY, None] - py[:, None, :]
    qx = (-0.5 * Gp[:, :, _CA, None]) * dx * dx
    qy = (-0.5 * Gp[:, :, _CC, None]) * dy * dy
    bdy = -Gp[:, :, _CB, None] * dy
    power = qy[..., :, None] + qx[..., None, :]  # [n,k,16(y),16(x)]
    if inplace:
        power.addcmul_(bdy[..., :, None], dx[..., None, :])
        alpha = power.exp_().mul_(Gp[:, :, _OP, None, None]).clamp_max_(ALPHA_MAX)
    else:
        power = torch.addcmul(power, bdy[..., :, None], dx[..., None, :])
        alpha = (torch.exp(power) * Gp[:, :, _OP, None, None]).clamp_max(ALPHA_MAX)
    alpha = alpha.reshape(n, k, BLOCK * BLOCK)
    alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros((), dtype=alpha.dtype, device=alpha.device))
    om = 1.0 - alpha
    if inplace:
        om[:, 0].mul_(T_in)
    else:
        om = torch.cat([(om[:, 0] * T_in)[:, None], om[:, 1:]], 1)
    T_incl = torch.cumprod(om, 1)
    mask = T_incl >= T_MIN
    T_excl = torch.cat([T_in[:, None], T_incl[:, :-1]], 1)
    if inplace:
        w = alpha.mul_(T_excl).mul_(mask)
    else:
        w = alpha * T_excl * mask
    feats = torch.cat([Gp[:, :, _R:_Z + 1], torch.ones_like(Gp[:, :, :1])], 2)  # [n,k,5]
    contrib = torch.bmm(feats.transpose(1, 2), w)  # [n,5,256]
    T_out = torch.where(mask[:, -1], T_incl[:, -1], torch.zeros((), dtype=T_in.dtype, device=T_in.device))
    return contrib, T_out


class _Raster(torch.autograd.Function):
    @staticmethod
    def forward(ctx, G, pair_gid, start, count, gx, gy, chunk, save):
        dtype, device = G.dtype, G.device
        N = G.shape[0]
        Gd = torch.cat([G, torch.zeros(1, _NF, dtype=dtype, device=device)], 0)  # dummy row: opacity 0
        n_tiles = gx * gy
        acc = torch.zeros(n_tiles, 5, BLOCK * BLOCK, dtype=dtype, device=device)
        T_run = torch.ones(n_tiles, BLOCK * BLOCK, dtype=dtype, device=device)
        order = torch.argsort(count, descending=True, stable=True)
        active = order[count[order] > 0]
        P = pair_gid.numel()
        ar = torch.arange(chunk, device=device)
        steps = []
        s = 0
        while active.numel() > 0:
            st = start[active][:, None] + s + ar
            valid = (s + ar)[None, :] < count[active][:, None]
            gid = torch.where(valid, pair_gid[st.clamp(max=max(P - 1, 0))], N)
            Gp = Gd[gid]
            px, py = _pixel_coords(active, gx, dtype)
            T_in = T_run[active]
            contrib, T_out = _chunk_forward(Gp, T_in, px, py, inplace=True)
            acc.index_add_(0, active, contrib)
            T_run[active] = T_out
            if save:
                steps.append((active, gid, T_in))
            s += chunk
            alive = (count[active] > s) & (T_out > 0).any(1)
            active = active[alive]
        if save:
            ctx.steps = steps
            ctx.meta = (gx, gy, N)
            ctx.save_for_backward(G)
        return acc

    @staticmethod
    def backward(ctx, g_acc):
        (G,) = ctx.saved_tensors
        gx, gy, N = ctx.meta
        dtype, device = G.dtype, G.device
        Gd = torch.cat([G.detach(), torch.zeros(1, _NF, dtype=dtype, device=device)], 0)
        gG = torch.zeros(N + 1, _NF, dtype=dtype, device=device)
        g_T = torch.zeros(gx * gy, BLOCK * BLOCK, dtype=dtype, device=device)
        g_acc = g_acc.contiguous()
        for active, gid, T_in in reversed(ctx.steps):
            px, py = _pixel_coords(active, gx, dtype)
            with torch.enable_grad():
                Gp = Gd[gid].requires_grad_(True)
                Ti = T_in.detach().requires_grad_(True)
                contrib, T_out = _chunk_forward(Gp, Ti, px, py, inplace=False)
                dGp, dT = torch.autograd.grad((contrib, T_out), (Gp, Ti), (g_acc[active], g_T[active]))
            gG.index_add_(0, gid.reshape(-1), dGp.reshape(-1, _NF))
            g_T[active] = dT
        return gG[:N], None, None, None, None, None, None, None


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------
def _unpack(g):
    """Gaussians / dict / tuple -> (means, scales, rotations, opacities [N], colors [N,3])."""
    if hasattr(g, "get_xyz"):
        return g.get_xyz, g.get_scaling, g.get_rotation, g.get_opacity.reshape(-1), g.get_colors
    if isinstance(g, dict):
        return (g["means"], g["scales"], g["rotations"], g["opacities"].reshape(-1), g["colors"])
    if isinstance(g, Sequence) and len(g) == 5:
        means, scales, rotations, opacities, colors = g
        return means, scales, rotations, opacities.reshape(-1), colors
    raise TypeError("expected a Gaussians, a dict with means/scales/rotations/opacities/colors, or a 5-tuple")


def _bg_tensor(bg, dtype, device):
    bg = torch.as_tensor(bg, dtype=dtype, device=device).reshape(-1)
    if bg.numel() == 1:
        bg = bg.expand(3)
    return bg


def rasterize(gaussians, camera, bg=(1.0, 1.0, 1.0), *, ssaa: int = 1, kernel_size: float = KERNEL_SIZE,
              scale_modifier: float = 1.0, chunk: int = 32, tight_culling: bool = True) -> dict[str, torch.Tensor]:
    """Render one view.

    ``gaussians``: a :class:`~ss4d.render.gaussians.Gaussians` (activated properties are used), a dict with
    ``means [N,3], scales [N,3], rotations [N,4] (w,x,y,z), opacities [N] or [N,1], colors [N,3]`` or that 5-tuple.
    ``camera``: a :class:`~ss4d.render.camera.Camera` (or its dict form). ``bg``: RGB background.
    ``ssaa``: render at ``ssaa x`` the resolution and area-downsample.

    Returns ``color [3,H,W]`` (``C + T bg``), ``alpha [1,H,W]`` (``1 - T``) and ``depth [1,H,W]``
    (alpha-weighted view z, ``sum_i w_i z_i``, not divided by alpha), differentiable w.r.t. the Gaussian tensors.
    """
    camera = as_camera(camera)
    means, scales, rotations, opacities, colors = _unpack(gaussians)
    W0, H0 = camera.width, camera.height
    s = int(ssaa)
    cam = camera if s == 1 else camera.resized(W0 * s, H0 * s)
    W, H = cam.width, cam.height
    dtype, device = means.dtype, means.device
    proj = project_gaussians(means, scales, rotations, opacities, cam, kernel_size, scale_modifier)
    pair_gid, start, count, gx, gy = _bin(proj["means2d"].detach(), proj["cov2d"].detach(),
                                          proj["opacity"].detach(), proj["depth"].detach(), proj["radius"], W, H,
                                          tight=tight_culling)
    G = torch.cat([proj["means2d"], proj["conic"], proj["opacity"][:, None], colors.to(dtype),
                   proj["depth"][:, None]], 1)
    need_grad = torch.is_grad_enabled() and G.requires_grad
    acc = _Raster.apply(G, pair_gid, start, count, gx, gy, int(chunk), need_grad)
    img = acc.reshape(gy, gx, 5, BLOCK, BLOCK).permute(2, 0, 3, 1, 4).reshape(5, gy * BLOCK, gx * BLOCK)
    img = img[:, :H, :W]
    if s > 1:
        img = F.avg_pool2d(img[None], s)[0]
    rgb, depth, alpha = img[:3], img[3:4], img[4:5]
    color = rgb + (1.0 - alpha) * _bg_tensor(bg, dtype, device)[:, None, None]
    return {"color": color, "alpha": alpha, "depth": depth}


def render_frames(gaussians_list, cameras, bg=(1.0, 1.0, 1.0), **kwargs) -> dict[str, torch.Tensor]:
    """Render frame ``i`` of ``gaussians_list`` with ``cameras[i]``; a single Gaussians or a single camera is
    broadcast. Returns stacked ``color [F,3,H,W]``, ``alpha [F,1,H,W]``, ``depth [F,1,H,W]``."""
    if not isinstance(gaussians_list, (list, tuple)) or (len(gaussians_list) == 5 and
                                                       isinstance(gaussians_list[0], torch.Tensor)):
        gaussians_list = [gaussians_list]
    if isinstance(cameras, (Camera, dict)):
        cameras = [cameras]
    n = max(len(gaussians_list), len(cameras))
    if len(gaussians_list) not in (1, n) or len(cameras) not in (1, n):
        raise ValueError(f"{len(gaussians_list)} Gaussian frames vs {len(cameras)} cameras")
    outs = [rasterize(gaussians_list[i if len(gaussians_list) > 1 else 0], cameras[i if len(cameras) > 1 else 0],
                      bg, **kwargs) for i in range(n)]
    return {k: torch.stack([o[k] for o in outs]) for k in ("color", "alpha", "depth")}
