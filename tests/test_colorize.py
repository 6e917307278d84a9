"""Colour transfer from the input video (ss4d.pipeline.colorize) and its pipeline switch `color_from_input`."""
import math

import numpy as np
import pytest
import torch

from ss4d.gaussians import Gaussians
from ss4d.models.checkpoint import CheckpointError
from ss4d.models.tiny import build_tiny, write_model_folder
from ss4d.pipeline.colorize import fill_outside_mask, transfer_input_colors
from ss4d.pipeline.video_to_4d import VideoTo4DPipeline
from ss4d.render.camera import orbit_camera


def _gaussians(xyz: torch.Tensor, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    n = len(xyz)
    return Gaussians(xyz + 0.5, torch.randn(n, 1, 3, generator=g), torch.randn(n, 3, generator=g),
                     torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g))  # aabb: world = _xyz - 0.5


def test_fill_outside_mask_matches_brute_force_nearest():
    rng = np.random.default_rng(0)
    H, W = 9, 11
    alpha = (rng.random((H, W)) > 0.8).astype(np.float32) * rng.uniform(0.6, 1.0, (H, W)).astype(np.float32)
    straight = rng.random((H, W, 3)).astype(np.float32)
    rgb = np.rint(straight * alpha[..., None] * 255).astype(np.uint8)
    out = fill_outside_mask(rgb, alpha)
    inside = np.argwhere(alpha > 0.5)
    for y in range(H):
        for x in range(W):
            if alpha[y, x] > 0.5:   # unpremultiplied, up to the uint8 rounding
                np.testing.assert_allclose(out[y, x], np.clip(rgb[y, x] / 255 / alpha[y, x], 0, 1), atol=1e-6)
                continue
            d = ((inside - [y, x]) ** 2).sum(1)
            nearest = inside[d == d.min()]     # ties: any of them
            assert any(np.allclose(out[y, x], out[ny, nx]) for ny, nx in nearest)


def test_fill_outside_mask_errors():
    with pytest.raises(ValueError, match="no opaque pixel"):
        fill_outside_mask(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="differ in size"):
        fill_outside_mask(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8))


def test_transfer_takes_the_pixel_each_centre_projects_to():
    S, fov = 32, math.radians(40)
    cam = orbit_camera(0.0, 0.0, 2.0, fov, S, S)       # eye (2, 0, 0), looking at the origin, z up
    # every pixel a different colour: r = column, g = row
    yy, xx = np.meshgrid(np.arange(S), np.arange(S), indexing="ij")
    rgb = np.stack([xx * 8, yy * 8, np.full_like(xx, 100)], -1).astype(np.uint8)
    alpha = np.full((S, S), 255, np.uint8)
    xyz = torch.rand(200, 3, generator=torch.Generator().manual_seed(1)) * 0.8 - 0.4
    g = _gaussians(xyz)
    out = transfer_input_colors([g], rgb[None], alpha[None], cam)[0]
    # closed-form pinhole: right = +y, down = -z, depth = 2 - x, f = 0.5 / tan(fov / 2) (normalised)
    f = 0.5 / math.tan(fov / 2)
    x, y, z = xyz.double().unbind(1)
    u = 0.5 + f * y / (2 - x)
    v = 0.5 + f * (-z) / (2 - x)
    col = np.floor(u.numpy() * S).astype(int).clip(0, S - 1)
    row = np.floor(v.numpy() * S).astype(int).clip(0, S - 1)
    px, py = u.numpy() * S, v.numpy() * S
    near_edge = (np.abs(px - np.rint(px)) < 1e-4) | (np.abs(py - np.rint(py)) < 1e-4)
    expect = torch.from_numpy(rgb[row, col].astype(np.float32) / 255)
    got = out.get_colors
    assert torch.allclose(got[~torch.from_numpy(near_edge)], expect[~torch.from_numpy(near_edge)], atol=1e-5)
    for name in ("_xyz", "_scaling", "_rotation", "_opacity"):
        assert torch.equal(getattr(out, name), getattr(g, name))
    # strength blends the SH coefficients; 0 keeps them
    half = transfer_input_colors([g], rgb[None], alpha[None], cam, strength=0.5)[0]
    assert torch.allclose(half._features_dc, (g._features_dc + out._features_dc) / 2, atol=1e-6)
    assert torch.equal(transfer_input_colors([g], rgb[None], alpha[None], cam, strength=0.0)[0]._features_dc,
                       g._features_dc)
    with pytest.raises(ValueError, match="strength"):
        transfer_input_colors([g], rgb[None], alpha[None], cam, strength=2.0)
    with pytest.raises(ValueError, match="frames"):
        transfer_input_colors([g, g], rgb[None], alpha[None], cam)


def _red_disc_clip(T=2, size=64):
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for t in range(T):
        m = ((xx - 32 - 2 * t) ** 2 + (yy - 30) ** 2) < 18 ** 2
        f = np.zeros((size, size, 4), np.uint8)
        f[m] = (255, 0, 0, 255)
        frames.append(f)
    return np.stack(frames)


def test_pipeline_color_from_input(tmp_path):
    torch.set_num_threads(1)
    folder = write_model_folder(tmp_path / "m", build_tiny(0), extra={"color_from_input": True})
    pipe = VideoTo4DPipeline.from_pretrained(folder)
    clip = _red_disc_clip()
    res = pipe(clip, seed=0, steps=2)
    assert res.meta["input_view"] is not None and "color_from_input" in res.timings
    for g in res.gaussians:   # every Gaussian takes the (only) input colour
        assert len(g) > 0
        assert torch.allclose(g.get_colors, torch.tensor([1.0, 0.0, 0.0]).expand(len(g), 3), atol=0.02)
    # the per-call switch overrides the folder: off gives the decoder's own colours back
    off = pipe(clip, seed=0, steps=2, color_from_input=False)
    assert "input_view" not in off.meta
    assert not torch.allclose(off.gaussians[0].get_colors, res.gaussians[0].get_colors, atol=0.05)
    assert torch.equal(off.gaussians[0]._xyz, res.gaussians[0]._xyz)


def test_pipeline_json_color_from_input_is_checked(tmp_path):
    folder = write_model_folder(tmp_path / "bad", build_tiny(0), extra={"color_from_input": "yes"})
    with pytest.raises(CheckpointError, match="color_from_input"):
        VideoTo4DPipeline.from_pretrained(folder)
