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

Implementation (CPU-oriented, pure PyTorch):

* Binning: each visible Gaussian is expanded to the ``tile x tile`` pixel tiles (8x8 by default, a subdivision of
  the official 16x16 blocks) that lie inside its official 16x16-block rectangle *and* intersect the ellipse on which
  ``o exp(-q/2) >= 1/255`` (computed per tile row in closed form). This is exact: the dropped pairs would be
  skipped by the per-pixel 1/255 rule anyway. Pairs are sorted by (tile, depth).
* Rasterization: tiles are processed in depth-ordered chunks of ``chunk`` Gaussians, all tiles with work left at
  that depth together (at most ``_BATCH_ELEMS`` elements per batch), as dense ``[tiles, pixels, chunk]`` tensors;
  the transmittance is carried from chunk to chunk and a tile is dropped once all its pixels have terminated.
* Forward without autograd, in place on a reused workspace; the backward re-computes every chunk in reverse order
  and applies a hand-written gradient (checked against autograd in the tests), so memory stays bounded by one
  batch plus the per-chunk transmittance saved by the forward.
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
def _bin(means2d, cov2d, conic, opacity, depth, radius, W: int, H: int, tile: int = 8, tight: bool = True):
    """(tile, Gaussian) pairs sorted by (tile, depth) on a grid of ``tile x tile`` pixel tiles (``tile`` divides 16).

    A Gaussian can only touch a tile inside the official 16x16-block rectangle of its 3-sigma radius; with ``tight``
    the pairs are further restricted to tiles where ``o exp(-q/2) >= 1/255`` can hold (exact: other pairs are skipped
    per pixel anyway). Returns ``pair_gid [P]``, per tile ``start``/``count`` and the grid size."""
    device = means2d.device
    f = BLOCK // tile
    g16x, g16y = (W + BLOCK - 1) // BLOCK, (H + BLOCK - 1) // BLOCK
    gx, gy = (W + tile - 1) // tile, (H + tile - 1) // tile
    mx, my = means2d[:, 0], means2d[:, 1]
    r = radius.to(means2d.dtype)
    # official getRect: [floor((p - r) / 16), floor((p + r + 15) / 16)) clamped to the block grid
    x0 = torch.floor((mx - r) / BLOCK).clamp(0, g16x).to(torch.int64)
    x1 = torch.floor((mx + r + BLOCK - 1) / BLOCK).clamp(0, g16x).to(torch.int64)
    y0 = torch.floor((my - r) / BLOCK).clamp(0, g16y).to(torch.int64)
    y1 = torch.floor((my + r + BLOCK - 1) / BLOCK).clamp(0, g16y).to(torch.int64)
    keep = (radius > 0) & ((x1 - x0) * (y1 - y0) > 0)
    x0, y0 = x0 * f, y0 * f
    x1, y1 = torch.clamp(x1 * f, max=gx), torch.clamp(y1 * f, max=gy)
    if tight:
        # alpha >= 1/255 needs o exp(-q/2) >= 1/255, i.e. q <= 2 log(255 o): bounding box of that ellipse
        o = opacity.to(torch.float64)
        keep &= o >= ALPHA_MIN * (1 - 1e-6)
        q = (2 * torch.log((o * 255.0).clamp_min(1.0))).to(means2d.dtype)
        hx = torch.sqrt(q * cov2d[:, 0]) * 1.001 + 0.01
        hy = torch.sqrt(q * cov2d[:, 2]) * 1.001 + 0.01
        x0 = torch.maximum(x0, torch.floor((mx - hx) / tile).clamp(0, gx).to(torch.int64))
        x1 = torch.minimum(x1, (torch.floor((mx + hx) / tile) + 1).clamp(0, gx).to(torch.int64))
        y0 = torch.maximum(y0, torch.floor((my - hy) / tile).clamp(0, gy).to(torch.int64))
        y1 = torch.minimum(y1, (torch.floor((my + hy) / tile) + 1).clamp(0, gy).to(torch.int64))
    keep &= (x1 > x0) & (y1 > y0)
    gids = torch.nonzero(keep).squeeze(1)
    n_tiles = gx * gy
    if gids.numel() == 0:
        z = torch.zeros(n_tiles, dtype=torch.int64, device=device)
        return torch.zeros(0, dtype=torch.int64, device=device), z, z.clone(), gx, gy
    # depth order (stable: ties keep index order, like the official radix sort)
    gids = gids[torch.argsort(depth[gids], stable=True)]
    x0, x1, y0, y1 = x0[gids], x1[gids], y0[gids], y1[gids]
    # one entry per (Gaussian, tile row)
    nrow = y1 - y0
    R = int(nrow.sum())
    row_rank = torch.repeat_interleave(torch.arange(gids.numel(), device=device), nrow)
    ty = torch.arange(R, device=device) - torch.repeat_interleave(torch.cumsum(nrow, 0) - nrow - y0, nrow)
    lo = x0.index_select(0, row_rank)
    hi = x1.index_select(0, row_rank) - 1
    if tight:
        lo2, hi2 = _row_ranges(means2d[gids], conic[gids], opacity[gids], row_rank, ty, tile, H)
        lo, hi = torch.maximum(lo, lo2), torch.minimum(hi, hi2)
    cnt = (hi - lo + 1).clamp_min(0)
    P = int(cnt.sum())
    # expand every row to its tiles: tile id = row base + running index
    base = (ty * gx + lo - (torch.cumsum(cnt, 0) - cnt)).to(torch.int32)
    tid = torch.repeat_interleave(base, cnt).add_(torch.arange(P, device=device, dtype=torch.int32))
    tid = tid.to(torch.int16) if n_tiles < 2**15 else tid  # small keys sort faster
    order = torch.sort(tid, stable=True)[1]  # stable: keeps the depth order inside a tile
    gid32 = gids.to(torch.int32).index_select(0, row_rank)
    pair_gid = torch.repeat_interleave(gid32, cnt).index_select(0, order)
    count = torch.bincount(tid.to(torch.int64), minlength=n_tiles)
    start = torch.cumsum(count, 0) - count
    return pair_gid, start, count, gx, gy


def _row_ranges(m, conic, o, row_rank, ty, tile: int, H: int):
    """For each (Gaussian ``row_rank``, tile row ``ty``): the range of tile columns ``[lo, hi]`` whose pixel centres
    can see ``alpha >= 1/255``, i.e. ``q(d) = d^T conic d <= 2 log(255 o)``, within the row's band of pixel rows.

    Exact for the ellipse (the x-extent of a convex set over a band is an interval whose ends are reached at the
    clamped tangent points), with a 1% margin on ``q`` plus 0.01 px that covers the float32 rounding here and in
    the tile kernel. Per-Gaussian constants are formed in float64."""
    dt = torch.float64
    a, b, c = conic[:, 0].to(dt), conic[:, 1].to(dt), conic[:, 2].to(dt)
    thr = 2 * torch.log((o.to(dt) * 255.0).clamp_min(1.0)) * 1.01 + 0.01
    det = (a * c - b * b).clamp_min(1e-300)
    y_ext = torch.sqrt(thr * a / det)
    d_r = -b * torch.sqrt(thr * c / det) / c  # dy of the rightmost point (the leftmost is at -d_r)
    mx, my = m[:, 0].to(dt), m[:, 1].to(dt)
    table = torch.stack([my, y_ext, d_r, -b / a, 1.0 / a, thr * a, det, mx + 0.01 + 1e-6 * mx.abs(),
                         mx - 0.01 - 1e-6 * mx.abs() - (tile - 1)], 1).float()
    my, y_ext, d_r, kb, ia, tha, det, mx_hi, mx_lo = table.index_select(0, row_rank).unbind(1)
    yl = ty.float() * tile
    l = torch.maximum(yl - my, -y_ext)
    h = torch.minimum(yl.clamp_max_(H - tile).add_(tile - 1) - my, y_ext)  # last pixel row min(yl + t - 1, H - 1)
    empty = l > h

    def xbound(dy, sign):
        half = torch.addcmul(tha, det, dy * dy, value=-1.0).clamp_min_(0).sqrt_().mul_(ia)
        return torch.addcmul(half if sign > 0 else half.neg_(), kb, dy)

    right = xbound(torch.clamp(d_r, l, h), 1)
    left = xbound(torch.clamp(d_r.neg_(), l, h), -1)
    lo = torch.ceil(left.add_(mx_lo).div_(tile)).clamp_(-1, 2**24).to(torch.int64)
    hi = torch.floor(right.add_(mx_hi).div_(tile)).clamp_(-1, 2**24).to(torch.int64)
    return lo.masked_fill_(empty, 1), hi.masked_fill_(empty, 0)


# ----------------------------------------------------------------------------------------------------------------
# the tile kernel
# ----------------------------------------------------------------------------------------------------------------
def _pixel_coords(tiles, gx, tile, dtype):
    ar = torch.arange(tile, device=tiles.device, dtype=dtype)
    px = (tiles % gx).to(dtype)[:, None] * tile + ar
    py = (tiles // gx).to(dtype)[:, None] * tile + ar
    return px, py


_LOG_ALPHA_MAX = math.log(ALPHA_MAX)


def _fast_table(G):
    """No-grad table ``[10, N + 1]``: mean x, y, -a/2, -b, -c/2, log(opacity), r, g, b, z (+ a dummy column with
    log(opacity) = -inf, i.e. alpha = 0, used for padding)."""
    cols = [G[:, _MX], G[:, _MY], -0.5 * G[:, _CA], -G[:, _CB], -0.5 * G[:, _CC], torch.log(G[:, _OP]),
            G[:, _R], G[:, _G], G[:, _B], G[:, _Z]]
    Gt = torch.stack(cols, 0)
    pad = torch.zeros(_NF, 1, dtype=G.dtype, device=G.device)
    pad[_OP] = -math.inf
    return torch.cat([Gt, pad], 1).contiguous()


def _chunk_fast(Gp, T_in, px, py, ws, clamp: bool):
    """One depth chunk for a batch of tiles, no autograd, in place on the workspace ``ws``.

    ``Gp [10, n, k]`` columns of :func:`_fast_table` (front to back), ``T_in [n, t*t]`` transmittance entering
    the chunk (0 = pixel terminated), ``px``/``py [n, t]`` pixel coordinates. Returns ``contrib [n, 5, t*t]``
    (rgb, depth, sum of weights) and ``T_out [n, t*t]``.

    Layout ``[n, pixels, k]`` (k innermost). ``y = alpha - 1`` with ``alpha = exp(power + log o)`` (0 below 1/255),
    so ``cumprod(y)`` is ``T / T_in`` up to the sign ``(-1)^(i+1)``, and with ``w_i = T_i - T_{i+1}`` the
    weighted sums telescope: ``sum_i f_i w_i = f_0 T_in + sum_i (f_{i+1} - f_i) T_{i+1}`` (``f_k = 0``), one bmm
    against the cumulative product, scaled by ``T_in`` per pixel. For the few pixels that terminate inside this
    chunk the transmittance is held at its last valid value from the stopping Gaussian on, which zeroes the
    weights past the stop."""
    n, k = Gp.shape[1], Gp.shape[2]
    t = px.shape[1]
    npx = t * t
    dx = Gp[_MX][:, None, :] - px[:, :, None]  # [n, t(x), k]
    dy = Gp[_MY][:, None, :] - py[:, :, None]  # [n, t(y), k]
    qx = (dx * Gp[_CA][:, None, :]).mul_(dx)
    qy = (dy * Gp[_CC][:, None, :]).mul_(dy).add_(Gp[_OP][:, None, :])
    bdy = dy.mul_(Gp[_CB][:, None, :])
    A = ws[: n * npx * k].view(n, t, t, k)
    torch.add(qy[:, :, None, :], qx[:, None, :, :], out=A)  # power + log o, [n, t(y), t(x), k]
    A.addcmul_(bdy[:, :, None, :], dx[:, None, :, :])
    if clamp:  # min(0.99, alpha): only Gaussians with o > 0.99 can exceed it; clamp just their columns
        ni, ki = torch.nonzero(Gp[_OP] > _LOG_ALPHA_MAX, as_tuple=True)
        if ni.numel():
            Av = A.view(n, npx, k)
            Av[ni, :, ki] = Av[ni, :, ki].clamp_max(_LOG_ALPHA_MAX)
    Y = torch.threshold_(A.exp_(), ALPHA_MIN_BELOW[A.dtype], 0.0).sub_(1.0).view(n, npx, k)  # alpha - 1
    C = Y.cumprod_(2)  # (-1)^(i+1) T_{i+1} / T_in
    sign = _alt_sign(k, C.dtype, C.device)
    T_last = (C[:, :, -1] if k % 2 == 0 else -C[:, :, -1]) * T_in
    stop = T_last < T_MIN
    stop &= T_in > 0
    if bool(stop.any()):
        # pixels that terminate in this chunk: hold the transmittance at its last valid value from the stop on,
        # so the telescoped weights past the stop vanish
        flat = torch.nonzero(stop.view(-1)).squeeze(1)
        Cf = C.view(-1, k)
        rows = Cf.index_select(0, flat) * sign  # [m, k] T_{i+1} / T_in
        lim = T_MIN / T_in.reshape(-1).index_select(0, flat)[:, None]
        t_stop = torch.where(rows >= lim, rows, torch.ones((), dtype=rows.dtype, device=rows.device)).amin(1, True)
        Cf.index_copy_(0, flat, torch.maximum(rows, t_stop).mul_(sign))
        T_last = T_last.masked_fill(stop, 0.0)
    feats = torch.cat([Gp[_R:_Z + 1], torch.ones_like(Gp[:1])], 0).permute(1, 0, 2)  # [n, 5, k]
    D = torch.cat([feats[:, :, 1:] - feats[:, :, :-1], -feats[:, :, -1:]], 2).mul_(sign)
    contrib = torch.baddbmm(feats[:, :, :1], D, C.transpose(1, 2)).mul_(T_in[:, None, :])  # [n, 5, t*t]
    return contrib, T_last.contiguous()


_SIGNS: dict = {}


def _alt_sign(k, dtype, device):
    key = (k, dtype, device)
    if key not in _SIGNS:
        _SIGNS[key] = torch.tensor([(-1.0) ** (i + 1) for i in range(k)], dtype=dtype, device=device)
    return _SIGNS[key]


def _chunk_diff(Gp, T_in, px, py):
    """Differentiable reference of one chunk on the raw columns (mean, conic a/b/c, opacity, rgb, z), in the
    official operation order ``alpha = min(0.99, o exp(-(a dx^2 + c dy^2)/2 - b dx dy))`` with an explicit
    early-stop mask. Autograd through this defines the gradient that :func:`_chunk_backward` implements."""
    n, k = Gp.shape[1], Gp.shape[2]
    t = px.shape[1]
    mx, my, ca, cb, cc, op = Gp[_MX], Gp[_MY], Gp[_CA], Gp[_CB], Gp[_CC], Gp[_OP]
    dx = mx[:, None, :] - px[:, :, None]
    dy = my[:, None, :] - py[:, :, None]
    qx = (-0.5 * ca)[:, None, :] * (dx * dx)
    qy = (-0.5 * cc)[:, None, :] * (dy * dy)
    bdy = (-cb)[:, None, :] * dy
    power = torch.addcmul(qy[:, :, None, :] + qx[:, None, :, :], bdy[:, :, None, :], dx[:, None, :, :])
    alpha = (op[:, None, None, :] * torch.exp(power)).clamp_max(ALPHA_MAX)
    alpha = torch.threshold(alpha, ALPHA_MIN_BELOW[power.dtype], 0.0).reshape(n, t * t, k)
    om = 1.0 - alpha
    om = torch.cat([om[:, :, :1] * T_in[:, :, None], om[:, :, 1:]], 2)
    T = torch.cumprod(om, 2)
    T_excl = torch.cat([T_in[:, :, None], T[:, :, :-1]], 2)
    w = alpha * T_excl * (T >= T_MIN)
    feats = torch.cat([Gp[_R:_Z + 1], torch.ones_like(Gp[:1])], 0)
    contrib = torch.bmm(feats.permute(1, 0, 2), w.transpose(1, 2))
    T_last = T[:, :, -1]
    T_out = torch.where(T_last >= T_MIN, T_last, torch.zeros_like(T_last))
    return contrib, T_out


def _chunk_backward(Gp, T_in, px, py, g_c, g_T):
    """Analytic gradient of :func:`_chunk_diff`: returns ``(dGp [10, n, k], dT_in [n, t*t])`` for the upstream
    gradients ``g_c [n, 5, t*t]`` (of ``contrib``) and ``g_T [n, t*t]`` (of ``T_out``).

    With ``s_i = sum_c g_c f_ic``, ``V = sum_i s_i w_i + g_T T_out`` and ``U_i = V - sum_{j<=i} s_j w_j``:
    ``dL/dalpha_i = s_i T_i - U_i / (1 - alpha_i)`` for the Gaussians composited before the early stop,
    ``dL/dT_in = V / T_in`` and ``dL/df_ic = sum_p g_c w_i``; then through the clamp/threshold of alpha,
    ``alpha = o exp(power)`` and the quadratic form. Gaussians past a pixel's stop get alpha = 0 here (no weight,
    no gradient), which is applied only to the rows of the pixels that stop inside this chunk."""
    n, k = Gp.shape[1], Gp.shape[2]
    t = px.shape[1]
    npx = t * t
    mx, my, ca, cb, cc, op = Gp[_MX], Gp[_MY], Gp[_CA], Gp[_CB], Gp[_CC], Gp[_OP]
    dx = mx[:, None, :] - px[:, :, None]  # [n, t(x), k]
    dy = my[:, None, :] - py[:, :, None]  # [n, t(y), k]
    qx = (-0.5 * ca)[:, None, :] * (dx * dx)
    qy = (-0.5 * cc)[:, None, :] * (dy * dy)
    bdy = (-cb)[:, None, :] * dy
    alpha = torch.add(qy[:, :, None, :], qx[:, None, :, :])
    alpha.addcmul_(bdy[:, :, None, :], dx[:, None, :, :]).exp_().mul_(op[:, None, None, :])
    clamp = bool((op > ALPHA_MAX).any())
    clamped = alpha > ALPHA_MAX if clamp else None
    if clamp:
        alpha.clamp_max_(ALPHA_MAX)
    alpha = torch.threshold_(alpha, ALPHA_MIN_BELOW[alpha.dtype], 0.0).view(n, npx, k)
    om = torch.rsub(alpha, 1.0)
    om[:, :, 0].mul_(T_in)
    Tinc = torch.cumprod(om, 2)  # transmittance after each Gaussian
    om[:, :, 0] = 1.0 - alpha[:, :, 0]
    T_last = Tinc[:, :, -1].clone()
    going = T_last >= T_MIN
    stop = ~going & (T_in > 0)
    if bool(stop.any()):
        flat = torch.nonzero(stop.view(-1)).squeeze(1)
        past = Tinc.view(-1, k).index_select(0, flat) < T_MIN  # [m, k] at and after the stop
        a_rows = alpha.view(-1, k).index_select(0, flat).masked_fill_(past, 0.0)
        alpha.view(-1, k).index_copy_(0, flat, a_rows)
        o_rows = 1.0 - a_rows
        om.view(-1, k).index_copy_(0, flat, o_rows)
        o_rows[:, 0] *= T_in.view(-1).index_select(0, flat)
        Tinc.view(-1, k).index_copy_(0, flat, torch.cumprod(o_rows, 1))
    feats = torch.cat([Gp[_R:_Z + 1], torch.ones_like(Gp[:1])], 0).permute(1, 0, 2)  # [n, 5, k]
    S = torch.bmm(g_c.transpose(1, 2), feats)  # [n, t*t, k]
    w = torch.empty_like(alpha)  # alpha_i T_i (T_i before Gaussian i)
    torch.mul(alpha[:, :, 1:], Tinc[:, :, :-1], out=w[:, :, 1:])
    torch.mul(alpha[:, :, 0], T_in, out=w[:, :, 0])
    d_feats = torch.bmm(g_c, w)  # [n, 5, k]
    X = w.mul_(S).cumsum_(2)  # prefix sums of s_j w_j
    V = X[:, :, -1] + torch.where(going, g_T * T_last, torch.zeros_like(T_last))
    X.sub_(V[:, :, None]).div_(om)  # -U_i / (1 - alpha_i)
    X[:, :, 1:].addcmul_(S[:, :, 1:], Tinc[:, :, :-1])
    X[:, :, 0].addcmul_(S[:, :, 0], T_in)  # dL/dalpha
    T_safe = torch.where(T_in > 0, T_in, torch.ones_like(T_in))
    d_Tin = torch.where(T_in > 0, V / T_safe, torch.zeros_like(V))
    g_pow = X.mul_(alpha)  # alpha = o exp(power) where it passes the clamp/threshold, else no gradient
    if clamp:
        g_pow.masked_fill_(clamped.view(n, npx, k), 0.0)
    g_pow = g_pow.view(n, t, t, k)
    Gx = g_pow.sum(1)  # [n, t(x), k]
    Gy = g_pow.sum(2)  # [n, t(y), k]
    M = (g_pow * dx[:, None, :, :]).sum(2)  # [n, t(y), k]: sum_x g dx
    s_dx = (Gx * dx).sum(1)
    s_dy = (Gy * dy).sum(1)
    d_op = torch.where(op > 0, Gx.sum(1) / torch.where(op > 0, op, torch.ones_like(op)), torch.zeros_like(op))
    d_mx = -ca * s_dx - cb * s_dy
    d_my = -cc * s_dy - cb * s_dx
    d_ca = -0.5 * (Gx * dx * dx).sum(1)
    d_cc = -0.5 * (Gy * dy * dy).sum(1)
    d_cb = -(M * dy).sum(1)
    dGp = torch.stack([d_mx, d_my, d_ca, d_cb, d_cc, d_op, d_feats[:, 0], d_feats[:, 1], d_feats[:, 2],
                       d_feats[:, 3]], 0)
    return dGp, d_Tin


# threshold(x, th, v) keeps x > th; use the float just below the bound so that alpha >= 1/255 is kept (official rule)
def _below(v, dt):
    return torch.nextafter(torch.tensor(v, dtype=dt, device="cpu"), torch.tensor(-2.0, dtype=dt, device="cpu")).item()


_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
ALPHA_MIN_BELOW = {dt: _below(ALPHA_MIN, dt) for dt in _DTYPES}
_BATCH_ELEMS = 1 << 21  # elements of one [tiles, pixels, chunk] batch (8 MB in float32)


class _Raster(torch.autograd.Function):
    @staticmethod
    def forward(ctx, G, pair_gid, start, count, gx, gy, tile, chunk, save):
        dtype, device = G.dtype, G.device
        N = G.shape[0]
        Gt = _fast_table(G.detach())
        clamp = bool((G[:, _OP] > ALPHA_MAX).any())
        npx = tile * tile
        n_tiles = gx * gy
        acc = torch.zeros(n_tiles, 5, npx, dtype=dtype, device=device)
        T_run = torch.ones(n_tiles, npx, dtype=dtype, device=device)
        order = torch.argsort(count, descending=True, stable=True)
        active = order[count[order] > 0]
        P = pair_gid.numel()
        ar = torch.arange(chunk, device=device)
        group = max(1, _BATCH_ELEMS // (npx * chunk))  # tiles per batch: bounds the [tiles, px, chunk] buffers
        ws = torch.empty(min(group, active.numel()) * npx * min(chunk, int(count.max()) if P else 1), dtype=dtype,
                         device=device)
        steps = []
        s = 0
        while active.numel() > 0:
            cnt_all = count.index_select(0, active)
            keep = []
            for g0 in range(0, active.numel(), group):
                act, cnt_a = active[g0:g0 + group], cnt_all[g0:g0 + group]
                kk = min(chunk, int(cnt_a[0]) - s)  # tiles are sorted by count: the first one is the longest
                st = start.index_select(0, act)[:, None] + s + ar[:kk]
                valid = (s + ar[:kk])[None, :] < cnt_a[:, None]
                gid = pair_gid.index_select(0, st.clamp(max=max(P - 1, 0)).view(-1)).view(st.shape)
                gid = torch.where(valid, gid, N)
                Gp = Gt.index_select(1, gid.view(-1)).view(_NF, *gid.shape)
                px, py = _pixel_coords(act, gx, tile, dtype)
                T_in = T_run.index_select(0, act)
                contrib, T_out = _chunk_fast(Gp, T_in, px, py, ws, clamp)
                acc.index_add_(0, act, contrib)
                T_run.index_copy_(0, act, T_out)
                if save:
                    steps.append((act, gid, T_in))
                keep.append(act[(cnt_a > s + kk) & (T_out > 0).any(1)])
            s += chunk
            active = torch.cat(keep)
        if save:
            ctx.steps = steps
            ctx.meta = (gx, gy, tile, N)
            ctx.save_for_backward(G)
        return acc

    @staticmethod
    def backward(ctx, g_acc):
        (G,) = ctx.saved_tensors
        gx, gy, tile, N = ctx.meta
        dtype, device = G.dtype, G.device
        # raw transposed table [10, N + 1] with a dummy column (opacity 0) for the padding
        Gt = torch.cat([G.detach().T, torch.zeros(_NF, 1, dtype=dtype, device=device)], 1).contiguous()
        gGt = torch.zeros(_NF, N + 1, dtype=dtype, device=device)
        g_T = torch.zeros(gx * gy, tile * tile, dtype=dtype, device=device)
        g_acc = g_acc.contiguous()
        for active, gid, T_in in reversed(ctx.steps):
            px, py = _pixel_coords(active, gx, tile, dtype)
            Gp = Gt.index_select(1, gid.view(-1)).view(_NF, *gid.shape)
            dGp, dT = _chunk_backward(Gp, T_in, px, py, g_acc.index_select(0, active), g_T.index_select(0, active))
            gGt.index_add_(1, gid.reshape(-1), dGp.reshape(_NF, -1))
            g_T.index_copy_(0, active, dT)
        return gGt[:, :N].T, None, None, None, None, None, None, None, None


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
              scale_modifier: float = 1.0, chunk: int = 32, tile: int = 8,
              tight_culling: bool = True) -> dict[str, torch.Tensor]:
    """Render one view.

    ``gaussians``: a :class:`~ss4d.gaussians.Gaussians` (activated properties are used), a dict with
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
    pair_gid, start, count, gx, gy = _bin(proj["means2d"].detach(), proj["cov2d"].detach(), proj["conic"].detach(),
                                          proj["opacity"].detach(), proj["depth"].detach(), proj["radius"], W, H,
                                          tile=tile, tight=tight_culling)
    G = torch.cat([proj["means2d"], proj["conic"], proj["opacity"][:, None], colors.to(dtype),
                   proj["depth"][:, None]], 1)
    need_grad = torch.is_grad_enabled() and G.requires_grad
    acc = _Raster.apply(G, pair_gid, start, count, gx, gy, tile, int(chunk), need_grad)
    img = acc.reshape(gy, gx, 5, tile, tile).permute(2, 0, 3, 1, 4).reshape(5, gy * tile, gx * tile)
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
