"""Camera helpers: official TRELLIS/SS4D conventions (OpenCV w2c extrinsics, normalised intrinsics, z-up world)."""
import json
import math

import pytest
import torch

from ss4d.render.camera import (
    Camera,
    blender_c2w_to_opencv_extrinsics,
    camera_from_blender,
    fov_from_intrinsics,
    intrinsics_from_fov,
    look_at_extrinsics,
    orbit_camera,
    orbit_position,
    project_points,
)


def test_intrinsics_from_fov():
    K = intrinsics_from_fov(math.radians(40))
    f = 0.5 / math.tan(math.radians(20))
    torch.testing.assert_close(K, torch.tensor([[f, 0, 0.5], [0, f, 0.5], [0, 0, 1.0]]))
    fx, fy = fov_from_intrinsics(intrinsics_from_fov(math.radians(30), math.radians(50)))
    assert abs(fx - math.radians(30)) < 1e-6 and abs(fy - math.radians(50)) < 1e-6


@pytest.mark.parametrize("eye,target", [((2.0, 0.0, 0.0), (0.0, 0.0, 0.0)), ((0.3, -1.5, 0.9), (0.1, 0.2, -0.1)),
                                        ((-1.0, 2.0, -0.5), (0.5, 0.5, 0.5))])
def test_look_at_centres_target_and_is_opencv(eye, target):
    E = look_at_extrinsics(eye, target)
    R = E[:3, :3]
    torch.testing.assert_close(R @ R.T, torch.eye(3), atol=1e-6, rtol=0)
    assert abs(torch.linalg.det(R).item() - 1) < 1e-5
    K = intrinsics_from_fov(math.radians(40))
    uv, d = project_points(torch.tensor([target]), E, K)
    torch.testing.assert_close(uv, torch.tensor([[0.5, 0.5]]), atol=1e-6, rtol=0)
    dist = math.dist(eye, target)
    assert abs(d.item() - dist) < 1e-5
    # the eye maps to the camera origin
    p = E @ torch.tensor(list(eye) + [1.0])
    torch.testing.assert_close(p[:3], torch.zeros(3), atol=1e-6, rtol=0)
    # OpenCV: a world point above the target (+z up) appears higher in the image (smaller v)
    up_pt = torch.tensor([[target[0], target[1], target[2] + 0.1]])
    uv_up, _ = project_points(up_pt, E, K)
    assert uv_up[0, 1] < 0.5


def test_look_at_axes_known_case():
    # camera on -y looking at the origin (+y forward), z up: right = +x, down = -z
    E = look_at_extrinsics((0.0, -3.0, 0.0), (0.0, 0.0, 0.0))
    expect = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 3], [0, 0, 0, 1]])
    torch.testing.assert_close(E, expect, atol=1e-6, rtol=0)


def test_orbit_positions_and_view_direction():
    for yaw, pitch in [(0.0, 0.0), (math.pi / 2, 0.0), (0.3, 0.4), (-2.0, -0.6)]:
        cam = orbit_camera(yaw, pitch, 2.0, math.radians(40), 64, 64)
        expect = 2.0 * torch.tensor([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch),
                                     math.sin(pitch)])
        torch.testing.assert_close(cam.position, expect, atol=1e-5, rtol=0)
        uv, d = cam.project(torch.zeros(1, 3))
        torch.testing.assert_close(uv, torch.tensor([[0.5, 0.5]]), atol=1e-6, rtol=0)
        assert abs(d.item() - 2.0) < 1e-5
        assert abs(cam.fovx - math.radians(40)) < 1e-6
    torch.testing.assert_close(orbit_position(0.0, 0.0, 1.5), torch.tensor([1.5, 0.0, 0.0]))
    torch.testing.assert_close(orbit_position(0.0, 0.0, 1.5, "render_utils"), torch.tensor([0.0, 1.5, 0.0]))
    torch.testing.assert_close(orbit_position(0.0, math.pi / 2, 1.0), torch.tensor([0.0, 0.0, 1.0]), atol=1e-7,
                               rtol=0)


def test_project_known_points():
    E = torch.eye(4)
    K = torch.tensor([[1.2, 0.0, 0.5], [0.0, 0.9, 0.5], [0.0, 0.0, 1.0]])
    pts = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 2.0], [0.0, -1.0, 4.0], [0.5, 0.5, 1.0]])
    uv, d = project_points(pts, E, K)
    expect = torch.tensor([[0.5, 0.5], [0.5 + 1.2 * 0.5, 0.5], [0.5, 0.5 - 0.9 * 0.25], [0.5 + 0.6, 0.5 + 0.45]])
    torch.testing.assert_close(uv, expect)
    torch.testing.assert_close(d, torch.tensor([2.0, 2.0, 4.0, 1.0]))
    # with a translated/rotated camera: a 90 degree yaw about the camera z axis
    E2 = torch.eye(4)
    E2[:3, :3] = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    E2[:3, 3] = torch.tensor([0.0, 0.0, 1.0])
    uv2, d2 = project_points(torch.tensor([[0.0, 1.0, 1.0]]), E2, K)  # camera coords (-1, 0, 2)
    torch.testing.assert_close(uv2, torch.tensor([[0.5 - 0.6, 0.5]]))
    torch.testing.assert_close(d2, torch.tensor([2.0]))


def test_camera_dict_round_trip():
    cam = orbit_camera(0.7, 0.2, 2.0, math.radians(40), 320, 240, near=0.5, far=3.0)
    d = cam.to_dict()
    s = json.dumps(d)  # JSON-able
    back = Camera.from_dict(json.loads(s))
    torch.testing.assert_close(back.extrinsics, cam.extrinsics)
    torch.testing.assert_close(back.intrinsics, cam.intrinsics)
    assert (back.width, back.height, back.near, back.far) == (320, 240, 0.5, 3.0)
    assert back.to_dict() == d
    # defaults
    default = Camera(torch.eye(4), intrinsics_from_fov(1.0))
    assert (default.near, default.far) == (0.8, 1.6)
    assert Camera.from_dict(default.to_dict()).to_dict() == default.to_dict()


def test_blender_conversion_constructed_case():
    # Blender camera at (0, -3, 0) looking at the origin along +y with y(up) = world +z:
    # camera axes in world: x_b = +x, y_b = +z, z_b = -y (the camera looks along -z_b = +y)
    c2w = torch.eye(4)
    c2w[:3, 0] = torch.tensor([1.0, 0.0, 0.0])
    c2w[:3, 1] = torch.tensor([0.0, 0.0, 1.0])
    c2w[:3, 2] = torch.tensor([0.0, -1.0, 0.0])
    c2w[:3, 3] = torch.tensor([0.0, -3.0, 0.0])
    E = blender_c2w_to_opencv_extrinsics(c2w)
    # identical to the OpenCV look-at of the same pose
    torch.testing.assert_close(E, look_at_extrinsics((0.0, -3.0, 0.0), (0.0, 0.0, 0.0)), atol=1e-6, rtol=0)
    cam = camera_from_blender(c2w, math.radians(40), 64, 64)
    uv, d = cam.project(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]]))
    torch.testing.assert_close(uv[0], torch.tensor([0.5, 0.5]))
    assert uv[1, 1] < 0.5 and abs(uv[1, 0] - 0.5) < 1e-6  # world up is image up
    torch.testing.assert_close(d, torch.tensor([3.0, 3.0]))


def test_blender_conversion_random_pose_matches_look_at():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        eye = torch.randn(3, generator=g) * 2
        target = torch.randn(3, generator=g) * 0.2
        E = look_at_extrinsics(eye, target)
        # build the Blender c2w of the same pose: Blender axes = OpenCV axes with y, z flipped
        c2w_cv = torch.linalg.inv(E)
        c2w_bl = c2w_cv @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
        torch.testing.assert_close(blender_c2w_to_opencv_extrinsics(c2w_bl), E, atol=1e-5, rtol=0)
        # 3x4 input accepted
        torch.testing.assert_close(blender_c2w_to_opencv_extrinsics(c2w_bl[:3]), E, atol=1e-5, rtol=0)


def test_camera_misc():
    cam = orbit_camera(0.0, 0.0, 2.0, math.radians(40), 100, 50)
    P = cam.projection_matrix()
    # clip-space x/w of the look-at target is 0 (image centre); principal point maps to ndc 0
    clip = P @ cam.extrinsics @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert abs(clip[0] / clip[3]) < 1e-6 and abs(clip[1] / clip[3]) < 1e-6
    Kp = cam.pixel_intrinsics()
    assert abs(Kp[0, 2].item() - 50) < 1e-6 and abs(Kp[1, 2].item() - 25) < 1e-6
    r = cam.resized(200, 100)
    assert (r.width, r.height) == (200, 100) and torch.equal(r.intrinsics, cam.intrinsics)
    torch.testing.assert_close(cam.c2w @ cam.extrinsics, torch.eye(4), atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        orbit_position(0.0, 0.0, 1.0, "nope")
