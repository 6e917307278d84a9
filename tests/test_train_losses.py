"""Losses and flow-matching maths of ss4d.train."""
from __future__ import annotations

import math

import pytest
import torch
from test_train_helpers import one_thread  # noqa: F401 (autouse fixture)

from ss4d.gaussians import Gaussians
from ss4d.train import flow_matching as fm
from ss4d.train import losses as L


def test_dice_formula_and_perfect_prediction():
    logits = torch.tensor([[2.0, -1.0], [0.5, -3.0]])
    y = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)
    p = torch.sigmoid(logits)
    want = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    assert L.dice_loss(logits, y).item() == pytest.approx(want.item(), rel=1e-6)
    big = torch.where(y, 30.0, -30.0)
    assert L.dice_loss(big, y).item() < 1e-6


def test_kl_formula():
    assert L.kl_loss(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0
    m, lv = torch.tensor([1.0, -2.0]), torch.tensor([0.5, -1.0])
    want = 0.5 * torch.mean(m**2 + lv.exp() - lv - 1)
    assert L.kl_loss(m, lv).item() == pytest.approx(want.item(), rel=1e-6)


def test_ssim_matches_direct_per_window_computation():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 12, 13, generator=g)
    b = (a + 0.2 * torch.randn(3, 12, 13, generator=g)).clamp(0, 1)
    ref = L.ssim_reference(a, b)
    got = L.ssim(a, b, reduction="none")
    torch.testing.assert_close(got.double(), ref, atol=2e-5, rtol=0)
    assert L.ssim(a, b).item() == pytest.approx(ref.mean().item(), abs=1e-5)
    assert L.ssim(a, a).item() == pytest.approx(1.0, abs=1e-5)
    # batched and per-image reductions agree
    batch = torch.stack([a, b])
    per = L.ssim(batch, batch.flip(0), reduction="batch")
    assert per.shape == (2,) and per[0].item() == pytest.approx(L.ssim(a, b).item(), abs=1e-6)
    w = L.gaussian_window()
    assert w.shape == (11,) and w.sum().item() == pytest.approx(1.0) and w.argmax().item() == 5


def test_gaussian_regularizers():
    n = 5
    scales = torch.full((n, 3), 0.02)
    opac = torch.full((n,), 0.7)
    g = Gaussians.from_activated(torch.zeros(n, 3), torch.full((n, 3), 0.5), scales, torch.tensor([[1.0, 0, 0, 0]] * n),
                                 opac)
    r = L.gaussian_regularizers([g, g])
    assert r["reg_volume"].item() == pytest.approx(1e4 * 0.02**3, rel=1e-3)
    assert r["reg_opacity"].item() == pytest.approx(1e-3 * 0.3**2, rel=1e-3)


def test_lpips_hook_optional_and_range():
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert L.lpips_loss(None, x, y) is None
    seen = {}

    def fake(a, b):
        seen["range"] = (float(a.min()), float(a.max()))
        return (a - b).abs().mean((1, 2, 3))

    v = L.lpips_loss(fake, x, y)
    assert v.item() == pytest.approx(2 * (x - y).abs().mean().item(), rel=1e-5)
    assert seen["range"][0] >= -1 and seen["range"][1] <= 1 and seen["range"][0] < 0


def test_flow_matching_identities():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 8, 3, 3, 3, generator=g), torch.randn(4, 8, 3, 3, 3, generator=g)
    t = torch.tensor([0.0, 0.3, 0.7, 1.0])
    xt = fm.diffuse(x0, t, eps)
    s = fm.SIGMA_MIN
    torch.testing.assert_close(xt[0], x0[0] + s * eps[0])
    torch.testing.assert_close(xt[3], eps[3])
    v = fm.velocity_target(x0, eps)
    torch.testing.assert_close(v, (1 - s) * eps - x0)
    torch.testing.assert_close(fm.predict_x0(xt, t, v), x0, atol=1e-5, rtol=1e-5)
    # dx_t/dt == v (the flow the model learns)
    h = 1e-3
    dx = (fm.diffuse(x0, t[1] + h, eps) - fm.diffuse(x0, t[1] - h, eps)) / (2 * h)
    torch.testing.assert_close(dx, v, atol=1e-3, rtol=1e-3)


def test_timestep_distribution_and_model_time():
    t = fm.sample_t(torch.Generator().manual_seed(0), 20000, 1.0, 1.0)
    assert 0 < t.min() and t.max() < 1
    assert t.median().item() == pytest.approx(1 / (1 + math.exp(-1)), abs=0.01)
    tm = fm.model_time(torch.tensor([0.25, 0.5]), 3)
    assert tm.tolist() == [250.0] * 3 + [500.0] * 3


def test_drop_condition_per_clip():
    cond = torch.ones(6, 4, 2)
    out = fm.drop_condition(cond, torch.tensor([False, True, False]), 2)
    assert out[:2].eq(1).all() and out[2:4].eq(0).all() and out[4:].eq(1).all()


def test_preview_sampler_recovers_constant_target():
    """Training previews use the pipeline's sampler: the exact velocity of a point mass at x0 brings any noise there."""
    from ss4d.train.flow_trainers import preview_sample

    x0 = torch.randn(2, 3)

    def flow(x, t, cond, num_frames=None):  # exact velocity field of a point mass at x0 (sigma_min = 0)
        return (x - x0) / (t[:, None] / 1000.0)

    out = preview_sample(flow, torch.randn(2, 3), torch.zeros(2, 1), 2,
                         {"sigma_min": 0.0, "preview_steps": 5, "preview_cfg": 0.0})
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


def test_voxel_color_l1_against_a_direct_computation():
    from ss4d.gaussians import SH_C0
    from ss4d.sparse import SparseTensor
    from ss4d.train.trainers import voxel_color_l1

    g = torch.Generator().manual_seed(0)
    G = 3
    coords = torch.tensor([[0, 1, 2, 3], [0, 4, 4, 4], [1, 0, 0, 0], [1, 2, 2, 2], [1, 5, 5, 5]], dtype=torch.int32)
    straight = 0.3 + 0.6 * torch.rand(5, 3, generator=g)
    alpha = torch.tensor([1.0, 0.5, 0.8, 0.02, 1.0])
    feats = torch.cat([straight * alpha[:, None], alpha[:, None]], 1)
    x = SparseTensor(feats, coords, 2)
    target = (feats[:, :3] / alpha.clamp_min(0.05)[:, None]).clamp(0, 1)

    def frames(colors):  # colors [N, G, 3] -> per-frame Gaussians with those SH-DC colours
        dc = (colors - 0.5) / SH_C0
        out = []
        for sl in (slice(0, 2), slice(2, 5)):
            n = (sl.stop - sl.start) * G
            out.append(Gaussians(torch.zeros(n, 3), dc[sl].reshape(n, 1, 3), torch.zeros(n, 3), torch.zeros(n, 4),
                                 torch.zeros(n, 1)))
        return out

    exact = target[:, None, :].expand(5, G, 3).clone()
    assert voxel_color_l1(frames(exact), x).item() == pytest.approx(0.0, abs=1e-6)
    spread = exact + torch.tensor([-0.05, 0.0, 0.05])[None, :, None]  # zero-mean spread around the target: still 0
    assert voxel_color_l1(frames(spread), x).item() == pytest.approx(0.0, abs=1e-6)
    shifted = exact + 0.2
    want = ((target + 0.2) - target).abs().mean().item()
    assert voxel_color_l1(frames(shifted), x).item() == pytest.approx(want, rel=1e-5)
