"""Preview renders: orbit / grid / input-vs-output / voxel videos and the voxel z-buffer renderer."""
from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest
import torch
from PIL import Image

from ss4d.export.renders import orbit_schedule, render_grid_frames, write_all_renders
from ss4d.gaussians import Gaussians
from ss4d.render.camera import orbit_camera
from ss4d.render.input_view import crop_box, cropped_camera, estimate_input_view
from ss4d.render.preview import gaussians_to_voxels, render_voxels, voxel_colors_from_gaussians


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The workloads here are tiny: one intra-op thread avoids OpenMP spin-waits on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def blob_voxels(t: int, R: int = 64) -> np.ndarray:
    """An asymmetric little voxel object (body + an arm that moves with t) in an R^3 grid."""
    g = np.stack(np.meshgrid(*[np.arange(R)] * 3, indexing="ij"), -1).reshape(-1, 3)
    c = (g + 0.5) / R - 0.5
    m = (np.abs(c[:, 0]) < 0.12) & (np.abs(c[:, 1]) < 0.05) & (np.abs(c[:, 2]) < 0.2)
    m |= (c[:, 0] > 0.1) & (c[:, 0] < 0.3) & (np.abs(c[:, 1] - 0.04 * t) < 0.03) & (np.abs(c[:, 2] - 0.12) < 0.03)
    return g[m].astype(np.int32)


def tiny_asset(T: int = 3, n_vox: int = 30, G: int = 4, seed: int = 0):
    """Few Gaussians in the decoder's voxel-major layout (G per voxel) and their voxels."""
    rng = np.random.default_rng(seed)
    frames, coords = [], []
    for t in range(T):
        vox = np.unique(rng.integers(26, 38, (n_vox, 3)), axis=0).astype(np.int32)
        vox[:, 0] += t
        xyz = torch.from_numpy((vox + 0.5) / 64 - 0.5).float().repeat_interleave(G, 0)
        xyz += torch.from_numpy(rng.uniform(-0.4, 0.4, xyz.shape) / 64).float()
        n = len(xyz)
        col = torch.from_numpy(rng.random((n, 3))).float()
        frames.append(Gaussians.from_activated(xyz, col, torch.full((n, 3), 0.012),
                                               torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
                                               torch.full((n, 1), 0.8)))
        coords.append(vox)
    return frames, coords


def decode(path):
    if path.suffix == ".gif":
        im = Image.open(path)
        frames = []
        try:
            while True:
                frames.append(np.asarray(im.convert("RGB")))
                im.seek(im.tell() + 1)
        except EOFError:
            pass
        return frames
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_orbit_schedule():
    assert orbit_schedule(4, min_frames=10) == [0, 1, 2, 3] * 3
    assert orbit_schedule(16, min_frames=10) == list(range(16))
    assert orbit_schedule(3, num_frames=5) == [0, 1, 2, 0, 1]
    with pytest.raises(ValueError):
        orbit_schedule(0)


def test_write_all_renders(tmp_path):
    T, res = 3, 64
    frames, coords = tiny_asset(T)
    yy, xx = np.mgrid[:72, :72]
    disc = ((yy - 36) ** 2 + (xx - 36) ** 2 < 20 ** 2).astype(np.uint8) * 255
    inputs = np.zeros((T, 72, 72, 4), np.uint8)
    inputs[..., 0], inputs[..., 3] = 200, disc
    out = write_all_renders(tmp_path / "r", frames, inputs, coords, fps=6, resolution=res, orbit_min_frames=6)
    assert set(out) == {"orbit", "grid", "input_vs_output", "voxels", "voxels_image", "meta"}
    expect = {"orbit": (6, res, res), "grid": (T, 2 * res, 2 * res), "input_vs_output": (T, res, 2 * res),
              "voxels": (6, res, res)}
    for name, (n, h, w) in expect.items():
        assert out[name].is_file(), name
        fr = decode(out[name])
        assert len(fr) == n and fr[0].shape == (h, w, 3), (name, len(fr), fr[0].shape)
    # white background, object somewhere in the middle
    orbit0 = decode(out["orbit"])[0].astype(int)
    assert orbit0[:4, :4].min() > 240 and orbit0.min() < 200
    sbs = decode(out["input_vs_output"])[0].astype(int)
    assert sbs[36 * res // 72, res // 2, 0] > 150 and sbs[2, 2].min() > 240  # the red disc on white, left panel
    im = Image.open(out["voxels_image"])
    assert im.size == (res * T, res) and im.mode == "RGB"
    meta = json.loads(out["meta"].read_text())
    assert meta["orbit_frames"] == 6 and "input_view" in meta and meta["fps"] == 6
    # without input frames or voxels: no side-by-side video, voxels derived from the Gaussians (a 32^3 grid here)
    out2 = write_all_renders(tmp_path / "r2", frames[:2], None, None, fps=4, resolution=32, orbit_min_frames=2,
                             voxel_resolution=32)
    assert "input_vs_output" not in out2 and len(decode(out2["voxels"])) == 2


def test_grid_views_differ():
    frames, _ = tiny_asset(1)
    (grid,) = render_grid_frames(frames, 32)
    assert grid.shape == (64, 64, 3)
    cells = [grid[:32, :32], grid[:32, 32:], grid[32:, :32], grid[32:, 32:]]
    assert all(c.min() < 250 for c in cells)  # the object is seen in every view
    assert not np.array_equal(cells[0], cells[2])  # azimuth 0 vs 180


def test_render_voxels_geometry():
    R = 9  # a coarse grid: voxel (4,4,4) is centred on the origin and spans 1/9
    cam = orbit_camera(math.radians(30), math.radians(25), 2.0, width=96, height=96)
    vox = np.array([[4, 4, 4]])
    img, alpha = render_voxels(vox, [[1.0, 0.0, 0.0]], cam, R, ssaa=1, return_alpha=True, shading=False)
    assert img.shape == (96, 96, 3) and alpha.shape == (96, 96)
    ys, xs = np.nonzero(alpha > 0.5)
    assert len(xs) > 20
    assert np.all(img[ys, xs] == [255, 0, 0]) and np.all(img[0, 0] == 255)
    # the covered pixels span the projected cube corners (pixel centres at x = fx W X/Z + cx W - 0.5)
    corners = torch.tensor([[i, j, k] for i in (4, 5) for j in (4, 5) for k in (4, 5)], dtype=torch.float32)
    uv, _ = cam.project(corners / R - 0.5)
    px = uv[:, 0] * 96 - 0.5
    py = uv[:, 1] * 96 - 0.5
    assert xs.min() >= math.floor(px.min()) and xs.max() <= math.ceil(px.max())
    assert ys.min() >= math.floor(py.min()) and ys.max() <= math.ceil(py.max())
    assert xs.max() - xs.min() >= math.floor(px.max() - px.min()) - 1
    assert ys.max() - ys.min() >= math.floor(py.max() - py.min()) - 1
    # head-light shading: the three visible faces get different brightness
    shaded = render_voxels(vox, [[1.0, 1.0, 1.0]], cam, R, ssaa=1, bg=(0, 0, 0))
    assert len(np.unique(shaded[ys, xs, 0])) >= 3
    # occlusion: from the +x axis, voxel (1,4,4) lies right behind (4,4,4)
    cam0 = orbit_camera(0.0, 0.0, 2.0, width=96, height=96)
    pair = np.array([[1, 4, 4], [4, 4, 4]])
    both, a2 = render_voxels(pair, [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], cam0, R, ssaa=1, shading=False,
                             return_alpha=True)
    hit = a2 > 0.5
    assert hit.sum() > 20 and np.all(both[hit] == [0, 255, 0])
    # supersampling gives fractional coverage on the edges only
    _, a4 = render_voxels(vox, None, cam, R, ssaa=4, return_alpha=True)
    assert 0 < ((a4 > 0) & (a4 < 1)).sum() < (a4 > 0).sum()
    # empty input renders the background
    assert np.all(render_voxels(np.zeros((0, 3), int), None, cam, 64) == 255)


def test_cropped_camera_maps_the_box():
    cam = orbit_camera(0.3, 0.2, 2.0, width=100, height=100)
    box = (0.2, 0.1, 0.7, 0.6)
    c2 = cropped_camera(cam, box, 50, 50)
    pts = torch.rand(20, 3) - 0.5
    uv, _ = cam.project(pts)
    uv2, _ = c2.project(pts)
    torch.testing.assert_close(uv2, (uv - torch.tensor(box[:2])) / 0.5)
    assert crop_box([np.zeros((8, 8))]) is None


def test_estimate_input_view_recovers_pose():
    T, R = 3, 32
    coords = [blob_voxels(t, R) for t in range(T)]
    cols = []
    for v in coords:
        c = (v / (R - 1)).astype(np.float32)
        cols.append(np.stack([c[:, 0], 0.2 + 0 * c[:, 1], 1 - c[:, 2]], -1))
    # fake Gaussians (one per voxel) carrying the colours
    frames = []
    for v, c in zip(coords, cols):
        n = len(v)
        frames.append(Gaussians.from_activated(torch.from_numpy((v + 0.5) / R - 0.5).float(), torch.from_numpy(c),
                                               torch.full((n, 3), 0.005), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                                               torch.full((n, 1), 0.9)))
    yaw, pitch = 125.0, 10.0
    # the "input video": the voxel object seen from (yaw, pitch), cropped like the preprocessing, on black
    cam = orbit_camera(math.radians(yaw), math.radians(pitch), 2.0, width=128, height=128)
    alphas = [render_voxels(v, c, cam, R, ssaa=1, return_alpha=True)[1] for v, c in zip(coords, cols)]
    ccam = cropped_camera(cam, crop_box(alphas), 96, 96)
    inputs = np.stack([render_voxels(v, c, ccam, R, ssaa=1, shading=False, bg=(0, 0, 0))
                       for v, c in zip(coords, cols)])
    view = estimate_input_view(frames, inputs, coords=coords, voxel_resolution=R)
    assert view is not None
    dyaw = (view["yaw_deg"] - yaw + 180) % 360 - 180
    assert abs(dyaw) <= 10 and abs(view["pitch_deg"] - pitch) <= 10, view
    # without a mask (no alpha, white surround) there is nothing to align
    assert estimate_input_view(frames, np.full((T, 16, 16, 3), 255, np.uint8)) is None


def test_voxel_helpers():
    frames, coords = tiny_asset(1, G=4)
    g, vox = frames[0], coords[0]
    got = voxels = gaussians_to_voxels(g, 64, min_opacity=0.0)
    assert got.dtype == np.int32 and len(voxels) >= 1
    # voxel-major layout recognised: colour = opacity-weighted mean of the voxel's 4 Gaussians
    col = voxel_colors_from_gaussians(g, vox)
    want = g.get_colors.clamp(0, 1).reshape(len(vox), 4, 3).mean(1).numpy()
    assert np.allclose(col, want, atol=1e-5)
    # other layouts: by position, empty voxels take the nearest Gaussian's colour
    extra = np.concatenate([vox, [[0, 0, 0]]])
    col2 = voxel_colors_from_gaussians(g, extra)
    assert col2.shape == (len(extra), 3) and np.all((col2 >= 0) & (col2 <= 1))
