"""Spacetime latents that carry appearance: voxel visibility, visibility-aware voxel colours, the SLat encoder stage
with its linear read-out, re-basing a decoder onto new latents, pixel-aligned conditioning of the latent flow (cell
to pixel against a closed-form camera) and the latent-noise ablation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ss4d.data.batching import collate_clips
from ss4d.data.features import voxel_features
from ss4d.models.registry import build
from ss4d.models.tiny import TINY, build_tiny, write_model_folder
from ss4d.pipeline.pixel_aligned import PIXEL_CHANNELS, PixelAlignedFlow, pixel_aligned_features, wants_pixel_features
from ss4d.render.camera import Camera, orbit_camera
from ss4d.render.visibility import visible_points
from ss4d.sparse.tensor import SparseTensor
from ss4d.train.latents import fold_latent_mean, standardize_encoder
from ss4d.train.vae_trainers import SLatEncoderTrainer, voxel_targets


def _clear(p0: torch.Tensor, eye: torch.Tensor, occ: set, R: int, skip=None) -> bool:
    """Whether the segment from ``p0`` to the camera centre ``eye`` avoids every voxel of ``occ`` (but ``skip``)."""
    d = eye - p0
    n = int(torch.linalg.norm(d) * R * 8)
    for k in range(1, n):
        idx = tuple(int(x) for x in torch.floor((p0 + d * (k / n) + 0.5) * R).tolist())
        if idx != skip and idx in occ:
            return False
    return True


def _brute_visibility(occ: set, R: int, eye: torch.Tensor) -> tuple[dict, dict]:
    """Two brute-force bounds per voxel: its centre sees the camera (strict), or the centre of one of its faces
    turned towards the camera does (generous: also faces seen at grazing angles)."""
    strict, generous = {}, {}
    for v in occ:
        c = (torch.tensor(v, dtype=torch.float64) + 0.5) / R - 0.5
        strict[v] = _clear(c, eye, occ, R, skip=v)
        ok = False
        for ax in range(3):
            for s in (-1, 1):
                p0 = c.clone()
                p0[ax] += s * 0.5 / R * 1.001
                if (eye - p0)[ax] * s > 0 and _clear(p0, eye, occ, R):
                    ok = True
        generous[v] = ok
    return strict, generous


@pytest.mark.parametrize("yaw", [0.0, 0.7, 2.0, 4.0])
def test_visible_points_between_two_ray_marching_bounds(yaw):
    R = 16
    g = torch.Generator().manual_seed(3)
    occ = {(x, y, z) for x in range(5, 11) for y in range(5, 11) for z in range(6, 10)}  # a solid block
    for _ in range(30):  # plus scattered voxels
        occ.add(tuple(torch.randint(0, R, (3,), generator=g).tolist()))
    occ = sorted(occ)
    cam = orbit_camera(yaw, 0.3, 2.0, math.radians(40), 256, 256)
    pts = (torch.tensor(occ, dtype=torch.float32) + 0.5) / R - 0.5
    vis = visible_points(pts, cam, 1.0 / R).tolist()
    strict, generous = _brute_visibility(set(occ), R, torch.linalg.inv(cam.extrinsics.double())[:3, 3])
    found = [v for v, s in zip(occ, vis) if s]
    assert all(vis[i] for i, v in enumerate(occ) if strict[v])          # a voxel whose centre sees the camera
    assert sum(not generous[v] for v in found) <= 0.06 * len(found)     # hardly any voxel without a visible face
    assert 0 < len(found) < len(occ)


def test_visibility_aware_voxel_colours_take_the_seeing_views_colour():
    # two voxels on the x axis; a camera on +x sees only the +x voxel (red image), one on -x only the other (blue)
    R, S = 8, 64
    coords = torch.tensor([[2, 4, 4], [5, 4, 4]])
    cams = [orbit_camera(y, 0.0, 2.0, math.radians(40), S, S) for y in (0.0, math.pi)]
    imgs = torch.zeros(2, 4, S, S)
    imgs[0, 0], imgs[1, 2] = 1.0, 1.0
    imgs[:, 3] = 1.0
    plain = voxel_features(coords, R, imgs, cams, dtype=torch.float32)
    vis = voxel_features(coords, R, imgs, cams, dtype=torch.float32, visibility=True)
    torch.testing.assert_close(plain[:, :3], torch.tensor([[0.5, 0, 0.5], [0.5, 0, 0.5]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(vis[0], torch.tensor([0.0, 0, 1, 1]), atol=1e-5, rtol=0)   # the -x voxel: blue
    torch.testing.assert_close(vis[1], torch.tensor([1.0, 0, 0, 1]), atol=1e-5, rtol=0)   # the +x voxel: red


def test_voxel_targets_straight_colour():
    f = torch.tensor([[0.2, 0.1, 0.0, 0.5], [0.3, 0.3, 0.3, 0.01]])
    t = voxel_targets(f)
    torch.testing.assert_close(t, torch.tensor([[0.4, 0.2, 0.0, 0.5], [1.0, 1.0, 1.0, 0.01]]))
    g = torch.randn(5, 7)
    assert torch.equal(voxel_targets(g), g)


def _sparse_clip(T=2, R=32, n=40, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for t in range(T):
        xyz = torch.randperm(R ** 3, generator=g)[:n]
        c = torch.stack([xyz // (R * R), (xyz // R) % R, xyz % R], 1)
        rows.append(torch.cat([torch.full((n, 1), t), c], 1))
    coords = torch.cat(rows).int()
    feats = torch.rand(T * n, C, generator=g)
    return coords, feats


def test_slat_encoder_stage_loss_is_the_readout_mse():
    torch.manual_seed(0)
    enc = build(TINY["slat_encoder"][0], {**TINY["slat_encoder"][1], "in_channels": 4, "model_channels": 64,
                                          "num_blocks": 1, "num_heads": 2})
    head = build(*TINY["slat_readout"])
    tr = SLatEncoderTrainer({"encoder": enc, "readout": head}, loss={"kl_weight": 0.0})
    coords, feats = _sparse_clip()
    batch = {"coords": coords, "feats": feats, "num_frames": 2, "num_clips": 1, "slots": [0]}
    loss, terms = tr.compute_loss(batch)
    with torch.no_grad():
        _, mean, _ = enc(SparseTensor(feats, coords, 2), num_frames=2, sample_posterior=False, return_raw=True)
        p = head(mean)
        f = feats
        target = torch.cat([(f[:, :3] / f[:, 3:].clamp_min(0.05)).clamp(0, 1), f[:, 3:]], 1)
        ref = ((p - target) ** 2).mean()
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-5, atol=1e-7)
    assert terms["mse"].item() == pytest.approx(ref.item(), rel=1e-5)


def test_fold_latent_mean_keeps_the_decoder_output_at_the_old_mean():
    dec = build_tiny(names=["slat_decoder_gs"])["slat_decoder_gs"].eval()
    coords, _ = _sparse_clip(C=8)
    mean = torch.randn(8) * 0.3
    x_old = SparseTensor(mean.expand(coords.shape[0], 8).contiguous(), coords, 2)
    with torch.no_grad():
        before = dec.decode_raw(x_old, 2).feats
        fold_latent_mean(dec, mean)
        after = dec.decode_raw(SparseTensor(torch.randn(coords.shape[0], 8), coords, 2), 2).feats
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert dec.input_layer.weight.abs().max() == 0
    with pytest.raises(ValueError, match="latent mean"):
        fold_latent_mean(dec, torch.zeros(3))


def test_fold_latent_affine_and_standardized_encoder_compose_to_the_same_decoding():
    torch.manual_seed(1)
    enc = build(TINY["slat_encoder"][0], {**TINY["slat_encoder"][1], "in_channels": 4, "model_channels": 64,
                                          "num_blocks": 1, "num_heads": 2}).eval()
    dec = build_tiny(names=["slat_decoder_gs"])["slat_decoder_gs"].eval()
    coords, feats = _sparse_clip()
    x = SparseTensor(feats, coords, 2)
    mean, std = torch.randn(8), torch.rand(8) + 0.1
    with torch.no_grad():
        z, m, logvar = enc(x, num_frames=2, sample_posterior=False, return_raw=True)
        before = dec.decode_raw(z, 2).feats
        standardize_encoder(enc, mean, std)
        z2, m2, logvar2 = enc(x, num_frames=2, sample_posterior=False, return_raw=True)
        fold_latent_mean(dec, mean, std)
        after = dec.decode_raw(z2, 2).feats
    torch.testing.assert_close(m2, (m - mean) / std, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logvar2, logvar - 2 * torch.log(std), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="positive stds"):
        standardize_encoder(enc, mean, -std)


def test_pixel_aligned_features_against_a_closed_form_camera():
    S, fov, R = 64, math.radians(40), 32
    cam = orbit_camera(0.0, 0.0, 2.0, fov, S, S)  # eye (2, 0, 0) looking at the origin, z up
    # linear ramps: r = u (column), g = v (row) at pixel centres; bilinear sampling returns u and v exactly
    u = (torch.arange(S) + 0.5) / S
    frame = torch.stack([u[None].expand(S, S), u[:, None].expand(S, S), torch.full((S, S), 0.25)])
    alpha = torch.ones(S, S)
    g = torch.Generator().manual_seed(0)
    xyz = torch.randint(8, 24, (50, 3), generator=g)
    coords = torch.cat([torch.zeros(50, 1, dtype=torch.long), xyz], 1)
    pix = pixel_aligned_features(coords, R, frame[None], alpha[None], [cam])
    # closed form: right = +y, down = -z, depth = 2 - x, normalised focal 0.5 / tan(fov / 2)
    f = 0.5 / math.tan(fov / 2)
    p = (xyz.double() + 0.5) / R - 0.5
    uu = f * p[:, 1] / (2 - p[:, 0]) + 0.5
    vv = f * -p[:, 2] / (2 - p[:, 0]) + 0.5
    # colours go through uint8 in the fill step: 1/255 tolerance
    np.testing.assert_allclose(pix[:, 0].numpy(), uu.numpy(), atol=1.5 / 255)
    np.testing.assert_allclose(pix[:, 1].numpy(), vv.numpy(), atol=1.5 / 255)
    np.testing.assert_allclose(pix[:, 2].numpy(), 0.25, atol=1.5 / 255)
    torch.testing.assert_close(pix[:, 3], torch.ones(50))
    assert pix.shape == (50, PIXEL_CHANNELS)
    # the visible flag is visible_points' own answer for the frame's voxels
    assert torch.equal(pix[:, 4].bool(), visible_points(p.float(), cam, 1.0 / R))


def test_pixel_aligned_flow_concatenates_and_checks():
    flow = build("SLatFlow4DModel", {**TINY["slat_flow_model"][1], "in_channels": 8 + PIXEL_CHANNELS})
    assert wants_pixel_features(flow)
    assert not wants_pixel_features(build_tiny(names=["slat_flow_model"])["slat_flow_model"])
    with pytest.raises(ValueError, match="needs in = out"):
        wants_pixel_features(build("SLatFlow4DModel", {**TINY["slat_flow_model"][1], "in_channels": 9}))
    coords, _ = _sparse_clip(C=8)
    x = SparseTensor(torch.randn(coords.shape[0], 8), coords, 2)
    pix = torch.rand(coords.shape[0], PIXEL_CHANNELS)
    cond = torch.randn(2, 4, 128)
    t = torch.tensor([500.0, 500.0])
    with torch.no_grad():
        out = PixelAlignedFlow(flow, pix)(x, t, cond, num_frames=2).feats
        ref = flow(x.replace(torch.cat([x.feats, pix], 1)), t, cond, num_frames=2).feats
        other = PixelAlignedFlow(flow, torch.rand(coords.shape[0], PIXEL_CHANNELS))(x, t, cond, num_frames=2).feats
    assert out.shape == (coords.shape[0], 8)
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, other)  # the pixel features reach the output
    with pytest.raises(ValueError, match="pixel-feature rows"):
        PixelAlignedFlow(flow, pix[:-1])(x, t, cond, num_frames=2)


def test_collate_keeps_input_alpha_and_cameras():
    cam = orbit_camera(0.3, 0.1, 2.0, math.radians(40), 8, 8)
    clips = []
    for _ in range(2):
        rgba = torch.zeros(2, 8, 8, 4, dtype=torch.uint8)
        rgba[:, 2:5, 3:6] = torch.tensor([200, 100, 50, 255], dtype=torch.uint8)
        rgba[:, 0, 0] = torch.tensor([200, 100, 50, 128], dtype=torch.uint8)
        clips.append({"cond_frames": rgba, "cond_cameras": [cam, cam]})
    b = collate_clips(clips)
    assert b["cond_alpha"].shape == (4, 8, 8)
    assert b["cond_alpha"][0, 0, 0].item() == pytest.approx(128 / 255)
    assert b["cond_alpha"][1, 3, 4].item() == 1.0 and b["cond_alpha"][1, 6, 6].item() == 0.0
    torch.testing.assert_close(b["cond_frames"][0, :, 0, 0], torch.tensor([200, 100, 50]) / 255 * (128 / 255))
    assert len(b["cond_cameras"]) == 4 and all(isinstance(c, Camera) for c in b["cond_cameras"])


@pytest.fixture(scope="module")
def pixel_model(tmp_path_factory):
    models = build_tiny(seed=1, names=["sparse_structure_decoder", "slat_decoder_gs", "sparse_structure_flow_model",
                                       "image_cond_model"])
    models["slat_flow_model"] = build("SLatFlow4DModel", {**TINY["slat_flow_model"][1], "in_channels": 13})
    folder = tmp_path_factory.mktemp("pixel_model")
    sampler = {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
               "params": {"steps": 2, "cfg_strength": 0.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}
    return write_model_folder(folder, models, sampler=sampler, num_frames=4,
                              args={"slat_flow_model": {"in_channels": 13}})


def _frames(T=4, S=64):
    out = []
    for t in range(T):
        f = np.zeros((S, S, 4), np.uint8)
        f[16 + t:48, 20:44] = (200, 60 + 20 * t, 40, 255)
        out.append(f)
    return out


def test_pipeline_with_a_pixel_aligned_latent_flow(pixel_model):
    from ss4d.pipeline.video_to_4d import VideoTo4DPipeline

    pipe = VideoTo4DPipeline.from_pretrained(pixel_model)
    trace: dict = {}
    r = pipe(_frames(), seed=0, trace=trace)
    assert "structure_view" in r.meta and set(r.meta["structure_view"]) >= {"yaw_deg", "pitch_deg"}
    assert trace["slat_latent"].shape[1] == 8
    # 0 latent-flow steps (the evaluation's latent-noise ablation): the latent is the starting noise
    pipe.slat_params = {**pipe.slat_params, "steps": 0}
    trace0: dict = {}
    pipe(_frames(), seed=0, trace=trace0)
    torch.testing.assert_close(trace0["slat_latent"], trace0["slat_noise"])
