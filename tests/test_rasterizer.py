"""Tile rasterizer vs an independent dense reference, hand-computed pixels, culling/early-stop and gradients."""
import math

import pytest
import torch

from ss4d.render import Camera, Gaussians, look_at_extrinsics, orbit_camera, rasterize, render_frames
from ss4d.render.camera import intrinsics_from_fov

# ------------------------------------------------------------------------------------------------------------------
# independent dense reference: official formulas written out per pixel, sequential front-to-back compositing
# ------------------------------------------------------------------------------------------------------------------


def _ref_rotation(q):
    q = q / torch.sqrt((q * q).sum(-1, keepdim=True))
    r, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    R = torch.empty(q.shape[0], 3, 3, dtype=q.dtype)
    rows = [[1 - 2 * (y * y + z * z), 2 * (x * y - r * z), 2 * (x * z + r * y)],
            [2 * (x * y + r * z), 1 - 2 * (x * x + z * z), 2 * (y * z - r * x)],
            [2 * (x * z - r * y), 2 * (y * z + r * x), 1 - 2 * (x * x + y * y)]]
    R = torch.stack([torch.stack(row, -1) for row in rows], -2)
    return R


def reference_render(means, scales, rots, opacities, colors, cam, bg, kernel=0.1):
    dt = means.dtype
    W, H = cam.width, cam.height
    E = cam.extrinsics.to(dt)
    K = cam.intrinsics.to(dt)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # official full projection (without the 1e-7 in 1/w) and ndc2Pix
    Pm = torch.zeros(4, 4, dtype=dt)
    Pm[0, 0], Pm[1, 1], Pm[0, 2], Pm[1, 2] = 2 * fx, 2 * fy, 2 * cx - 1, -2 * cy + 1
    Pm[2, 2], Pm[2, 3], Pm[3, 2] = cam.far / (cam.far - cam.near), cam.near * cam.far / (cam.near - cam.far), 1.0
    hom = torch.cat([means, torch.ones_like(means[:, :1])], 1)
    view = hom @ E.T
    clip = hom @ (Pm @ E).T
    ndc = clip[:, :3] / clip[:, 3:4]
    pxy = torch.stack([((ndc[:, 0] + 1) * W - 1) * 0.5, ((ndc[:, 1] + 1) * H - 1) * 0.5], -1)
    z = view[:, 2]
    tanx, tany = 0.5 / fx, 0.5 / fy
    focx, focy = W / (2 * tanx), H / (2 * tany)
    N = means.shape[0]
    S = torch.diag_embed(scales)
    R = _ref_rotation(rots)
    Sigma = R @ S @ S.transpose(1, 2) @ R.transpose(1, 2)
    txz = torch.clamp(view[:, 0] / z, -1.3 * tanx, 1.3 * tanx) * z
    tyz = torch.clamp(view[:, 1] / z, -1.3 * tany, 1.3 * tany) * z
    J = torch.zeros(N, 3, 3, dtype=dt)
    J[:, 0, 0] = focx / z
    J[:, 0, 2] = -focx * txz / z**2
    J[:, 1, 1] = focy / z
    J[:, 1, 2] = -focy * tyz / z**2
    T = J @ E[:3, :3]
    cov = (T @ Sigma @ T.transpose(1, 2))[:, :2, :2]
    c00, c01, c11 = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    det0 = torch.clamp(c00 * c11 - c01 * c01, min=1e-6)
    det1 = torch.clamp((c00 + kernel) * (c11 + kernel) - c01 * c01, min=1e-6)
    coef = torch.sqrt(det0 / (det1 + 1e-6) + 1e-6)
    coef = torch.where((det0 <= 1e-6) | (det1 <= 1e-6), 0.0 * coef, coef)
    A, B, C = c00 + kernel, c01, c11 + kernel
    det = A * C - B * B
    conA, conB, conC = C / det, -B / det, A / det
    mid = 0.5 * (A + C)
    lam = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
    radius = torch.ceil(3 * torch.sqrt(lam)).detach()
    gx, gy = (W + 15) // 16, (H + 15) // 16
    rx0 = torch.clamp(((pxy[:, 0] - radius) / 16).detach().floor(), 0, gx)
    rx1 = torch.clamp(((pxy[:, 0] + radius + 15) / 16).detach().floor(), 0, gx)
    ry0 = torch.clamp(((pxy[:, 1] - radius) / 16).detach().floor(), 0, gy)
    ry1 = torch.clamp(((pxy[:, 1] + radius + 15) / 16).detach().floor(), 0, gy)
    visible = (z > 0.2) & ((rx1 - rx0) * (ry1 - ry0) > 0)
    yy, xx = torch.meshgrid(torch.arange(H, dtype=dt), torch.arange(W, dtype=dt), indexing="ij")
    xx, yy = xx.reshape(-1), yy.reshape(-1)  # pixel centres at integer coordinates
    tile_x, tile_y = torch.floor(xx / 16), torch.floor(yy / 16)
    in_rect = ((tile_x[None] >= rx0[:, None]) & (tile_x[None] < rx1[:, None]) & (tile_y[None] >= ry0[:, None])
               & (tile_y[None] < ry1[:, None]) & visible[:, None])
    dx = pxy[:, 0:1] - xx[None]
    dy = pxy[:, 1:2] - yy[None]
    power = -0.5 * (conA[:, None] * dx * dx + conC[:, None] * dy * dy) - conB[:, None] * dx * dy
    alpha = torch.clamp(opacities.reshape(-1, 1) * coef[:, None] * torch.exp(power), max=0.99)
    alpha = torch.where(in_rect & (power <= 0) & (alpha >= 1.0 / 255.0), alpha, torch.zeros_like(alpha))
    order = torch.argsort(z.detach(), stable=True)
    Tr = torch.ones(H * W, dtype=dt)
    done = torch.zeros(H * W, dtype=torch.bool)
    col = torch.zeros(3, H * W, dtype=dt)
    dep = torch.zeros(H * W, dtype=dt)
    for i in order.tolist():
        a = alpha[i]
        test = Tr * (1 - a)
        done = done | ((a > 0) & (test < 1e-4))
        w = torch.where(done, torch.zeros_like(a), a * Tr)
        col = col + colors[i][:, None] * w
        dep = dep + z[i] * w
        Tr = torch.where(done | (a == 0), Tr, test)
    bg = torch.as_tensor(bg, dtype=dt)
    out = col + Tr * bg[:, None]
    return {"color": out.reshape(3, H, W), "alpha": (1 - Tr).reshape(1, H, W), "depth": dep.reshape(1, H, W)}


def random_scene(n, seed, dtype=torch.float32, scale=(0.03, 0.2)):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * 1.2
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(scale[0]), math.log(scale[1]), generator=g))
    rots = torch.randn(n, 4, generator=g)
    rots = rots / rots.norm(dim=-1, keepdim=True)
    opac = torch.rand(n, generator=g) * 0.95 + 0.04
    opac[::10] = 1.0  # some fully opaque ones: alpha is clamped at 0.99 near their centres
    cols = torch.rand(n, 3, generator=g)
    return [t.to(dtype) for t in (means, scales, rots, opac, cols)]


def small_camera(W=32, H=24, yaw=0.7, pitch=0.3):
    return orbit_camera(yaw, pitch, 2.0, math.radians(40), W, H)


# ------------------------------------------------------------------------------------------------------------------
# forward against the dense reference
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,seed,chunk", [(50, 0, 8), (300, 1, 16), (300, 2, 64), (200, 3, 4)])
def test_forward_matches_dense_reference(n, seed, chunk):
    scene = random_scene(n, seed)
    cam = small_camera(yaw=0.3 * seed, pitch=0.2 + 0.1 * seed)
    bg = (0.2, 0.4, 0.9)
    out = rasterize(tuple(scene), cam, bg=bg, chunk=chunk)
    ref = reference_render(*[t.double() for t in scene], cam, bg)
    assert out["color"].shape == (3, 24, 32) and out["alpha"].shape == (1, 24, 32)
    for k in ("color", "alpha", "depth"):
        torch.testing.assert_close(out[k].double(), ref[k], atol=2e-5, rtol=1e-5, msg=k)
    # the scenes must exercise saturation (early stop: alpha stays below 1 - 1e-4) and partial coverage
    assert (ref["alpha"] < 0.5).any() and ref["alpha"].max() < 1 - 1e-4
    if n >= 200:
        assert (ref["alpha"] > 0.999).float().mean() > 0.05


def test_forward_float64_exact_and_chunk_independent(monkeypatch):
    import ss4d.render.rasterizer as rz

    scene = random_scene(250, 5, torch.float64)
    cam = small_camera(W=40, H=20)
    ref = reference_render(*scene, cam, (1, 1, 1))
    outs = [rasterize(tuple(scene), cam, chunk=c) for c in (3, 32, 512)]
    outs.append(rasterize(tuple(scene), cam, tile=16))
    outs.append(rasterize(tuple(scene), cam, tile=4, chunk=9))
    monkeypatch.setattr(rz, "_BATCH_ELEMS", 3 * 64 * 4)  # batches of 3 tiles
    outs.append(rasterize(tuple(scene), cam, chunk=8))
    for o in outs:
        for k in ("color", "alpha", "depth"):
            torch.testing.assert_close(o[k], ref[k], atol=1e-11, rtol=1e-10)
    # untightened binning (the official tile rect only) gives the same picture
    o = rasterize(tuple(scene), cam, tight_culling=False)
    torch.testing.assert_close(o["color"], ref["color"], atol=1e-11, rtol=1e-10)


# ------------------------------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------------------------------
def _loss(out, wts):
    return sum((out[k] * wts[k]).sum() for k in ("color", "alpha", "depth"))


@pytest.mark.parametrize("dtype,tol,batch", [(torch.float64, 1e-9, None), (torch.float64, 1e-9, 2 * 64 * 8),
                                             (torch.float32, 2e-3, None)])
def test_gradients_match_dense_reference(dtype, tol, batch, monkeypatch):
    import ss4d.render.rasterizer as rz

    if batch is not None:
        monkeypatch.setattr(rz, "_BATCH_ELEMS", batch)  # batches of 2 tiles
    scene = random_scene(120, 11, dtype)
    cam = small_camera(yaw=1.9, pitch=-0.2)
    g = torch.Generator().manual_seed(3)
    wts = {"color": torch.randn(3, 24, 32, generator=g, dtype=dtype),
           "alpha": torch.randn(1, 24, 32, generator=g, dtype=dtype),
           "depth": torch.randn(1, 24, 32, generator=g, dtype=dtype)}
    a = [t.clone().requires_grad_(True) for t in scene]
    out = rasterize(tuple(a), cam, bg=(0.3, 0.6, 0.1), chunk=8)
    assert (out["alpha"] > 0.999).any()  # early stop is exercised
    _loss(out, wts).backward()
    b = [t.double().clone().requires_grad_(True) for t in scene]
    _loss(reference_render(*b, cam, (0.3, 0.6, 0.1)), {k: v.double() for k, v in wts.items()}).backward()
    for name, x, y in zip(("means", "scales", "rotations", "opacities", "colors"), a, b):
        assert x.grad is not None and torch.isfinite(x.grad).all(), name
        scale = y.grad.abs().max().item()
        assert scale > 0, name
        err = (x.grad.double() - y.grad).abs().max().item()
        assert err <= tol * scale, (name, err, scale)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(7)
    n = 5
    means = ((torch.rand(n, 3, generator=g) - 0.5) * 0.6).double()
    scales = (torch.rand(n, 3, generator=g) * 0.08 + 0.04).double()
    rots = torch.randn(n, 4, generator=g).double()
    opac = (torch.rand(n, generator=g) * 0.6 + 0.3).double()
    cols = torch.rand(n, 3, generator=g).double()
    cam = orbit_camera(0.4, 0.3, 2.0, math.radians(40), 20, 18)
    wc, wa, wd = (torch.randn(3, 18, 20, generator=g).double(), torch.randn(1, 18, 20, generator=g).double(),
                  torch.randn(1, 18, 20, generator=g).double())

    def f(m, s, r, o, c):
        out = rasterize((m, s, r, o, c), cam, bg=(0.5, 0.2, 0.7), chunk=2)
        return (out["color"] * wc).sum() + (out["alpha"] * wa).sum() + (out["depth"] * wd).sum()

    inputs = tuple(t.clone().requires_grad_(True) for t in (means, scales, rots, opac, cols))
    # fast mode: checks random projections u^T J v of the Jacobian against finite differences
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
    # slow mode on the means and opacities only (full Jacobian columns)
    g2 = lambda m, o: f(m, inputs[1].detach(), inputs[2].detach(), o, inputs[4].detach())  # noqa: E731
    assert torch.autograd.gradcheck(g2, (inputs[0], inputs[3]), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_chunk_backward_matches_autograd():
    """The hand-written chunk backward equals autograd through the differentiable chunk (incl. early stop,
    terminated pixels, padding entries and the 0.99 clamp)."""
    from ss4d.render.rasterizer import _chunk_backward, _chunk_diff

    g = torch.Generator().manual_seed(0)
    n, k, t = 5, 13, 8
    Gp = torch.rand(10, n, k, generator=g, dtype=torch.float64)
    Gp[0] = Gp[0] * 12 - 2
    Gp[1] = Gp[1] * 12 - 2
    Gp[2] = 0.05 + Gp[2] * 0.5
    Gp[4] = 0.05 + Gp[4] * 0.5
    Gp[3] = (Gp[3] - 0.5) * 0.1
    Gp[5] = 0.3 + 0.7 * Gp[5]
    Gp[5, :, -2] = 0.0  # padding entries
    Gp[5, 0, 0] = 1.0  # clamped at 0.99
    T_in = torch.rand(n, t * t, generator=g, dtype=torch.float64) * 0.5 + 0.2
    T_in[1, :10] = 0.0  # terminated pixels
    T_in[2] = 3e-4  # stop inside the chunk
    px = (torch.arange(t, dtype=torch.float64) + 3 * torch.arange(n, dtype=torch.float64)[:, None])
    py = torch.arange(t, dtype=torch.float64).expand(n, t)
    gc = torch.randn(n, 5, t * t, generator=g, dtype=torch.float64)
    gT = torch.randn(n, t * t, generator=g, dtype=torch.float64)
    a, b = Gp.clone().requires_grad_(True), T_in.clone().requires_grad_(True)
    contrib, T_out = _chunk_diff(a, b, px, py)
    assert (T_out[2] == 0).any() and (T_out[1, :10] == 0).all()
    da, db = torch.autograd.grad((contrib, T_out), (a, b), (gc, gT))
    dA, dB = _chunk_backward(Gp, T_in, px, py, gc, gT)
    torch.testing.assert_close(dA, da, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(dB, db, atol=1e-12, rtol=1e-10)


# ------------------------------------------------------------------------------------------------------------------
# hand-computed pixels
# ------------------------------------------------------------------------------------------------------------------
def _single(pos, scale, opacity, color, dtype=torch.float64):
    return (torch.tensor([pos], dtype=dtype), torch.full((1, 3), scale, dtype=dtype),
            torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype), torch.tensor([opacity], dtype=dtype),
            torch.tensor([color], dtype=dtype))


def test_single_isotropic_gaussian_by_hand():
    W = H = 33  # odd size: the image centre (W/2 - 0.5 = 16) is a pixel centre
    fov = math.radians(40)
    cam = Camera(look_at_extrinsics((0.0, -2.0, 0.0), (0.0, 0.0, 0.0)), intrinsics_from_fov(fov), W, H)
    s, o, col, bg = 0.05, 0.8, (0.2, 0.5, 0.9), (1.0, 0.0, 0.25)
    out = rasterize(_single((0.0, 0.0, 0.0), s, o, col), cam, bg=bg)
    assert abs(cam.intrinsics[0, 0].item() - 0.5 / math.tan(fov / 2)) < 1e-6
    f = cam.intrinsics[0, 0].item() * W  # focal length in pixels (from the float32 intrinsics)
    var = (f * s / 2.0) ** 2  # screen-space variance at depth 2
    var_f = var + 0.1  # + kernel
    coef = math.sqrt(var * var / (var_f * var_f + 1e-6) + 1e-6)
    for dx, dy in [(0, 0), (3, 0), (0, -2), (2, 2)]:
        a = o * coef * math.exp(-0.5 * (dx * dx + dy * dy) / var_f)
        assert a >= 1 / 255
        px = out["color"][:, 16 + dy, 16 + dx]
        exp = torch.tensor([c * a + (1 - a) * b for c, b in zip(col, bg)], dtype=torch.float64)
        torch.testing.assert_close(px, exp, atol=1e-12, rtol=1e-10)
        assert abs(out["alpha"][0, 16 + dy, 16 + dx].item() - a) < 1e-12
        assert abs(out["depth"][0, 16 + dy, 16 + dx].item() - 2.0 * a) < 1e-12
    # an opaque one saturates at alpha = 0.99 in the middle
    out1 = rasterize(_single((0.0, 0.0, 0.0), 0.2, 1.0, col), cam, bg=bg)
    exp1 = torch.tensor([c * 0.99 + 0.01 * b for c, b in zip(col, bg)], dtype=torch.float64)
    torch.testing.assert_close(out1["color"][:, 16, 16], exp1, atol=1e-12, rtol=1e-10)
    assert abs(out1["alpha"][0, 16, 16].item() - 0.99) < 1e-12
    # symmetric about the centre pixel, and nothing beyond the 1/255 cut-off
    torch.testing.assert_close(out["alpha"][0], out["alpha"][0].flip(0).flip(1))
    radius = math.ceil(3 * math.sqrt(var_f))
    far = 16 + radius + 2
    assert out["alpha"][0, 16, far].item() == 0.0
    torch.testing.assert_close(out["color"][:, 0, 0], torch.tensor(bg, dtype=torch.float64))


def test_offset_gaussian_projects_to_expected_pixel():
    # a Gaussian at camera-space (X, Y, Z) lands at x = fx W X / Z + cx W - 0.5, y likewise
    W, H = 48, 32
    cam = Camera(torch.eye(4), intrinsics_from_fov(math.radians(50)), W, H)
    X, Y, Z = 0.3, -0.2, 2.5
    fxp = cam.intrinsics[0, 0].item() * W
    fyp = cam.intrinsics[1, 1].item() * H
    mx, my = fxp * X / Z + 0.5 * W - 0.5, fyp * Y / Z + 0.5 * H - 0.5
    out = rasterize(_single((X, Y, Z), 0.08, 0.9, (1, 1, 1)), cam, bg=(0, 0, 0))
    a = out["alpha"][0]
    yy, xx = torch.meshgrid(torch.arange(H, dtype=a.dtype), torch.arange(W, dtype=a.dtype), indexing="ij")
    # alpha-weighted centroid of a small symmetric blob sits at the projected mean (up to the 1/255 truncation)
    cx_ = (a * xx).sum() / a.sum()
    cy_ = (a * yy).sum() / a.sum()
    assert abs(cx_.item() - mx) < 0.05 and abs(cy_.item() - my) < 0.05
    iy, ix = divmod(int(a.argmax()), W)
    assert abs(ix - mx) <= 0.5 and abs(iy - my) <= 0.5


# ------------------------------------------------------------------------------------------------------------------
# culling and early stop
# ------------------------------------------------------------------------------------------------------------------
def test_culling_behind_and_near_camera():
    cam = Camera(torch.eye(4), intrinsics_from_fov(math.radians(40)), 32, 32)
    bg = (0.1, 0.2, 0.3)
    for z in (-1.0, 0.0, 0.15, 0.2):
        g = [t.requires_grad_(True) for t in _single((0.0, 0.0, z), 0.05, 0.9, (1, 0, 0))]
        out = rasterize(tuple(g), cam, bg=bg)
        assert out["alpha"].abs().max().item() == 0.0, z
        torch.testing.assert_close(out["color"], torch.tensor(bg, dtype=torch.float64)[:, None, None].expand(3, 32, 32))
        out["color"].sum().backward()
        for t in g:
            assert t.grad is None or (t.grad == 0).all()
    out = rasterize(_single((0.0, 0.0, 0.25), 0.01, 0.9, (1, 0, 0)), cam, bg=bg)
    assert out["alpha"].max().item() > 0.5


def test_early_stop_front_layers_hide_back():
    cam = Camera(torch.eye(4), intrinsics_from_fov(math.radians(40)), 32, 32)
    f = cam.intrinsics[0, 0].item() * 32
    depths = [1.0, 1.1, 1.2, 1.3]  # four broad front layers, then a back Gaussian
    s = 0.3
    alphas = []
    for z in depths:
        var = (f * s / z) ** 2
        vf = var + 0.1
        coef = math.sqrt(var * var / (vf * vf + 1e-6) + 1e-6)
        alphas.append(min(0.99, 0.95 * coef))
    means = torch.tensor([[0.0, 0.0, z] for z in depths] + [[0.0, 0.0, 2.0]], dtype=torch.float64)
    scales = torch.full((5, 3), s, dtype=torch.float64)
    rots = torch.tensor([[1.0, 0, 0, 0]] * 5, dtype=torch.float64)
    opac = torch.tensor([0.95] * 4 + [0.9], dtype=torch.float64, requires_grad=True)
    cols = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0.3, 0.3, 0.3]], dtype=torch.float64,
                        requires_grad=True)
    out = rasterize((means, scales, rots, opac, cols), cam, bg=(1, 1, 1), chunk=2)
    # by hand at the centre-most pixel (15.5 is the centre; pixel 15 is 0.5 px off in x and y)
    Tr, C = 1.0, torch.zeros(3, dtype=torch.float64)
    for i, a0 in enumerate(alphas):
        var = (f * s / depths[i]) ** 2 + 0.1
        a = a0 * math.exp(-0.5 * 0.5 / var)
        a = min(a, 0.99)
        if Tr * (1 - a) < 1e-4:
            break
        C = C + cols[i].detach() * a * Tr
        Tr *= 1 - a
    else:
        raise AssertionError("scene should saturate")
    assert 1e-4 <= Tr < 1e-3
    torch.testing.assert_close(out["color"][:, 15, 15], C + Tr, atol=1e-12, rtol=1e-10)
    # the back Gaussian contributes nothing where the front saturates, and receives no gradient from there
    out["color"][:, 15:17, 15:17].sum().backward()
    assert cols.grad[4].abs().max().item() == 0.0 and opac.grad[4].item() == 0.0
    assert cols.grad[:3].abs().min().item() > 0


# ------------------------------------------------------------------------------------------------------------------
# API: Gaussians input, render_frames, SSAA
# ------------------------------------------------------------------------------------------------------------------
def test_gaussians_object_input_and_render_frames():
    means, scales, rots, opac, cols = random_scene(80, 21)
    gs = Gaussians.from_activated(means, cols, scales, rots, opac[:, None])
    cam = small_camera()
    a = rasterize(gs, cam)
    b = rasterize((gs.get_xyz, gs.get_scaling, gs.get_rotation, gs.get_opacity, gs.get_colors), cam)
    torch.testing.assert_close(a["color"], b["color"])
    c = rasterize((means, scales, rots, opac, cols), cam)
    torch.testing.assert_close(a["color"], c["color"], atol=2e-4, rtol=0)  # from_activated round trip
    cams = [small_camera(yaw=y) for y in (0.0, 1.0, 2.0)]
    fr = render_frames([gs, gs, gs], cams)
    assert fr["color"].shape == (3, 3, 24, 32) and fr["depth"].shape == (3, 1, 24, 32)
    torch.testing.assert_close(fr["color"][1], rasterize(gs, cams[1])["color"])
    fr1 = render_frames(gs, cams)
    torch.testing.assert_close(fr1["color"], fr["color"])
    # gradients flow to the raw Gaussian parameters
    raw = {k: v.clone().requires_grad_(True) for k, v in gs.raw_tensors().items()}
    gs2 = Gaussians(**raw)
    rasterize(gs2, cam)["color"].sum().backward()
    for k, v in raw.items():
        assert v.grad is not None and v.grad.abs().sum() > 0, k


def test_ssaa_is_area_downsampled_supersampled_render():
    scene = tuple(random_scene(60, 4))
    cam = small_camera()
    out = rasterize(scene, cam, ssaa=2)
    hi = rasterize(scene, cam.resized(64, 48))
    torch.testing.assert_close(out["color"], torch.nn.functional.avg_pool2d(hi["color"][None], 2)[0])
    assert out["color"].shape == (3, 24, 32)


def test_empty_and_no_grad_path():
    cam = small_camera()
    e = tuple(torch.zeros(0, k) for k in (3, 3, 4)) + (torch.zeros(0), torch.zeros(0, 3))
    out = rasterize(e, cam, bg=(0.5, 0.5, 0.5))
    assert torch.all(out["color"] == 0.5) and torch.all(out["alpha"] == 0)
    scene = tuple(random_scene(40, 9))
    with torch.no_grad():
        a = rasterize(scene, cam)
    b = rasterize(tuple(t.clone().requires_grad_(True) for t in scene), cam)
    torch.testing.assert_close(a["color"], b["color"].detach(), atol=1e-6, rtol=0)
