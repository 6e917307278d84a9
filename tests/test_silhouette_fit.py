"""Post-steps that use the input view the structure stage carved in: the silhouette fit of the Gaussians and the
re-centring of the object on the input camera's axis (ss4d additions, not in SS4D)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ss4d.gaussians import Gaussians
from ss4d.models.checkpoint import CheckpointError
from ss4d.pipeline.silhouette_fit import SilhouetteFitSettings, center_in_view, fit_silhouettes, read_silhouette_fit
from ss4d.pipeline.video_to_4d import read_post_steps
from ss4d.render.input_view import crop_box, input_view_camera, view_camera
from ss4d.render.rasterizer import rasterize


def _grid_gaussians(centre=(0.0, 0.0, 0.0), half=0.2, n=9, scale=0.012) -> Gaussians:
    """A cube of n^3 small grey Gaussians, too small to cover the cube's face without gaps."""
    i = torch.linspace(-half, half, n)
    xyz = torch.stack(torch.meshgrid(i, i, i, indexing="ij"), -1).reshape(-1, 3) + torch.tensor(centre)
    N = xyz.shape[0]
    rot = torch.zeros(N, 4)
    rot[:, 0] = 1
    return Gaussians.from_activated(xyz, torch.full((N, 3), 0.5), torch.full((N, 3), scale), rot,
                                    torch.full((N,), 0.6))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_fit_moves_the_silhouette_to_the_mask():
    """A cube of sparse Gaussians fitted to a disc's mask: the rendered silhouette's IoU with the disc rises a
    lot; colours and rotations stay; no centre moves further than max_offset voxels."""
    torch.manual_seed(0)
    g = _grid_gaussians()
    cam = view_camera(0.0, 0.0, 64)
    yy, xx = np.mgrid[:64, :64]
    disc = (((xx - 32) ** 2 + (yy - 32) ** 2) < 13 ** 2).astype(np.uint8) * 255
    before = rasterize(g, cam)["alpha"][0].detach().numpy() > 0.5
    s = SilhouetteFitSettings(steps=30, lr=0.1, size=64, max_offset=0.3)
    (fitted,) = fit_silhouettes([g], [disc], cam, s, voxel_size=1 / 32)
    after = rasterize(fitted, cam)["alpha"][0].detach().numpy() > 0.5
    target = disc > 127
    assert _iou(after, target) > _iou(before, target) + 0.2
    assert _iou(after, target) > 0.8
    assert torch.equal(fitted._features_dc, g._features_dc) and torch.equal(fitted._rotation, g._rotation)
    assert float((fitted.get_xyz - g.get_xyz).abs().max()) <= 0.3 / 32 + 1e-6
    assert torch.equal(g.get_xyz, _grid_gaussians().get_xyz)  # the input is not changed


def test_fit_with_zero_steps_is_the_identity_and_lengths_are_checked():
    g = _grid_gaussians(n=3)
    cam = view_camera(0.0, 0.0, 32)
    mask = np.zeros((32, 32), np.uint8)
    (same,) = fit_silhouettes([g], [mask], cam, SilhouetteFitSettings(steps=0))
    assert same is g
    with pytest.raises(ValueError, match="2 Gaussian frames vs 1 masks"):
        fit_silhouettes([g, g], [mask], cam)


def _silhouette_box_centre(g: Gaussians, cam) -> np.ndarray:
    a = rasterize(g, cam)["alpha"][0].detach().numpy() > 0.5
    ys, xs = np.nonzero(a)
    return np.array([(xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2])


@pytest.mark.parametrize("yaw,pitch", [(0.0, 0.0), (-10.0, 20.0)])
def test_centring_puts_the_silhouette_in_the_middle_of_the_view(yaw, pitch):
    """An object off the optical axis, seen through a crop around its silhouette (as the preprocessing crops):
    after centring, the uncropped view shows its silhouette's box centred on the image centre."""
    g = _grid_gaussians(centre=(0.1, -0.15, 0.12), half=0.1, n=7, scale=0.02)
    big = view_camera(yaw, pitch, 256)
    alpha = rasterize(g, big)["alpha"][0].detach().numpy()
    box = crop_box([alpha])  # normalised box of the uncropped view, like the preprocessing's
    view = {"yaw_deg": yaw, "pitch_deg": pitch, "crop": box}
    assert np.abs(_silhouette_box_centre(g, big) - 128).max() > 15  # off centre to begin with
    (moved,), shift = center_in_view([g], view)
    centre = _silhouette_box_centre(moved, big)
    assert np.abs(centre - 128).max() <= 2.0
    # a pure translation perpendicular to the view direction
    d = moved.get_xyz - g.get_xyz
    assert torch.allclose(d, d[:1].expand_as(d), atol=1e-6) and torch.allclose(d[0], shift.to(d), atol=1e-6)
    axis = -big.position / big.position.norm()
    assert abs(float(shift @ axis)) < 1e-5
    # the cropped input view sees the same image as before up to a shift: its silhouette stays inside
    cam = input_view_camera(view, 64)
    assert (rasterize(moved, cam)["alpha"][0].detach().numpy() > 0.5).sum() > 0


def test_settings_are_read_and_checked():
    steps = read_post_steps({"post_steps": [{"name": "silhouette_fit", "steps": 5}, "center_on_input"]})
    assert [s["name"] for s in steps] == ["silhouette_fit", "center_on_input"]
    assert read_silhouette_fit(steps[0]) == SilhouetteFitSettings(steps=5)
    with pytest.raises(CheckpointError, match="unknown fields"):
        read_post_steps({"post_steps": [{"name": "silhouette_fit", "stesp": 5}]})
    with pytest.raises(CheckpointError, match="invalid silhouette_fit"):
        read_post_steps({"post_steps": [{"name": "silhouette_fit", "lr": -1}]})


def test_pipeline_runs_fit_and_centring_from_pipeline_json(tmp_path):
    """End to end with a tiny random model with carving: both post-steps run in the carving view; the voxels follow
    the moved Gaussians."""
    from ss4d.models.tiny import build_tiny, write_model_folder
    from ss4d.pipeline.video_to_4d import VideoTo4DPipeline
    from ss4d.render.preview import gaussians_to_voxels

    torch.set_num_threads(1)
    folder = write_model_folder(tmp_path / "m", build_tiny(0), num_frames=4,
                                extra={"silhouette_guidance": {"carve": True, "fill": True},
                                       "post_steps": [{"name": "silhouette_fit", "steps": 2, "size": 32},
                                                      "center_on_input"]})
    pipe = VideoTo4DPipeline.from_pretrained(folder)
    yy, xx = np.mgrid[:64, :64]
    clip = np.zeros((4, 64, 64, 4), np.uint8)
    for t in range(4):
        clip[t][((xx - 24 - 3 * t) ** 2 + (yy - 30) ** 2) < 10 ** 2] = (200, 80, 40, 255)
    res = pipe(clip, seed=0, steps=2)
    assert res.meta["post_steps"] == ["silhouette_fit", "center_on_input"]
    assert set(res.meta["fit_view"]) == {"yaw_deg", "pitch_deg", "crop"}
    assert len(res.meta["center_shift"]) == 3
    view = res.meta["input_view"]  # renders reuse the view the output was fitted and centred in
    assert view["yaw_deg"] == res.meta["fit_view"]["yaw_deg"]
    x0, y0, x1, y1 = view["crop"]
    assert abs((x0 + x1) / 2 - 0.5) < 1e-9 and abs((y0 + y1) / 2 - 0.5) < 1e-9
    assert abs((x1 - x0) - (res.meta["fit_view"]["crop"][2] - res.meta["fit_view"]["crop"][0])) < 1e-9
    res_dec = int(pipe.models["slat_decoder_gs"].resolution)
    for g, c in zip(res.gaussians, res.coords):
        assert np.array_equal(np.asarray(c), gaussians_to_voxels(g, res_dec))
