"""`ss4d evaluate`: ground truth from animated assets, methods (model, per-frame, static, external renders),
alignment, scores, report files, bad inputs, reproducibility.

Tiny sizes throughout (64 px, 4 frames, 2 views, Workbench, a random-weight tiny model with 1 sampler step, a fast
alignment grid). The Blender parts need `bpy` and the shared assets and are skipped cleanly otherwise.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ss4d.eval import align as A
from ss4d.eval import protocol as P
from ss4d.eval.baselines import disable_temporal
from ss4d.eval.report import bar_chart, contact_sheet, line_chart, numbers_only, sanitize
from ss4d.render.camera import orbit_camera
from ss4d.render.gaussians import Gaussians
from ss4d.render.rasterizer import rasterize

FAST_ALIGN = {"az_step": 15.0, "elevations": (-20.0, 0.0, 20.0), "coarse_size": 32, "size": 48, "levels": 2,
              "top_k": 2, "coarse_points": 800, "max_points": 4000, "final_points": 8000, "final_levels": 2}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ================================================================================================================
# synthetic objects (no Blender)
# ================================================================================================================
def _box_surface(lo, hi, n, g):
    lo, hi = torch.tensor(lo), torch.tensor(hi)
    p = lo + torch.rand(n, 3, generator=g) * (hi - lo)
    ax = torch.randint(0, 3, (n,), generator=g)
    side = torch.randint(0, 2, (n,), generator=g).bool()
    p[torch.arange(n), ax] = torch.where(side, hi[ax], lo[ax])
    return p


def _object(t: int, rot_deg: float = 0.0, scale: float = 1.0) -> Gaussians:
    """An asymmetric coloured object (two boxes and a sphere that moves with t), optionally rotated about z and
    scaled (a 'prediction' in another canonical frame)."""
    g = torch.Generator().manual_seed(100 + t)
    parts = [(_box_surface([-0.45, -0.1, -0.3], [0.3, 0.1, -0.1], 4000, g), (0.9, 0.2, 0.1)),
             (_box_surface([0.15, 0.1, -0.3], [0.35, 0.45, -0.1], 2500, g), (0.1, 0.3, 0.9))]
    d = torch.randn(2500, 3, generator=g)
    parts.append((d / d.norm(dim=1, keepdim=True) * 0.12 + torch.tensor([-0.3, 0.0, 0.05 + 0.08 * t]), (0.1, 0.8, 0.2)))
    xyz = torch.cat([p for p, _ in parts])
    col = torch.cat([torch.tensor([c]).expand(p.shape[0], 3) for p, c in parts])
    a = math.radians(rot_deg)
    R = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    xyz = (xyz @ R.T) * scale
    n = xyz.shape[0]
    return Gaussians.from_activated(xyz, col, torch.full((n, 3), 0.012 * scale),
                                    torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, 4), torch.full((n,), 0.95))


def _render_rgba(gs, cam) -> torch.Tensor:
    out = []
    for g in gs:
        o = rasterize(g, cam, bg=(0.0, 0.0, 0.0))
        a, c = o["alpha"], o["color"]
        out.append(torch.cat([torch.where(a > 0, c / a.clamp_min(1e-8), 0 * c).clamp(0, 1), a]))
    return (torch.stack(out) * 255).round().to(torch.uint8)


def test_alignment_recovers_known_pose():
    gs = [_object(t) for t in range(3)]
    true = (137.0, 12.0, 2.3)
    cam = orbit_camera(math.radians(true[0]), math.radians(true[1]), true[2], math.radians(40), 128, 128, near=0.05)
    pose = A.align_to_input(gs, _render_rgba(gs, cam), fov_deg=40.0, radius=2.0)
    assert abs((pose.azimuth_deg - true[0] + 180) % 360 - 180) < 1.5, pose
    assert abs(pose.elevation_deg - true[1]) < 1.5, pose
    assert abs(pose.distance / true[2] - 1) < 0.02, pose
    assert pose.iou > 0.9


def test_alignment_transform_brings_prediction_into_gt_box():
    """A 'prediction' = the truth rotated by 70 deg about z and scaled 0.8: the pose found from the input video
    maps it back (voxel IoU of the transformed centres against the truth's)."""
    T, a0, rot, scale = 2, 50.0, 70.0, 0.8
    truth = [_object(t) for t in range(T)]
    pred = [_object(t, rot, scale) for t in range(T)]
    cam = orbit_camera(math.radians(a0), 0.0, 2.0, math.radians(40), 96, 96, near=0.05)
    pose = A.align_to_input(pred, _render_rgba(truth, cam), fov_deg=40.0, radius=2.0)
    assert abs((pose.azimuth_deg - (a0 + rot) + 180) % 360 - 180) < 2.0, pose
    assert abs(pose.distance - 2.0 * scale) < 0.04, pose
    s, R = A.prediction_to_gt(pose, a0, 0.0, 2.0)
    assert s == pytest.approx(1 / scale, rel=0.02)
    from ss4d.eval.metrics import voxel_chamfer, voxel_iou

    pv = A.prediction_voxels(pred, s, R, 32)
    gv = A.prediction_voxels(truth, 1.0, torch.eye(3, dtype=torch.float64), 32)
    assert float(voxel_iou(pv, gv).min()) > 0.6
    assert float(voxel_chamfer(pv, gv, 32).max()) < 0.03
    # the identity pose maps the truth onto itself exactly
    s0, R0 = A.prediction_to_gt(A.Pose(a0, 0.0, 2.0), a0, 0.0, 2.0)
    assert s0 == pytest.approx(1.0) and torch.allclose(R0, torch.eye(3, dtype=torch.float64), atol=1e-6)


def test_splat_matches_rasterizer_silhouette():
    g = [_object(0)]
    cam = orbit_camera(math.radians(30), math.radians(10), 2.0, math.radians(40), 64, 64, near=0.05)
    ref = _render_rgba(g, cam).float() / 255
    a, rgb = A.splat(A.gaussian_points(g, 10 ** 6), cam.extrinsics, 40.0, 64)
    inter = ((a > 0.5) & (ref[:, 3] > 0.5)).sum()
    union = ((a > 0.5) | (ref[:, 3] > 0.5)).sum()
    assert inter / union > 0.9
    # batched cameras give the same images as one at a time
    E2 = orbit_camera(1.0, 0.2, 2.5, math.radians(40), 64, 64).extrinsics
    ab, rb = A.splat(A.gaussian_points(g, 5000), torch.stack([cam.extrinsics, E2]), 40.0, 64)
    a1, r1 = A.splat(A.gaussian_points(g, 5000), E2, 40.0, 64)
    assert torch.equal(ab[1], a1) and torch.equal(rb[1], r1)


# ================================================================================================================
# per-frame baseline: temporal reasoning disabled
# ================================================================================================================
def _randomize(m):
    for p in m.parameters():  # the official init zeroes the gates / outputs; make everything non-zero
        torch.nn.init.normal_(p, std=0.05)
    return m.eval()


def test_disable_temporal_makes_frames_independent():
    from ss4d.models.tiny import build_tiny
    from ss4d.sparse.tensor import SparseTensor

    torch.manual_seed(0)
    models = {k: _randomize(m) for k, m in build_tiny(0, names=["sparse_structure_flow_model", "slat_flow_model",
                                                                   "slat_decoder_gs"]).items()}
    pipe = types.SimpleNamespace(models=models)
    pf = disable_temporal(pipe)
    assert pf.models["slat_flow_model"] is not models["slat_flow_model"]      # a copy; the original is untouched
    T = 4
    # sparse-structure flow: change frame 3 -> frames 0..2 unchanged (per-frame), changed (full model)
    x = torch.randn(T, 8, 8, 8, 8)
    t = torch.full((T,), 500.0)
    c = torch.randn(T, 16, 128)
    x2 = x.clone()
    x2[3] += 1
    with torch.no_grad():
        full = [models["sparse_structure_flow_model"](v, t, c, num_frames=T) for v in (x, x2)]
        per = [pf.models["sparse_structure_flow_model"](v, t, c, num_frames=T) for v in (x, x2)]
    assert (full[0][:3] - full[1][:3]).abs().max() > 1e-4
    assert torch.allclose(per[0][:3], per[1][:3], atol=1e-5)
    # latent flow: change frames 2, 3 -> frames 0, 1 unchanged (frames are only coupled within a pair)
    g = torch.Generator().manual_seed(0)
    coords = []
    for f in range(T):
        vox = torch.unique(torch.randint(0, 32, (60, 3), generator=g), dim=0)
        coords.append(torch.cat([torch.full((vox.shape[0], 1), f), vox], 1))
    coords = torch.cat(coords).int()
    feats = torch.randn(coords.shape[0], 8, generator=g)
    late = coords[:, 0] >= 2
    feats2 = feats.clone()
    feats2[late] += 1
    with torch.no_grad():
        outs = {}
        for name, m in (("full", models["slat_flow_model"]), ("per", pf.models["slat_flow_model"])):
            outs[name] = [m(SparseTensor(f, coords, T), t, c, num_frames=T).feats for f in (feats, feats2)]
    assert (outs["full"][0][~late] - outs["full"][1][~late]).abs().max() > 1e-4
    assert torch.allclose(outs["per"][0][~late], outs["per"][1][~late], atol=1e-5)
    # Gaussian decoder: change frame 3 -> frames 0..2 unchanged
    last = coords[:, 0] == 3
    feats3 = feats.clone()
    feats3[last] += 1
    with torch.no_grad():
        dec_full, dec_per = ([m.decode_raw(SparseTensor(f, coords, T), T).feats for f in (feats, feats3)]
                             for m in (models["slat_decoder_gs"], pf.models["slat_decoder_gs"]))
    assert (dec_full[0][~last] - dec_full[1][~last]).abs().max() > 1e-4
    assert torch.allclose(dec_per[0][~last], dec_per[1][~last], atol=1e-5)
    # a single frame's result does not depend on the temporal switch's internals: frame-wise attention with one
    # frame equals the original model run on that frame alone
    with torch.no_grad():
        one = models["sparse_structure_flow_model"](x[:1], t[:1], c[:1], num_frames=1)
        assert torch.allclose(per[0][:1], one, atol=1e-5)


# ================================================================================================================
# report helpers
# ================================================================================================================
def test_report_helpers(tmp_path):
    assert sanitize({"a": float("inf"), "b": [float("nan"), 1.0], "c": torch.tensor([1.5])}) == \
        {"a": "inf", "b": [None, 1.0], "c": [1.5]}
    rep = {"x": 1.0, "timing": {"s": 3}, "r": [{"seconds": 2, "v": 2.0}]}
    assert numbers_only(rep) == {"x": 1.0, "r": [{"v": 2.0}]}
    bar_chart(tmp_path / "b.png", "t", ["a", "b"], {"m1": [1.0, float("inf")], "m2": [None, -0.5]}, "y")
    line_chart(tmp_path / "l.png", "t", [0, 1, 2], {"m1": [1.0, None, 3.0], "m2": [float("inf"), 2.0, 2.5]})
    Image.new("RGBA", (20, 20), (255, 0, 0, 128)).save(tmp_path / "x.png")
    contact_sheet(tmp_path / "s.png", {("v000", 0): tmp_path / "x.png"}, ["v000", "v090"], [0, 3], thumb=32)
    for n in ("b.png", "l.png", "s.png"):
        with Image.open(tmp_path / n) as im:
            assert im.size[0] > 50 and im.getextrema()[0][0] < 255    # something was drawn
    assert P.parse_view_name("v090") == 90 and P.parse_view_name("180") == 180 and P.parse_view_name("x") is None
    assert P.view_name(0) == "v000" and P.view_name(270) == "v270" and P.frame_file(7) == "007.png"
    assert P.input_azimuth("Fox", 0) == P.input_azimuth("Fox", 0) != P.input_azimuth("Frog", 0)
    with pytest.raises(ValueError):
        P.GTSettings(view_offsets=(90, 180))


# ================================================================================================================
# the whole run (Blender ground truth)
# ================================================================================================================
def _bpy_or_skip(shared):
    from ss4d.data.blender import have_bpy

    if not have_bpy():
        pytest.skip("bpy not installed (pip install ss4d[data])")
    assets = shared / "data" / "assets"
    if not (assets / "AnimatedMorphCube.glb").exists() or not (assets / "Fox.glb").exists():
        pytest.skip("shared assets not found")
    return assets


GT = dict(num_frames=4, size=64, view_offsets=(0, 180), engine="workbench", threads=1, seed=3, resolution=32)


def _cfg(out, assets, **kw):
    return P.EvalConfig(assets=list(assets), output=str(out), gt=P.GTSettings(**GT), align=dict(FAST_ALIGN),
                        steps=1, seed=3, threads=1, sheet_frames=4, **kw)


@pytest.fixture(scope="module")
def run1(tmp_path_factory, shared):
    assets = _bpy_or_skip(shared)
    from ss4d.models.tiny import build_tiny, write_model_folder

    tmp = tmp_path_factory.mktemp("eval_run1")
    model = write_model_folder(tmp / "model", build_tiny(0, occupancy_bias=-1.0))
    box = tmp / "inputs" / "box.obj"   # a mesh without animation
    box.parent.mkdir()
    box.write_text("v -1 -1 -1\nv 1 -1 -1\nv 1 1 -1\nv -1 1 -1\nv 0 0 1\nf 1 2 3 4\nf 1 2 5\nf 2 3 5\nf 3 4 5\n"
                   "f 4 1 5\n")
    (tmp / "inputs" / "garbage.glb").write_bytes(b"\x00" * 64)
    inputs = [assets / "AnimatedMorphCube.glb", assets / "Fox.glb", box, tmp / "inputs" / "garbage.glb"]
    cfg = _cfg(tmp / "r1", inputs, model=str(model), baselines=("per-frame", "static"))
    report = P.evaluate(cfg, progress=None)
    return {"tmp": tmp, "root": tmp / "r1", "report": report, "cfg": cfg, "inputs": inputs, "model": model}


ASSETS = ["AnimatedMorphCube", "Fox"]


def test_harness_writes_report_files(run1):
    root, rep = run1["root"], run1["report"]
    on_disk = json.loads((root / "report.json").read_text())
    assert on_disk == sanitize(rep)
    assert set(on_disk["results"]) == {"empty", "ss4d", "per-frame", "static"}
    scored = {a["id"]: a for a in on_disk["assets"]}
    assert scored["AnimatedMorphCube"]["scored"] and scored["Fox"]["scored"]
    assert scored["box"]["code"] == "no_animation" and not scored["box"]["scored"]
    assert scored["garbage"]["code"] == "corrupt"
    md = (root / "report.md").read_text()
    for s in ("Mean over assets", "Per asset", "ss4d", "per-frame", "static", "no_animation", "corrupt",
              "LPIPS: not computed", "FVD: not computed", "Alignment"):
        assert s in md, s
    for m in ("ss4d", "per-frame", "static"):
        for a in ASSETS:
            e = on_disk["results"][m][a]
            assert e["status"] == "ok", (m, a, e.get("error"))
            assert len(e["views"]["v000"]["psnr"]) == 4 and e["input"]["psnr"] is not None
            assert e["novel"]["ssim"] is not None and e["flicker"]["novel"] is not None
            assert len(e["geometry"]["voxel_iou"]) == 4 and e["geometry"]["mean_chamfer"] is not None
            assert e["input"]["lpips"] is None and e["input"]["clip"] is None     # no weights: not computed
            assert -30 <= e["pose"]["elevation_deg"] <= 30 and e["pose"]["distance"] > 0
            for v in ("v000", "v180"):
                assert len(list((root / "methods" / m / a / v).glob("*.png"))) == 4
            assert (root / "sheets" / a / f"{m}.png").is_file()
        assert (root / "plots" / "bar_psnr_novel.png").is_file()
    assert on_disk["network_metrics"]["fvd"] == "no --i3d-weights given"
    for a in ASSETS:
        assert (root / "sheets" / a / "ground_truth.png").is_file()
        assert (root / "plots" / f"frames_{a}.png").is_file()
        meta = json.loads((root / "gt" / a / "meta.json").read_text())
        assert meta["a0_deg"] == P.input_azimuth(a, 3) and meta["views"] == ["v000", "v180"]
        assert len(meta["frames"]) == 4 and all(n > 0 for n in meta["num_voxels"])
    # the static baseline really is frozen: its renders do not change over time
    st = run1["root"] / "methods" / "static" / "Fox" / "v000"
    imgs = [np.array(Image.open(st / P.frame_file(t))) for t in range(4)]
    assert all(np.array_equal(imgs[0], im) for im in imgs[1:])
    assert on_disk["results"]["static"]["Fox"]["flicker"]["input"] < 0     # smoother than the moving truth


def test_gt_cameras_match_blender_renders(run1):
    """The ground-truth voxels (from the evaluated meshes) projected with the protocol cameras land on the
    rendered alpha, and the stored cameras are the protocol's."""
    from ss4d.data.voxelize import voxel_centers

    root = run1["root"]
    settings = P.GTSettings(**GT)
    for a in ASSETS:
        gt = P.load_ground_truth(P.GTRecord(a, "", True, root / "gt" / a), settings)
        cams = P.gt_cameras(gt.a0, settings)
        for v, cam in zip(gt.views, cams):
            assert torch.allclose(gt.camera(v).extrinsics, cam.extrinsics, atol=1e-5)
        vox = gt.voxels()
        for t in (0, 3):
            pts = voxel_centers(vox[t], settings.resolution)
            for v, cam in zip(gt.views, cams):
                alpha = np.array(Image.open(gt.image_path(v, t)))[..., 3] > 0
                uv, _ = cam.project(pts)
                px = torch.floor(uv * 64).long().clamp(0, 63).numpy()
                assert alpha[px[:, 1], px[:, 0]].mean() > 0.9


def _copy_gt(src_root: Path, dst_root: Path) -> None:
    dst_root.mkdir(parents=True)
    shutil.copytree(src_root / "gt", dst_root / "gt")
    shutil.copy(src_root / "evaluation.json", dst_root / "evaluation.json")


def test_gt_copy_as_predictions_scores_perfectly(run1, tmp_path):
    """Independent check of the scoring path: the ground truth's own renders (and voxels) as predictions."""
    pred = tmp_path / "pred"
    shutil.copytree(run1["root"] / "gt", pred)
    out = tmp_path / "r"
    _copy_gt(run1["root"], out)
    rep = P.evaluate(_cfg(out, run1["inputs"][:2], predictions=[("gtcopy", str(pred))]), progress=None)
    for a in ASSETS:
        e = rep["results"]["gtcopy"][a]
        assert e["status"] == "ok" and not e["not_scored"]
        for where in ("input", "novel"):
            assert math.isinf(e[where]["psnr"]) and e[where]["ssim"] == pytest.approx(1.0)
            assert math.isinf(e[where]["masked_psnr"]) and e[where]["masked_ssim"] == pytest.approx(1.0)
            assert e[where]["mask_iou"] == 1.0
        assert e["flicker"]["input"] == 0.0 and e["flicker"]["novel"] == 0.0
        assert e["geometry"]["voxel_iou"] == [1.0] * 4 and e["geometry"]["chamfer"] == [0.0] * 4
        assert "pose" not in e
    md = (out / "report.md").read_text()
    assert "| gtcopy | 2/2 | inf | inf | 1.000 | 1.000 | 1.000 |" in md
    assert json.loads((out / "report.json").read_text())["results"]["gtcopy"]["Fox"]["input"]["psnr"] == "inf"


def test_bad_predictions_reported_not_crashing(run1, tmp_path):
    pred = tmp_path / "pred"
    shutil.copytree(run1["root"] / "gt", pred)
    (pred / "Fox" / "v180" / "002.png").unlink()                        # a missing frame
    (pred / "Fox" / "voxels.npz").unlink()                              # renders only
    for t in range(4):                                                  # wrong resolution, RGB without alpha
        p = pred / "AnimatedMorphCube" / "v000" / P.frame_file(t)
        with Image.open(p) as im:
            im.convert("RGBA").resize((32, 32)).save(p)
    for t in range(4):
        p = pred / "AnimatedMorphCube" / "v180" / P.frame_file(t)
        with Image.open(p) as im:
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            Image.alpha_composite(bg, im.convert("RGBA")).convert("RGB").save(p)
    out = tmp_path / "r"
    _copy_gt(run1["root"], out)
    rep = P.evaluate(_cfg(out, run1["inputs"][:2], predictions=[("bad", str(pred)), ("nothing", str(tmp_path / "r"))]),
                     progress=None)
    fox = rep["results"]["bad"]["Fox"]
    assert fox["status"] == "partial"
    assert [(p["view"], p["frame"], p["code"]) for p in fox["not_scored"]] == [("v180", [2], "missing_frames")]
    assert fox["views"]["v180"]["psnr"][2] is None and fox["views"]["v180"]["scored_frames"] == 3
    assert math.isinf(fox["novel"]["psnr"]) and fox["views"]["v180"]["flicker"] is None
    assert fox["geometry"]["voxel_iou"] is None and "no voxels.npz" in fox["geometry"]["reason"]
    cube = rep["results"]["bad"]["AnimatedMorphCube"]
    codes = [p["code"] for p in cube["not_scored"]]
    assert codes == ["resolution"] * 4 and "32x32 px, ground truth 64x64 px" in cube["not_scored"][0]["error"]
    assert cube["input"]["psnr"] is None and cube["input"]["scored_frames"] == 0
    assert cube["novel"]["mask_iou"] > 0.9 and any("alpha estimated" in n for n in cube["notes"])
    assert cube["geometry"]["voxel_iou"] == [1.0] * 4
    nothing = rep["results"]["nothing"]["Fox"]       # a folder without this method's assets
    assert nothing["status"] == "failed" and nothing["code"] == "missing_predictions"
    md = (out / "report.md").read_text()
    assert "missing_frames" in md and "resolution" in md and "missing_predictions" in md
    assert "alpha estimated" in md and "no voxels.npz" in md


def test_rerun_reproduces_numbers(run1, tmp_path):
    """A fresh run with the same seed (same ground truth, everything else recomputed) reproduces every number of
    the model; re-running into the first folder reuses its caches and reproduces the whole report."""
    out = tmp_path / "r2"
    _copy_gt(run1["root"], out)
    rep2 = P.evaluate(_cfg(out, run1["inputs"][:2], model=str(run1["model"])), progress=None)
    a = numbers_only(run1["report"])["results"]["ss4d"]
    b = numbers_only(rep2)["results"]["ss4d"]
    assert a == b
    rep3 = P.evaluate(run1["cfg"], progress=None)
    assert numbers_only(rep3) == numbers_only(run1["report"])
    assert all(e.get("cached") for e in rep3["results"]["ss4d"].values())
    assert all(x["gt_cached"] for x in rep3["assets"] if x["scored"])


def test_other_settings_refused_and_cli(run1, tmp_path, capsys):
    import argparse

    from ss4d.errors import InputError
    from ss4d.eval.cli import add_evaluate_parser

    cfg = _cfg(run1["root"], run1["inputs"][:1], model=str(run1["model"]))
    cfg.gt = P.GTSettings(**{**GT, "num_frames": 6})
    with pytest.raises(InputError, match="other settings"):
        P.evaluate(cfg, progress=None)
    with pytest.raises(InputError, match="needs --model"):
        P.evaluate(_cfg(tmp_path / "x", run1["inputs"][:1], baselines=("static",)), progress=None)
    # the CLI on external predictions (the GT copy), resuming the cached ground truth
    out = tmp_path / "cli"
    _copy_gt(run1["root"], out)
    parser = argparse.ArgumentParser()
    add_evaluate_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--assets", str(run1["inputs"][1]), "-o", str(out), "--predictions",
                              f"copy={run1['root'] / 'gt'}", "--frames", "4", "--size", "64", "--views", "0,180",
                              "--engine", "workbench", "--seed", "3", "--threads", "1", "--resolution", "32",
                              "--quiet"])
    assert args.func(args) == 0
    assert "1/1 asset(s) scored" in capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    assert rep["results"]["copy"]["Fox"]["input"]["psnr"] == "inf"


def test_network_metrics_with_weight_files(run1, tmp_path):
    """With (random-weight) LPIPS / CLIP / I3D files the network metrics are computed: the ground truth against
    itself scores LPIPS 0, CLIP similarity 1, FVD 0 (per clip and pooled)."""
    from ss4d.eval.clip_vit import CLIPVisionTransformer
    from ss4d.eval.i3d import InceptionI3d, scaled_channels
    from ss4d.eval.lpips import LPIPS

    torch.manual_seed(0)
    sd = LPIPS("vgg").state_dict()
    torch.save({k: v for k, v in sd.items() if k.startswith("features.")}, tmp_path / "vgg16-397923af.pth")
    torch.save({k: torch.rand_like(v) for k, v in sd.items() if k.startswith("lin")}, tmp_path / "vgg.pth")
    clip = CLIPVisionTransformer(input_resolution=32, patch_size=8, width=64, layers=1, output_dim=16)
    torch.save({k: v + 0.05 * torch.randn_like(v) for k, v in clip.state_dict().items()}, tmp_path / "clip.pth")
    i3d = InceptionI3d(num_classes=10, channels=scaled_channels(16))
    torch.save({k: v for k, v in i3d.state_dict().items() if not k.endswith("num_batches_tracked")},
               tmp_path / "i3d.pt")
    pred = tmp_path / "pred"
    shutil.copytree(run1["root"] / "gt", pred)
    out = tmp_path / "r"
    _copy_gt(run1["root"], out)
    rep = P.evaluate(_cfg(out, run1["inputs"][:2], predictions=[("gtcopy", str(pred))], lpips_weights=str(tmp_path),
                          clip_weights=str(tmp_path / "clip.pth"), i3d_weights=str(tmp_path / "i3d.pt")),
                     progress=None)
    assert rep["network_metrics"] == {"lpips": "computed", "clip": "computed", "fvd": "computed"}
    for a in ASSETS:
        e = rep["results"]["gtcopy"][a]
        assert e["input"]["lpips"] == pytest.approx(0.0, abs=1e-6) and e["novel"]["clip"] == pytest.approx(1.0)
        assert rep["fvd"]["gtcopy"]["per_clip"]["value"][a] == pytest.approx(0.0, abs=1e-3)
    assert rep["fvd"]["gtcopy"]["pooled"]["value"] == pytest.approx(0.0, abs=1e-3)
    md = (out / "report.md").read_text()
    assert "LPIPS novel ↓" in md and "CLIP sim. novel ↑" in md and ": not computed" not in md


# ================================================================================================================
# procedural held-out clips as assets (no Blender needed)
# ================================================================================================================
def test_procedural_spec_parsing():
    assert [a for a, _, _ in P.parse_procedural_spec("procedural:1:3")] == ["proc1_000000", "proc1_000001",
                                                                            "proc1_000002"]
    assert P.parse_procedural_spec("procedural:7") == [("proc7_000000", 7, 0)]
    for bad in ("procedural:x:2", "procedural:1:0", "procedural:1:2:3", "procedural:"):
        with pytest.raises(ValueError, match="procedural:SEED:COUNT"):
            P.parse_procedural_spec(bad)


def test_procedural_ground_truth_and_gt_copy_scores_perfectly(tmp_path):
    from ss4d.data.dataset import clip_seed
    from ss4d.data.procedural import make_clip

    settings = P.GTSettings(num_frames=3, size=48, view_offsets=(0, 90), resolution=32, seed=5)
    root = tmp_path / "r"
    cfg = P.EvalConfig(assets=["procedural:2:1", "procedural:bad"], output=str(root), gt=settings,
                       align=dict(FAST_ALIGN), predictions=[("gtcopy", str(tmp_path / "pred"))], seed=5, threads=1,
                       sheet_frames=3)
    # the predictions folder is the ground truth itself, copied once it exists
    records = P.prepare_ground_truth(cfg.assets, root, settings, progress=None)
    ok = [r for r in records if r.ok]
    bad = [r for r in records if not r.ok]
    assert [r.asset_id for r in ok] == ["proc2_000000"]
    assert bad and bad[0].code == "bad_spec"
    gt = P.load_ground_truth(ok[0], settings)
    clip = make_clip(clip_seed(2, 0), num_frames=3, resolution=32)
    assert gt.meta["a0_deg"] == P.input_azimuth("proc2_000000", 5)
    vox = gt.voxels()
    for t in range(3):
        assert torch.equal(vox[t], clip.voxels(t, 32).long())
    # an independent white-background render of the clip at the protocol camera equals the stored RGBA composited
    for k, view in enumerate(settings.views):
        cam = P.gt_cameras(gt.a0, settings)[k]
        rgba = gt.view_rgba(view).float() / 255.0
        for t in range(3):
            ref = rasterize(clip.gaussians(t), cam, bg=(1.0, 1.0, 1.0))["color"]
            comp = rgba[t, :3] * rgba[t, 3:] + (1 - rgba[t, 3:])
            assert (comp - ref).abs().max().item() < 4.0 / 255.0
            assert rgba[t, 3].mean() > 0.02  # the object is in view
    shutil.copytree(root / "gt", tmp_path / "pred")
    rep = P.evaluate(cfg, progress=None)
    e = rep["results"]["gtcopy"]["proc2_000000"]
    assert e["status"] == "ok"
    assert math.isinf(e["input"]["psnr"]) and e["geometry"]["voxel_iou"] == [1.0] * 3
    assert any(a["id"] == "procedural:bad" and a["code"] == "bad_spec" for a in rep["assets"])


# ================================================================================================================
# issue #16: evaluation that cannot flatter (empty baseline, masked scores, orientation, splits)
# ================================================================================================================
def _write_gt(folder: Path, settings, a0: float, images: dict, voxels: list, asset_id: str = "obj"):
    """A ground-truth folder by hand: ``images[view]`` = uint8 ``[T, 4, H, W]``."""
    for v, imgs in images.items():
        (folder / v).mkdir(parents=True)
        for t in range(imgs.shape[0]):
            P.write_rgba(folder / v / P.frame_file(t), imgs[t].permute(1, 2, 0).numpy())
    np.savez_compressed(folder / "voxels.npz",
                        **{f"f{t:03d}": v.numpy().astype(np.int32) for t, v in enumerate(voxels)})
    meta = {"a0_deg": a0, "views": settings.views}
    (folder / "meta.json").write_text(json.dumps(meta))
    return P.GroundTruth(asset_id, folder, meta, settings)


def test_empty_baseline_psnr_is_hand_computed(tmp_path):
    from ss4d.eval.baselines import EmptyMethod

    settings = P.GTSettings(num_frames=2, size=16, view_offsets=(0, 90), resolution=8)
    imgs = {}
    for k, v in enumerate(settings.views):
        x = torch.zeros(2, 4, 16, 16, dtype=torch.uint8)
        x[:, 3, 2:8, 3:9] = 255                      # an opaque 6x6 object of colour (0, 51, 102 + 10 k)
        x[:, 1, 2:8, 3:9] = 51
        x[:, 2, 2:8, 3:9] = 102 + 10 * k
        x[1, 3, 10:12, 10:12] = 128                  # frame 1: plus a half-transparent red 2x2 patch
        x[1, 0, 10:12, 10:12] = 255
        imgs[v] = x
    gt = _write_gt(tmp_path / "gt", settings, 0.0, imgs, [torch.tensor([[1, 2, 3]])] * 2)
    out = EmptyMethod(tmp_path / "report").produce(gt)
    sc = P.score_asset(gt, out.renders_dir, pred_voxels=out.voxels)
    for k, v in enumerate(settings.views):
        for t in range(2):
            # by hand: composited truth on white vs an all-white prediction
            err = np.zeros((16, 16, 3))
            err[2:8, 3:9] = [1.0, 1 - 51 / 255, 1 - (102 + 10 * k) / 255]
            if t == 1:
                a = 128 / 255
                err[10:12, 10:12] = [0.0, a, a]                 # 1 - (0 * a + (1 - a)) in G and B
            mse = (err ** 2).mean()
            assert sc["views"][v]["psnr"][t] == pytest.approx(10 * math.log10(1 / mse), abs=1e-6)
            m = err.any(-1) if t == 1 else np.zeros((16, 16), bool)
            m[2:8, 3:9] = True                                  # union of masks = the truth's (alpha > 0.5)
            m[10:12, 10:12] = t == 1
            mse_m = (err[m] ** 2).mean()
            assert sc["views"][v]["masked_psnr"][t] == pytest.approx(10 * math.log10(1 / mse_m), abs=1e-6)
            assert sc["views"][v]["mask_iou"][t] == 0.0
    assert sc["geometry"]["voxel_iou"] == [0.0, 0.0]
    assert sc["input"]["masked_psnr"] < sc["input"]["psnr"]   # the white background no longer counts


def _view_aligned_prediction(T, a0, turn):
    """The truth as a view-aligned model would output it (input camera at yaw 0), turned by ``turn`` degrees."""
    return [_object(t, turn - a0) for t in range(T)]


def test_orientation_yaw_error_and_fixed_yaw_scores(tmp_path):
    from ss4d.eval.baselines import GeneratedMethod

    T, a0 = 2, 70.0
    settings = P.GTSettings(num_frames=T, size=64, view_offsets=(0, 90, 180, 270), resolution=32)
    truth = [_object(t) for t in range(T)]
    imgs = {v: _render_rgba(truth, cam) for v, cam in zip(settings.views, P.gt_cameras(a0, settings))}
    gt = _write_gt(tmp_path / "gt", settings, a0, imgs, A.prediction_voxels(truth, 1.0, torch.eye(3), 32))
    cfg = types.SimpleNamespace(align=dict(FAST_ALIGN), seed=0, device="cpu")
    res = {}
    for name, turn in (("right", 0.0), ("backwards", 180.0)):
        m = GeneratedMethod(name, "model", tmp_path / "r", cfg,
                            lambda gt, turn=turn: _view_aligned_prediction(T, a0, turn), {"turn": turn},
                            progress=None, input_yaw_deg=0.0)
        entry, _ = P.run_method_asset(m, gt, None)
        assert entry["status"] == "ok", entry
        res[name] = entry
    assert abs(res["right"]["orientation"]["yaw_error_deg"]) < 3.0
    assert abs(res["backwards"]["orientation"]["yaw_error_deg"]) > 177.0
    assert res["backwards"]["orientation"]["abs_yaw_error_deg"] == abs(res["backwards"]["orientation"]["yaw_error_deg"])
    # the free search turns the backwards prediction round: both score alike...
    assert abs(res["right"]["novel"]["psnr"] - res["backwards"]["novel"]["psnr"]) < 2.0
    # ...at the fixed yaw the backwards one is worse, the right one keeps its score
    fr, fb = res["right"]["fixed_yaw"], res["backwards"]["fixed_yaw"]
    assert fr["novel"]["psnr"] == pytest.approx(res["right"]["novel"]["psnr"], abs=1.0)
    assert fr["novel"]["psnr"] > fb["novel"]["psnr"] + 2.0
    assert fr["novel"]["masked_psnr"] > fb["novel"]["masked_psnr"] + 2.0
    assert fr["input"]["psnr"] > fb["input"]["psnr"] + 2.0
    assert fr["geometry"]["mean_voxel_iou"] > fb["geometry"]["mean_voxel_iou"]
    assert A.yaw_error_deg(350.0, 0.0) == pytest.approx(-10.0) and A.yaw_error_deg(180.0, 0.0) == pytest.approx(180.0)
    assert A.yaw_error_deg(10.0, 200.0) == pytest.approx(170.0)


def test_split_is_disjoint_stratified_and_committed(shared):
    from ss4d.eval.splits import asset_id_of, make_asset_split

    cats = {"a": 10, "b": 7, "c": 3, "d": 1}
    manifest = [{"file": f"assets/{c}_{i}.glb", "category": c} for c, n in cats.items() for i in range(n)]
    sp = make_asset_split(manifest, seed=1)
    tr, va, te = (set(sp["splits"][k]) for k in ("train", "validation", "test"))
    assert not (tr & va or tr & te or va & te) and len(tr | va | te) == 21
    for c, n in cats.items():
        got = [sum(sp["categories"][i] == c for i in s) for s in (tr, va, te)]
        assert sum(got) == n
        if n >= 3:
            assert got[1] >= 1 and got[2] >= 1 and got[0] >= round(0.7 * n) - 1
    assert make_asset_split(manifest, seed=1) == sp != make_asset_split(manifest, seed=2)
    # the committed split reproduces from the shared manifest
    committed = json.loads((Path(__file__).parents[1] / "configs" / "splits" / "assets.json").read_text())
    mp = shared / "data" / "train_assets" / "manifest.json"
    if mp.is_file():
        again = make_asset_split(json.loads(mp.read_text()), committed["seed"])
        assert again["splits"] == committed["splits"]
        files = {asset_id_of(e["file"]) for e in json.loads(mp.read_text())}
        assert set().union(*committed["splits"].values()) == files
    with pytest.raises(ValueError):
        make_asset_split(manifest, fractions=(0.5, 0.5, 0.5))


def test_shipped_model_never_trained_on_validation_or_test_assets():
    """The training record of the shipped model against the committed split: no validation or test asset was
    trained on (the record lists every trained asset id; the split file is the one `ss4d evaluate` users score)."""
    from ss4d.eval.splits import load_training_record
    from ss4d.pipeline.checkpoint_folder import default_model_dir

    rec = json.loads((default_model_dir() / "training.json").read_text())
    split = json.loads((Path(__file__).parents[1] / "configs" / "splits" / "assets.json").read_text())["splits"]
    held_out = set(split["validation"]) | set(split["test"])
    assert not held_out & set(rec["trained_on"])
    assert rec["trained_on"]
    r = load_training_record(default_model_dir())
    assert all(r.role(a) != "trained" for a in held_out)


def test_training_record_of_the_default_model_names_evaluate_ids():
    from ss4d.eval.splits import load_training_record
    from ss4d.pipeline.checkpoint_folder import default_model_dir

    rec = load_training_record(default_model_dir())
    assert rec is not None and rec.input_view_yaw_deg == 0.0
    assert rec.role("Fox") == "tuned" and rec.role("AnimatedMorphCube") == "trained"
    assert rec.role("proc0_000042") == "trained" and rec.role("proc1_000003") == "tuned"
    assert rec.role("proc2_000000") is None and rec.role("quaternius__Dino_Stegosaurus") is None
    assert rec.role("Fox-0123abcd") == "tuned"     # a duplicate stem's hash suffix


def test_training_assets_are_kept_out_of_the_mean(tmp_path):
    from ss4d.models.tiny import build_tiny, write_model_folder

    model = write_model_folder(tmp_path / "model", build_tiny(0, occupancy_bias=-1.0))
    (model / "training.json").write_text(json.dumps({"trained_on": ["proc2_000001"], "tuned_on": []}))
    settings = P.GTSettings(num_frames=2, size=32, view_offsets=(0, 180), resolution=16, seed=1)
    align = {**FAST_ALIGN, "final_size": 32, "size": 32}

    def run(out, include):
        cfg = P.EvalConfig(assets=["procedural:2:2"], output=str(out), gt=settings, model=str(model), steps=1,
                           align=align, seed=1, threads=1, sheet_frames=2, include_training_assets=include)
        return P.evaluate(cfg, progress=None)

    rep = run(tmp_path / "r", False)
    assert rep["headline"]["assets"] == ["proc2_000000"]
    assert rep["headline"]["excluded"] == {"proc2_000001": "trained"}
    assert {a["id"]: a["role"] for a in rep["assets"]} == {"proc2_000000": None, "proc2_000001": "trained"}
    assert set(rep["results"]) == {"empty", "ss4d"}
    md = (tmp_path / "r" / "report.md").read_text()
    assert "proc2_000001 (trained)" in md and "--include-training-assets" in md
    # the mean row is the held-out asset's own value
    from ss4d.eval.report import _fmt

    v = rep["results"]["ss4d"]["proc2_000000"]["novel"]["psnr"]
    row = next(ln for ln in md.splitlines() if ln.startswith("| ss4d | 1/1 |"))
    assert row.split(" | ")[2] == _fmt(v)
    rep2 = run(tmp_path / "r", True)      # cached: only the scores and the report again
    assert rep2["headline"]["assets"] == ["proc2_000000", "proc2_000001"] and not rep2["headline"]["excluded"]
    assert "it flatters the model" in (tmp_path / "r" / "report.md").read_text()


def test_additions_switch_off_one_at_a_time():
    """Each ablation switches off exactly its addition on a copy; the per-frame set switches off all of them."""
    from ss4d.eval.baselines import ABLATION_NAMES, ADDITIONS, switch_off
    from ss4d.pipeline.silhouette import SilhouetteSettings

    def pipe():
        return types.SimpleNamespace(temporal_noise="shared", color_from_input=1.0,
                                     silhouette=SilhouetteSettings(strength=0.5, carve=True, fill=True),
                                     post_steps=[{"name": "silhouette_fit"}, {"name": "center_on_input"}])

    def on(p, kw):
        q = copy.copy(p)
        if "color_from_input" in kw:
            q.color_from_input = kw["color_from_input"]
        return {a.name for a in ADDITIONS if a.is_on(q)}

    names = {a.name for a in ADDITIONS}
    assert names == {"shared-noise", "color-transfer", "silhouette-guidance", "silhouette-fit", "centering"}
    assert ABLATION_NAMES == tuple(f"no-{n}" for n in (a.name for a in ADDITIONS))
    orig = pipe()
    for a in ADDITIONS:
        p, kw = switch_off(orig, (a.name,))
        assert on(p, kw) == names - {a.name}
        assert on(orig, {}) == names                 # the original is untouched
    p, kw = switch_off(orig, tuple(names))
    assert on(p, kw) == set() and p.temporal_noise == "independent" and kw == {"color_from_input": 0.0}
    assert p.silhouette.size == orig.silhouette.size and not p.silhouette.enabled
    assert p.post_steps == [] and len(orig.post_steps) == 2


def test_cached_generations_follow_the_model_files(tmp_path):
    """The generation cache key covers the model folder's contents: a changed pipeline.json setting or weight file
    changes it (a stale cache once scored an old configuration under a new one's name)."""
    import json as _json

    from ss4d.eval.baselines import model_fingerprint

    m = tmp_path / "model"
    (m / "ckpts").mkdir(parents=True)
    (m / "pipeline.json").write_text(_json.dumps({"args": {"post_steps": []}}))
    (m / "ckpts" / "a.safetensors").write_bytes(b"\x00" * 64)
    first = model_fingerprint(m)
    assert model_fingerprint(m) == first
    (m / "pipeline.json").write_text(_json.dumps({"args": {"post_steps": ["color_from_input"]}}))
    second = model_fingerprint(m)
    (m / "ckpts" / "a.safetensors").write_bytes(b"\x01" * 64)
    assert len({first, second, model_fingerprint(m)}) == 3
