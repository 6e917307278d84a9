"""Silhouette guidance / carve / fill of the structure stage (ss4d.pipeline.silhouette), against brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ss4d.models.checkpoint import CheckpointError
from ss4d.pipeline.silhouette import SilhouetteGuide, SilhouetteSettings, read_silhouette_settings
from ss4d.render.camera import orbit_camera


def _settings(**kw) -> SilhouetteSettings:
    base = dict(size=12, yaws_deg=(0.0,), elevations_deg=(10.0,))
    base.update(kw)
    return SilhouetteSettings(**base)


def _cam(s: SilhouetteSettings):
    return orbit_camera(math.radians(s.yaws_deg[0]), math.radians(s.elevations_deg[0]), s.radius,
                        math.radians(s.fov_deg), 1, 1)


def _centres(R: int) -> torch.Tensor:
    i = (torch.arange(R, dtype=torch.float32) + 0.5) / R - 0.5
    return torch.stack(torch.meshgrid(i, i, i, indexing="ij"), -1).reshape(-1, 3)


def test_soft_silhouette_equals_brute_force():
    """1 - prod over voxels of (1 - p)^(covered fraction of the pixel), each footprint computed independently by
    supersampling the voxel's projected square."""
    R, S = 4, 12
    s = _settings(size=S)
    g = SilhouetteGuide(torch.nn.Identity(), np.zeros((1, 8, 8), np.uint8), s)
    torch.manual_seed(0)
    logits = torch.randn(1, 1, R, R, R) * 2
    uv = _cam(s).project(_centres(R))[0]
    box = (0.2, 0.25, 0.8, 0.85)
    ours = g.silhouettes(logits, uv, box)[0]
    # brute force: the voxel's square (centre +- half the projected voxel size) sampled on a fine grid
    ext = float((uv.max(0).values - uv.min(0).values).max())
    h = ext / R / 2
    p = torch.sigmoid(logits.flatten()).double()
    logq = torch.zeros(S, S, dtype=torch.float64)
    n = 64
    offs = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 - 1
    for v in range(R ** 3):
        cx = (float(uv[v, 0]) - box[0]) / (box[2] - box[0]) * S
        cy = (float(uv[v, 1]) - box[1]) / (box[3] - box[1]) * S
        hx, hy = h / (box[2] - box[0]) * S, h / (box[3] - box[1]) * S
        xs, ys = cx + offs * hx, cy + offs * hy
        area = (2 * hx) * (2 * hy)
        for py in range(S):
            fy = ((ys >= py) & (ys < py + 1)).double().mean() * 2 * hy
            if fy == 0:
                continue
            for px in range(S):
                fx = ((xs >= px) & (xs < px + 1)).double().mean() * 2 * hx
                if fx > 0:
                    frac = min(float(fx * fy), 1.0)
                    logq[py, px] += math.log1p(-float(p[v])) * frac
        assert area > 0
    ref = 1 - torch.exp(logq)
    torch.testing.assert_close(ours.double(), ref, atol=0.03, rtol=0)


def test_guided_step_reduces_the_silhouette_mismatch():
    """One guided step moves the predicted clean latent so that its silhouettes match the masks better
    (decoder: a fixed random linear map from a small latent to occupancy logits)."""
    R = 8
    s = _settings(size=16, strength=0.5)
    torch.manual_seed(1)
    W = torch.randn(R ** 3, 16) * 0.5

    class Linear(torch.nn.Module):
        def forward(self, z):
            return (z.reshape(z.shape[0], -1) @ W.T).reshape(z.shape[0], 1, R, R, R)

    dec = Linear()
    yy, xx = np.mgrid[:64, :64]
    masks = (((xx - 32) ** 2 + (yy - 30) ** 2) < 14 ** 2).astype(np.uint8)[None].repeat(2, 0) * 255
    g = SilhouetteGuide(dec, masks, s)
    x = torch.randn(2, 16)
    v = torch.randn(2, 16)
    t = 0.6

    def mismatch(x0):
        logits = dec(x0)
        _l, yaw, el, box = g._view_fits(logits)[0]
        sil = g.silhouettes(logits, g._uv(R, yaw, el), box)
        return float(((sil - g.target) ** 2).sum())

    sm = 1e-5
    x0 = (1 - sm) * x - (sm + (1 - sm) * t) * v
    v2 = g(x, t, v, sm)
    x0_new = (1 - sm) * x - (sm + (1 - sm) * t) * v2
    assert mismatch(x0_new) < mismatch(x0)
    # the step size is the strength, as the per-frame RMS of the change of the clean latent
    delta = (x0_new - x0).flatten(1).pow(2).mean(1).sqrt()
    torch.testing.assert_close(delta, torch.full((2,), 0.5), atol=1e-4, rtol=1e-4)
    assert g(x, 0.0, v, sm) is v  # nothing to guide at t = 0
    assert SilhouetteGuide(dec, masks, _settings(strength=0.0))(x, t, v) is v


def _projected_pixels(occ_flat: torch.Tensor, R: int, s: SilhouetteSettings, box, S: int) -> set:
    uv = _cam(s).project(_centres(R))[0]
    px = ((uv[:, 0] - box[0]) / (box[2] - box[0]) * S).floor().long()
    py = ((uv[:, 1] - box[1]) / (box[3] - box[1]) * S).floor().long()
    idx = occ_flat.nonzero().flatten()
    return {(int(py[i]), int(px[i])) for i in idx}


def test_carve_keeps_only_voxels_over_the_mask_and_fill_covers_it():
    R = 16
    s = _settings(size=16, carve=True, fill=True)
    # a full cube of voxels; the mask: a disc in the middle of the crop
    logits = torch.full((1, 1, R, R, R), -5.0)
    logits[0, 0, 4:12, 4:12, 4:12] = 5.0
    g0 = SilhouetteGuide(torch.nn.Identity(), np.zeros((1, 64, 64), np.uint8), s)
    _l, _y, _e, box = g0._view_fits(logits)[0]
    S = 16
    yy, xx = np.mgrid[:64, :64]
    disc = (((xx - 32) ** 2 + (yy - 32) ** 2) < 12 ** 2).astype(np.uint8)[None] * 255
    g = SilhouetteGuide(torch.nn.Identity(), disc, s)
    occ = g.refine(logits)
    soft = torch.nn.functional.interpolate(torch.from_numpy(disc)[:, None].float() / 255, size=(S, S),
                                           mode="area")[0, 0]
    inside = soft > 0.5
    pix = _projected_pixels(occ[0].flatten(), R, s, box, S)
    assert pix and all(bool(inside[y, x]) for y, x in pix)  # carve: every voxel centre lands on the mask
    assert occ.sum() < (logits > 0).sum()
    assert (occ <= (logits[:, 0] > 0)).all()  # carve only removes


def test_fill_closes_a_gap_the_mask_covers():
    """Two blocks with a gap between them (along the image's horizontal axis); the mask is the silhouette of the full
    bar (same bounding box, hence the same crop): fill adds the gap's voxels, at the blocks' depths."""
    R, S = 16, 16
    s = _settings(size=S, fill=True)
    bar = torch.full((1, 1, R, R, R), -5.0)
    bar[0, 0, 6:10, 3:13, 6:10] = 5.0
    blocks = bar.clone()
    blocks[0, 0, :, 6:10] = -5.0
    g_true = SilhouetteGuide(torch.nn.Identity(), np.zeros((1, 64, 64), np.uint8), _settings(size=64))
    _l, yaw, el, box = g_true._view_fits(bar)[0]
    mask = (g_true.silhouettes(bar, g_true._uv(R, yaw, el), box) > 0.5).numpy().astype(np.uint8) * 255
    g = SilhouetteGuide(torch.nn.Identity(), mask, s)

    def covered(occ):
        lg = torch.where(occ, 10.0, -10.0)[:, None]
        _l, y2, e2, b2 = g._view_fits(lg)[0]
        return (g.silhouettes(lg, g._uv(R, y2, e2), b2)[0] > 0.5) & (g.target[0] > 0.5)

    want = int((g.target[0] > 0.5).sum())
    filled = g.refine(blocks)
    assert int(covered(blocks[:, 0] > 0).sum()) < 0.8 * want
    assert int(covered(filled).sum()) >= 0.95 * want
    assert (filled >= (blocks[:, 0] > 0)).all()  # fill only adds
    added = filled & ~(blocks[:, 0] > 0)
    assert added.any() and not added[0, :6].any() and not added[0, 10:].any()  # at the blocks' depths (x)


def test_settings_are_read_and_checked():
    assert not read_silhouette_settings(None).enabled
    assert read_silhouette_settings(0.2).strength == 0.2
    s = read_silhouette_settings({"carve": True, "fill": True, "elevations_deg": [0, 15]})
    assert s.enabled and s.elevations_deg == (0.0, 15.0)
    with pytest.raises(CheckpointError, match="unknown fields"):
        read_silhouette_settings({"strenght": 1}, CheckpointError)
    with pytest.raises(CheckpointError, match="invalid"):
        read_silhouette_settings({"strength": -1}, CheckpointError)
    with pytest.raises(CheckpointError, match="number or an object"):
        read_silhouette_settings("on", CheckpointError)


def test_pipeline_with_carve_keeps_voxels_on_the_masks(tmp_path):
    """End to end with a tiny random model: carving changes the structure and every frame keeps voxels."""
    from ss4d.models.tiny import build_tiny, write_model_folder
    from ss4d.pipeline.video_to_4d import VideoTo4DPipeline

    torch.set_num_threads(1)
    folder = write_model_folder(tmp_path / "m", build_tiny(0), num_frames=4,
                                extra={"silhouette_guidance": {"strength": 0.2, "carve": True, "fill": True}})
    pipe = VideoTo4DPipeline.from_pretrained(folder)
    yy, xx = np.mgrid[:64, :64]
    clip = np.zeros((4, 64, 64, 4), np.uint8)
    for t in range(4):
        clip[t][((xx - 24 - 3 * t) ** 2 + (yy - 30) ** 2) < 10 ** 2] = (200, 80, 40, 255)
    tr: dict = {}
    res = pipe(clip, seed=0, steps=2, trace=tr)
    off = VideoTo4DPipeline.from_pretrained(folder)
    off.silhouette = SilhouetteSettings()
    base = off(clip, seed=0, steps=2)
    assert all(len(c) > 0 for c in res.coords)
    assert [len(c) for c in res.coords] != [len(c) for c in base.coords]
    assert len(tr["silhouette_views"]) == 2  # one chosen view per guided step
