"""View-aligned training samples (ss4d.data.align): the world turns as one about z."""
import math

import pytest
import torch

from ss4d.data.align import AlignToInputView, camera_yaw, rotate_camera_z, rotate_sample_z
from ss4d.data.dataset import concat_clip_datasets
from ss4d.data.voxelize import voxel_centers
from ss4d.render.camera import orbit_camera


def _sample(R=16, T=2, seed=0, yaw_deg=37.0):
    g = torch.Generator().manual_seed(seed)
    occ = torch.zeros(T, R, R, R, dtype=torch.bool)
    c = (torch.arange(R) + 0.5) / R - 0.5
    in_disc = (c[:, None] ** 2 + c[None, :] ** 2 < 0.45 ** 2)[:, :, None]  # stays inside the box when turned
    for t in range(T):  # an off-centre box and a random sprinkle, so a turn is visible
        occ[t, 2 + t:7 + t, 3:12, 5:9] = True
        occ[t] |= (torch.rand(R, R, R, generator=g) > 0.97) & in_disc
    coords = torch.argwhere(occ).int()
    feats = torch.cat([coords[:, 1:].float(), torch.randn(coords.shape[0], 2, generator=g)], 1)
    cams = [orbit_camera(math.radians(yaw_deg + 10 * t), math.radians(15), 2.0, width=64, height=64)
            for t in range(T)]
    return {"id": "toy", "occupancy": occ, "coords": coords, "feats": feats, "cond_cameras": cams,
            "cameras": [[c] for c in cams]}


def test_quarter_turn_is_an_exact_permutation():
    s = _sample()
    r = rotate_sample_z(s, math.pi / 2)
    # x' = -y, y' = x: torch.rot90 over (x, y) turns the same way
    assert torch.equal(r["occupancy"], torch.rot90(s["occupancy"], 1, (1, 2)))
    assert r["coords"].shape[0] == s["coords"].shape[0]
    # the occupancy and the sparse voxels agree, and each voxel kept its own features (feats[:, :3] = old x, y, z)
    c = r["coords"].long()
    assert r["occupancy"][c[:, 0], c[:, 1], c[:, 2], c[:, 3]].all()
    R = s["occupancy"].shape[-1]
    old = r["feats"][:, :3].long()
    assert torch.equal(c[:, 1], R - 1 - old[:, 1]) and torch.equal(c[:, 2], old[:, 0])
    assert torch.equal(c[:, 3], old[:, 2])
    assert torch.equal(torch.argwhere(r["occupancy"]).int(), r["coords"])  # sorted like the data set's


def test_alignment_moves_the_input_camera_to_yaw_zero_and_keeps_the_image():
    s = _sample(R=32, yaw_deg=123.0)
    r = AlignToInputView()(s)
    assert abs(camera_yaw(r["cond_cameras"][0])) < 1e-6
    assert math.degrees(camera_yaw(r["cond_cameras"][1])) == pytest.approx(10.0, abs=1e-4)
    # every turned voxel projects where its source voxel projected in the old image (within one voxel)
    R = 32
    for t in range(2):
        new = r["coords"][r["coords"][:, 0] == t]
        src = r["feats"][r["coords"][:, 0] == t][:, :3]
        uv_new, _ = r["cond_cameras"][t].project(voxel_centers(new[:, 1:], R))
        uv_old, _ = s["cond_cameras"][t].project(voxel_centers(src.long(), R))
        px = (uv_new - uv_old).abs().max().item() * 64  # normalised image coordinates -> pixels
        assert px < 64 * 2.0 / R  # one voxel is < 64/R * 1.3 px wide at this distance
    # voxel count is preserved up to resampling (nothing sticks out of the box here)
    assert abs(r["occupancy"].sum().item() - s["occupancy"].sum().item()) < 0.08 * s["occupancy"].sum().item()


def test_camera_turn_matches_a_point_turn():
    cam = orbit_camera(0.3, 0.2, 2.0)
    a = 0.7
    pts = torch.randn(20, 3) * 0.3
    rz = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    uv0, d0 = cam.project(pts)
    uv1, d1 = rotate_camera_z(cam, a).project(pts @ rz.T)
    assert torch.allclose(uv0, uv1, atol=1e-5) and torch.allclose(d0, d1, atol=1e-5)


def test_bad_input_is_named():
    s = _sample()
    with pytest.raises(ValueError, match="cond_cameras"):
        AlignToInputView()({k: v for k, v in s.items() if k != "cond_cameras"})
    with pytest.raises(ValueError, match="align must be"):
        concat_clip_datasets(["nowhere"], num_frames=2, align="sideways")
