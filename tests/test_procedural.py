"""Procedural 4D clips: determinism, real motion, canonical normalisation, voxels, Gaussians, cameras."""
import math

import numpy as np
import pytest
import torch

from ss4d.data.hammersley import (
    hammersley_cameras,
    hammersley_views,
    look_at_camera,
    radical_inverse,
    sphere_hammersley_sequence,
)
from ss4d.data.procedural import (
    KINDS,
    make_clip,
    normal_to_quaternion,
    render_input_video,
    render_views,
)
from ss4d.data.voxelize import voxel_centers
from ss4d.render.camera import project_points
from ss4d.render.rasterizer import quaternion_to_matrix

T, R, P = 4, 32, 2500


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These tests run many tiny ops (rasterizer tiles, small tensors): one intra-op thread is fastest, and
    avoids heavy slow-downs from oversubscribed OpenMP threads on busy machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def clips():
    return {k: make_clip(100 + i, num_frames=T, resolution=R, kind=k, num_points=P) for i, k in enumerate(KINDS)}


# ----------------------------------------------------------------------------------------------------------------
# Hammersley cameras
# ----------------------------------------------------------------------------------------------------------------
def test_radical_inverse_and_sequence():
    assert [radical_inverse(2, n) for n in range(5)] == [0.0, 0.5, 0.25, 0.75, 0.125]
    assert abs(radical_inverse(3, 4) - (1 / 3 + 1 / 9)) < 1e-12
    y, p = sphere_hammersley_sequence(0, 8)
    assert y == 0.0 and abs(p + math.pi / 2) < 1e-12
    y, p = sphere_hammersley_sequence(4, 8, offset=(0.5, 0.25))
    u, v = 4 / 8 + 0.5 / 8, 0.125 + 0.25  # radinv_2(4) = 0.001b
    assert abs(y - v * 2 * math.pi) < 1e-12 and abs(p - (math.acos(1 - 2 * u) - math.pi / 2)) < 1e-12


def test_hammersley_cameras():
    views = hammersley_views(24, seed=3)
    assert views == hammersley_views(24, seed=3) and views != hammersley_views(24, seed=4)
    cams = hammersley_cameras(24, radius=2.0, width=64, seed=3)
    pitches = []
    for cam, v in zip(cams, views):
        pos = cam.position
        y, p = v["yaw"], v["pitch"]
        expect = 2.0 * torch.tensor([math.cos(y) * math.cos(p), math.sin(y) * math.cos(p), math.sin(p)])
        torch.testing.assert_close(pos, expect, atol=1e-5, rtol=0)
        uv, z = project_points(torch.zeros(1, 3), cam.extrinsics, cam.intrinsics)
        torch.testing.assert_close(uv, torch.tensor([[0.5, 0.5]]), atol=1e-5, rtol=0)
        assert abs(float(z) - 2.0) < 1e-5
        assert abs(cam.fovx - math.radians(40)) < 1e-5 and cam.width == 64
        pitches.append(p)
    # area-uniform in pitch: roughly half of the views in the upper hemisphere
    assert 8 <= sum(p > 0 for p in pitches) <= 16
    # straight above / below stays well defined (z-up world; image up continuous with yaw 0)
    for eye in [(0.0, 0.0, 2.0), (0.0, 0.0, -2.0)]:
        c = look_at_camera(eye)
        assert torch.isfinite(c.extrinsics).all()
        torch.testing.assert_close(c.extrinsics[:3, :3] @ c.extrinsics[:3, :3].T, torch.eye(3), atol=1e-6, rtol=0)
        near = look_at_camera((1e-4, 0.0, eye[2]))
        torch.testing.assert_close(c.extrinsics, near.extrinsics, atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# clips
# ----------------------------------------------------------------------------------------------------------------
def test_determinism():
    a = make_clip(7, num_frames=3, resolution=16, num_points=1500)
    b = make_clip(7, num_frames=3, resolution=16, num_points=1500)
    c = make_clip(8, num_frames=3, resolution=16, num_points=1500)
    for name in ("points", "normals", "colors", "gauss_scales"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.kind == b.kind and a.recipe() == b.recipe()
    assert all(torch.equal(a.voxels(t), b.voxels(t)) for t in range(3))
    for ca, cb in zip(a.input_cameras, b.input_cameras):
        assert torch.equal(ca.extrinsics, cb.extrinsics) and torch.equal(ca.intrinsics, cb.intrinsics)
    assert not (a.points.shape == c.points.shape and torch.equal(a.points, c.points))
    cams = hammersley_cameras(2, width=32, seed=0)
    assert torch.equal(render_views(a, cams, 32), render_views(b, cams, 32))


@pytest.mark.parametrize("kind", KINDS)
def test_frames_change_where_parts_move(clips, kind):
    clip = clips[kind]
    assert not clip.static
    disp = (clip.points - clip.points[:1]).norm(dim=-1)  # [T, P]
    assert float(disp[-1].max()) > 0.03, "the last frame should differ from the first"
    # motion is localised: some samples move a lot more than others (articulation / deformation, not only noise)
    assert float(disp[-1].max()) > 2 * float(disp[-1].median()) or float(disp[-1].median()) > 0.01
    assert any(not torch.equal(clip.voxels(0), clip.voxels(t)) for t in range(1, T))
    cams = hammersley_cameras(2, width=32, seed=1)
    rgba = render_views(clip, cams, 32, frames=[0, T - 1])
    assert float((rgba[0] - rgba[1]).abs().max()) > 0.2


def test_static_clip():
    clip = make_clip(11, num_frames=3, resolution=16, num_points=1500, static=True, orbit_prob=0.0)
    assert clip.static
    assert torch.allclose(clip.points, clip.points[:1].expand_as(clip.points), atol=1e-6)
    assert all(torch.equal(clip.voxels(0), clip.voxels(t)) for t in range(3))
    moving = make_clip(11, num_frames=3, resolution=16, num_points=1500)
    assert not moving.static and moving.kind == clip.kind


def test_canonical_normalisation(clips):
    for clip in clips.values():
        pts = clip.points.reshape(-1, 3)
        lo, hi = pts.min(0).values, pts.max(0).values
        assert abs(float((hi - lo).max()) - 1.0) < 1e-5  # longest side of the union box = 1
        torch.testing.assert_close((lo + hi) / 2, torch.zeros(3), atol=1e-5, rtol=0)  # centred
        assert float(pts.abs().max()) <= 0.5 + 1e-5
        n = clip.normals.norm(dim=-1)
        torch.testing.assert_close(n, torch.ones_like(n), atol=1e-4, rtol=0)
        assert float(clip.colors.min()) >= 0 and float(clip.colors.max()) <= 1
        assert bool((clip.gauss_scales > 0).all())


def test_voxels_equal_independent_voxelisation(clips):
    for clip in list(clips.values())[:3]:
        for t in range(T):
            p = clip.points[t].double().numpy()
            brute = {tuple(int(min(R - 1, max(0, math.floor((c + 0.5) * R)))) for c in x) for x in p}
            got = clip.voxels(t)
            assert got.dtype == torch.int32
            assert {tuple(r) for r in got.tolist()} == brute
            assert [tuple(r) for r in got.tolist()] == sorted(brute)
            f = clip.frame(t)
            assert torch.equal(f.voxels, got) and f.points.shape == (clip.num_points, 3)


def test_gaussians_on_the_surface(clips):
    clip = clips["creature"]
    g = clip.gaussians(1)
    d = clip.gaussian_params(1)
    torch.testing.assert_close(g.get_xyz, d["means"], atol=1e-6, rtol=0)
    torch.testing.assert_close(g.get_colors, d["colors"], atol=1e-5, rtol=0)
    torch.testing.assert_close(g.get_scaling, d["scales"].clamp_min(g.mininum_kernel_size), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g.get_opacity.reshape(-1), d["opacities"], atol=1e-5, rtol=0)
    # flat discs: the thin axis is the surface normal
    Rm = quaternion_to_matrix(d["rotations"])
    torch.testing.assert_close(Rm[:, :, 2], clip.normals[1], atol=1e-4, rtol=0)
    assert bool((d["scales"][:, 2] < d["scales"][:, 0]).all())


def test_normal_to_quaternion():
    n = torch.nn.functional.normalize(torch.randn(200, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    n = torch.cat([n, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])])
    q = normal_to_quaternion(n)
    torch.testing.assert_close(quaternion_to_matrix(q)[:, :, 2], n, atol=1e-5, rtol=0)


def test_input_camera_path(clips):
    for clip in clips.values():
        prm = clip.input_camera_params
        assert math.radians(30) - 1e-9 <= prm["fov"] <= math.radians(50) + 1e-9
        assert math.radians(-10) - 1e-9 <= prm["elevation"] <= math.radians(30) + 1e-9
        assert len(clip.input_cameras) == T
        for t, cam in enumerate(clip.input_cameras):
            uv, z = project_points(clip.points[t], cam.extrinsics, cam.intrinsics)
            assert bool((z > 0.2).all())
            assert bool(((uv >= 0) & (uv <= 1)).all()), "the object must stay inside the input frame"
        # over the clip, the object fills the frame (an extreme point reaches 80-95 % of the half-frame)
        reach = max(float((project_points(clip.points[t], c.extrinsics, c.intrinsics)[0] - 0.5).abs().max())
                    for t, c in enumerate(clip.input_cameras))
        assert 0.39 <= reach <= 0.48
        if not prm["orbit"]:
            assert all(torch.equal(c.extrinsics, clip.input_cameras[0].extrinsics) for c in clip.input_cameras)
    fixed = make_clip(3, num_frames=3, resolution=16, num_points=1000, orbit_prob=0.0)
    assert not fixed.input_camera_params["orbit"]
    orbit = make_clip(3, num_frames=3, resolution=16, num_points=1000, orbit_prob=1.0)
    assert orbit.input_camera_params["orbit"] and orbit.input_camera_params["yaw_rate"] != 0
    assert not torch.equal(orbit.input_cameras[0].extrinsics, orbit.input_cameras[2].extrinsics)


def test_render_views_shapes_and_voxel_coverage(clips):
    clip = clips["robot_arm"]
    S = 64
    cams = hammersley_cameras(4, width=S, seed=2)
    rgba = render_views(clip, cams, S)
    assert rgba.shape == (T, 4, 4, S, S) and rgba.dtype == torch.float32
    assert float(rgba.min()) >= 0 and float(rgba.max()) <= 1
    a = rgba[:, :, 3]
    assert float(a.max()) > 0.99 and float(a.min()) == 0.0
    # straight alpha: colour is zero where nothing was rendered
    assert float(rgba[:, :, :3][(a < 1 / 255).unsqueeze(2).expand(-1, -1, 3, -1, -1)].abs().max()) == 0.0
    # voxel centres project inside the rendered silhouette
    inside = []
    for t in range(T):
        ctr = voxel_centers(clip.voxels(t), R)
        for v, cam in enumerate(cams):
            uv, _ = project_points(ctr, cam.extrinsics, cam.intrinsics)
            px = (uv * S).floor().long().clamp(0, S - 1)
            inside.append(a[t, v][px[:, 1], px[:, 0]] > 0.5)
    assert float(torch.cat(inside).float().mean()) >= 0.95
    # per-frame camera lists and the input video
    per = render_views(clip, [[cams[t % 4]] for t in range(T)], 32, device="cpu")
    assert per.shape == (T, 1, 4, 32, 32)
    torch.testing.assert_close(per[1, 0], render_views(clip, [cams[1]], 32, frames=[1])[0, 0])
    vid = render_input_video(clip, 32)
    assert vid.shape == (T, 4, 32, 32) and float(vid[:, 3].max()) > 0.99
    with pytest.raises(ValueError):
        render_views(clip, [[cams[0]]] * (T + 1), 32)


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_clip(0, kind="dragon")
    with pytest.raises(ValueError):
        make_clip(0, num_frames=0)
    one = make_clip(0, num_frames=1, resolution=8, num_points=500)
    assert one.static and one.points.shape == (1, one.num_points, 3)
    with pytest.raises(IndexError):
        one.frame(1)


def test_kind_distribution_and_recipe_json():
    import json

    kinds = {make_clip(s, num_frames=1, resolution=8, num_points=300).kind for s in range(40)}
    assert len(kinds) >= 5
    json.dumps(make_clip(1, num_frames=2, resolution=8, num_points=300).recipe())
    assert np.isfinite(make_clip(2, num_frames=2, resolution=8, num_points=300).points.numpy()).all()
