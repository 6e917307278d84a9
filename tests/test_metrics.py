"""ss4d.eval.metrics against hand-computed references (closed forms, direct loops, brute force)."""
import math

import numpy as np
import pytest
import torch

from ss4d.eval import metrics as M
from ss4d.eval.metrics import (
    MetricResult,
    composite_white,
    frame_metrics,
    mask_iou,
    masked_psnr,
    masked_ssim,
    psnr,
    ssim,
    temporal_change,
    temporal_flicker,
    voxel_chamfer,
    voxel_iou,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is as fast and avoids OpenMP stalls on a busy shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


C1 = 0.01**2
C2 = 0.03**2


# ------------------------------------------------------------------------------------------------ PSNR
def test_psnr_constant_offset_closed_form():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 3, 16, 20, generator=g, dtype=torch.float64) * 0.5
    d = torch.tensor([0.01, 0.1, 0.25], dtype=torch.float64).view(1, 3, 1, 1, 1)
    pred = gt + d
    out = psnr(pred, gt)
    assert out.shape == (2, 3)
    ref = -20 * torch.log10(d.view(1, 3)).expand(2, 3)  # 10 log10(1 / d^2)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    # data range L: 10 log10(L^2 / d^2)
    torch.testing.assert_close(psnr(pred * 255, gt * 255, data_range=255.0), ref, atol=1e-6, rtol=0)


def test_psnr_identical_is_inf_and_half_pixels():
    x = torch.rand(1, 3, 8, 8)
    assert math.isinf(psnr(x, x).item())
    y = x.clone()
    y[..., :4, :] += 0.2  # half of the pixels off by 0.2: MSE = 0.02
    assert psnr(y, x).item() == pytest.approx(10 * math.log10(1 / 0.02), abs=1e-5)


# ------------------------------------------------------------------------------------------------ SSIM
def _ssim_loop(x: np.ndarray, y: np.ndarray, L=1.0) -> float:
    """Direct per-window SSIM: 11x11 window exp(-r^2/(2*1.5^2)) normalised, valid positions, mean over C and windows."""
    r = np.arange(11) - 5.0
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    vals = []
    C, H, W = x.shape
    for c in range(C):
        for i in range(H - 10):
            for j in range(W - 10):
                a, b = x[c, i:i + 11, j:j + 11], y[c, i:i + 11, j:j + 11]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
                cov = (w * (a - ma) * (b - mb)).sum()
                vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_direct_window_loop():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 15, 14, generator=g)
    y = (x + 0.15 * torch.randn(2, 3, 15, 14, generator=g)).clamp(0, 1)
    out = ssim(x, y)
    assert out.shape == (2,)
    for b in range(2):
        assert out[b].item() == pytest.approx(_ssim_loop(x[b].double().numpy(), y[b].double().numpy()), abs=1e-10)


def test_ssim_identical_and_constant_closed_form():
    x = torch.rand(4, 3, 12, 12)
    torch.testing.assert_close(ssim(x, x), torch.ones(4, dtype=torch.float64), atol=1e-12, rtol=0)
    a, b = 0.3, 0.7
    xa, xb = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    ref = (2 * a * b + C1) / (a * a + b * b + C1)  # variances 0: the structure term is C2 / C2 = 1
    assert ssim(xa, xb).item() == pytest.approx(ref, abs=1e-7)
    assert ssim(xa, xb).item() < 1


def test_ssim_chunking_and_small_image_error():
    x, y = torch.rand(5, 3, 11, 13), torch.rand(5, 3, 11, 13)
    torch.testing.assert_close(ssim(x, y, chunk=2), ssim(x, y, chunk=8))
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 3, 10, 20), torch.rand(1, 3, 10, 20))


# ------------------------------------------------------------------------------------------------ masks, RGBA
def test_composite_white_and_mask_iou():
    rgba = torch.zeros(1, 4, 2, 2)
    rgba[0, :3] = 0.2
    rgba[0, 3] = torch.tensor([[1.0, 0.5], [0.0, 0.25]])
    out = composite_white(rgba)
    ref = 0.2 * rgba[0, 3] + (1 - rgba[0, 3])
    torch.testing.assert_close(out[0], ref.expand(3, 2, 2))
    torch.testing.assert_close(composite_white(rgba, premultiplied=True)[0], (0.2 + 1 - rgba[0, 3]).expand(3, 2, 2))

    a = torch.zeros(2, 10, 10)
    b = torch.zeros(2, 10, 10)
    a[0, 0:4, 0:5] = 1  # 20 px
    b[0, 2:6, 0:5] = 0.9  # 20 px, overlap 2 rows x 5 = 10 -> IoU 10 / 30
    iou = mask_iou(a, b)
    assert iou[0].item() == pytest.approx(1 / 3)
    assert iou[1].item() == 1.0  # both empty


def test_frame_metrics_rgba():
    x = torch.rand(2, 4, 12, 12)
    out = frame_metrics(x, x)
    assert torch.isinf(out["psnr"]).all() and torch.allclose(out["ssim"], torch.ones(2, dtype=torch.float64))
    assert torch.equal(out["mask_iou"], torch.ones(2, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ masked metrics
def _ssim_window(x: np.ndarray, y: np.ndarray, i: int, j: int) -> float:
    """SSIM of the one 11x11 window whose top-left corner is (i, j), mean over channels (direct formula)."""
    r = np.arange(11) - 5.0
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    vals = []
    for c in range(x.shape[0]):
        a, b = x[c, i:i + 11, j:j + 11], y[c, i:i + 11, j:j + 11]
        ma, mb = (w * a).sum(), (w * b).sum()
        va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
        cov = (w * (a - ma) * (b - mb)).sum()
        vals.append(((2 * ma * mb + C1) * (2 * cov + C2)) / ((ma**2 + mb**2 + C1) * (va + vb + C2)))
    return float(np.mean(vals))


def test_masked_psnr_hand_computed():
    # 4x4 white images; the truth has a 2x2 black square; the prediction shows a grey (0.5) square one pixel off
    gt = torch.ones(1, 3, 4, 4)
    gt[0, :, 0:2, 0:2] = 0.0
    pred = torch.ones(1, 3, 4, 4)
    pred[0, :, 1:3, 1:3] = 0.5
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0:2, 0:2] = True
    mask[0, 1:3, 1:3] = True          # union: 7 pixels
    # per pixel squared error (same in all channels): (0,0),(0,1),(1,0): 1; (1,1): 0.25; (1,2),(2,1),(2,2): 0.25
    mse = (3 * 1.0 + 4 * 0.25) / 7
    assert masked_psnr(pred, gt, mask).item() == pytest.approx(10 * math.log10(1 / mse), abs=1e-9)
    full = (3 * 1.0 + 4 * 0.25) / 16
    assert psnr(pred, gt).item() == pytest.approx(10 * math.log10(1 / full), abs=1e-6)
    assert math.isnan(masked_psnr(pred, gt, torch.zeros_like(mask)).item())        # empty mask: undefined
    assert math.isinf(masked_psnr(gt, gt, mask).item())
    # union_mask of alpha > 0.5, and frame_metrics uses it (16x16: SSIM needs 11x11 windows)
    pa, ga = torch.zeros(1, 16, 16), torch.zeros(1, 16, 16)
    pa[0, 1:3, 1:3], ga[0, 0:2, 0:2] = 1.0, 0.8
    big = torch.zeros(1, 16, 16, dtype=torch.bool)
    big[:, :4, :4] = mask
    assert torch.equal(M.union_mask(pa, ga), big)
    p16, g16 = torch.ones(1, 3, 16, 16), torch.zeros(1, 3, 16, 16)
    p16[..., :4, :4] = pred
    fm = frame_metrics(torch.cat([p16, pa[:, None]], 1), torch.cat([g16, ga[:, None]], 1))
    # white-composited truth: 0 * 0.8 + 0.2 = 0.2 inside its square; squared errors 0.64 (3 px) and 0.09 (1 px) on
    # the truth's square, 0.25 on the prediction's other 3 pixels
    mse_w = (3 * 0.64 + 0.09 + 3 * 0.25) / 7
    assert fm["masked_psnr"].item() == pytest.approx(10 * math.log10(1 / mse_w), abs=1e-6)
    assert fm["psnr"].item() == pytest.approx(10 * math.log10(256 / (7 * mse_w)), abs=1e-6)


def test_masked_ssim_is_mean_over_masked_window_centres():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 14, 15, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(1, 3, 14, 15, generator=g, dtype=torch.float64)).clamp(0, 1)
    mask = torch.zeros(1, 14, 15, dtype=torch.bool)
    mask[0, 5, 5] = True     # centre of the window at (0, 0)
    mask[0, 7, 8] = True     # centre of the window at (2, 3)
    mask[0, 0, 0] = True     # no valid window is centred here: ignored
    ref = np.mean([_ssim_window(x[0].numpy(), y[0].numpy(), 0, 0), _ssim_window(x[0].numpy(), y[0].numpy(), 2, 3)])
    assert masked_ssim(x, y, mask).item() == pytest.approx(ref, abs=1e-10)
    torch.testing.assert_close(masked_ssim(x, y, torch.ones_like(mask)), ssim(x, y))
    assert math.isnan(masked_ssim(x, y, torch.zeros_like(mask)).item())


# ------------------------------------------------------------------------------------------------ voxels
def _cube(n, off=(0, 0, 0)):
    r = torch.arange(n)
    c = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    return (c + torch.tensor(off)).int()


@pytest.mark.parametrize("n,k", [(4, 1), (6, 2), (5, 5), (3, 7)])
def test_voxel_cubes_offset_closed_form(n, k):
    R = 64
    a, b = _cube(n, (10, 10, 10)), _cube(n, (10 + k, 10, 10))
    iou = voxel_iou(a, b).item()
    cd = voxel_chamfer(a, b, R).item()
    cd2 = voxel_chamfer(a, b, R, squared=True).item()
    if k <= n:
        # a voxel at x-offset i < k is k - i voxels from the other cube, else inside it; same both ways
        assert iou == pytest.approx((n - k) / (n + k))
        assert cd == pytest.approx(k * (k + 1) / (n * R))
        assert cd2 == pytest.approx(k * (k + 1) * (2 * k + 1) / (3 * n * R * R))
    else:  # disjoint: every voxel at x-offset i is k - i away
        assert iou == 0.0
        assert cd == pytest.approx(2 * (k - (n - 1) / 2) / R)


def test_voxel_chamfer_matches_brute_force_and_per_frame():
    g = torch.Generator().manual_seed(3)
    R = 32
    frames_a = [torch.randint(0, R, (n, 3), generator=g) for n in (40, 1, 100)]
    frames_b = [torch.randint(0, R, (n, 3), generator=g) for n in (30, 50, 7)]
    cds = voxel_chamfer(frames_a, frames_b, R)
    ious = voxel_iou(frames_a, frames_b)
    assert cds.shape == (3,) and ious.shape == (3,)
    for t, (a, b) in enumerate(zip(frames_a, frames_b)):
        ua, ub = torch.unique(a, dim=0), torch.unique(b, dim=0)
        ca, cb = (ua.double() + 0.5) / R - 0.5, (ub.double() + 0.5) / R - 0.5
        d = torch.cdist(ca, cb)
        ref = d.min(1).values.mean() + d.min(0).values.mean()
        assert cds[t].item() == pytest.approx(ref.item(), rel=1e-9)
        sa, sb = {tuple(v) for v in ua.tolist()}, {tuple(v) for v in ub.tolist()}
        assert ious[t].item() == pytest.approx(len(sa & sb) / len(sa | sb))


def test_voxel_chamfer_brute_force_path(monkeypatch):
    a, b = _cube(4), _cube(4, (2, 1, 0))
    fast = voxel_chamfer(a, b, 16).item()
    monkeypatch.setattr(M, "_EDT_MAX_CELLS", 0)
    assert voxel_chamfer(a, b, 16).item() == pytest.approx(fast, rel=1e-12)


def test_voxel_empty_sets():
    e = torch.zeros(0, 3, dtype=torch.int32)
    a = _cube(2)
    assert voxel_iou(e, e).item() == 1.0 and voxel_chamfer(e, e, 8).item() == 0.0
    assert voxel_iou(a, e).item() == 0.0 and math.isinf(voxel_chamfer(a, e, 8).item())
    with pytest.raises(ValueError):
        voxel_iou([a], [a, a])


# ------------------------------------------------------------------------------------------------ flicker
def test_temporal_flicker_closed_form():
    T = 5
    t = torch.arange(T, dtype=torch.float32).view(1, T, 1, 1, 1)
    d = torch.tensor([0.05, 0.1]).view(2, 1, 1, 1, 1)
    ramp = (t * d).expand(2, T, 3, 4, 4)  # two views, change d per frame
    gt = torch.full((2, T, 3, 4, 4), 0.5)
    torch.testing.assert_close(temporal_change(ramp), torch.tensor([0.05, 0.1], dtype=torch.float64))
    torch.testing.assert_close(temporal_flicker(ramp, gt), torch.tensor([0.05, 0.1], dtype=torch.float64))
    blink = torch.zeros(1, 4, 3, 2, 2)
    blink[:, 1::2] = 1.0  # 0,1,0,1 -> |change| 1 everywhere; a ramp 0..1 over 4 frames changes 1/3 per step
    ramp1 = torch.linspace(0, 1, 4).view(1, 4, 1, 1, 1).expand(1, 4, 3, 2, 2)
    assert temporal_flicker(blink, ramp1).item() == pytest.approx(1 - 1 / 3)
    assert temporal_flicker(ramp1, blink).item() == pytest.approx(1 / 3 - 1)  # smoother than the truth: negative


def test_metric_result():
    r = MetricResult.not_computed("no weights")
    v, why = r
    assert v is None and why == "no weights" and not r.computed and "not computed" in str(r)
    assert MetricResult(torch.tensor(0.5)).as_dict() == {"computed": True, "value": 0.5, "reason": None}


def test_tolerant_voxel_iou_against_brute_force():
    """tol = 0 is the plain voxel IoU; tol = 1 matches a brute-force Chebyshev-neighbour count; a set shifted by one
    voxel is forgiven entirely."""
    from ss4d.eval.metrics import voxel_iou, voxel_iou_tolerant

    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        a = torch.unique(torch.randint(0, 9, (40, 3), generator=g), dim=0)
        b = torch.unique(torch.randint(0, 9, (50, 3), generator=g), dim=0)
        assert float(voxel_iou_tolerant(a, b, 0)) == pytest.approx(float(voxel_iou(a, b)), abs=1e-12)
        near_a = sum(any(int((x - y).abs().max()) <= 1 for y in b) for x in a)
        near_b = sum(any(int((y - x).abs().max()) <= 1 for x in a) for y in b)
        p, r = near_a / len(a), near_b / len(b)
        ref = p * r / (p + r - p * r) if p and r else 0.0
        assert float(voxel_iou_tolerant(a, b, 1)) == pytest.approx(ref, abs=1e-12)
    cube = torch.stack(torch.meshgrid(*[torch.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    shifted = cube + torch.tensor([0, 0, 1])
    assert float(voxel_iou_tolerant(cube, shifted, 1)) == 1.0
    assert float(voxel_iou(cube, shifted)) == pytest.approx(48 / 80)
    far = cube + 10
    assert float(voxel_iou_tolerant(cube, far, 1)) == 0.0
    assert voxel_iou_tolerant([cube, cube], [shifted, torch.zeros(0, 3, dtype=torch.long)], 1).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="tol"):
        voxel_iou_tolerant(cube, cube, -1)
